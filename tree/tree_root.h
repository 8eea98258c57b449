// Tree roots, the tree context and the per-handle COW context (btrfs `struct btrfs_root`'s node
// pointer and `struct btrfs_trans_handle`'s tree-facing part).
//
// TreeContext: what every tree operation needs — the filesystem parameters, the buffer cache, the
// stats. One per mounted filesystem; outlives every TreeRoot.
//
// TreeRoot: one B-tree. Owns the pointer to its root block, swapped only under `mu_` (the "small
// root lock" of ARCHITECTURE.md); a searcher takes the root block's tree lock and then checks the
// pointer is unchanged, retrying otherwise (btrfs `btrfs_lock_root_node`). NOT a lock per tree:
// `mu_` is held only to read or swap the pointer, never across a tree lock wait.
//
// TreeHandle: the per-handle COW context: the running transid, the allocator, the fix switches
// (ARCHITECTURE.md "COW and the two fixes") and fix 2's inhibit set. A handle is used by one thread
// at a time. end_handle() must run before the handle's transaction commits.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

#include "tree/buffer_cache.h"
#include "tree/extent_buffer.h"
#include "tree/fs_params.h"
#include "tree/inhibit_set.h"
#include "tree/tree_block_allocator.h"
#include "tree/tree_stats.h"

namespace ubtrfs {

struct TreeContext {
  const FsParams& fs;
  BufferCache& cache;
  TreeStats& stats;
};

class TreeRoot {
 public:
  TreeRoot(TreeContext& ctx, uint64_t objectid) : ctx_(ctx), objectid_(objectid) {}
  TreeRoot(const TreeRoot&) = delete;
  TreeRoot& operator=(const TreeRoot&) = delete;

  TreeContext& ctx() const { return ctx_; }
  uint64_t objectid() const { return objectid_; }

  // btrfs `btrfs_root_node`: a reference to the current root block (no tree lock taken).
  EbRef node() const {
    std::lock_guard g(mu_);
    return node_;
  }
  // REQUIRES: the old root block (if any) write-locked by the caller, `eb` initialised and
  // write-locked or not yet visible.
  void set_node(EbRef eb) {
    std::lock_guard g(mu_);
    node_ = std::move(eb);
  }
  bool is_node(const EbRef& eb) const {
    std::lock_guard g(mu_);
    return node_ == eb;
  }

  // btrfs BTRFS_ROOT_SHAREABLE: subvolume trees (the FS_TREE and ids 256..-256) may share blocks
  // with snapshots; no other tree ever does.
  bool shareable() const { return objectid_ == kFsTreeObjectid || (objectid_ >= kFirstFreeObjectid && objectid_ <= kLastFreeObjectid); }
  // The ROOT_ITEM's last_snapshot: the transid of the newest snapshot taken of (or as) this tree. A
  // block of a generation at or below it may be shared with another tree (btrfs_block_can_be_shared).
  // Set when the root is loaded and when a snapshot is taken (in the commit, no handle running).
  uint64_t last_snapshot() const { return last_snapshot_.load(std::memory_order_acquire); }
  void set_last_snapshot(uint64_t transid) { last_snapshot_.store(transid, std::memory_order_release); }
  // btrfs BTRFS_ROOT_FORCE_COW: set while a snapshot of this tree is being taken in a commit and
  // until that commit ends, so that every later change in that transaction COWs (the blocks of this
  // transaction are now shared with the snapshot, although they are of the running generation).
  bool force_cow() const { return force_cow_.load(std::memory_order_acquire); }
  void set_force_cow(bool on) { force_cow_.store(on, std::memory_order_release); }

  // Tests only: runs in next_leaf after the path was released and before the search for the leaf
  // after the old one, where another thread's insert can slip in
  // (a_leaf_crossing_never_passes_back_over_the_search_key, tests/tree/ctree_walk_race_test.cpp;
  // a_range_walk_checks_its_lower_bound, tests/fs/delayed_dir_index_test.cpp). Set before any
  // search of this tree runs.
  void set_next_leaf_unlocked_hook_for_test(std::function<void()> f) { next_leaf_unlocked_for_test_ = std::move(f); }
  const std::function<void()>& next_leaf_unlocked_hook_for_test() const { return next_leaf_unlocked_for_test_; }

 private:
  TreeContext& ctx_;
  const uint64_t objectid_;
  mutable std::mutex mu_;
  EbRef node_;  // GUARDED_BY(mu_)
  std::atomic<uint64_t> last_snapshot_{0};
  std::atomic<bool> force_cow_{false};
  std::function<void()> next_leaf_unlocked_for_test_;
};

struct TreeHandle {
  uint64_t transid = 0;
  TreeBlockAllocator* allocator = nullptr;
  // Fix 1 (cow_overwrite=on): a WRITTEN block born in this transaction is re-dirtied and modified in
  // place instead of COWed (KERNEL.md §7.2; ctree_cow.cpp says why ours is safe).
  bool cow_overwrite = false;
  // TEST ONLY: fix 1 without its guard (the in-flight write check), to show that the guard is what
  // keeps a background write from going out torn (tests/tree/cow_overwrite_race_test.cpp). Never set
  // by the daemon.
  bool cow_overwrite_unguarded_for_test = false;
  // Fix 2 (wb_inhibit=on): buffers this handle COWed or reused are skipped by WB_SYNC_NONE writeback
  // until end_handle() (or until the handle's 8-slot set reuses their slot).
  bool wb_inhibit = false;
  // Fix 2's transaction scope (wb_inhibit=on; not with wb_inhibit=handle, the patch's exact
  // semantics): a block this handle copies a second time in the transaction (background writeback
  // wrote the first copy between two handles, where no handle's inhibitor could hold it) is held
  // from background writeback until the commit (ExtentBuffer::kHeldForCommit). Why: in a daemon
  // whose handles live for one operation, almost every re-copy happens between handles, so the
  // handle-scoped inhibitor alone does not bound copies per transaction (issue 8's measurements:
  // 25-74 copies of one block); with the hold the bound is 2. Memory stays bounded: held blocks are
  // dirty metadata, and dirty metadata past half the cache budget asks for a commit.
  bool wb_hold_recopied = false;
  // Fix 2's inhibit set (btrfs `writeback_inhibited_ebs`, the inline 8-slot CLOCK version).
  InhibitSet inhibited;
  // Delayed-ref heads this handle queued (btrfs trans->delayed_ref_updates, which counts heads, not
  // references, since "only track ref_heads in delayed_ref_updates": a head runs once however many
  // references it gathered): the allocator counts them, the transaction layer charges their
  // reservation to the delayed-refs reserve at handle end.
  uint64_t delayed_ref_updates = 0;
  // Tells one handle's copies from another's in the per-handle copy count (tree_stats.h): a
  // process-wide sequence, never 0.
  uint64_t id = next_id();

  TreeHandle() = default;
  TreeHandle(TreeHandle&&) = default;
  TreeHandle& operator=(TreeHandle&&) = default;

  // btrfs `btrfs_inhibit_eb_writeback`. REQUIRES: eb locked by this thread. Returns what the set
  // did (nullopt when inhibition is off), for the stats.
  std::optional<InhibitSet::AddResult> inhibit_writeback(const EbRef& eb) {
    if (!wb_inhibit) return std::nullopt;
    return inhibited.add(eb);
  }
  // btrfs `btrfs_uninhibit_all_eb_writeback`: at handle end, before commit write-out, on abort.
  void end_handle() { inhibited.release_all(); }

 private:
  static uint64_t next_id() {
    static std::atomic<uint64_t> seq{0};
    return seq.fetch_add(1, std::memory_order_relaxed) + 1;
  }
};

}  // namespace ubtrfs
