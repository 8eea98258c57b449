// LogBlockAllocator implementation; see log_block_allocator.h for the rules.
#include "alloc/log_block_allocator.h"

#include "tree/format.h"

namespace ubtrfs::alloc {

Result<uint64_t> LogBlockAllocator::alloc_tree_block(TreeHandle&, uint64_t root_objectid, int level, uint64_t hint) {
  if (root_objectid != kTreeLogObjectid)
    return fail(EINVAL, "log block allocator asked for a block of root {} level {}", root_objectid, level);
  const uint64_t bytenr = UBTRFS_TRY(extents_.alloc_log_block(hint, usable_));
  std::lock_guard g(mu_);
  live_.insert(bytenr);
  ++allocated_total_;
  return bytenr;
}

void LogBlockAllocator::free_tree_block(TreeHandle&, uint64_t, uint64_t bytenr, uint64_t, bool written) {
  {
    std::lock_guard g(mu_);
    live_.erase(bytenr);
  }
  // Written: an fsync's superblock may reference the log holding it until the next commit.
  extents_.free_log_block(bytenr, written);
}

uint64_t LogBlockAllocator::release_all() {
  std::set<uint64_t> blocks;
  {
    std::lock_guard g(mu_);
    blocks.swap(live_);
  }
  for (uint64_t b : blocks) extents_.free_log_block(b, false);
  return blocks.size();
}

std::set<uint64_t> LogBlockAllocator::live() const {
  std::lock_guard g(mu_);
  return live_;
}

uint64_t LogBlockAllocator::blocks_allocated() const {
  std::lock_guard g(mu_);
  return allocated_total_;
}

}  // namespace ubtrfs::alloc
