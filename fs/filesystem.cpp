// Filesystem: mount, unmount, statfs and stats of one mounted subvolume; see filesystem.h. The POSIX
// operations live in filesystem_ns.cpp (names, inodes, xattrs) and filesystem_data.cpp (contents).
#include "fs/filesystem.h"

#include <spdlog/spdlog.h>

#include "fs/file_data.h"
#include "fs/namespace_state.h"
#include "fs/transaction.h"
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
  data_ = std::make_unique<FileData>(*fs_, numbers_, locks_);
  ns_ = std::make_unique<NamespaceState>(*fs_, numbers_, locks_, *data_);
}

Filesystem::~Filesystem() {
  if (!unmounted_) {
    auto st = unmount();
    if (!st) spdlog::error("{}: unmount: {}", fs_->path(), st.error().message);
  }
}

Result<std::unique_ptr<Filesystem>> Filesystem::mount(const OpenOptions& open, const MountOptions& opts) {
  auto fs = UBTRFS_TRY(FsInfo::open(open));
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
  FileData* data = f->data_.get();
  auto& txm = f->fs_->transactions();
  txm.set_pre_commit_flusher([data] { return data->flush_all(); });
  txm.set_csum_deleter([data](TreeHandle& h, uint64_t bytenr, uint64_t len) { return data->delete_csums(h, bytenr, len); });
  if (!f->read_only()) {
    auto st = f->cleanup_orphans();
    if (!st) {
      f->unmounted_ = true;  // nothing to commit: fail before anything reached the disk
      return fail(st.error().err, "{}: orphan cleanup: {}", open.path, st.error().message);
    }
    txm.start_commit_thread(std::chrono::seconds(opts.commit_interval_s));
  }
  spdlog::info("{}: mounted subvolume {} {}", open.path, subvol, f->read_only() ? "read-only" : "read-write");
  return f;
}

Status Filesystem::unmount() {
  if (unmounted_) return {};
  unmounted_ = true;
  auto& txm = fs_->transactions();
  txm.stop_commit_thread();
  if (fs_->read_only()) return {};
  if (txm.aborted()) return fail(EIO, "{}: not committed at unmount: transaction aborted earlier: {}", fs_->path(),
                                 txm.abort_reason());
  auto st = txm.commit();  // flushes delalloc first
  if (!st) return fail(st.error().err, "{}: final commit failed: {}", fs_->path(), st.error().message);
  spdlog::info("{}: unmounted cleanly at generation {}", fs_->path(), fs_->super().generation.get());
  return {};
}

Result<struct statvfs> Filesystem::statfs() {
  struct statvfs s {};
  const uint64_t bs = fs_->params().sectorsize;
  uint64_t total = 0, data_free = 0;
  {
    std::lock_guard g(fs_->super_mu());
    total = fs_->super().total_bytes.get();
  }
  for (auto* bg : fs_->block_groups().all()) {
    if (!(bg->flags() & kBlockGroupData)) continue;
    const auto u = bg->usage();
    // Pinned bytes are free once the running transaction commits, which needs no further action
    // (and FUSE delivers no syncfs to force it): count them as free, as df after rm expects.
    data_free += u.free + u.pinned;
  }
  // Data extents whose last references were dropped in this transaction are freed at its commit:
  // count those whose on-disk reference count the queued drops bring to zero.
  for (const auto& d : fs_->delayed_refs().pending_data_drops()) {
    auto body = lookup_item(*fs_->extent_root().tree, Key{d.bytenr, kExtentItemKey, d.num_bytes});
    if (!body || !*body || (*body)->size() < sizeof(ExtentItem)) continue;
    const auto ei = load<ExtentItem>((*body)->data());
    if (static_cast<int64_t>(ei.refs.get()) + d.delta <= 0) data_free += d.num_bytes;
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
        if (auto ii = read_inode(*(*root)->tree, ino); ii && S_ISREG(ii->mode.get())) data_free += ii->nbytes.get();
    }
  }
  // Unallocated device space can still become data chunks (SINGLE: one byte per byte), as the
  // kernel's btrfs_statfs counts it; keep room for one metadata chunk like it does.
  uint64_t unalloc = fs_->device_space().unallocated_bytes();
  const uint64_t meta_reserve = std::min<uint64_t>(unalloc, 2 * alloc::chunk_size_limit(kBlockGroupMetadata, total));
  const uint64_t avail = data_free + (unalloc - meta_reserve);
  s.f_bsize = bs;
  s.f_frsize = bs;
  s.f_blocks = total / bs;
  s.f_bfree = std::min<uint64_t>(s.f_blocks, (data_free + unalloc) / bs);
  s.f_bavail = std::min<uint64_t>(s.f_bfree, avail / bs);
  s.f_files = 0;
  s.f_ffree = 0;
  s.f_favail = 0;
  s.f_namemax = 255;
  s.f_fsid = 0;
  return s;
}

std::string Filesystem::stats_json() {
  const auto& st = fs_->stats();
  const auto cs = fs_->transactions().stats();
  const auto cc = fs_->cache().counters();
  std::string restarts;
  for (int i = 0; i < kRestartSiteCount; ++i) {
    auto site = static_cast<RestartSite>(i);
    restarts += fmt::format("{}\"{}\":{}", i ? "," : "", restart_site_name(site), st.restarts(site));
  }
  return fmt::format(
      "{{\"generation\":{},\"commits\":{},\"aborted\":{},\"last_commit_ms\":{:.3f},\"tree_blocks_written\":{},"
      "\"cows\":{},\"cows_same_transaction\":{},\"cows_same_transaction_write_in_flight\":{},\"restarts\":{{{}}},"
      "\"cache\":{{\"bytes\":{},\"budget\":{},\"buffers\":{},\"dirty\":{},\"hits\":{},\"misses\":{},"
      "\"evictions\":{}}}}}",
      cs.last_transid, cs.commits, cs.aborted, cs.last_commit_ms, cs.blocks_written, st.cows(),
      st.cows_same_transaction(), st.cows_same_transaction_write_in_flight(), restarts, fs_->cache().size_bytes(),
      fs_->cache().budget(), fs_->cache().nr_buffers(), fs_->cache().nr_dirty(), cc.hits, cc.misses, cc.evictions);
}

}  // namespace ubtrfs::fs
