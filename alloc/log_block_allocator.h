// LogBlockAllocator: the tree-block allocator of the tree log (btrfs tree-log.c; FORMAT.md §7.6).
//
// Owns the set of live log blocks of the running transaction. Log blocks live in METADATA groups
// of the committed chunk tree but never get an extent item or a delayed ref (ExtentAllocator::
// alloc_log_block): the committed extent tree and free space tree count them free, and a kernel
// replaying the log pins them before it allocates anything.
//
// Rules:
// - a freed block that was never written is free at once; a written one stays pinned until the
//   commit (an fsync's superblock may point at the log it belonged to);
// - the commit that ends the transaction drops the whole log: release_all() after that commit's
//   superblock (log_root 0) is on disk returns every live block to free space.
// Thread safety: every method may be called concurrently (mu_ guards the live set); the log
// writer is single-threaded anyway (fs/tree_log.h).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <set>

#include "alloc/extent_allocator.h"
#include "tree/tree_block_allocator.h"

namespace ubtrfs::alloc {

class LogBlockAllocator final : public TreeBlockAllocator {
 public:
  // `usable`: which METADATA groups may hold log blocks (those the committed chunk tree maps).
  LogBlockAllocator(ExtentAllocator& extents, std::function<bool(const BlockGroup&)> usable)
      : extents_(extents), usable_(std::move(usable)) {}

  // REQUIRES: root_objectid == TREE_LOG (-6). Errors: ENOSPC, EINVAL.
  [[nodiscard]] Result<uint64_t> alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level,
                                                  uint64_t hint) override;
  void free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                       bool written) override;

  // The log is gone from disk (the commit's superblock has log_root 0): every live block is free.
  // Returns the blocks released.
  uint64_t release_all();
  // Live log blocks, in address order (the commit forgets their buffers).
  std::set<uint64_t> live() const;
  uint64_t blocks_allocated() const;

 private:
  ExtentAllocator& extents_;
  std::function<bool(const BlockGroup&)> usable_;
  mutable std::mutex mu_;
  std::set<uint64_t> live_;        // GUARDED_BY(mu_)
  uint64_t allocated_total_ = 0;   // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::alloc
