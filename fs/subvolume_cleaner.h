// SubvolumeCleaner: drops the trees of deleted subvolumes and snapshots in the background (btrfs
// `btrfs_drop_snapshot`, `btrfs_clean_one_deleted_snapshot`, the cleaner kthread).
//
// A deleted subvolume is a dead root: its ROOT_ITEM has refs 0 and an ORPHAN_ITEM
// (-5, ORPHAN_ITEM, id) in the root tree names it (the delete writes both; the kernel does the
// same, so a kernel-deleted, not yet cleaned subvolume is dropped here too). The cleaner walks the
// dead tree from its root in key order and gives back what only it referenced:
// - a child another tree also references (a snapshot shares it) only loses the dead tree's
//   reference; if the dead tree owned it with keyed references, those are first turned into
//   shared ones (FULL_BACKREF), so no surviving reference names the dead root;
// - an exclusive leaf loses its data references (data extents whose last reference goes are freed
//   with their checksums by the delayed-ref run) and is freed; an exclusive node is walked, then
//   freed.
// Steps: each step is one transaction handle that drops at most kStepBlocks blocks and records
// where it stopped in the ROOT_ITEM (drop_progress = the first key of the next child to drop in
// the node at drop_level; everything left of that path is gone), so each commit holds a
// consistent partial drop and a crash resumes at the next mount where the last commit left it.
// When the root block itself is freed, the ROOT_ITEM and the ORPHAN_ITEM go.
// Safety: nothing may COW into, or read from, a tree being dropped. A dead root this mount never
// loaded is dropped at once. One it loaded (a subvolume deleted in this session, or browsed
// before) is dropped only when the kernel holds none of its inodes (no open file, no cached
// dentry: the in-use check the Filesystem gives) and a commit has completed since that was first
// seen — that commit wrote its delayed items and delalloc; with no inode held none can appear.
// Until then it is looked at again every few seconds; an unmount leaves it to the next mount.
// Read-only mounts never start the cleaner.
// Thread safety: start/stop/wake from any thread; the drop runs on the cleaner's thread only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

class FsInfo;

class SubvolumeCleaner {
 public:
  // Blocks dropped per transaction handle.
  static constexpr uint64_t kStepBlocks = 256;

  explicit SubvolumeCleaner(FsInfo& fs) : fs_(fs) {}
  ~SubvolumeCleaner() { stop(); }
  SubvolumeCleaner(const SubvolumeCleaner&) = delete;
  SubvolumeCleaner& operator=(const SubvolumeCleaner&) = delete;

  // `in_use(id)`: whether the kernel still holds an inode of subvolume `id`. Set before start().
  void set_in_use_check(std::function<bool(uint64_t)> in_use) { in_use_ = std::move(in_use); }
  void start();
  // Finishes the step in progress and joins the thread (its work so far is committed by the next
  // commit; the rest resumes at the next mount).
  void stop();
  // A subvolume was deleted: look for dead roots again.
  void wake();

  // Dead roots (ORPHAN_ITEM in the root tree, ROOT_ITEM refs 0), in id order.
  [[nodiscard]] Result<std::vector<uint64_t>> dead_roots();
  // One step of dropping `id` (the caller holds no handle). Returns true when the root is gone.
  // `max_blocks` 0 = kStepBlocks. Errors: EUCLEAN (the trees disagree; the transaction is
  // aborted), EIO, ENOSPC.
  [[nodiscard]] Result<bool> drop_step(uint64_t id, uint64_t max_blocks = 0);
  // Drops every dead root not loaded by this mount, to the end. Returns how many were removed.
  [[nodiscard]] Result<uint64_t> run_until_idle();

  uint64_t blocks_dropped() const {
    std::lock_guard g(mu_);
    return blocks_dropped_;
  }

 private:
  void loop();
  // Whether dead root `id`, loaded by this mount, may be dropped now (see Safety).
  bool loaded_root_released(uint64_t id);

  FsInfo& fs_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;         // GUARDED_BY(mu_)
  bool woken_ = false;        // GUARDED_BY(mu_)
  uint64_t blocks_dropped_ = 0;  // GUARDED_BY(mu_)
  std::function<bool(uint64_t)> in_use_;
  // Loaded dead roots found unreferenced: the committed generation when first seen so (cleaner
  // thread only).
  std::map<uint64_t, uint64_t> released_at_;
  std::thread thread_;
};

}  // namespace ubtrfs::fs
