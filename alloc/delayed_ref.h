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
// (must_insert: its EXTENT_ITEM/METADATA_ITEM does not exist yet). Shared refs (SHARED_BLOCK_REF,
// SHARED_DATA_REF: keyed by the parent block, not the root) come from the first COW of a block a
// snapshot shares (alloc/shared_refs.cpp); a head also carries extent flags to set on the item
// (btrfs_delayed_extent_op: FULL_BACKREF).
// Lookups that must see the extent tree and the queue as one (btrfs_lookup_extent_info) wait
// while a runner holds the extent's head (taken, not yet finished), and retry if a take happened
// during their read (take_epoch).
// Invariants: a head's total_ref_mod is the sum of its refs' deltas; refs with delta 0 are
// erased; a head with must_insert whose refs all cancel is "never materialized": its space goes
// straight back to the allocator and the extent tree never sees it.
// Thread safety: internally synchronized (one mutex); take_all() hands the queue to the committer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <set>
#include <mutex>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "io/status.h"

namespace ubtrfs::alloc {

// Identifies one reference of an extent: for tree blocks (root, level, 0) — level only for
// messages; for data (root, inode, file offset minus extent offset).
struct RefKey {
  uint64_t root = 0;
  uint64_t objectid = 0;  // data: inode number; tree: level
  uint64_t offset = 0;    // data: extent_data_ref.offset; tree: 0
  uint64_t parent = 0;    // shared (full) backref: the parent block's bytenr, root/offset 0; else 0
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
  uint64_t set_flags = 0;          // extent item flags to OR in (btrfs_delayed_extent_op)

  // The extent was allocated and every reference to it dropped again within the transaction.
  bool cancelled() const { return must_insert && refs.empty(); }
};

// Every add_* returns whether it queued a new head (true) or changed one already queued: the
// delayed-refs reserve is charged per head, as btrfs does since "only track ref_heads in
// delayed_ref_updates" (a head is run once, whatever number of references it gathered).
class DelayedRefs {
 public:
  // btrfs_add_delayed_tree_ref. `new_alloc`: the block was just allocated (first ADD).
  [[nodiscard]] Result<bool> add_tree_ref(uint64_t bytenr, uint64_t nodesize, uint64_t root, int level, int delta,
                                    bool new_alloc, uint64_t transid);
  // A SHARED_BLOCK_REF / SHARED_DATA_REF held by the block at `parent` (btrfs_inc_ref/dec_ref with
  // full_backref). Never the first reference of an extent.
  [[nodiscard]] Result<bool> add_shared_tree_ref(uint64_t bytenr, uint64_t nodesize, uint64_t parent, int level, int delta,
                                           uint64_t transid);
  [[nodiscard]] Result<bool> add_shared_data_ref(uint64_t bytenr, uint64_t num_bytes, uint64_t parent, int delta,
                                           uint64_t transid);
  // btrfs_set_disk_extent_flags: ORs `flags` into the tree block's extent item when the head runs.
  [[nodiscard]] Result<bool> add_extent_flags(uint64_t bytenr, uint64_t nodesize, uint64_t flags, uint64_t transid);

  // What the queue adds to the extent tree's view of `bytenr` (btrfs_lookup_extent_info's delayed
  // part). Waits while a runner holds the head (taken, not finished). `epoch` receives the take
  // epoch: a caller that read the extent tree after this call re-checks it with take_epoch() and
  // retries if a take happened meanwhile (its tree read may have missed or doubled the run).
  struct Pending {
    bool queued = false;
    bool must_insert = false;
    int64_t ref_mod = 0;
    uint64_t set_flags = 0;
  };
  Pending pending_for_lookup(uint64_t bytenr, uint64_t* epoch) const;
  uint64_t take_epoch() const;
  // The runner is done with the heads it took (applied or failed): lookups waiting on them go on.
  void finish_run();

  // btrfs_add_delayed_data_ref. `offset` is the extent_data_ref offset (file key offset - extent offset).
  [[nodiscard]] Result<bool> add_data_ref(uint64_t bytenr, uint64_t num_bytes, uint64_t root, uint64_t ino,
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
  [[nodiscard]] Result<bool> add(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref, int delta,
                                 bool new_alloc, uint64_t transid);
  [[nodiscard]] Result<bool> add_locked(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref, int delta,
                                  bool new_alloc, uint64_t transid);  // REQUIRES: mu_

  // The head of `bytenr`, created empty if absent (and whether it was); EUCLEAN when an existing
  // head disagrees on size or kind. REQUIRES: mu_.
  [[nodiscard]] Result<std::pair<std::map<uint64_t, DelayedRefHead>::iterator, bool>> head_locked(uint64_t bytenr,
                                                                                              uint64_t num_bytes,
                                                                                              bool is_data,
                                                                                              uint64_t transid);
  void note_taken(uint64_t bytenr);  // REQUIRES: mu_

  mutable std::mutex mu_;
  mutable std::condition_variable run_done_;
  std::map<uint64_t, DelayedRefHead> heads_;  // GUARDED_BY(mu_)
  std::set<uint64_t> running_;               // GUARDED_BY(mu_) heads taken by the runner in flight
  uint64_t take_epoch_ = 0;                  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::alloc
