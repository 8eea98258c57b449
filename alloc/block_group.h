// Block groups in memory (btrfs block-group.c): one per chunk, with its byte accounting and free
// space, and the cache that finds them by address and type.
//
// Accounting follows the kernel's lifecycle (KERNEL.md §2): an extent handed out by the allocator is
// `reserved` until its reference is recorded (delayed ref run) and then `used`; a freed extent is
// `pinned` until the transaction that freed it commits, then its range returns to free space.
// `super_bytes` are the superblock mirror stripes inside the group (FORMAT.md §5.5): never free,
// never used, counted as read-only by space_info.
// Invariant: free + used + reserved + pinned + super_bytes == length (checked by check_invariant()).
// Reserved bytes are also tracked as ranges (one per reserve_extent), so a caller can ask whether an
// extent is still reserved (its delayed ref not yet run) or already used: the allocator's free of a
// block allocated in the running transaction depends on it (extent_allocator.h).
// Every change is also reported to the group's SpaceInfo (alloc/space_info.h), once attached, so the
// space_info counters stay the exact sum over its groups; reports happen after the group's own lock
// is released.
// Thread safety: each BlockGroup has its own mutex, taken by every method; the cache's map is
// guarded by its own shared mutex and never changes a group's contents. Lock order: cache, then a
// single group; never two groups at once; a group's lock is never held while calling its SpaceInfo.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "alloc/free_space.h"
#include "alloc/space_info.h"
#include "io/status.h"
#include "tree/chunk_map.h"

namespace ubtrfs::alloc {

// Logical ranges [start, len) of superblock copies inside the chunk, widened to a 64 KiB stripe
// (BTRFS_STRIPE_LEN) and clipped to the chunk, as btrfs excludes them from allocation.
std::vector<std::pair<uint64_t, uint64_t>> super_mirror_ranges(const ChunkMapping& chunk);

struct BlockGroupUsage {
  uint64_t start = 0, length = 0, flags = 0;
  uint64_t used = 0, reserved = 0, pinned = 0, super_bytes = 0, free = 0;
  size_t free_extent_count = 0;
};

class BlockGroup {
 public:
  // A group with `used` bytes already allocated (from its BLOCK_GROUP_ITEM) and no free space
  // recorded yet: the loader then calls add_free() for each free range (from the free space tree).
  BlockGroup(const ChunkMapping& chunk, uint64_t used);

  uint64_t start() const { return start_; }
  uint64_t length() const { return length_; }
  uint64_t flags() const { return flags_; }
  bool contains(uint64_t logical) const { return logical >= start_ && logical - start_ < length_; }
  // Attaches the group to its space_info: total, used and readonly (super stripes) are added there
  // and every later change is reported. REQUIRES: called once, after loading the free space.
  void attach(SpaceInfo* si, int factor);
  SpaceInfo* space_info() const { return space_info_; }

  // Loading: marks a range free; superblock stripes inside it are skipped.
  [[nodiscard]] Status add_free(uint64_t start, uint64_t len);
  // Builds free space as the complement of `allocated` ranges (sorted, disjoint) and the super stripes.
  [[nodiscard]] Status init_free_from_allocated(const std::vector<std::pair<uint64_t, uint64_t>>& allocated);

  // Allocation (find_free_extent within this group): takes `len` bytes aligned to `align`, not
  // crossing a `boundary`, near `hint`. The range becomes reserved; `from_may_use` bytes of it had
  // been promised by a reservation (they leave the space_info's may_use). nullopt if it does not fit.
  std::optional<uint64_t> reserve_extent(uint64_t len, uint64_t align, uint64_t hint, uint64_t boundary,
                                         uint64_t from_may_use = 0);
  // Reserves exactly [start, +len), which must be entirely free: for ranges that something outside
  // the extent tree already owns — the blocks and new data extents of a log tree found at mount
  // (btrfs_pin_extent_for_log_replay / btrfs_exclude_logged_extents), so nothing allocates over them
  // before log replay is done. The range then leaves like any reserved one (commit_reserved,
  // pin_reserved, release_reserved). Errors: EUCLEAN (not entirely free: message names the range).
  [[nodiscard]] Status reserve_exact(uint64_t start, uint64_t len);
  // The reference of a reserved extent was recorded: reserved -> used. Errors: EUCLEAN unless
  // [start, +len) lies inside one reserved range.
  [[nodiscard]] Status commit_reserved(uint64_t start, uint64_t len);
  // A reserved extent that was never referenced nor written goes straight back to free space.
  [[nodiscard]] Status release_reserved(uint64_t start, uint64_t len);
  // A reserved extent that was written (or may have been) but whose reference never materialised:
  // reserved -> pinned, so it is not reused before the commit (btrfs `btrfs_pin_extent` on a
  // must_insert_reserved head / `btrfs_free_tree_block` of a WRITTEN block of this transaction).
  [[nodiscard]] Status pin_reserved(uint64_t start, uint64_t len);
  // Whether [start, +len) lies inside one range still reserved (not yet committed or released).
  bool is_reserved(uint64_t start, uint64_t len) const;
  // A used extent is freed: used -> pinned, until unpin_all() at commit.
  [[nodiscard]] Status pin_extent(uint64_t start, uint64_t len);
  // Marks a range used directly (mkfs, replay of allocations found on disk).
  [[nodiscard]] Status mark_used(uint64_t start, uint64_t len);
  // Commit finished: every pinned range becomes free. Returns the bytes unpinned; the ranges go to
  // `unpinned` when given (-o discard queues them, fs/discard.h).
  uint64_t unpin_all(std::vector<std::pair<uint64_t, uint64_t>>* unpinned = nullptr);

  // Trimming (btrfs free-space-cache.c trim_no_bitmap / do_trimming): takes the first free range
  // that lies in [from, end), clipped to it and to `max_len`, at least `min_len` long, out of free
  // space as reserved — so no allocation can land in it while it is discarded — and returns it.
  // Free space is only ever space that is free in the committed state too: extents freed in the
  // running transaction are pinned, allocated ones reserved or used, until the commit. The caller
  // discards the range and gives it back with release_reserved(). nullopt: none left.
  std::optional<std::pair<uint64_t, uint64_t>> take_free_for_trim(uint64_t from, uint64_t end, uint64_t min_len,
                                                                  uint64_t max_len);

  BlockGroupUsage usage() const;
  uint64_t free_bytes() const;
  // Free runs including the superblock stripes, as the kernel records them in the free space tree.
  std::map<uint64_t, uint64_t> free_space_tree_runs() const;
  [[nodiscard]] Status check_invariant() const;

 private:
  mutable std::mutex mu_;
  SpaceInfo* space_info_ = nullptr;  // set once by attach()
  uint64_t start_, length_, flags_;
  uint64_t used_ = 0, reserved_ = 0, pinned_ = 0, super_bytes_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> super_ranges_;
  std::map<uint64_t, uint64_t> pinned_ranges_;  // start -> len
  std::map<uint64_t, uint64_t> reserved_ranges_;  // start -> len, disjoint; sum == reserved_
  // Removes [start, +len) from reserved_ranges_ (splitting the containing range). REQUIRES: mu_.
  [[nodiscard]] Status take_reserved(uint64_t start, uint64_t len, const char* what);
  [[nodiscard]] Status add_pinned(uint64_t start, uint64_t len);
  bool is_reserved_locked(uint64_t start, uint64_t len) const;
  FreeSpace free_;
};

class BlockGroupCache {
 public:
  [[nodiscard]] Status add(std::unique_ptr<BlockGroup> bg);
  BlockGroup* find(uint64_t logical) const;
  // Groups whose type bits (DATA/METADATA/SYSTEM) equal `type`, in address order.
  std::vector<BlockGroup*> of_type(uint64_t type) const;
  std::vector<BlockGroup*> all() const;

 private:
  mutable std::shared_mutex mu_;
  std::map<uint64_t, std::unique_ptr<BlockGroup>> groups_;
};

}  // namespace ubtrfs::alloc
