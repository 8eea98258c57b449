// The commit pipeline (btrfs transaction.c `btrfs_commit_transaction`, KERNEL.md §4), in one place.
//
// With the gate closed and no handle running, in this order:
//  1. converge (commit_converge): repeat until nothing changes —
//     a. insert the items of chunks created in this transaction (ChunkCreator phase 2);
//     b. run every queued delayed ref into the extent tree; each extent item inserted moves its
//        bytes reserved -> used and out of the free space tree, each deleted one used -> pinned and
//        back into the free space tree (and deletes its data checksums);
//     c. write the BLOCK_GROUP_ITEM of every group whose used bytes changed;
//     d. write the ROOT_ITEM of every tree whose root block changed (btrfs commit_cowonly_roots /
//        commit_fs_roots).
//     Every step COWs tree blocks and so queues more refs; the loop ends when a pass changes
//     nothing (each block is COWed at most once per transaction unless written, so it terminates).
//  2. write every dirty tree block (WB_SYNC_ALL), flush the device;
//  3. superblock: new generation, root and chunk root, bytes_used, device bytes_used, a backup root
//     slot; written to every mirror, flushed;
//  4. unpin: extents freed in this transaction become free space (and, with -o discard, are queued
//     for the asynchronous discard: fs/discard.h); the next transaction opens.
// Any error aborts (transaction.cpp): no superblock is written, the disk keeps the last commit.
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <set>

#include "alloc/extent_allocator.h"
#include "alloc/extent_tree.h"
#include "alloc/space_infos.h"
#include "alloc/free_space_tree.h"
#include "fs/chunk_creator.h"
#include "fs/free_space_tree_build.h"
#include "fs/fs_info.h"
#include "fs/qgroups.h"
#include "fs/transaction.h"
#include "tree/ctree.h"
#include "tree/superblock.h"

namespace ubtrfs::fs {

namespace {

constexpr int kMaxConvergePasses = 1000;

std::atomic<bool> skip_tree_flush_for_test{false};  // TransactionManager::set_skip_tree_flush_for_test

// The space consequences of running delayed refs (alloc::ExtentSpace) for this filesystem.
class CommitSpace final : public alloc::ExtentSpace {
 public:
  CommitSpace(FsInfo& fs, std::set<uint64_t>& dirty_groups) : fs_(fs), dirty_groups_(dirty_groups) {
    if (fs.free_space_root()) fst_.emplace(*fs.free_space_root()->tree, fs.params());
  }

  Status extent_inserted(TreeHandle& h, uint64_t bytenr, uint64_t len, bool) override {
    auto* bg = UBTRFS_TRY(group(bytenr, len));
    UBTRFS_TRY_STATUS(bg->commit_reserved(bytenr, len));
    if (fst_) UBTRFS_TRY_STATUS(fst_->remove_range(h, bg->start(), bg->length(), bytenr, len));
    dirty_groups_.insert(bg->start());
    return {};
  }
  Status extent_deleted(TreeHandle& h, uint64_t bytenr, uint64_t len, bool is_data) override {
    auto* bg = UBTRFS_TRY(group(bytenr, len));
    UBTRFS_TRY_STATUS(bg->pin_extent(bytenr, len));
    if (fst_) UBTRFS_TRY_STATUS(fst_->add_range(h, bg->start(), bg->length(), bytenr, len));
    dirty_groups_.insert(bg->start());
    if (is_data) csum_deletes.emplace_back(bytenr, len);
    return {};
  }
  Status extent_cancelled(TreeHandle&, uint64_t bytenr, uint64_t len, bool is_data) override {
    // Tree blocks: the allocator released or pinned them when they were freed. Data: written and
    // checksummed, then dropped in the same transaction: pinned (its space must not be reused
    // before the checksums are gone) and its checksums deleted.
    if (!is_data) return {};
    auto* bg = UBTRFS_TRY(group(bytenr, len));
    UBTRFS_TRY_STATUS(bg->pin_reserved(bytenr, len));
    csum_deletes.emplace_back(bytenr, len);
    return {};
  }

  std::vector<std::pair<uint64_t, uint64_t>> csum_deletes;

 private:
  Result<alloc::BlockGroup*> group(uint64_t bytenr, uint64_t len) {
    auto* bg = fs_.block_groups().find(bytenr);
    if (!bg || bytenr + len > bg->start() + bg->length())
      return fail(EUCLEAN, "extent {} length {} is not inside one block group", bytenr, len);
    return bg;
  }
  FsInfo& fs_;
  std::set<uint64_t>& dirty_groups_;
  std::optional<alloc::FreeSpaceTree> fst_;
};

Status write_block_group_items(FsInfo& fs, TreeHandle& h, const std::set<uint64_t>& groups) {
  TreeRoot& tree = *fs.block_group_items_root().tree;
  for (uint64_t start : groups) {
    auto* bg = fs.block_groups().find(start);
    if (!bg) return fail(EUCLEAN, "dirty block group {} vanished", start);
    const auto u = bg->usage();
    BlockGroupItem item{};
    item.used = u.used;
    item.chunk_objectid = kFirstChunkTreeObjectid;
    item.flags = u.flags;
    UBTRFS_TRY_STATUS(overwrite_item_front(
        h, tree, Key{start, kBlockGroupItemKey, u.length},
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&item), sizeof(item))));
  }
  return {};
}

// Rewrites the ROOT_ITEM of every tree whose root block moved. Returns whether anything changed.
Result<bool> write_root_items(FsInfo& fs, TreeHandle& h) {
  bool changed = false;
  for (RootRecord* r : fs.loaded_roots()) {
    EbRef node = r->tree->node();
    const uint64_t bytenr = node->start();
    const uint64_t gen = node->generation();
    const uint8_t level = static_cast<uint8_t>(node->level());
    if (r->item.bytenr.get() == bytenr && r->item.level == level && r->item.generation.get() == gen) continue;
    RootItem item = r->item;
    item.bytenr = bytenr;
    item.level = level;
    item.generation = gen;
    if (r->item_size >= sizeof(RootItem)) item.generation_v2 = gen;
    UBTRFS_TRY_STATUS(overwrite_item_front(h, fs.root_tree(), Key{r->objectid(), kRootItemKey, r->key_offset},
                                     std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&item), r->item_size)));
    // Only the fields that changed: other threads read the record's other fields without the
    // commit's exclusion (the NOCOW check reads last_snapshot, the global reserve bytes_used), and
    // a whole-struct store raced them (TSan, the daemon's stress run with writeback at 1 %).
    r->item.bytenr = item.bytenr;
    r->item.level = item.level;
    r->item.generation = item.generation;
    if (r->item_size >= sizeof(RootItem)) r->item.generation_v2 = item.generation_v2;
    changed = true;
  }
  return changed;
}

}  // namespace

Status TransactionManager::run_refs(TreeHandle& h, std::vector<alloc::DelayedRefHead>& heads,
                                    std::set<uint64_t>& dirty_groups) {
  // The heads are the runner's until this returns, applied or not: lookups of their extents
  // (shared-block COWs, alloc/shared_refs.cpp) wait for that.
  struct FinishRun {
    alloc::DelayedRefs& refs;
    ~FinishRun() { refs.finish_run(); }
  } finish{fs_.delayed_refs()};
  CommitSpace space(fs_, dirty_groups);
  auto stats = alloc::run_delayed_refs(h, *fs_.extent_root().tree, fs_.params(), heads, space);
  if (!stats) return fail(stats.error());
  for (const auto& [bytenr, len] : space.csum_deletes) {
    if (!csum_deleter_) return fail(EUCLEAN, "data extent {} freed but no checksum deleter is registered", bytenr);
    UBTRFS_TRY_STATUS(csum_deleter_(h, bytenr, len));
  }
  return {};
}

Result<uint64_t> TransactionManager::run_delayed_refs(size_t max_heads) { return run_refs_now(max_heads, false); }

Result<uint64_t> TransactionManager::run_all_delayed_refs() {
  // A run in a young transaction copies extent-tree and free-space-tree blocks, queueing heads of
  // its own (unfunded: the run's join handle reserved nothing); only a run of those too — whose
  // changes land in blocks already copied — brings the reserve's size below what it holds, so that
  // its release frees bytes. Without it, on a nearly full metadata space a create's ticket found
  // nothing freed by the ref states and ended in a commit almost every time (one create per
  // commit in the last fifth of the ENOSPC suite's `files` scenario).
  constexpr int kMaxRunAllPasses = 4;
  uint64_t total = 0;
  for (int pass = 0; pass < kMaxRunAllPasses && !fs_.delayed_refs().empty(); ++pass) {
    const uint64_t ran = UBTRFS_TRY(run_refs_now(0, true));
    if (ran == 0) break;
    total += ran;
  }
  return total;
}

Result<uint64_t> TransactionManager::run_refs_now(size_t max_heads, bool unfunded_too) {
  // btrfs_run_delayed_refs from flush_space / the preemptive flusher: a join handle of the running
  // transaction (a commit waits for it), one runner at a time; the block groups whose usage changed
  // are remembered for the commit, which writes their items.
  // The handle first, then the runner lock: the commit closes its gate and waits for handles
  // before it takes the lock, so a runner waiting at the gate must not hold it.
  auto th = UBTRFS_TRY(join());
  std::lock_guard run_lk(refs_run_mu_);
  // As in the commit, the items of chunks created in this transaction go in first: a ref in a new
  // block group needs that group's free-space-tree entries. Only this runner and the commit (which
  // cannot run beside it) insert them.
  while (fs_.chunk_creator().has_pending())
    if (auto st = fs_.chunk_creator().insert_pending_items(th.tree(), refs_dirty_groups_); !st)
      return th.abort(st.error());
  // Only as many heads as the delayed-refs reserve holds a head's worst case for
  // (delayed_ref_bytes(1): an extent-tree and a free-space-tree path of BTRFS_MAX_LEVEL, both
  // split), so this run never copies a tree block the reserve has not paid for. Read under the
  // handle: no commit (which runs every head and empties the reserve) can come between. Heads
  // queued by join handles (the delalloc flusher, delayed-inode runs) reserve nothing when queued
  // (btrfs_join_transaction); their funding reaches the reserve when the inode's delalloc reserve
  // settles. Running them before that gives the tickets nothing back (the reserve is below its
  // size, so its release frees no bytes) and takes their copies straight from the space_info beside
  // every reservation — the overruns ubtrfs-cowbench counted right after commits. The commit runs
  // them instead, once funded. The kernel runs them regardless and lets the global reserve cover
  // the difference; here the global reserve stays for what cannot wait (unlink on a full device).
  // The full state (run_all_delayed_refs) is the exception, once the reserve holds a head's worst
  // case: a run's copies are a few blocks (measured: no overrun in 10,504 such runs of the ENOSPC
  // suite's `files` scenario), and without it the reserve's release frees nothing.
  alloc::SpaceInfos& sp = fs_.spaces();
  const uint64_t funded = sp.delayed_refs_rsv().reserved() / sp.delayed_ref_bytes(1);
  const size_t wanted = max_heads ? max_heads : SIZE_MAX;
  // run_all_delayed_refs: every head while the reserve can pay for a run's copies (one head's
  // worst case: an extent-tree and a free-space-tree path, both split).
  const size_t n = unfunded_too && funded > 0 ? wanted : static_cast<size_t>(std::min<uint64_t>(wanted, funded));
  auto heads = fs_.delayed_refs().take_some(n);
  // Deferred: the funding, not the queue, was the limit (heads queued meanwhile by running
  // handles after a short queue ran out do not count).
  if (n < wanted && heads.size() == n && !fs_.delayed_refs().empty())
    refs_runs_deferred_.fetch_add(1, std::memory_order_relaxed);
  if (heads.empty()) return uint64_t{0};
  if (auto st = run_refs(th.tree(), heads, refs_dirty_groups_); !st) return th.abort(st.error());
  th.end();
  // btrfs_delayed_refs_rsv_release: what the heads had reserved goes back.
  sp.release_block_rsv(sp.delayed_refs_rsv(), sp.delayed_ref_bytes(heads.size()));
  return static_cast<uint64_t>(heads.size());
}

Status TransactionManager::commit_converge(TreeHandle& h) {
  std::set<uint64_t> dirty_groups;
  {
    // Groups dirtied by refs run before the commit (run_delayed_refs); no runner can be running
    // now: it holds a handle and the gate is closed.
    std::lock_guard run_lk(refs_run_mu_);
    dirty_groups.swap(refs_dirty_groups_);
  }
  for (int pass = 0;; ++pass) {
    if (pass >= kMaxConvergePasses)
      return fail(EUCLEAN, "commit of transaction {} did not converge after {} passes", h.transid, pass);
    while (fs_.chunk_creator().has_pending())
      UBTRFS_TRY_STATUS(fs_.chunk_creator().insert_pending_items(h, dirty_groups));
    auto heads = fs_.delayed_refs().take_all();
    if (!heads.empty()) {
      UBTRFS_TRY_STATUS(run_refs(h, heads, dirty_groups));
      continue;
    }
    if (!dirty_groups.empty()) {
      UBTRFS_TRY_STATUS(write_block_group_items(fs_, h, dirty_groups));
      dirty_groups.clear();
      continue;
    }
    if (UBTRFS_TRY(write_root_items(fs_, h))) continue;
    return {};
  }
}

Status TransactionManager::write_super_and_unpin(uint64_t transid) {
  // Only chunks whose DEV_EXTENTs this commit holds: one planned since its items went in (a
  // flusher thread may plan one while the tree blocks are written) waits for the next commit.
  const uint64_t dev_used = fs_.chunk_creator().dev_bytes_used();
  Superblock& sb = fs_.super();
  std::lock_guard g(fs_.super_mu());
  const uint64_t old_gen = sb.generation.get();
  EbRef root = fs_.root_tree().node();
  EbRef chunk = fs_.chunk_tree().node();
  sb.generation = transid;
  sb.root = root->start();
  sb.root_level = static_cast<uint8_t>(root->level());
  sb.chunk_root = chunk->start();
  sb.chunk_root_level = static_cast<uint8_t>(chunk->level());
  sb.chunk_root_generation = chunk->generation();
  uint64_t used = 0;
  for (auto* bg : fs_.block_groups().all()) used += bg->usage().used;
  sb.bytes_used = used;
  sb.dev_item.bytes_used = dev_used;
  if (fs_.uuid_root() && sb.uuid_tree_generation.get() == old_gen) sb.uuid_tree_generation = transid;

  // Backup roots (btrfs backup_super_roots): overwrite the oldest slot.
  int slot = 0;
  for (int i = 1; i < kNumBackupRoots; ++i)
    if (sb.super_roots[i].tree_root_gen.get() < sb.super_roots[slot].tree_root_gen.get()) slot = i;
  RootBackup& b = sb.super_roots[slot];
  std::memset(&b, 0, sizeof(b));
  b.tree_root = root->start();
  b.tree_root_gen = root->generation();
  b.tree_root_level = static_cast<uint8_t>(root->level());
  b.chunk_root = chunk->start();
  b.chunk_root_gen = chunk->generation();
  b.chunk_root_level = static_cast<uint8_t>(chunk->level());
  auto fill = [](RootRecord& r, Le<uint64_t>& at, Le<uint64_t>& gen, uint8_t& level) {
    at = r.item.bytenr.get();
    gen = r.item.generation.get();
    level = r.item.level;
  };
  fill(fs_.extent_root(), b.extent_root, b.extent_root_gen, b.extent_root_level);
  fill(fs_.dev_root(), b.dev_root, b.dev_root_gen, b.dev_root_level);
  fill(fs_.csum_root(), b.csum_root, b.csum_root_gen, b.csum_root_level);
  if (auto fsr = fs_.fs_root(kFsTreeObjectid)) fill(**fsr, b.fs_root, b.fs_root_gen, b.fs_root_level);
  b.total_bytes = sb.total_bytes.get();
  b.bytes_used = used;
  b.num_devices = sb.num_devices.get();

  UBTRFS_TRY_STATUS(write_superblocks(fs_.device(), sb));
  fs_.set_committed_super(sb);
  fs_.cache().set_super_generation(transid);
  std::vector<std::pair<uint64_t, uint64_t>> unpinned;
  for (auto* bg : fs_.block_groups().all()) bg->unpin_all(unpin_hook_ ? &unpinned : nullptr);
  if (unpin_hook_ && !unpinned.empty()) unpin_hook_(std::move(unpinned));
  return {};
}

void TransactionManager::release_commit_reservations() {
  // Every delayed ref of the transaction ran and every pending chunk's items are in: their reserves
  // hold nothing the next transaction needs (btrfs releases them per ref head / chunk). The global
  // reserve is resized to the trees as they are now and topped up.
  alloc::SpaceInfos& sp = fs_.spaces();
  sp.release_block_rsv(sp.delayed_refs_rsv(), UINT64_MAX);
  sp.release_block_rsv(sp.chunk_rsv(), UINT64_MAX);
  sp.release_block_rsv(sp.trans_rsv(), 0);
  fs_.update_global_rsv();
}

void TransactionManager::set_unpin_hook(UnpinHook f) { unpin_hook_ = std::move(f); }

void TransactionManager::set_skip_tree_flush_for_test(bool on) {
  skip_tree_flush_for_test.store(on, std::memory_order_relaxed);
}

void TransactionManager::add_pending(PendingWork w) {
  std::lock_guard lk(mu_);
  pending_.push_back(std::move(w));
}

Status TransactionManager::commit_locked() {
  const uint64_t transid = running_transid();
  const bool hook_work = commit_hook_ && commit_hook_pending_ && commit_hook_pending_();
  const bool log_live = log_hooks_.active && log_hooks_.active();
  // Pending work (snapshots) belongs to this commit: its `done` hears how the commit ended.
  std::vector<PendingWork> pending;
  {
    // Work whose inputs went into a later transaction than this one waits for that commit.
    std::lock_guard lk(mu_);
    std::vector<PendingWork> later;
    for (auto& w : pending_) (w.min_transid <= transid ? pending : later).push_back(std::move(w));
    pending_.swap(later);
  }
  struct TellPending {
    std::vector<PendingWork>& work;
    Status result = fail(EIO, "the commit failed before its pending work was committed");
    ~TellPending() {
      for (auto& w : work)
        if (w.done) w.done(result);
    }
  } tell{pending};
  if (fs_.cache().nr_dirty() == 0 && fs_.delayed_refs().empty() && !fs_.chunk_creator().has_pending() && !hook_work &&
      !log_live && pending.empty() && !fs_.free_space_tree_pending()) {
    release_commit_reservations();
    return {};
  }
  // The committer's own allocations are charged per tree (global, delayed refs, chunk reserves;
  // subvolume trees through the fallback chain): it reserved nothing itself (btrfs commits with the
  // handle of its caller, whose reservation was released first).
  // No background writeback from here to the commit's own write-out (BufferCache::pause_background).
  BufferCache::BackgroundPause no_background_writeback(fs_.cache());
  // The tree log of this transaction (fs/tree_log.h) dies with it: its buffers are forgotten before
  // the write-out (no fsync runs: each holds a handle, and the gate is closed), its blocks freed
  // after the superblock below, which has log_root 0 (btrfs free_log_tree after the commit).
  if (log_hooks_.forget) log_hooks_.forget();
  alloc::HandleAllocator commit_alloc(fs_.allocator(), fs_.spaces(), fs_.params().nodesize);
  TreeHandle h;
  h.transid = transid;
  h.allocator = &commit_alloc;
  h.cow_overwrite = fs_.cow_overwrite();
  h.wb_inhibit = false;
  // Delayed inode items first (btrfs_run_delayed_items in the commit, charged to the delayed-items
  // reserve), then the refs they queued.
  if (commit_hook_) {
    commit_alloc.block_rsv = &fs_.spaces().delayed_block_rsv();
    commit_alloc.handle_share = UINT64_MAX;
    UBTRFS_TRY_STATUS(commit_hook_(h));
    commit_alloc.block_rsv = nullptr;
  }
  // Pending snapshots (btrfs create_pending_snapshots), now that the delayed items are in the trees.
  for (auto& w : pending) UBTRFS_TRY_STATUS(w.run(h));
  // The quota tree's status (and, the first time, its counters: fs/qgroups.h) names this
  // transaction (btrfs_run_qgroups).
  if (Qgroups* q = fs_.qgroups()) UBTRFS_TRY_STATUS(q->stamp_commit(h));
  // An image opened without a free space tree gets one in the commit the mount makes for it
  // (fs/free_space_tree_build.h).
  if (fs_.free_space_tree_pending()) UBTRFS_TRY_STATUS(build_free_space_tree(fs_, h));
  // Every commit COWs the root tree (btrfs commit_cowonly_roots): the superblock it writes names
  // the root tree's root with this transaction's generation, and the kernel and our reader verify
  // the block against it. A root item changes in most commits anyway; one that only ends a tree log
  // (or only changes the superblock) would otherwise write a generation-N superblock over an older
  // root block: "parent transid verify failed ... wanted N found N-1" after a crash there.
  if (fs_.root_tree().node()->generation() != transid) {
    Path path;
    auto r = search_slot(&h, fs_.root_tree(), Key{kFsTreeObjectid, kRootItemKey, 0}, path, 0, true);
    if (!r) return fail(r.error());
  }
  UBTRFS_TRY_STATUS(commit_converge(h));
  // A tree block free that failed inside a B-tree operation (it cannot return errors) aborts here,
  // before anything is written (btrfs aborts the transaction at the same point).
  UBTRFS_TRY_STATUS(fs_.allocator().deferred_status());
  const uint64_t dirty_before = fs_.cache().nr_dirty();
  UBTRFS_TRY_STATUS(fs_.cache().write_dirty());
  if (!skip_tree_flush_for_test.load(std::memory_order_relaxed)) UBTRFS_TRY_STATUS(fs_.device().flush());
  UBTRFS_TRY_STATUS(write_super_and_unpin(transid));
  if (log_hooks_.release) log_hooks_.release(transid);
  release_commit_reservations();
  {
    std::lock_guard lk(mu_);
    transid_ = transid + 1;
    stats_.last_transid = transid;
    stats_.blocks_written += dirty_before;
  }
  spdlog::debug("{}: committed transaction {} ({} tree blocks written)", fs_.path(), transid, dirty_before);
  tell.result = {};
  return {};
}

}  // namespace ubtrfs::fs
