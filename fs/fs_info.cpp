// FsInfo: opening a filesystem; see fs_info.h for what it owns and the open order.
//
// Open order (nothing is written at any step): device -> primary superblock (validated) -> feature
// gate (fs/mount_options decide_open_mode) -> chunk map (sys_chunk_array + chunk tree, through
// FsReader, which also validates every chunk item) -> root tree and chunk tree roots -> ROOT_ITEMs
// of the global trees -> block groups (BLOCK_GROUP_ITEMs, free space from the free space tree,
// checked against the item's used bytes) -> device extents -> allocator and transactions.
#include "fs/fs_info.h"

#include <spdlog/spdlog.h>

#include "alloc/free_space_tree.h"
#include "fs/chunk_creator.h"
#include "fs/free_space_tree_build.h"
#include "fs/qgroups.h"
#include "fs/space_flusher.h"
#include "fs/transaction.h"
#include "tree/ctree.h"
#include "tree/fs_reader.h"
#include "tree/superblock.h"

namespace ubtrfs::fs {

namespace {

// The image's name in front of a message, once: device-level messages already start with it.
std::string named(const std::string& path, const std::string& msg) {
  return msg.starts_with(path + ": ") ? msg : fmt::format("{}: {}", path, msg);
}

Status with_path(const std::string& path, Status st) {
  if (!st) return fail(st.error().err, "{}", named(path, st.error().message));
  return {};
}

// Reads a root block into a new TreeRoot.
Result<std::unique_ptr<TreeRoot>> load_tree(TreeContext& ctx, uint64_t objectid, uint64_t bytenr, uint8_t level,
                                            uint64_t generation) {
  auto root = std::make_unique<TreeRoot>(ctx, objectid);
  TreeBlockExpect ex;
  ex.bytenr = bytenr;
  ex.level = level;
  ex.generation = generation;
  if (objectid < kFirstFreeObjectid || objectid > kLastFreeObjectid) ex.owner = objectid;
  auto eb = ctx.cache.read(ex);
  if (!eb) return fail(eb.error().err, "tree {} root block: {}", objectid, eb.error().message);
  root->set_node(*eb);
  return root;
}

}  // namespace

FsInfo::~FsInfo() {
  if (txm_) txm_->stop_commit_thread();
  if (spaces_) spaces_->stop_reclaim();
  stop_writeback();
}

void FsInfo::stop_writeback() {
  std::lock_guard lk(wb_stop_mu_);
  if (writeback_) writeback_->stop();
}

Result<std::unique_ptr<FsInfo>> FsInfo::open(const OpenOptions& opts) {
  std::unique_ptr<FsInfo> fs(new FsInfo());
  auto st = fs->load(opts);
  if (!st) return fail(st.error());
  return fs;
}

Status FsInfo::load(const OpenOptions& opts) {
  path_ = opts.path;
  cow_overwrite_ = opts.cow_overwrite;
  wb_inhibit_ = opts.wb_inhibit;
  wb_hold_recopied_ = opts.wb_hold_recopied;
  // The device is opened read-only until the gate said read-write is possible, so a refused image is
  // never even opened for writing.
  // An injected device (OpenOptions::device) serves both phases.
  auto open_dev = [&opts](io::OpenMode mode) -> Result<std::shared_ptr<io::BlockDevice>> {
    if (opts.device) return opts.device;
    auto d = io::open_device(opts.path, mode);
    if (!d) return fail(d.error());
    return std::shared_ptr<io::BlockDevice>(std::move(*d));
  };
  auto dev = open_dev(io::OpenMode::kReadOnly);
  if (!dev) return fail(dev.error().err, "{}", dev.error().message);
  auto sb = read_superblock(**dev);
  if (!sb) return fail(sb.error().err, "{}", named(opts.path, sb.error().message));
  MountOptions mo;
  mo.read_only = opts.read_only;
  mo.nologreplay = opts.nologreplay;
  // A write-protected block device is opened read-only, with a warning, as mount(8) does for a
  // kernel filesystem ("write-protected, mounting read-only");
  // before this, root opened a read-only block device for writing, accepted writes, and lost them
  // at the first commit (EPERM).
  if (!mo.read_only && !opts.device) {
    const bool wp = UBTRFS_TRY(io::write_protected(opts.path));
    if (wp) {
      mo.read_only = true;
      spdlog::warn("{}: device write-protected, mounting read-only", opts.path);
    }
  }
  auto decision = decide_open_mode(*sb, mo);
  if (!decision) return fail(decision.error().err, "{}: {}", opts.path, decision.error().message);
  for (const auto& w : decision->warnings) spdlog::warn("{}: {}", opts.path, w);
  read_only_ = decision->mode == OpenMode::kReadOnly;
  log_replay_pending_ = decision->replay_log_tree;
  if (log_replay_pending_ && !opts.replays_log)
    return fail(EROFS, "{}: filesystem has a log tree at {}: only a mount replays it; open it read-only", opts.path,
                sb->log_root.get());
  fst_pending_ = !read_only_ && !(sb->compat_ro_flags.get() & kCompatRoFreeSpaceTree);
  if (fst_pending_)
    spdlog::warn("{}: no free space tree (the image keeps free space in the v1 space cache): the mount builds one "
                 "(space_cache=v2, as the kernel does by default since Linux 5.15); mount with -o ro to leave the image "
                 "as it is",
                 opts.path);
  if (!read_only_ && (sb->compat_ro_flags.get() & kCompatRoFreeSpaceTree) &&
      !(sb->compat_ro_flags.get() & kCompatRoFreeSpaceTreeValid))
    return fail(EROFS, "{}: the free space tree is not marked valid: mount with -o ro", opts.path);

  // Chunk map and root locations through the validated reader.
  auto reader = FsReader::open(**dev);
  if (!reader) return fail(reader.error());
  super_ = *sb;
  committed_super_ = *sb;
  params_ = FsParams::from_super(super_);
  spaces_ = std::make_unique<alloc::SpaceInfos>(params_.nodesize,
                                                 (super_.compat_ro_flags.get() & kCompatRoFreeSpaceTree) != 0 ||
                                                     fst_pending_,
                                                 (super_.incompat_flags.get() & kIncompatMixedGroups) != 0);
  // The chunk tree uuid every block header carries is in the chunk root's header.
  {
    TreeBlockExpect ex;
    ex.bytenr = super_.chunk_root;
    ex.level = super_.chunk_root_level;
    ex.generation = super_.chunk_root_generation.get();
    auto blk = (*reader)->read_block(ex);
    if (!blk) return fail(blk.error().err, "{}: chunk root: {}", path_, blk.error().message);
    const auto h = ubtrfs::load<Header>(blk->data());
    std::memcpy(params_.chunk_tree_uuid.data(), h.chunk_tree_uuid, 16);
  }
  // Everything read through the read-only device is done; reopen for writing if allowed.
  for (const auto& m : (*reader)->chunk_map().all()) UBTRFS_TRY_STATUS(with_path(path_, chunk_map_.add(m)));
  reader->reset();
  if (!read_only_) {
    dev = open_dev(io::OpenMode::kReadWrite);
    if (!dev) return fail(dev.error().err, "{}", dev.error().message);
    auto sb2 = read_superblock(**dev);
    if (!sb2) return fail(sb2.error().err, "{}", named(opts.path, sb2.error().message));
    if (sb2->generation.get() != sb->generation.get())
      return fail(EBUSY, "{}: the image changed while it was being opened (generation {} -> {})", opts.path,
                  sb->generation.get(), sb2->generation.get());
  }
  // Every write and flush from here on passes the emergency-shutdown gate (fs/shutdown.cpp).
  {
    auto gated = std::make_shared<io::GatedDevice>(std::move(*dev));
    gate_ = gated->shutdown_gate();
    dev_ = std::move(gated);
  }
  // File data is written behind the flusher (io/write_behind.h); the queue writes through the gate.
  if (!read_only_ && opts.write_behind) {
    auto wb = std::make_shared<io::WriteBehindDevice>(dev_);
    write_behind_ = wb.get();
    dev_ = std::move(wb);
  }
  cache_ = std::make_unique<BufferCache>(*dev_, chunk_map_, params_, opts.cache_bytes);
  tctx_ = std::make_unique<TreeContext>(TreeContext{params_, *cache_, stats_});

  root_tree_ = UBTRFS_TRY(with_path_r(load_tree(*tctx_, kRootTreeObjectid, super_.root, super_.root_level,
                                                super_.generation)));
  chunk_tree_ = UBTRFS_TRY(with_path_r(load_tree(*tctx_, kChunkTreeObjectid, super_.chunk_root,
                                                 super_.chunk_root_level, super_.chunk_root_generation)));
  UBTRFS_TRY_STATUS(with_path(path_, load_roots()));
  UBTRFS_TRY_STATUS(with_path(path_, load_block_groups()));
  UBTRFS_TRY_STATUS(with_path(path_, load_device_space()));
  // Overcommit inputs: unallocated device space, the profile of each type (the profile the
  // filesystem already uses; mkfs defaults otherwise), the data chunk size.
  spaces_->set_device_bytes(dev_space_->total_bytes());
  spaces_->set_free_chunk_space(dev_space_->unallocated_bytes());
  spaces_->set_data_chunk_size(alloc::chunk_size_limit(kBlockGroupData, dev_space_->total_bytes()));
  for (uint64_t type : {kBlockGroupData, kBlockGroupMetadata, kBlockGroupSystem}) {
    // Mixed block groups: data and metadata chunks are both DATA|METADATA, of one profile.
    const uint64_t groups_type = spaces_->mixed() && type != kBlockGroupSystem ? kBlockGroupData | kBlockGroupMetadata
                                                                                : type;
    uint64_t profile = (groups_type & kBlockGroupData) ? 0 : kBlockGroupDup;
    for (auto* bg : groups_.all())
      if ((bg->flags() & kBlockGroupTypeMask) == groups_type) profile = bg->flags() & kBlockGroupProfileMask;
    spaces_->set_factor(type, alloc::profile_factor(profile));
  }
  if (quota_root_ && !read_only_) {
    qgroups_ = UBTRFS_TRY(with_path_r(Qgroups::load(*quota_root_, path_)));
    if (qgroups_)
      spdlog::warn("{}: quota groups are enabled: ubtrfs neither accounts them nor enforces their limits; its first "
                   "commit zeroes their counters and queues a rescan, which the kernel runs at its next read-write "
                   "mount",
                   path_);
  }
  update_global_rsv();
  chunk_creator_ = std::make_unique<ChunkCreator>(*this);
  allocator_ = std::make_unique<alloc::ExtentAllocator>(params_, groups_, delayed_refs_, *chunk_creator_);
  allocator_->set_extent_root(extent_root_->tree.get());
  txm_ = std::make_unique<TransactionManager>(*this);
  flusher_ = std::make_unique<FsSpaceFlusher>(*this);
  if (!read_only_) spaces_->start_reclaim(flusher_.get());
  if (!read_only_ && opts.writeback.enabled) {
    writeback_ = std::make_unique<WritebackThread>(*cache_, opts.writeback);
    writeback_->start();
  }
  spdlog::info("{}: opened {} at generation {}", path_, read_only_ ? "read-only" : "read-write",
               super_.generation.get());
  return {};
}

template <class T>
Result<T> FsInfo::with_path_r(Result<T> r) {
  if (!r) return fail(r.error().err, "{}", named(path_, r.error().message));
  return r;
}

Result<std::optional<FoundRootItem>> find_root_item(TreeRoot& root_tree, uint64_t objectid) {
  // The newest ROOT_ITEM of `objectid` (snapshots carry a transid in the key offset): the last
  // item at or before (objectid, ROOT_ITEM, max).
  Path path;
  const int ret = UBTRFS_TRY(search_slot(nullptr, root_tree, Key{objectid, kRootItemKey, ~0ull}, path, 0, false));
  if (path.leaf().nritems() == 0) return std::optional<FoundRootItem>{};
  if (ret == 1) {
    if (path.slots[0] > 0) path.slots[0]--;
    else if (!UBTRFS_TRY(prev_item(root_tree, path))) return std::optional<FoundRootItem>{};
  }
  const Key key = path.leaf().item_key(path.slot());
  if (key.objectid != objectid || key.type != kRootItemKey) return std::optional<FoundRootItem>{};
  auto body = path.leaf().item_data(path.slot());
  if (body.size() < kRootItemLegacySize || body.size() > sizeof(RootItem))
    return fail(EUCLEAN, "ROOT_ITEM [{} 132 {}] has size {}, expected {} or {}", key.objectid, key.offset, body.size(),
                kRootItemLegacySize, sizeof(RootItem));
  FoundRootItem out;
  out.key = key;
  out.item = load_root_item(body);
  out.size = static_cast<uint32_t>(body.size());
  return std::optional<FoundRootItem>{out};
}

Result<std::unique_ptr<RootRecord>> FsInfo::load_root_record(uint64_t objectid, bool required) {
  const auto found = UBTRFS_TRY(find_root_item(*root_tree_, objectid));
  if (!found) {
    if (required) return fail(ENOENT, "tree {} has no ROOT_ITEM in the root tree", objectid);
    return std::unique_ptr<RootRecord>();
  }
  auto rec = std::make_unique<RootRecord>();
  rec->item = found->item;
  rec->item_size = found->size;
  rec->key_offset = found->key.offset;
  rec->readonly = (rec->item.flags.get() & kRootSubvolRdonly) != 0;
  rec->tree = UBTRFS_TRY(load_tree(*tctx_, objectid, rec->item.bytenr, rec->item.level, rec->item.generation));
  // Blocks at or below it may be shared with a snapshot (the COW's update_ref_for_cow).
  rec->tree->set_last_snapshot(rec->item.last_snapshot.get());
  return rec;
}

Status FsInfo::load_roots() {
  extent_root_ = UBTRFS_TRY(load_root_record(kExtentTreeObjectid, true));
  dev_root_ = UBTRFS_TRY(load_root_record(kDevTreeObjectid, true));
  csum_root_ = UBTRFS_TRY(load_root_record(kCsumTreeObjectid, true));
  uuid_root_ = UBTRFS_TRY(load_root_record(kUuidTreeObjectid, false));
  quota_root_ = UBTRFS_TRY(load_root_record(kQuotaTreeObjectid, false));
  if (super_.compat_ro_flags.get() & kCompatRoFreeSpaceTree)
    fst_root_ = UBTRFS_TRY(load_root_record(kFreeSpaceTreeObjectid, true));
  if (super_.compat_ro_flags.get() & kCompatRoBlockGroupTree)
    bg_root_ = UBTRFS_TRY(load_root_record(kBlockGroupTreeObjectid, true));
  return {};
}

Status FsInfo::load_block_groups() {
  TreeRoot& items = *block_group_items_root().tree;
  std::unique_ptr<alloc::FreeSpaceTree> fst;
  if (fst_root_) fst = std::make_unique<alloc::FreeSpaceTree>(*fst_root_->tree, params_);
  Path path;
  Key k{0, kBlockGroupItemKey, 0};
  auto ret = search_slot(nullptr, items, k, path, 0, false);
  if (!ret) return fail(ret.error());
  if (path.slot() >= static_cast<int>(path.leaf().nritems())) {
    auto nx = next_leaf(items, path);
    if (!nx) return fail(nx.error());
    if (!*nx) return fail(EUCLEAN, "no BLOCK_GROUP_ITEM found");
  }
  std::vector<std::pair<Key, BlockGroupItem>> found;
  for (;;) {
    Key key = path.leaf().item_key(path.slot());
    if (key.type == kBlockGroupItemKey) {
      auto body = path.leaf().item_data(path.slot());
      if (body.size() != sizeof(BlockGroupItem))
        return fail(EUCLEAN, "BLOCK_GROUP_ITEM [{} 192 {}] has size {}", key.objectid, key.offset, body.size());
      found.emplace_back(key, ubtrfs::load<BlockGroupItem>(body.data()));
    }
    auto nx = next_item(items, path);
    if (!nx) return fail(nx.error());
    if (!*nx) break;
  }
  path.release();
  // Without a free space tree (to be built by the mount's commit) the free space of a writable open
  // comes from the extent tree: the gaps between its extent items.
  std::optional<AllocatedByGroup> allocated;
  if (!fst && fst_pending_) {
    std::map<uint64_t, uint64_t> groups;
    for (const auto& [key, bgi] : found) groups.emplace(key.objectid, key.offset);
    allocated = UBTRFS_TRY(allocated_extents_by_group(*extent_root_->tree, params_, groups));
  }
  for (const auto& [key, bgi] : found) {
    auto chunk = chunk_map_.find(key.objectid);
    if (!chunk || chunk->logical != key.objectid || chunk->length != key.offset)
      return fail(EUCLEAN, "block group [{} 192 {}] has no matching chunk", key.objectid, key.offset);
    if ((chunk->type & 0x7) != (bgi.flags.get() & 0x7) || chunk->type != bgi.flags.get())
      return fail(EUCLEAN, "block group [{} 192 {}] flags 0x{:x} differ from its chunk's 0x{:x}", key.objectid,
                  key.offset, bgi.flags.get(), chunk->type);
    if (bgi.used.get() > key.offset)
      return fail(EUCLEAN, "block group [{} 192 {}] used {} exceeds its length", key.objectid, key.offset,
                  bgi.used.get());
    auto bg = std::make_unique<alloc::BlockGroup>(*chunk, bgi.used);
    if (fst) {
      auto runs = fst->load_group(key.objectid, key.offset);
      if (!runs) return fail(runs.error().err, "block group {}: free space tree: {}", key.objectid, runs.error().message);
      for (const auto& [s, l] : *runs) {
        auto st = bg->add_free(s, l);
        if (!st) return fail(st.error().err, "block group {}: free space tree: {}", key.objectid, st.error().message);
      }
      // The free space tree and the item's used bytes must describe the same group.
      auto inv = bg->check_invariant();
      if (!inv) {
        const auto u = bg->usage();
        if (!read_only_)
          return fail(EUCLEAN,
                      "block group {}: free space tree says {} bytes free but the block group item says {} of {} "
                      "used ({} in superblock stripes): run fsck.ubtrfs",
                      key.objectid, u.free, u.used, u.length, u.super_bytes);
        spdlog::warn("{}: block group {}: free space tree and used bytes disagree (read-only mount continues)",
                     path_, key.objectid);
      }
    }
    if (allocated) {
      auto st = bg->init_free_from_allocated(allocated->at(key.objectid));
      if (!st) return fail(st.error().err, "block group {}: extent tree: {}", key.objectid, st.error().message);
      if (!bg->check_invariant()) {
        const auto u = bg->usage();
        return fail(EUCLEAN,
                    "block group {}: its extent items leave {} bytes free but the block group item says {} of {} "
                    "used ({} in superblock stripes): run fsck.ubtrfs, or mount with -o ro",
                    key.objectid, u.free, u.used, u.length, u.super_bytes);
      }
    }
    attach_block_group(*bg);
    UBTRFS_TRY_STATUS(groups_.add(std::move(bg)));
  }
  return {};
}

void FsInfo::install_free_space_root(std::unique_ptr<RootRecord> rec) {
  fst_root_ = std::move(rec);
  fst_pending_ = false;
  std::lock_guard g(super_mu_);
  super_.compat_ro_flags = super_.compat_ro_flags.get() | kCompatRoFreeSpaceTree | kCompatRoFreeSpaceTreeValid;
}

void FsInfo::attach_block_group(alloc::BlockGroup& bg) {
  bg.attach(&spaces_->for_flags(bg.flags()), alloc::profile_factor(bg.flags() & kBlockGroupProfileMask));
}

void FsInfo::update_global_rsv() {
  // The global trees' sizes from their root items (btrfs_root_used); the root tree's own item is
  // not on disk, count its root block.
  uint64_t bytes = params_.nodesize;
  unsigned nroots = 0;
  for (auto* r : {extent_root_.get(), csum_root_.get(), fst_root_.get(), bg_root_.get()}) {
    if (!r) continue;
    bytes += r->item.bytes_used.get();
    nroots++;
  }
  spaces_->update_global_rsv(bytes, nroots);
}

Status FsInfo::load_device_space() {
  const DevItem& di = super_.dev_item;
  dev_space_ = std::make_unique<alloc::DeviceSpace>(di.total_bytes.get());
  if (di.total_bytes.get() > dev_->size())
    return fail(EUCLEAN, "device item says {} bytes but the device has {}", di.total_bytes.get(), dev_->size());
  TreeRoot& tree = *dev_root_->tree;
  Path path;
  auto ret = search_slot(nullptr, tree, Key{di.devid.get(), kDevExtentKey, 0}, path, 0, false);
  if (!ret) return fail(ret.error());
  if (path.slot() >= static_cast<int>(path.leaf().nritems())) {
    auto nx = next_leaf(tree, path);
    if (!nx) return fail(nx.error());
    if (!*nx) return {};
  }
  for (;;) {
    Key key = path.leaf().item_key(path.slot());
    if (key.objectid != di.devid.get() || key.type != kDevExtentKey) {
      if (key.objectid > di.devid.get()) break;
    } else {
      auto body = path.leaf().item_data(path.slot());
      if (body.size() != sizeof(DevExtent))
        return fail(EUCLEAN, "DEV_EXTENT [{} 204 {}] has size {}", key.objectid, key.offset, body.size());
      const auto de = ubtrfs::load<DevExtent>(body.data());
      auto st = dev_space_->add_extent(key.offset, de.length);
      if (!st) return fail(st.error().err, "DEV_EXTENT [{} 204 {}]: {}", key.objectid, key.offset, st.error().message);
    }
    auto nx = next_item(tree, path);
    if (!nx) return fail(nx.error());
    if (!*nx) break;
  }
  if (dev_space_->allocated_bytes() != di.bytes_used.get())
    spdlog::warn("{}: device item bytes_used {} but device extents sum to {}", path_, di.bytes_used.get(),
                 dev_space_->allocated_bytes());
  return {};
}

Result<RootRecord*> FsInfo::fs_root(uint64_t objectid) {
  std::lock_guard g(fs_roots_mu_);
  auto it = fs_roots_.find(objectid);
  if (it != fs_roots_.end()) {
    if (it->second->dropped) return fail(ESTALE, "{}: subvolume {} was deleted", path_, objectid);
    return it->second.get();
  }
  if (objectid != kFsTreeObjectid && (objectid < kFirstFreeObjectid || objectid > kLastFreeObjectid))
    return fail(ENOENT, "{} is not a subvolume id", objectid);
  auto rec = load_root_record(objectid, true);
  if (!rec) return fail(rec.error().err, "{}: subvolume {}: {}", path_, objectid, rec.error().message);
  // A dead root (deleted: refs 0) is the cleaner's, never loaded again (a file handle into a
  // deleted subvolume is stale, as on the kernel).
  if ((*rec)->item.refs.get() == 0) return fail(ESTALE, "{}: subvolume {} was deleted", path_, objectid);
  RootRecord* p = rec->get();
  fs_roots_.emplace(objectid, std::move(*rec));
  return p;
}

RootRecord* FsInfo::add_fs_root(std::unique_ptr<RootRecord> rec) {
  std::lock_guard g(fs_roots_mu_);
  RootRecord* p = rec.get();
  fs_roots_[p->objectid()] = std::move(rec);
  return p;
}

bool FsInfo::root_loaded(uint64_t objectid) {
  std::lock_guard g(fs_roots_mu_);
  return fs_roots_.contains(objectid);
}

void FsInfo::set_root_dropped(uint64_t objectid, bool dropped) {
  std::lock_guard g(fs_roots_mu_);
  if (auto it = fs_roots_.find(objectid); it != fs_roots_.end()) it->second->dropped = dropped;
}

void FsInfo::wake_cleaner() {
  std::lock_guard g(cleaner_mu_);
  if (cleaner_waker_) cleaner_waker_();
}

void FsInfo::set_cleaner_waker(std::function<void()> f) {
  std::lock_guard g(cleaner_mu_);
  cleaner_waker_ = std::move(f);
}

std::vector<RootRecord*> FsInfo::loaded_roots() {
  std::vector<RootRecord*> out;
  for (auto* r : {extent_root_.get(), dev_root_.get(), csum_root_.get(), fst_root_.get(), bg_root_.get(),
                  uuid_root_.get(), quota_root_.get()})
    if (r) out.push_back(r);
  std::lock_guard g(fs_roots_mu_);
  for (auto& [id, r] : fs_roots_)
    if (!r->dropped) out.push_back(r.get());
  return out;
}

}  // namespace ubtrfs::fs
