// Inodes: FUSE inode numbers, INODE_ITEM read/update, per-inode locks, time stamps (btrfs inode.c's
// btrfs_iget / btrfs_update_inode; ARCHITECTURE.md "fs/").
//
// Inode numbers (issue 3: "derive from (subvolume, objectid), stable across mounts"): in the mounted
// subvolume S, objectid 256 (its root directory) is FUSE_ROOT_ID 1 and any other objectid x is x
// itself; an inode of another subvolume T (reached through a subvolume directory entry) is
// (T << 48) | x. objectids stay below 2^48 (btrfs allocates them from 256 upwards).
//
// Locks: one reader/writer lock per inode, created on demand and dropped when unused. Operations
// that lock several inodes (rename: up to four; link; unlink) lock them in InodeId order, so two
// operations can never wait on each other in a cycle. Data operations take the inode's lock
// exclusive to modify, shared to read. The commit never takes inode locks after closing its gate,
// so holding an inode lock while starting a handle cannot deadlock with a commit; but commit()
// and fsync must never be called with an inode lock held (the delalloc flusher takes them).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <ctime>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

#include "fs/transaction.h"
#include "io/status.h"
#include "tree/format.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FsInfo;

struct InodeId {
  uint64_t subvol = 0;    // tree objectid (5 = FS_TREE, 256.. subvolumes)
  uint64_t objectid = 0;  // inode number inside the tree
  auto operator<=>(const InodeId&) const = default;
};

class InodeNumbers {
 public:
  explicit InodeNumbers(uint64_t mounted_subvol) : mounted_(mounted_subvol) {}
  uint64_t mounted_subvol() const { return mounted_; }
  uint64_t to_fuse(InodeId id) const;
  // Errors: ENOENT for numbers no inode can have (0, objectid bits out of range).
  [[nodiscard]] Result<InodeId> from_fuse(uint64_t ino) const;

 private:
  uint64_t mounted_;
};

// Per-inode reader/writer locks, created on demand.
class InodeLocks {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(Guard&&) noexcept = default;
    Guard& operator=(Guard&&) noexcept = default;
    ~Guard() { release(); }
    void release();

   private:
    friend class InodeLocks;
    InodeLocks* owner_ = nullptr;
    std::vector<std::pair<InodeId, bool>> held_;  // (inode, exclusive), in lock order
  };
  // Locks every distinct inode of `ids` exclusively, in InodeId order.
  Guard lock(std::vector<InodeId> ids);
  // Locks `id` exclusively if that is possible within `patience` (0: one attempt); nullopt if the
  // lock stayed busy. For flushers that must never wait on a lock a ticket waiter may hold.
  std::optional<Guard> try_lock(InodeId id, std::chrono::milliseconds patience);
  Guard lock_shared(InodeId id);

 private:
  struct Entry {
    std::shared_mutex mu;
    unsigned users = 0;  // GUARDED_BY(InodeLocks::mu_)
  };
  std::shared_mutex& acquire(InodeId id);
  void drop(InodeId id);
  std::mutex mu_;
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, std::unique_ptr<Entry>>> entries_;  // subvol -> objectid
};

// The current time as a btrfs Timespec and as a timespec.
Timespec now_btrfs();
Timespec to_btrfs(const struct timespec& t);
struct timespec from_btrfs(const Timespec& t);

// btrfs BTRFS_EMPTY_SUBVOL_DIR_OBJECTID: the stand-in directory a subvolume entry leads to when the
// subvolume does not live there — an entry a snapshot inherited from its source names a subvolume
// whose ROOT_REF points at the source's directory (btrfs fixup_tree_root_location, new_simple_dir).
// It is empty, 040755, owned by root, and nothing can be created in it; read_inode returns it for
// this objectid in any subvolume tree (no real inode has it: inode objectids start at 256).
inline constexpr uint64_t kEmptySubvolDirObjectid = 2;

// The INODE_ITEM of `objectid` in `root` as the filesystem sees it: the pending delayed item
// (fs/delayed_inode.h) if there is one, else the tree's. Errors: ENOENT (no such inode), EUCLEAN
// (bad item size, message names the key), EIO.
[[nodiscard]] Result<InodeItem> read_inode(FsInfo& fs, TreeRoot& root, uint64_t objectid);
// btrfs_update_inode: the new INODE_ITEM, delayed (fs/delayed_inode.h) when the filesystem has
// delayed inodes, else written at once; sequence+1, transid = the transaction that writes it.
// Errors: ENOENT (no item), ENOSPC (no reservation for the delayed item), tree errors.
[[nodiscard]] Status update_inode(TransHandle& th, TreeRoot& root, uint64_t objectid, const InodeItem& item);
// Inserts a new INODE_ITEM. Errors: EEXIST, tree errors.
[[nodiscard]] Status insert_inode(TransHandle& th, TreeRoot& root, uint64_t objectid, const InodeItem& item);

// The tree's own INODE_ITEM, ignoring anything delayed (the delayed-item runner, tools, tests).
[[nodiscard]] Result<InodeItem> read_inode_item(TreeRoot& root, uint64_t objectid);
// Overwrites the INODE_ITEM in the tree as given, with transid = h.transid (the delayed-item runner).
[[nodiscard]] Status update_inode_item(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item);
// The same on a bare TreeHandle with sequence+1 (unit tests over in-memory trees call these).
[[nodiscard]] Status update_inode(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item);
[[nodiscard]] Status insert_inode(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item);

// Device numbers as btrfs stores them in INODE_ITEM.rdev: the kernel's internal dev_t,
// (major << 20) | minor (FORMAT.md §3.3), not glibc's encoding.
uint64_t encode_rdev(dev_t dev);
dev_t decode_rdev(uint64_t rdev);

// struct stat of an inode (st_ino already in FUSE numbering, st_dev left 0; blocks = nbytes/512
// plus `extra_bytes` (delalloc not yet on disk)).
struct stat inode_to_stat(const InodeItem& ii, uint64_t fuse_ino, uint32_t blksize, uint64_t extra_bytes = 0);

}  // namespace ubtrfs::fs
