// TreeLog::write_log: making a built log durable (btrfs `btrfs_sync_log`, FORMAT.md §7.6).
//
// Order, each step only after the previous one is on stable storage:
//  1. every dirty log block is written (WB_SYNC_ALL: waits for tree locks, ignores writeback
//     inhibitors), the device flushed — together with the file data the delalloc flush wrote;
//  2. the superblock of the last commit (same generation, roots and backup roots) with log_root
//     and log_root_level naming the log root tree is written to the primary copy only (the kernel
//     writes the mirrors only at commits: write_all_supers with max_mirrors 1), then flushed.
// A crash before 2 leaves the previous superblock: the previous log (whose written blocks are
// pinned until the commit) or none. The commit that ends the transaction writes every copy with
// log_root 0.
#include <cstring>

#include "fs/fs_info.h"
#include "fs/tree_log.h"
#include "tree/superblock.h"

namespace ubtrfs::fs {

Status TreeLog::write_log(TreeHandle&) {
  BufferCache& cache = fs_.cache();
  const uint64_t before = cache.counters().blocks_written;
  UBTRFS_TRY_STATUS(cache.write_dirty_if([](const ExtentBuffer& eb) { return eb.owner() == kTreeLogObjectid; }));
  const uint64_t written = cache.counters().blocks_written - before;
  io::BlockDevice& dev = fs_.device();
  UBTRFS_TRY_STATUS(dev.flush());

  EbRef root = log_root_tree_->node();
  Superblock sb;
  {
    std::lock_guard g(fs_.super_mu());
    // The last committed superblock as written (not the in-memory one, which a chunk planned
    // since has moved); no commit runs while a handle is held.
    sb = fs_.committed_super();
  }
  sb.log_root = root->start();
  sb.log_root_level = static_cast<uint8_t>(root->level());
  sb.log_root_transid = 0;  // never used (FORMAT.md §1.2)
  const uint64_t off = super_offset(0);
  sb.bytenr = off;
  csum_superblock(sb);
  UBTRFS_TRY_STATUS(dev.write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&sb), sizeof(sb))));
  UBTRFS_TRY_STATUS(dev.flush());
  log_root_bytenr_.store(root->start(), std::memory_order_release);
  std::lock_guard g(mu_);
  stats_.blocks_written += written;
  return {};
}

}  // namespace ubtrfs::fs
