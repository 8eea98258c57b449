// NamespaceState: the in-memory side of names and inodes for one mount — the per-subvolume next
// inode objectid (btrfs `root->free_objectid`, btrfs_init_root_free_objectid), the per-directory
// next DIR_INDEX (btrfs `inode->index_cnt`, btrfs_inode_delayed_dir_index_count) and the FUSE
// lookup counts (fuse_lowlevel.h forget contract; the kernel's inode reference that keeps an
// unlinked-but-open inode alive until iput -> evict).
//
// Invariants: a counter, once seeded from the tree, only grows (objectids and indexes are never
// reused while mounted: FORMAT.md §4.3); a lookup count is never negative and its entry is erased
// at 0.
// Thread safety: every method is internally synchronized by mu_ (a leaf lock: nothing else is taken
// while it is held; seeding reads the tree before taking it).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <mutex>

#include "fs/fs_info.h"
#include "fs/inode.h"
#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FileData;

struct NamespaceState {
  NamespaceState(FsInfo& fs, const InodeNumbers& numbers, InodeLocks& locks, FileData& data)
      : fs(fs), numbers(numbers), locks(locks), data(data) {}

  FsInfo& fs;
  const InodeNumbers& numbers;
  InodeLocks& locks;
  FileData& data;
  // The VFS's s_vfs_rename_mutex: held by cross-directory renames around their subtree check and
  // changes. Lock order: rename_mu -> inode locks.
  std::mutex rename_mu;

  // btrfs_get_free_objectid: a fresh objectid of `root` (seeded from its highest objectid below
  // LAST_FREE_OBJECTID, at least 257). Errors: ENOSPC (objectids exhausted), tree errors.
  [[nodiscard]] Result<uint64_t> new_objectid(TreeRoot& root);
  // btrfs_set_inode_index: a fresh DIR_INDEX for directory `dir` (seeded from its highest index + 1,
  // at least 2). REQUIRES: the caller holds the directory's inode lock.
  [[nodiscard]] Result<uint64_t> new_dir_index(TreeRoot& root, uint64_t dir);
  // btrfs_get_dir_last_index: the highest DIR_INDEX handed out so far in `dir` (the counter - 1, or
  // the tree's highest when the counter is not seeded: then no index was handed out since), at
  // least 1 (an empty directory: "." and ".." only). REQUIRES: the caller holds the directory's
  // inode lock, shared at least (inserting indexes takes it exclusively).
  [[nodiscard]] Result<uint64_t> last_dir_index(TreeRoot& root, uint64_t dir);
  // The directory's counter is no longer needed (evicted).
  void forget_dir(InodeId dir);

  // Counts n kernel references to `id` and remembers the inode item's generation with them: every
  // entry reply carries it (file handles), and an inode the kernel holds cannot change generation,
  // so entry replies read it here instead of searching the tree once more.
  void add_lookup(InodeId id, uint64_t generation, uint64_t n = 1);
  // Subtracts n (clamped at 0); returns what remains.
  uint64_t drop_lookup(InodeId id, uint64_t n);
  uint64_t lookup_count(InodeId id);
  // The generation recorded by add_lookup while the kernel holds a reference; nullopt otherwise.
  std::optional<uint64_t> referenced_generation(InodeId id);
  // Whether the kernel holds any inode of subvolume `subvol` (a deleted subvolume is dropped only
  // once it holds none: fs/subvolume_cleaner.h).
  bool subvolume_referenced(uint64_t subvol);

 private:
  std::mutex mu_;
  std::map<uint64_t, uint64_t> next_objectid_;  // GUARDED_BY(mu_): subvol -> next free objectid
  std::map<InodeId, uint64_t> next_index_;      // GUARDED_BY(mu_): directory -> next DIR_INDEX
  struct Referenced {
    uint64_t count = 0;
    uint64_t generation = 0;
  };
  std::map<InodeId, Referenced> lookups_;  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::fs
