// Delayed references (btrfs delayed-ref.c): extent reference changes queued during a transaction
// and applied to the extent tree in one pass at commit (issue 3 "the extent tree ... updated
// through delayed refs run at commit").
//
// Why: a COW or a file write changes extent references constantly (a tree block COWed twice in one
// transaction gains and loses refs several times). Queuing them lets ADD and DROP of the same
// reference cancel, so the extent tree sees only the net change, and keeps extent-tree updates
// out of the hot path of tree operations (which would otherwise recurse into the extent tree).
//
// Owns: one DelayedRefHead per extent (bytenr), holding the net count change per reference —
// tree block refs keyed by owner root (TREE_BLOCK_REF), data refs keyed by (root, inode, offset)
// (EXTENT_DATA_REF, FORMAT.md §3.9) — and whether the extent was allocated in this transaction
// (must_insert: its EXTENT_ITEM/METADATA_ITEM does not exist yet). Full-backref (shared) refs
// are not produced: ubtrfs has no snapshots yet.
// Invariants: a head's total_ref_mod is the sum of its refs' deltas; refs with delta 0 are
// erased; a head with must_insert whose refs all cancel is "never materialized": its space goes
// straight back to the allocator and the extent tree never sees it.
// Thread safety: internally synchronized (one mutex); take_all() hands the queue to the committer.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "io/status.h"

namespace ubtrfs::alloc {

// Identifies one reference of an extent: for tree blocks (root, level, 0) — level only for
// messages; for data (root, inode, file offset minus extent offset).
struct RefKey {
  uint64_t root = 0;
  uint64_t objectid = 0;  // data: inode number; tree: level
  uint64_t offset = 0;    // data: extent_data_ref.offset; tree: 0
  auto operator<=>(const RefKey&) const = default;
};

struct DelayedRefHead {
  uint64_t bytenr = 0;
  uint64_t num_bytes = 0;
  bool is_data = false;
  bool must_insert = false;       // allocated in this transaction: no extent item on disk yet
  uint64_t first_ref_generation = 0;  // transid for the new extent item's generation
  int64_t total_ref_mod = 0;
  std::map<RefKey, int64_t> refs;  // net delta per reference, never 0

  // The extent was allocated and every reference to it dropped again within the transaction.
  bool cancelled() const { return must_insert && refs.empty(); }
};

class DelayedRefs {
 public:
  // btrfs_add_delayed_tree_ref. `new_alloc`: the block was just allocated (first ADD).
  [[nodiscard]] Status add_tree_ref(uint64_t bytenr, uint64_t nodesize, uint64_t root, int level, int delta,
                                    bool new_alloc, uint64_t transid);
  // btrfs_add_delayed_data_ref. `offset` is the extent_data_ref offset (file key offset - extent offset).
  [[nodiscard]] Status add_data_ref(uint64_t bytenr, uint64_t num_bytes, uint64_t root, uint64_t ino,
                                    uint64_t offset, int delta, bool new_alloc, uint64_t transid);

  // Whether the head of `bytenr` is queued (not yet taken by the committer) with its first
  // reference (must_insert). A tree block freed in its own transaction cancels its +1 only then; once
  // the committer took the head, the +1 will run and the free must be a plain -1 (extent_tree deletes
  // the item in the next pass).
  bool queued_new_alloc(uint64_t bytenr) const;

  // Queued data extents whose references only decrease in this transaction (bytenr, num_bytes, net
  // change), for statfs: such an extent is freed at commit when its on-disk count reaches zero.
  struct PendingDrop {
    uint64_t bytenr, num_bytes;
    int64_t delta;
  };
  std::vector<PendingDrop> pending_data_drops() const;

  // A copy of the queued head of `bytenr`, if any (the nocow check asks whether other references
  // to an extent are about to appear).
  std::optional<DelayedRefHead> peek(uint64_t bytenr) const;

  size_t num_heads() const;
  bool empty() const { return num_heads() == 0; }
  // Hands every head to the caller in bytenr order (the order btrfs runs them) and empties the queue.
  std::vector<DelayedRefHead> take_all();
  // Up to `max` heads in bytenr order (btrfs_run_delayed_refs with a count: the flushers run refs in
  // the middle of a transaction, beside running handles).
  std::vector<DelayedRefHead> take_some(size_t max);
  // A tree block born in this transaction is freed: if its head is still queued with its first
  // reference (must_insert, not taken by a runner), the -1 for (root, level) cancels it here —
  // atomically with respect to take_all/take_some, so no runner can be inserting its extent item
  // meanwhile — and true tells the caller the bytes are still only reserved (give them back or
  // pin them). False: the head is gone or being run; the caller queues a plain -1.
  [[nodiscard]] Result<bool> cancel_new_tree_alloc(uint64_t bytenr, uint64_t nodesize, uint64_t root, int level,
                                                   uint64_t transid);

 private:
  [[nodiscard]] Status add(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref, int delta,
                           bool new_alloc, uint64_t transid);
  [[nodiscard]] Status add_locked(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref, int delta,
                                  bool new_alloc, uint64_t transid);  // REQUIRES: mu_

  mutable std::mutex mu_;
  std::map<uint64_t, DelayedRefHead> heads_;
};

}  // namespace ubtrfs::alloc
