// ChunkCreator: creates chunks for the extent allocator (btrfs volumes.c `btrfs_create_chunk`,
// block-group.c `btrfs_make_block_group` + `btrfs_create_pending_block_groups`).
//
// Phase 1 (create_chunk, any thread, via alloc::ChunkSource): choose the profile (the one the
// filesystem already uses for that type: DUP or SINGLE), plan the stripes in DeviceSpace, add the
// mapping to the ChunkMap and an empty BlockGroup to the cache at once, so the allocator can use it
// in the running transaction; queue the chunk as pending.
// Phase 2 (insert_pending_items: the committer with the gate closed, or the delayed-ref runner): CHUNK_ITEM in the chunk tree,
// DEV_EXTENTs in the dev tree, the DEV_ITEM's bytes_used (chunk tree and superblock copy), the
// BLOCK_GROUP_ITEM, the group's free-space-tree entries, and for SYSTEM chunks the superblock's
// sys_chunk_array. Both phases happen in one transaction, so the commit writes all of it or none.
// Invariant: a pending chunk's in-memory group exists from phase 1 on; its items exist on disk only
// in commits that also hold every extent allocated from it. DEV_ITEM bytes_used in a commit = the
// sum of the DEV_EXTENTs in that commit's dev tree (dev_bytes_used(): pending chunks excluded).
// Thread safety: create_chunk is serialized by an internal mutex; insert_pending_items runs under
// the commit with no handle running.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <vector>

#include "alloc/extent_allocator.h"
#include "io/status.h"
#include "tree/chunk_map.h"

namespace ubtrfs::fs {

class FsInfo;

class ChunkCreator final : public alloc::ChunkSource {
 public:
  explicit ChunkCreator(FsInfo& fs) : fs_(fs) {}
  [[nodiscard]] Status create_chunk(uint64_t type, uint64_t min_bytes) override;

  bool has_pending() const;
  // The logical starts of the chunks planned but not yet in any commit's trees (their block groups
  // are in the cache already). The tree log may not log an extent in one of them.
  std::set<uint64_t> pending_starts() const;
  // Inserts the items of every pending chunk. `new_groups` receives their starts (their block group
  // items are then written by the commit's block-group pass). REQUIRES: the commit, or the
  // delayed-ref runner (TransactionManager::run_delayed_refs): the only writers of the chunk, dev
  // and block-group items and of the free space tree, never both at once.
  [[nodiscard]] Status insert_pending_items(TreeHandle& h, std::set<uint64_t>& new_groups);
  // The device bytes whose DEV_EXTENTs are in the dev tree (or being inserted by the running
  // insert_pending_items): DeviceSpace's allocated bytes less those of pending chunks. The DEV_ITEM's
  // bytes_used, chunk tree and superblock copy, is this figure (btrfs keeps device->bytes_used and
  // commit_bytes_used apart for the same reason): a chunk planned while a commit runs must not be
  // counted by that commit's superblock, whose dev tree does not hold its DEV_EXTENTs.
  uint64_t dev_bytes_used() const;
  // Holds chunk planning off (btrfs chunk_mutex): while the lock is held no DeviceSpace extent is
  // added or removed, so FITRIM can discard an unallocated hole without a new chunk landing in it
  // (fs/discard.cpp, btrfs_trim_free_extents).
  [[nodiscard]] std::unique_lock<std::mutex> lock_planning() { return std::unique_lock<std::mutex>(mu_); }

 private:
  uint64_t profile_for(uint64_t type) const;
  FsInfo& fs_;
  mutable std::mutex mu_;
  std::vector<ChunkMapping> pending_;  // GUARDED_BY(mu_)
  uint64_t pending_dev_bytes_ = 0;     // GUARDED_BY(mu_): device bytes of pending_'s stripes
};

}  // namespace ubtrfs::fs
