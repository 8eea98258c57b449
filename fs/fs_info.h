// FsInfo: one opened filesystem — device, superblock copy, chunk map, buffer cache, every tree root,
// block groups, device space, delayed refs, the extent allocator and the transaction manager (btrfs
// `struct btrfs_fs_info`).
//
// Opening (open_fs) reads and validates everything it will depend on before anything can be
// written: superblock and feature gate, chunk tree, root tree, every global tree root, the block
// groups with their free space (from the free space tree) and the device extents. Any failure is an
// error with a precise message and leaves the image untouched (nothing is ever written by open_fs).
//
// Roots: the root tree and chunk tree are located by the superblock; every other tree (extent, dev,
// csum, free space, uuid, block group, fs trees / subvolumes) by its ROOT_ITEM in the root tree,
// kept here as a RootRecord whose item the commit rewrites when the tree's root block changed.
// Subvolume roots are loaded on first use (fs_root()).
// Thread safety: the pointers and the global roots are fixed after open; fs_root() is internally
// synchronized; `super` is read and written only by the committer (and open), which holds the
// transaction manager's commit exclusion.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "alloc/block_group.h"
#include "alloc/chunk_alloc.h"
#include "alloc/delayed_ref.h"
#include "alloc/extent_allocator.h"
#include "alloc/space_infos.h"
#include "fs/mount_options.h"
#include "io/block_device.h"
#include "io/shutdown_gate.h"
#include "io/status.h"
#include "io/write_behind.h"
#include "tree/buffer_cache.h"
#include "tree/chunk_map.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/tree_root.h"
#include "tree/tree_stats.h"
#include "tree/writeback.h"

namespace ubtrfs::fs {

class TransactionManager;
class ChunkCreator;
class FsSpaceFlusher;
class DelayedInodes;
class TreeLog;
class Qgroups;

// A tree with a ROOT_ITEM (btrfs `struct btrfs_root`): the in-memory root pointer plus the item.
struct RootRecord {
  std::unique_ptr<TreeRoot> tree;
  RootItem item{};       // as last read or committed; bytenr/level/generation refreshed at commit
  uint32_t item_size = sizeof(RootItem);  // on-disk size (kernel images may carry the legacy 239 bytes)
  uint64_t key_offset = 0;               // the ROOT_ITEM key's offset (a snapshot's creation transid)
  // Deleted and handed to the cleaner (fs/subvolume_cleaner.h): fs_root() refuses it (ESTALE), the
  // commit no longer writes its item. GUARDED_BY(FsInfo::fs_roots_mu_).
  bool dropped = false;
  // BTRFS_ROOT_SUBVOL_RDONLY of `item.flags`, readable by every operation without the commit's or
  // the subvolume code's exclusion (fs/subvolume.cpp check_subvol_writable); set at load and by
  // whoever changes the flag.
  std::atomic<bool> readonly{false};
  uint64_t objectid() const { return tree->objectid(); }
};

// The newest ROOT_ITEM of `objectid` in the root tree (a snapshot's key offset is its creation
// transid): its key, its body zero-padded to sizeof(RootItem) (kernel images may carry the legacy
// 239 bytes) and its on-disk size; nullopt when there is none. Errors: EUCLEAN (bad size), EIO.
struct FoundRootItem {
  Key key{};
  RootItem item{};
  uint32_t size = 0;
};
[[nodiscard]] Result<std::optional<FoundRootItem>> find_root_item(TreeRoot& root_tree, uint64_t objectid);

struct OpenOptions {
  std::string path;
  // When set, the filesystem lives on this device instead of opening `path` (which then only names
  // it in messages): the crash harness (tests/crash) mounts recording and overlay devices this way.
  // The device must be writable for a read-write open; it is shared, never closed by FsInfo.
  std::shared_ptr<io::BlockDevice> device;
  bool read_only = false;
  bool nologreplay = false;    // refuse read-write when the image has a log tree (mount_options.h)
  // The opener replays a log tree before anything else writes (Filesystem::mount sets it). Without
  // it a read-write open of an image with a log tree is refused (EROFS): a bare FsInfo would
  // allocate over the log's blocks and commit a superblock that still points at them.
  bool replays_log = false;
  uint64_t cache_bytes = 256ull << 20;
  bool cow_overwrite = false;  // fix 1
  bool wb_inhibit = true;      // fix 2
  bool wb_hold_recopied = true;  // fix 2's transaction scope (tree/tree_root.h TreeHandle::wb_hold_recopied)
  WritebackOptions writeback;  // the background writeback thread (tree/writeback.h)
  // File data extents go to the device through a write-behind queue (io/write_behind.h): the
  // delalloc flusher hands each filled buffer to a worker thread instead of writing it itself.
  bool write_behind = true;
};

class FsInfo {
 public:
  // Errors: EINVAL (not btrfs), EOPNOTSUPP (feature / profile / multi-device), EROFS (asked rw but
  // the image can only be read: log tree, unknown compat_ro, no free space tree), EUCLEAN (a corrupt
  // structure: message names bytenr/key), EBUSY (mounted elsewhere), EIO.
  [[nodiscard]] static Result<std::unique_ptr<FsInfo>> open(const OpenOptions& opts);
  ~FsInfo();
  FsInfo(const FsInfo&) = delete;
  FsInfo& operator=(const FsInfo&) = delete;

  bool read_only() const { return read_only_; }
  const FsParams& params() const { return params_; }
  io::BlockDevice& device() { return *dev_; }
  // The write-behind queue in front of the device (io/write_behind.h), or null (read-only, or
  // write_behind=off): file data is then written synchronously.
  io::WriteBehindDevice* write_behind() { return write_behind_; }
  ChunkMap& chunk_map() { return chunk_map_; }
  BufferCache& cache() { return *cache_; }
  // The background writeback thread (started at open for read-write filesystems when enabled;
  // null otherwise).
  WritebackThread* writeback() { return writeback_.get(); }
  // Stops background writeback (unmount, before the final commit). Idempotent.
  void stop_writeback();
  TreeStats& stats() { return stats_; }
  TreeContext& tree_ctx() { return *tctx_; }

  TreeRoot& root_tree() { return *root_tree_; }
  TreeRoot& chunk_tree() { return *chunk_tree_; }
  RootRecord& extent_root() { return *extent_root_; }
  RootRecord& dev_root() { return *dev_root_; }
  RootRecord& csum_root() { return *csum_root_; }
  RootRecord* free_space_root() { return fst_root_.get(); }     // null without the FST feature
  // A read-write open of an image without a free space tree: the mount's first commit builds it
  // (fs/free_space_tree_build.h) and installs it here, which also sets its compat_ro bits.
  // REQUIRES (install): the commit, no free space tree yet.
  bool free_space_tree_pending() const { return fst_pending_; }
  void install_free_space_root(std::unique_ptr<RootRecord> rec);
  RootRecord* block_group_root() { return bg_root_.get(); }     // null without BLOCK_GROUP_TREE
  RootRecord* uuid_root() { return uuid_root_.get(); }
  // The quota tree's bookkeeping on a read-write mount with quotas on (fs/qgroups.h); null
  // otherwise.
  Qgroups* qgroups() { return qgroups_.get(); }
  // The tree that holds BLOCK_GROUP_ITEMs: the block group tree if the feature is on, else extent.
  RootRecord& block_group_items_root() { return bg_root_ ? *bg_root_ : *extent_root_; }

  // A subvolume / the FS_TREE (5) by objectid, loaded on first use. Errors: ENOENT, EUCLEAN, EIO.
  [[nodiscard]] Result<RootRecord*> fs_root(uint64_t objectid);
  // Whether subvolume `objectid` is loaded (in use by this mount: the cleaner leaves it alone).
  bool root_loaded(uint64_t objectid);
  // The cleaner starts dropping a loaded dead root: from now on fs_root() answers ESTALE for it
  // (`dropped` false: it found the root in use after all and leaves it).
  void set_root_dropped(uint64_t objectid, bool dropped);
  // Tells the subvolume cleaner (fs/subvolume_cleaner.h) a subvolume was deleted; nothing when no
  // cleaner runs (read-only, FsInfo alone).
  void wake_cleaner();
  void set_cleaner_waker(std::function<void()> f);
  // Every loaded root with a ROOT_ITEM (global trees and loaded subvolumes), for the commit.
  std::vector<RootRecord*> loaded_roots();
  // A subvolume created in the running transaction (fs/subvolume.cpp), whose ROOT_ITEM the caller
  // has inserted: from now on fs_root() returns it and the commit rewrites its item when its root
  // block moves. REQUIRES: a handle of the running transaction held (so no commit runs meanwhile),
  // no record of that objectid loaded. Returns the record.
  RootRecord* add_fs_root(std::unique_ptr<RootRecord> rec);

  alloc::BlockGroupCache& block_groups() { return groups_; }
  // The reservation system: space_infos, block reserves, the reclaim thread (alloc/space_infos.h).
  alloc::SpaceInfos& spaces() { return *spaces_; }
  // btrfs_update_global_block_rsv with the sizes of the global trees as they are now.
  void update_global_rsv();
  // A new block group (load, chunk creation) joins its space_info.
  void attach_block_group(alloc::BlockGroup& bg);
  alloc::DeviceSpace& device_space() { return *dev_space_; }
  alloc::DelayedRefs& delayed_refs() { return delayed_refs_; }
  alloc::ExtentAllocator& allocator() { return *allocator_; }
  ChunkCreator& chunk_creator() { return *chunk_creator_; }
  TransactionManager& transactions() { return *txm_; }
  // The reclaim thread's flush actions (started at open for read-write filesystems).
  FsSpaceFlusher& space_flusher() { return *flusher_; }
  // The delayed inode items of the mounted Filesystem (null for an FsInfo alone: inode updates
  // then go straight to the tree). Set at mount, cleared before the Filesystem goes.
  DelayedInodes* delayed_inodes() const { return delayed_.load(std::memory_order_acquire); }
  void set_delayed_inodes(DelayedInodes* d) { delayed_.store(d, std::memory_order_release); }
  // The tree log of the mounted Filesystem (fs/tree_log.h; null when none: FsInfo alone, read-only,
  // or `notreelog`). Namespace and data operations stamp it with what they changed.
  TreeLog* tree_log() const { return tree_log_.load(std::memory_order_acquire); }
  void set_tree_log(TreeLog* l) { tree_log_.store(l, std::memory_order_release); }

  // The in-memory superblock: generation = last committed transaction. REQUIRES: commit exclusion
  // (TransactionManager) for writes; readers take super_mu().
  Superblock& super() { return super_; }
  std::mutex& super_mu() { return super_mu_; }
  // The superblock exactly as the last commit (or the mount) left it on disk. The in-memory one
  // above moves between commits (a chunk planned mid-transaction updates the device item and, for
  // a SYSTEM chunk, the sys_chunk_array); an fsync's log superblock must be the committed one plus
  // log_root (btrfs_sync_log copies fs_info->super_for_commit). REQUIRES: super_mu().
  const Superblock& committed_super() const { return committed_super_; }
  void set_committed_super(const Superblock& sb) { committed_super_ = sb; }

  // Read-write open of an image whose superblock has a log tree: Filesystem::mount replays it
  // (fs/tree_log_replay.h) before anything else may write.
  bool log_replay_pending() const { return log_replay_pending_; }
  void clear_log_replay_pending() { log_replay_pending_ = false; }

  bool cow_overwrite() const { return cow_overwrite_; }
  bool wb_inhibit() const { return wb_inhibit_; }
  bool wb_hold_recopied() const { return wb_inhibit_ && wb_hold_recopied_; }

  // The device path (messages).
  const std::string& path() const { return path_; }

  // ---- emergency shutdown (fs/shutdown.cpp; btrfs_force_shutdown, FS_IOC_GOINGDOWN) ----------
  // Shuts the device gate (io/shutdown_gate.h: returns when no write is in flight and none can
  // start), marks the filesystem shut down, stops background writeback and logs once, at warning
  // level, who did it (`who`: "pid 1234", "a test"). Idempotent: false if it was already shut down.
  bool force_shutdown(const std::string& who);
  bool is_shutdown() const { return shutdown_.load(std::memory_order_acquire); }
  // EIO naming `what` once shut down, success before: the first check of every operation that
  // the kernel refuses after a shutdown.
  [[nodiscard]] Status check_shutdown(std::string_view what) const;
  // The gate in front of the device (null only before open completes).
  io::ShutdownGate* shutdown_gate() { return gate_; }

 private:
  FsInfo() = default;
  [[nodiscard]] Status load(const OpenOptions& opts);
  [[nodiscard]] Status load_roots();
  [[nodiscard]] Status load_block_groups();
  [[nodiscard]] Status load_device_space();
  [[nodiscard]] Result<std::unique_ptr<RootRecord>> load_root_record(uint64_t objectid, bool required);
  template <class T>
  Result<T> with_path_r(Result<T> r);

  std::string path_;
  bool read_only_ = true;
  bool cow_overwrite_ = false, wb_inhibit_ = true, wb_hold_recopied_ = true;
  bool log_replay_pending_ = false;
  bool fst_pending_ = false;  // written at open and by the commit that builds the tree
  // An io::GatedDevice around the opened device, under an io::WriteBehindDevice when writable.
  std::shared_ptr<io::BlockDevice> dev_;
  io::ShutdownGate* gate_ = nullptr;      // dev_'s gate
  io::WriteBehindDevice* write_behind_ = nullptr;  // dev_ itself when it is the write-behind queue
  std::atomic<bool> shutdown_{false};
  std::mutex wb_stop_mu_;                 // stop_writeback() may race (shutdown vs unmount)
  Superblock super_{};
  Superblock committed_super_{};  // GUARDED_BY(super_mu_)
  std::mutex super_mu_;
  FsParams params_;
  ChunkMap chunk_map_;
  TreeStats stats_;
  std::unique_ptr<BufferCache> cache_;
  std::unique_ptr<WritebackThread> writeback_;
  std::unique_ptr<TreeContext> tctx_;
  std::unique_ptr<TreeRoot> root_tree_, chunk_tree_;
  std::unique_ptr<RootRecord> extent_root_, dev_root_, csum_root_, fst_root_, bg_root_, uuid_root_, quota_root_;
  std::unique_ptr<Qgroups> qgroups_;
  std::mutex fs_roots_mu_;
  std::map<uint64_t, std::unique_ptr<RootRecord>> fs_roots_;  // GUARDED_BY(fs_roots_mu_)
  std::mutex cleaner_mu_;
  std::function<void()> cleaner_waker_;  // GUARDED_BY(cleaner_mu_)
  std::unique_ptr<alloc::SpaceInfos> spaces_;  // before groups_: groups report to it
  alloc::BlockGroupCache groups_;
  std::unique_ptr<alloc::DeviceSpace> dev_space_;
  alloc::DelayedRefs delayed_refs_;
  std::unique_ptr<ChunkCreator> chunk_creator_;
  std::unique_ptr<alloc::ExtentAllocator> allocator_;
  std::unique_ptr<TransactionManager> txm_;
  std::unique_ptr<FsSpaceFlusher> flusher_;  // last: destroyed first, after the reclaim thread stopped
  std::atomic<DelayedInodes*> delayed_{nullptr};
  std::atomic<TreeLog*> tree_log_{nullptr};
};

}  // namespace ubtrfs::fs
