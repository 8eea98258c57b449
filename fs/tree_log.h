// TreeLog: fsync through the btrfs tree log (btrfs tree-log.c `btrfs_log_inode`,
// `btrfs_sync_log`; FORMAT.md §7.6; issue 9).
//
// Owns, for the running transaction: the log root tree (blocks owned by TREE_LOG -6, one ROOT_ITEM
// (-6, 132, subvolume id) per subvolume that has a log), each subvolume's log tree (owner -6), the
// allocator of their blocks (alloc/log_block_allocator.h: no extent items, no delayed refs), the
// per-inode record of what changed since the last commit and since the inode was last logged, and
// the fast-path counters.
//
// What sync_inode writes for a regular file (LOG_INODE_ALL): its INODE_ITEM (the newest one, through
// read_inode, never stale tree data), every INODE_REF / INODE_EXTREF and XATTR_ITEM, and for the file
// range R that changed since it was last logged, extended until no logged or tree extent item
// crosses its edges: every EXTENT_DATA item of the tree intersecting R, an explicit hole item
// (disk_bytenr 0) for each part of R below i_size that no extent covers (the kernel's replay drops
// the file's extents under each logged item, so a punch or a truncate-then-extend cannot resurrect
// old data), and the EXTENT_CSUM items of the data extents of this transaction. Items the log held
// for the inode are replaced, never left stale: replay applies items in key order, and a stale item
// of a later key would overwrite newer data.
//
// Durability order (btrfs_sync_log): the inode's data was written by its delalloc flush; every dirty
// log block is written (WB_SYNC_ALL, inhibitors ignored), the device flushed, then the last
// committed superblock with log_root/log_root_level set is written to the primary copy only and
// flushed. The next commit's superblock has log_root 0; after it the log's blocks are free
// (commit_release) and its buffers were forgotten before the commit's write-out (commit_forget).
//
// Falls back to a full commit (sync_inode returns a reason) where the log cannot express the state
// safely: not a regular file, no link left, a name of the inode removed in this transaction
// (unlink, rename of or over it: note_unlink), a parent directory created in this transaction (the
// log would have to create it), an extent in a block group the committed chunk tree does not map,
// any error or ENOSPC while logging (the log is then abandoned until the commit).
//
// Thread safety: note_* from any thread (mu_). sync_inode REQUIRES the inode's lock held
// exclusively and no TransHandle; it joins the running transaction (the commit waits for it) and
// then serializes log writers on log_mu_. commit_forget/commit_release run inside the commit with
// the gate closed (no sync_inode can be running: each holds a handle). Lock order: inode lock ->
// handle -> log_mu_ -> mu_.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "alloc/log_block_allocator.h"
#include "fs/inode.h"
#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FsInfo;

// Why an fsync was not served by the log (the counters name them).
enum class LogFallback : uint8_t {
  kNotRegular,      // directory, symlink, special file
  kNoLinks,         // nlink 0
  kUnlinkedName,    // a name of the inode, or of an inode in the log, was removed in this transaction
  kNewParent,       // a parent directory created in this transaction
  kUncommittedChunk,  // data or log blocks would need a chunk the committed chunk tree lacks
  kLogFailed,       // an error or ENOSPC while logging: the log is abandoned until the commit
  kTransaction,     // read-only, aborted, or no transaction could be joined
};
inline constexpr int kLogFallbackCount = 7;
const char* log_fallback_name(LogFallback f);

struct TreeLogStats {
  uint64_t synced = 0;           // fsyncs served by the log
  uint64_t items_logged = 0;     // items inserted into log trees
  uint64_t blocks_written = 0;   // log blocks written by fsyncs
  uint64_t logs_dropped = 0;     // logs dropped by a commit
  std::array<uint64_t, kLogFallbackCount> fallbacks{};
};

class TreeLog {
 public:
  // Whether the block group at `start` is in the last commit's trees (an extent in any other may
  // not be logged). Public for tests.
  bool committed_group(uint64_t start) const;
  explicit TreeLog(FsInfo& fs);
  ~TreeLog();
  TreeLog(const TreeLog&) = delete;
  TreeLog& operator=(const TreeLog&) = delete;

  // The file range [start, end) of `id` changed its extent items in transaction `transid` (writes
  // flushed, truncate, fallocate, punch): the next log of the inode must cover it.
  void note_change(InodeId id, uint64_t transid, uint64_t start, uint64_t end);
  // A name of `id` was removed in transaction `transid` (btrfs last_unlink_trans).
  void note_unlink(InodeId id, uint64_t transid);

  // Logs `id` and makes the log durable. Returns nullopt when the fsync is served (the inode's
  // data, metadata and names survive a crash from now on), else why a full commit is needed
  // (nothing durable was promised; the caller commits). REQUIRES: the inode's lock held
  // exclusively, its delalloc flushed, no TransHandle held.
  std::optional<LogFallback> sync_inode(InodeId id);

  // Commit hooks (TransactionManager::TreeLogHooks).
  bool active() const;
  void commit_forget();
  void commit_release(uint64_t committed_transid);

  TreeLogStats stats() const;
  // The logical address of the log root tree's root block written by the last sync (0: no log),
  // for tests.
  uint64_t log_root_bytenr() const;
  // Live log blocks (tests: they are freed by the commit).
  std::set<uint64_t> live_blocks() const { return alloc_.live(); }

 private:
  struct Change {
    uint64_t transid = 0;       // newest transaction that changed it
    uint64_t start = UINT64_MAX, end = 0;  // envelope of the changes not yet logged
    uint64_t unlink_trans = 0;  // btrfs last_unlink_trans
  };
  struct SubvolLog {
    std::unique_ptr<TreeRoot> tree;
  };
  // REQUIRES: log_mu_ held. The body of sync_inode once the checks passed.
  [[nodiscard]] Status log_inode(TreeHandle& lh, InodeId id, const InodeItem& ii, TreeRoot& fs_root,
                                 uint64_t start, uint64_t end);
  [[nodiscard]] Status write_log(TreeHandle& lh);
  void count_fallback(LogFallback f);
  void drop_log_locked();  // REQUIRES: log_mu_ held, gate closed or log abandoned

  FsInfo& fs_;
  alloc::LogBlockAllocator alloc_;

  std::mutex log_mu_;  // one log writer at a time; the log trees below are GUARDED_BY(log_mu_)
  uint64_t log_transid_ = 0;                 // transaction the log belongs to (0: none)
  std::unique_ptr<TreeRoot> log_root_tree_;  // GUARDED_BY(log_mu_)
  std::map<uint64_t, SubvolLog> subvol_logs_;  // GUARDED_BY(log_mu_)
  bool abandoned_ = false;                   // GUARDED_BY(log_mu_): a log write failed this transaction
  std::atomic<bool> active_{false};
  std::atomic<uint64_t> log_root_bytenr_{0};

  mutable std::mutex mu_;
  std::map<InodeId, Change> changes_;     // GUARDED_BY(mu_)
  // Inodes in the log of the running transaction, and whether one of them lost a name since it
  // was logged: replay would bring that name back (btrfs removes it from the log at unlink,
  // btrfs_del_inode_ref_in_log); ours is then stale and the next fsync commits instead.
  std::set<InodeId> logged_;              // GUARDED_BY(mu_)
  bool logged_name_removed_ = false;      // GUARDED_BY(mu_)
  // Every cached block group except the chunks still pending (fs/chunk_creator.h).
  std::set<uint64_t> committed_group_starts() const;
  std::set<uint64_t> committed_groups_;   // GUARDED_BY(mu_): block group starts at the last commit
  TreeLogStats stats_;                    // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::fs
