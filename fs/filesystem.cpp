// Filesystem: mount, unmount, statfs and stats of one mounted subvolume; see filesystem.h. The POSIX
// operations live in filesystem_ns.cpp, create_inode.cpp, rename.cpp, readdir.cpp (names, inodes,
// xattrs) and filesystem_data.cpp (contents).
#include "fs/filesystem.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "fs/delayed_inode.h"
#include "fs/delayed_iput.h"
#include "fs/discard.h"
#include "fs/file_data.h"
#include "fs/namespace_state.h"
#include "fs/scrub.h"
#include "fs/subvolume_cleaner.h"
#include "fs/space_flusher.h"
#include "fs/tree_log.h"
#include "fs/transaction.h"
#include "fs/tree_log_replay.h"
#include "io/checksum.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

// The subvolume a DIR_ITEM named `name` in directory `dir` of `tree` points to, if it is one
// (location key type ROOT_ITEM), or the inode it names otherwise.
struct DirTarget {
  Key location;
};

Result<std::optional<DirTarget>> find_dir_item(TreeRoot& tree, uint64_t dir, std::string_view name) {
  auto body = lookup_item(tree, Key{dir, kDirItemKey, io::name_hash(name)});
  if (!body) return fail(body.error());
  if (!*body) return std::optional<DirTarget>();
  const auto& b = **body;
  size_t off = 0;
  while (off + sizeof(DirItem) <= b.size()) {
    const auto di = load<DirItem>(b.data() + off);
    const size_t len = sizeof(DirItem) + di.name_len + di.data_len;
    if (off + len > b.size()) break;
    std::string_view n(reinterpret_cast<const char*>(b.data() + off + sizeof(DirItem)), di.name_len);
    if (n == name) return std::optional<DirTarget>(DirTarget{di.location.cpu()});
    off += len;
  }
  return std::optional<DirTarget>();
}

// subvol=PATH: walks PATH from the top-level subvolume (5); the end must be a subvolume root.
Result<uint64_t> resolve_subvol_path(FsInfo& fs, const std::string& path) {
  uint64_t subvol = kFsTreeObjectid, dir = kFirstFreeObjectid;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    std::string_view comp(path.data() + pos, end - pos);
    pos = end + 1;
    if (comp.empty() || comp == ".") continue;
    auto* root = UBTRFS_TRY(fs.fs_root(subvol));
    auto t = UBTRFS_TRY(find_dir_item(*root->tree, dir, comp));
    if (!t) return fail(ENOENT, "subvol={}: '{}' not found", path, comp);
    if (t->location.type == kRootItemKey) {
      subvol = t->location.objectid;
      dir = kFirstFreeObjectid;
    } else {
      dir = t->location.objectid;
    }
  }
  if (dir != kFirstFreeObjectid) return fail(EINVAL, "subvol={}: not a subvolume", path);
  return subvol;
}

// The default subvolume (`btrfs subvolume set-default`): DIR_ITEM "default" in the root tree dir.
Result<uint64_t> default_subvol(FsInfo& fs) {
  auto t = UBTRFS_TRY(find_dir_item(fs.root_tree(), kRootTreeDirObjectid, "default"));
  if (!t || t->location.objectid == 0) return kFsTreeObjectid;
  return t->location.objectid;
}

}  // namespace

Filesystem::Filesystem(std::unique_ptr<FsInfo> fs, uint64_t subvol)
    : fs_(std::move(fs)), numbers_(subvol) {
  delayed_ = std::make_unique<DelayedInodes>(*fs_, locks_);
  discard_counters_ = std::make_unique<DiscardCounters>();
  scrub_ = std::make_unique<Scrub>(*fs_);
  data_ = std::make_unique<FileData>(*fs_, numbers_, locks_);
  ns_ = std::make_unique<NamespaceState>(*fs_, numbers_, locks_, *data_);
  fs_->set_delayed_inodes(delayed_.get());
  fs_->space_flusher().set_file_data(data_.get());
  // Delayed items: written by every commit (gate closed: no locks needed) and by the reclaim
  // thread's FLUSH_DELAYED_ITEMS states (a join charged to the delayed-items reserve, taking each
  // inode's lock without waiting).
  DelayedInodes* d = delayed_.get();
  FsInfo* info = fs_.get();
  fs_->transactions().set_commit_hook(
      [d](TreeHandle& h) -> Status {
        UBTRFS_TRY(d->run(h, 0, false));
        return {};
      },
      [d] { return !d->empty(); });
  // The reclaim thread leaves the inode updates of files with unwritten data alone: their writers
  // update them again at the next write and would at once need the reservation the run gave back
  // (with many writers every ticket then ran delayed items and every write queued a ticket for
  // it); the delalloc flush or the commit writes them.
  FileData* data = data_.get();
  fs_->space_flusher().set_delayed_items_runner([d, info, data](uint64_t max_nodes) -> Result<uint64_t> {
    if (d->empty()) return uint64_t{0};
    auto th = UBTRFS_TRY(info->transactions().join(&info->spaces().delayed_block_rsv()));
    auto r = d->run(th.tree(), max_nodes == 0 ? 0 : max_nodes, true,
                    [data](InodeId id) { return data->pending_bytes(id) > 0; });
    if (!r) return th.abort(r.error());
    return *r;
  });
}

Filesystem::~Filesystem() {
  if (!unmounted_) {
    auto st = unmount();
    if (!st) spdlog::error("{}: unmount: {}", fs_->path(), st.error().message);
  }
  if (delayed_iputs_) delayed_iputs_->stop();
  // The reclaim thread calls into data_ through the flusher: it stops before data_ goes.
  fs_->spaces().stop_reclaim();
  fs_->space_flusher().set_file_data(nullptr);
  fs_->space_flusher().set_delayed_items_runner(nullptr);
  fs_->space_flusher().set_delayed_iputs_runner(nullptr);
  fs_->transactions().set_commit_hook(nullptr, nullptr);
  fs_->transactions().set_tree_log_hooks({});
  fs_->transactions().set_unpin_hook(nullptr);
  async_discard_.reset();  // stops the worker (unmount already drained it)
  fs_->set_tree_log(nullptr);
  fs_->set_delayed_inodes(nullptr);
}

Result<std::unique_ptr<Filesystem>> Filesystem::mount(const OpenOptions& open, const MountOptions& opts) {
  OpenOptions with_replay = open;
  with_replay.replays_log = true;  // replay_log_trees below, before anything else writes
  auto fs = UBTRFS_TRY(FsInfo::open(with_replay));
  uint64_t subvol = 0;
  if (opts.subvolid) {
    subvol = *opts.subvolid;
  } else if (opts.subvol) {
    subvol = UBTRFS_TRY(resolve_subvol_path(*fs, *opts.subvol));
  } else {
    subvol = UBTRFS_TRY(default_subvol(*fs));
  }
  if (auto r = fs->fs_root(subvol); !r) return fail(r.error().err, "cannot mount subvolume {}: {}", subvol, r.error().message);
  if (opts.subvolid && opts.subvol) {
    auto by_path = UBTRFS_TRY(resolve_subvol_path(*fs, *opts.subvol));
    if (by_path != *opts.subvolid)
      return fail(EINVAL, "subvol={} is subvolume {} but subvolid={}", *opts.subvol, by_path, *opts.subvolid);
  }
  std::unique_ptr<Filesystem> f(new Filesystem(std::move(fs), subvol));
  f->atime_ = opts.atime;
  f->nodiratime_ = opts.nodiratime;
  FileData* data = f->data_.get();
  data->set_compress_options(opts.compress);
  if (opts.compress.type != kCompressNone) spdlog::info("{}: use {} compression", open.path, compress_option_string(opts.compress));
  auto& txm = f->fs_->transactions();
  // Only the unmount commit may wait for inode locks: any other commit can be run by the reclaim
  // thread on behalf of a ticket whose waiter holds one (file_data.h "Locking").
  txm.set_pre_commit_flusher([data](CommitCause c) { return data->flush_all(c == CommitCause::kUnmount); });
  txm.set_csum_deleter([data](TreeHandle& h, uint64_t bytenr, uint64_t len) { return data->delete_csums(h, bytenr, len); });
  if (!f->read_only() && !opts.notreelog) {
    // fsync's fast path (fs/tree_log.h); the commit drops the log of the transaction it ends.
    f->log_ = std::make_unique<TreeLog>(*f->fs_);
    TreeLog* log = f->log_.get();
    txm.set_tree_log_hooks({[log] { return log->active(); }, [log] { log->commit_forget(); },
                            [log](uint64_t transid) { log->commit_release(transid); }});
    f->fs_->set_tree_log(log);
  }
  if (!f->read_only()) {
    // A log tree left by an fsync before a crash is replayed (and committed without the log)
    // before anything else may write, as btrfs does in open_ctree before orphan cleanup.
    if (f->fs_->log_replay_pending()) {
      auto r = replay_log_trees(*f->fs_);
      if (!r) {
        f->unmounted_ = true;  // the replay aborted its transaction: the image keeps its log
        return fail(r.error().err, "{}: log tree replay failed: {}", open.path, r.error().message);
      }
    }
    auto st = f->cleanup_orphans();
    if (!st) {
      f->unmounted_ = true;  // nothing to commit: fail before anything reached the disk
      return fail(st.error().err, "{}: orphan cleanup: {}", open.path, st.error().message);
    }
    // An image without a free space tree gets one now, in a commit of its own, as the kernel
    // builds it at a read-write mount (btrfs_create_free_space_tree; fs/free_space_tree_build.h):
    // a failure then refuses the mount and leaves the image as it was, where a build in a later
    // commit would abort that commit with acknowledged writes in it.
    if (f->fs_->free_space_tree_pending()) {
      auto built = txm.commit(CommitCause::kOther);
      if (!built) {
        f->unmounted_ = true;
        return fail(built.error().err, "{}: building the free space tree: {}", open.path, built.error().message);
      }
    }
    // Delayed iputs: inodes whose last FORGET came are evicted in batches by a worker, and by the
    // RUN_DELAYED_IPUTS flush state when space is short.
    Filesystem* self = f.get();
    f->delayed_iputs_ =
        std::make_unique<DelayedIputs>([self](std::vector<InodeId> ids) { return self->evict_batch(std::move(ids)); });
    DelayedIputs* di = f->delayed_iputs_.get();
    f->fs_->space_flusher().set_delayed_iputs_runner([di]() -> Result<size_t> { return di->run_all(); });
    if (opts.discard) {
      // -o discard: what each commit unpins is discarded shortly after (fs/discard.h).
      f->async_discard_ = std::make_unique<AsyncDiscard>(*f->fs_, kAsyncDiscardDelay, *f->discard_counters_);
      AsyncDiscard* ad = f->async_discard_.get();
      txm.set_unpin_hook([ad](std::vector<std::pair<uint64_t, uint64_t>>&& r) { ad->queue(std::move(r)); });
    }
    txm.start_commit_thread(std::chrono::seconds(opts.commit_interval_s));
    // Subvolume ids continue above every ROOT_ITEM there is now, dead ones included, before the
    // cleaner can remove any (btrfs_init_root_free_objectid at mount; fs/subvolume.cpp).
    UBTRFS_TRY_STATUS(f->seed_subvolume_ids());
    // Deleted subvolumes are dropped in the background, including those a crash or the kernel left.
    f->cleaner_ = std::make_unique<SubvolumeCleaner>(*f->fs_);
    SubvolumeCleaner* cl = f->cleaner_.get();
    NamespaceState* ns = f->ns_.get();
    cl->set_in_use_check([ns](uint64_t subvol) { return ns->subvolume_referenced(subvol); });
    f->fs_->set_cleaner_waker([cl] { cl->wake(); });
    cl->start();
  }
  spdlog::info("{}: mounted subvolume {} {}", open.path, subvol, f->read_only() ? "read-only" : "read-write");
  return f;
}

Status Filesystem::unmount() {
  if (unmounted_) return {};
  unmounted_ = true;
  // A running scrub is cancelled (its status kept, fs/scrub.h): it holds handles between commits.
  scrub_->stop();
  if (cleaner_) {
    fs_->set_cleaner_waker(nullptr);
    cleaner_->stop();  // the step in progress ends; the rest resumes at the next mount
  }
  auto& txm = fs_->transactions();
  if (delayed_iputs_) {
    // The queued evictions go into the final commit (a FORGET after this point is ignored and its
    // inode's orphan item left to the next mount's cleanup).
    delayed_iputs_->stop();
    if (!fs_->is_shutdown() && !fs_->read_only() && !txm.aborted())
      if (auto r = delayed_iputs_->run_all(); !r)
        spdlog::error("{}: evicting unlinked inodes at unmount: {} (their orphan items stay for the next mount)",
                      fs_->path(), r.error().message);
  }
  txm.stop_commit_thread();
  // Queued tickets fail with ENOSPC (nobody will serve them); the final commit needs none.
  fs_->spaces().stop_reclaim();
  if (fs_->is_shutdown()) {
    if (async_discard_) async_discard_->stop(false);
    // fs/shutdown.cpp: no final commit, nothing written; the next mount recovers.
    fs_->stop_writeback();
    spdlog::info("{}: unmounted after a shutdown, nothing written since", fs_->path());
    return {};
  }
  if (fs_->read_only()) return {};
  if (txm.aborted()) {
    fs_->stop_writeback();
    return fail(EIO, "{}: not committed at unmount: transaction aborted earlier: {}", fs_->path(),
                txm.abort_reason());
  }
  auto st = txm.commit(CommitCause::kUnmount);  // flushes delalloc first
  // Background writeback ran through the final commit (it keeps the cache within its budget while
  // the last delalloc turns into tree blocks); nothing is dirty after it.
  fs_->stop_writeback();
  // -o discard: what the last commits freed is discarded before the image is closed (their
  // superblock is on disk; after a failed commit nothing is drained).
  if (async_discard_) async_discard_->stop(st.has_value());
  if (!st) return fail(st.error().err, "{}: final commit failed: {}", fs_->path(), st.error().message);
  spdlog::info("{}: unmounted cleanly at generation {}", fs_->path(), fs_->super().generation.get());
  return {};
}

Result<struct statvfs> Filesystem::statfs() {
  // btrfs_statfs, with what the reservation system knows on top: f_blocks is the device; f_bfree
  // subtracts every byte used on disk (mirrors included) and the global reserve; f_bavail is what a
  // user can still write — free bytes in data chunks (less what acknowledged writes and allocated
  // but unreferenced extents already hold: data may_use and reserved, which the kernel's figure
  // leaves in) plus the unallocated device space a data chunk may take (nothing under the 1 MiB
  // minimum stripe), or 0 when metadata is exhausted.
  struct statvfs s {};
  const uint64_t bs = fs_->params().sectorsize;
  alloc::SpaceInfos& sp = fs_->spaces();
  uint64_t total = 0;
  {
    std::lock_guard g(fs_->super_mu());
    total = fs_->super().total_bytes.get();
  }
  const alloc::SpaceCounters d = sp.data().counters(), m = sp.metadata().counters(), y = sp.system().counters();
  const bool mixed = sp.mixed();
  // Mixed block groups: may_use also holds the metadata reservations of running operations and of
  // unflushed delalloc (trans, delayed items and refs, chunk items, the inodes' delalloc reserves),
  // given back as they finish: counted as used they made df say several MiB less than a writer
  // could still write. The global reserve stays counted (data never gets it).
  uint64_t may_use = d.may_use;
  if (mixed) {
    const uint64_t transient = sp.trans_rsv().reserved() + sp.delayed_refs_rsv().reserved() +
                               sp.delayed_block_rsv().reserved() + sp.chunk_rsv().reserved() +
                               data_->delalloc_metadata_reserved();
    may_use -= std::min(may_use, transient);
  }
  // Acknowledged but unflushed data (may_use) and allocated but unreferenced extents count as used.
  uint64_t disk_used = d.disk_used + (d.reserved + may_use) * static_cast<uint64_t>(sp.factor(kBlockGroupData)) +
                       y.disk_used + (mixed ? 0 : m.disk_used);
  const uint64_t data_held = d.used + d.reserved + may_use + d.readonly;
  uint64_t data_free = d.total > data_held ? d.total - data_held : 0;
  // Data extents whose last references were dropped in this transaction are freed at its commit
  // (pinned bytes are already counted free: a commit returns them, and a ticket asks for it).
  for (const auto& dr : fs_->delayed_refs().pending_data_drops()) {
    auto body = lookup_item(*fs_->extent_root().tree, Key{dr.bytenr, kExtentItemKey, dr.num_bytes});
    if (!body || !*body || (*body)->size() < sizeof(ExtentItem)) continue;
    const auto ei = load<ExtentItem>((*body)->data());
    if (static_cast<int64_t>(ei.refs.get()) + dr.delta <= 0) {
      data_free += dr.num_bytes;
      disk_used -= std::min<uint64_t>(disk_used, dr.num_bytes * static_cast<uint64_t>(sp.factor(kBlockGroupData)));
    }
  }
  // Unlinked inodes waiting for the kernel's FORGET (ORPHAN_ITEMs): their extents are dropped when
  // it arrives, which FUSE delivers asynchronously after the last close; count them as freed so df
  // after rm does not depend on that race (kernel btrfs frees them at the same point, the last iput).
  {
    auto root = fs_->fs_root(numbers_.mounted_subvol());
    if (root) {
      Path path;
      auto ret = search_slot(nullptr, *(*root)->tree, Key{kOrphanObjectid, kOrphanItemKey, 0}, path, 0, false);
      std::vector<uint64_t> orphans;
      if (ret && path.leaf().nritems() > 0) {
        bool more = path.slot() < static_cast<int>(path.leaf().nritems());
        if (!more) {
          auto nx = next_leaf(*(*root)->tree, path);
          more = nx && *nx;
        }
        while (more) {
          const Key k = path.leaf().item_key(path.slot());
          if (k.objectid != kOrphanObjectid || k.type != kOrphanItemKey) break;
          orphans.push_back(k.offset);
          auto nx = next_item(*(*root)->tree, path);
          more = nx && *nx;
        }
      }
      path.release();
      for (uint64_t ino : orphans)
        if (auto ii = read_inode(*fs_, *(*root)->tree, ino); ii && S_ISREG(ii->mode.get())) {
          data_free += ii->nbytes.get();
          disk_used -= std::min<uint64_t>(disk_used, ii->nbytes.get());
        }
    }
  }
  // Unallocated space a data chunk may take (btrfs_calc_avail_data_space, single device). What
  // backs metadata's overcommit right now is not subtracted: that overcommit is made of in-flight
  // and delalloc reservations the flushers turn back into free space before data is refused (the
  // fill-to-full tests measure df against what is then written).
  const uint64_t unalloc = sp.free_chunk_space();
  uint64_t data_unalloc = unalloc / static_cast<uint64_t>(sp.factor(kBlockGroupData));
  data_unalloc -= data_unalloc % kStripeLen;
  if (data_unalloc < (1ull << 20)) data_unalloc = 0;
  uint64_t avail = data_free + data_unalloc;
  // Metadata exhausted (no chunk can be added and what is left is within 4 MiB of the global
  // reserve): nothing but deletions can succeed, so say so (btrfs_statfs's threshold).
  if (!mixed && m.full) {
    const uint64_t meta_free = m.disk_total > m.disk_used ? (m.disk_total - m.disk_used) : 0;
    const uint64_t thresh = 4ull << 20;
    if (meta_free < thresh || meta_free - thresh < sp.global_rsv().size()) avail = 0;
  }
  s.f_bsize = bs;
  s.f_frsize = bs;
  s.f_blocks = total / bs;
  const uint64_t used_blocks = (disk_used + sp.global_rsv().size()) / bs;
  s.f_bfree = s.f_blocks > used_blocks ? s.f_blocks - used_blocks : 0;
  s.f_bavail = std::min<uint64_t>(s.f_bfree, avail / bs);
  s.f_files = 0;
  s.f_ffree = 0;
  s.f_favail = 0;
  s.f_namemax = 255;
  s.f_fsid = 0;
  return s;
}

bool Filesystem::atime_kept(InodeId id, bool is_dir) {
  if (atime_ == MountOptions::Atime::kNoatime || (is_dir && nodiratime_)) return false;
  if (read_only() || unmounted_ || fs_->transactions().aborted() || !delayed_) return false;
  return static_cast<bool>(check_subvol_writable(id, "atime"));  // btrfs_update_time: EROFS, so no atime
}

bool Filesystem::atime_due(const InodeItem& ii, const Timespec& now) const {
  if (ii.flags.get() & kInodeNoatime) return false;  // chattr +A (S_NOATIME: atime_needs_update)
  if (atime_ != MountOptions::Atime::kRelatime) return true;
  // relatime_need_update: when the access time is not newer than the last change, or a day old.
  auto le = [](const Timespec& a, const Timespec& b) {
    return a.sec.get() < b.sec.get() || (a.sec.get() == b.sec.get() && a.nsec.get() <= b.nsec.get());
  };
  return le(ii.atime, ii.mtime) || le(ii.atime, ii.ctime) || now.sec.get() >= ii.atime.sec.get() + 24 * 60 * 60;
}

void Filesystem::touch_atime(InodeId id, bool is_dir) {
  if (!atime_kept(id, is_dir)) return;
  auto root = fs_->fs_root(id.subvol);
  if (!root) return;
  auto ii = read_inode(*fs_, *(*root)->tree, id.objectid);
  if (!ii) return;
  const Timespec now = now_btrfs();
  if (!atime_due(*ii, now)) return;
  if (auto st = delayed_->update_atime(*(*root)->tree, id, now); !st)
    spdlog::debug("{}: access time of inode {} of root {} not updated: {}", fs_->path(), id.objectid, id.subvol,
                  st.error().message);
}

void Filesystem::wake_space_waiters() {
  alloc::SpaceInfos& sp = fs_->spaces();
  sp.data().wake_waiters();
  sp.metadata().wake_waiters();
  sp.system().wake_waiters();
}

std::string Filesystem::stats_json() {
  // Live counters (ubtrfs-inspect stats): the tree layer's COWs and restarts, the cache, commits by
  // cause, and the reservation system — each space_info's counters in the kernel's dump order,
  // every block reserve, tickets, flush states run and what each reclaimed, where tree blocks'
  // bytes came from (the fallback chain: overruns), ENOSPC by reason.
  using json = nlohmann::ordered_json;  // members in the order written here
  const auto& st = fs_->stats();
  const auto cs = fs_->transactions().stats();
  const auto cc = fs_->cache().counters();
  alloc::SpaceInfos& sp = fs_->spaces();
  json j;
  {
    std::lock_guard g(fs_->super_mu());
    j["generation"] = fs_->super().generation.get();  // the last committed generation
  }
  j["running_transaction"] = fs_->transactions().running_transid();
  j["commits"] = cs.commits;
  j["aborted"] = cs.aborted;
  j["last_commit_ms"] = cs.last_commit_ms;
  j["tree_blocks_written"] = cs.blocks_written;
  json causes;
  for (int i = 0; i < kCommitCauseCount; ++i) causes[commit_cause_name(static_cast<CommitCause>(i))] = cs.by_cause[i];
  j["commits_by_cause"] = causes;
  if (log_) {
    // fsyncs served by the tree log vs by a full commit, with the reason (fs/tree_log.h).
    const TreeLogStats ls = log_->stats();
    json fb;
    for (int i = 0; i < kLogFallbackCount; ++i) fb[log_fallback_name(static_cast<LogFallback>(i))] = ls.fallbacks[i];
    j["tree_log"] = {{"fsyncs_logged", ls.synced}, {"items_logged", ls.items_logged},
                     {"blocks_written", ls.blocks_written}, {"logs_dropped", ls.logs_dropped},
                     {"fsyncs_committed", fb}};
  }
  {
    // FITRIM and -o discard (fs/discard.h): device bytes and requests.
    const DiscardCounters& dc = *discard_counters_;
    j["discard"] = {{"bytes", dc.bytes.load(std::memory_order_relaxed)},
                    {"extents", dc.extents.load(std::memory_order_relaxed)},
                    {"fitrim_bytes", dc.fitrim_bytes.load(std::memory_order_relaxed)},
                    {"async_bytes", dc.async_bytes.load(std::memory_order_relaxed)},
                    {"errors", dc.errors.load(std::memory_order_relaxed)},
                    {"async", async_discard_ != nullptr}};
  }
  j["cows"] = st.cows();
  j["cows_same_transaction"] = st.cows_same_transaction();
  j["cows_same_transaction_write_in_flight"] = st.cows_same_transaction_write_in_flight();
  json restarts;
  for (int i = 0; i < kRestartSiteCount; ++i) {
    auto site = static_cast<RestartSite>(i);
    restarts[restart_site_name(site)] = st.restarts(site);
  }
  j["restarts"] = restarts;
  json by_root_level = json::array();
  for (const auto& r : st.restart_rows())
    by_root_level.push_back({{"site", restart_site_name(r.site)}, {"root", r.root}, {"level", r.level},
                             {"count", r.count}});
  j["restarts_by_root_level"] = by_root_level;
  // The seed's table: COWs per search (restarts included) and copies of one logical block in one
  // transaction, maxima and histograms; fix 1's overwrites and in-flight waits; fix 2's inhibitors.
  auto histogram = [](const CountHistogram& h) {
    json o;
    for (int b = 0; b < CountHistogram::kBuckets; ++b) o[CountHistogram::label(b)] = h.count(b);
    return o;
  };
  j["cow"] = {{"total", st.cows()},
              {"same_transaction", st.cows_same_transaction()},
              {"write_in_flight", st.cows_same_transaction_write_in_flight()},
              {"max_per_search", st.per_search().max()},
              {"max_per_block", st.per_block().max()},
              {"max_per_block_per_handle", st.per_handle_block().max()},
              {"per_search_histogram", histogram(st.per_search())},
              {"per_block_histogram", histogram(st.per_block())},
              {"per_block_per_handle_histogram", histogram(st.per_handle_block())},
              {"overwrites_in_place", st.overwrites()},
              {"in_flight_waits", st.in_flight_waits()},
              {"inhibits", st.inhibits()},
              {"inhibit_slot_reuses", st.inhibit_slot_reuses()},
              {"held_for_commit", st.held_for_commit()},
              {"cow_overwrite", fs_->cow_overwrite()},
              {"wb_inhibit", fs_->wb_inhibit()},
              {"wb_inhibit_scope", !fs_->wb_inhibit() ? "off" : fs_->wb_hold_recopied() ? "transaction" : "handle"}};
  if (auto* wbd = fs_->write_behind()) {
    const io::WriteBehindStats ws = wbd->stats();
    j["write_behind"] = {{"writes", ws.writes},           {"bytes", ws.bytes},
                         {"producer_waits", ws.producer_waits}, {"overlap_waits", ws.overlap_waits},
                         {"flush_waits", ws.flush_waits}, {"max_queued_bytes", ws.max_queued_bytes},
                         {"failed", ws.failed}};
  } else {
    j["write_behind"] = nullptr;
  }
  j["cache"] = {{"bytes", fs_->cache().size_bytes()}, {"budget", fs_->cache().budget()},
                {"buffers", fs_->cache().nr_buffers()}, {"dirty", fs_->cache().nr_dirty()},
                {"hits", cc.hits}, {"misses", cc.misses}, {"evictions", cc.evictions}};
  {
    const auto io = fs_->cache().io_stats();
    json wb = {{"enabled", fs_->writeback() != nullptr},
               {"dirty_bytes", fs_->cache().dirty_bytes()},
               {"dirty_bytes_max", cc.dirty_bytes_max},
               {"background_threshold", fs_->writeback() ? fs_->writeback()->background_threshold() : 0},
               {"background_passes", cc.background_passes},
               {"background_blocks_written", cc.background_blocks_written},
               {"blocks_written", cc.blocks_written},
               {"bytes_written", cc.bytes_written},
               {"skipped_inhibited", cc.skipped_inhibited},
               {"skipped_held", cc.skipped_held},
               {"skipped_locked", cc.skipped_locked},
               {"skipped_in_flight", cc.skipped_in_flight},
               {"paused_passes", cc.paused_passes},
               {"write_errors", cc.write_errors},
               {"pressure_kicks", cc.pressure_kicks},
               {"throttled", cc.throttled},
               {"uring", {{"submit_calls", io.submit_calls}, {"short_writes", io.short_writes},
                          {"retries", io.retries}, {"errors", io.errors}}}};
    if (auto* t = fs_->writeback()) {
      const auto ts = t->stats();
      wb["passes"] = {{"pressure", ts.pressure_passes}, {"threshold", ts.threshold_passes},
                      {"periodic", ts.periodic_passes}, {"without_progress", ts.idle_passes}};
    }
    j["writeback"] = wb;
  }
  json spaces = json::array();
  std::vector<alloc::SpaceInfo*> infos{&sp.data()};
  if (&sp.metadata() != &sp.data()) infos.push_back(&sp.metadata());
  infos.push_back(&sp.system());
  for (alloc::SpaceInfo* si : infos) {
    const auto c = si->counters();
    const auto t = si->ticket_stats();
    json flush;
    for (int i = 1; i < alloc::kFlushStateCount; ++i)
      flush[alloc::flush_state_name(static_cast<alloc::FlushState>(i))] = {{"runs", t.flush_runs[i]},
                                                                            {"reclaimed", t.flush_reclaimed[i]}};
    // The profile as btrfs-progs names it ("single", "DUP"): from the block groups of this type
    // (ubtrfs maps SINGLE and DUP only; tree/chunk_map.h).
    bool dup = false;
    for (const auto* bg : fs_->block_groups().all())
      if ((bg->flags() & kBlockGroupTypeMask) == (si->flags() & kBlockGroupTypeMask) && (bg->flags() & kBlockGroupDup))
        dup = true;
    spaces.push_back({{"type", si->name()},
                      {"flags", si->flags()},
                      {"profile", dup ? "DUP" : "single"},
                      {"total", c.total},
                      {"used", c.used},
                      {"pinned", c.pinned},
                      {"reserved", c.reserved},
                      {"may_use", c.may_use},
                      {"readonly", c.readonly},
                      {"disk_total", c.disk_total},
                      {"disk_used", c.disk_used},
                      {"full", c.full},
                      {"reclaim_size", c.reclaim_size},
                      {"tickets_queued_now", c.tickets},
                      {"priority_tickets_queued_now", c.priority_tickets},
                      {"tickets",
                       {{"queued", t.queued},
                        {"granted", t.granted},
                        {"failed", t.failed},
                        {"interrupted", t.interrupted},
                        {"stolen", t.stolen}}},
                      {"priority_tickets",
                       {{"queued", t.priority_queued},
                        {"granted", t.priority_granted},
                        {"failed", t.priority_failed},
                        {"interrupted", t.priority_interrupted},
                        {"stolen", t.priority_stolen}}},
                      {"reservations",
                       {{"fast_path", t.fast_path},
                        {"overcommitted", t.overcommitted},
                        {"emergency", t.emergency},
                        {"no_flush_refused", t.enospc_no_flush},
                        {"preemptive_runs", t.preemptive_runs}}},
                      {"flush_states", flush}});
  }
  j["space_info"] = spaces;
  {
    // The device (one per filesystem): its size and the bytes its chunks take (the dev item),
    // what `ubtrfs-ctl filesystem usage` reports as Device size / allocated.
    std::lock_guard g(fs_->super_mu());
    const Superblock& sb = fs_->super();
    j["device"] = {{"path", fs_->path()},
                   {"devid", sb.dev_item.devid.get()},
                   {"total_bytes", sb.dev_item.total_bytes.get()},
                   {"bytes_used", sb.dev_item.bytes_used.get()},
                   {"fs_total_bytes", sb.total_bytes.get()},
                   {"fs_bytes_used", sb.bytes_used.get()}};
  }
  json rsvs;
  for (alloc::BlockRsv* r : {&sp.global_rsv(), &sp.trans_rsv(), &sp.delayed_refs_rsv(), &sp.delayed_block_rsv(),
                             &sp.chunk_rsv()})
    rsvs[alloc::rsv_type_name(r->type())] = {{"size", r->size()}, {"reserved", r->reserved()}};
  j["block_rsv"] = rsvs;
  const auto rs = sp.reservation_stats();
  j["tree_block_reservations"] = {{"from_reserve", rs.from_rsv},       {"beyond_handle", rs.beyond_handle},
                                  {"no_flush", rs.no_flush},           {"global_reserve", rs.global},
                                  {"emergency", rs.emergency},         {"failfast_enospc", rs.failfast_enospc},
                                  {"enospc", rs.enospc},               {"overruns", rs.overruns()}};
  json by_rsv = json::object();
  for (int i = 0; i < alloc::kRsvTypeCount; ++i)
    if (rs.overruns_by_rsv[i]) by_rsv[alloc::rsv_type_name(static_cast<alloc::RsvType>(i))] = rs.overruns_by_rsv[i];
  j["tree_block_reservations"]["overruns_by_reserve"] = by_rsv;
  j["tree_block_reservations"]["delayed_refs_runs_deferred"] = fs_->transactions().refs_runs_deferred();
  json enospc;
  const auto ec = sp.enospc_counts();
  for (int i = 0; i < alloc::kEnospcReasonCount; ++i)
    enospc[alloc::enospc_reason_name(static_cast<alloc::EnospcReason>(i))] = ec[i];
  j["enospc"] = enospc;
  j["delalloc_bytes"] = data_->total_delalloc();
  j["delalloc_inodes"] = data_->delalloc_inodes();
  j["delalloc_metadata_reserved"] = data_->delalloc_metadata_reserved();
  if (delayed_iputs_) {
    const DelayedIputCounters di = delayed_iputs_->counters();
    j["delayed_iputs"] = {{"queued", di.queued},   {"evicted", di.evicted}, {"failed", di.failed},
                          {"batches", di.batches}, {"pending", di.pending}};
  }
  return j.dump();
}

}  // namespace ubtrfs::fs
