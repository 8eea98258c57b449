// make_btrfs: builds the initial trees of a new filesystem and writes them; see mkfs.h for the layout,
// the write order and the invariants.
//
// Each tree is one leaf (LeafBuilder). Contents, all at generation kInitialGeneration:
//   root tree (1)     ROOT_ITEMs of extent 2, dev 4, fs 5, csum 7, uuid 9, free-space 10, data-reloc -9;
//                     root tree dir 6: INODE_ITEM, INODE_REF ".." (index 0), DIR_ITEM "default" ->
//                     (5 ROOT_ITEM -1); INODE_REF (5 12 6) "default" index 0 (FORMAT.md §4.6)
//   chunk tree (3)    DEV_ITEM (1 216 1), one CHUNK_ITEM per chunk
//   dev tree (4)      one DEV_EXTENT per chunk copy (no DEV_STATS: the kernel adds it at first mount)
//   extent tree (2)   BLOCK_GROUP_ITEM per chunk with exact used, a skinny METADATA_ITEM (refs 1, inline
//                     TREE_BLOCK_REF to its owner) per tree block
//   fs tree (5), data-reloc tree (-9)   root dir 256: INODE_ITEM + INODE_REF (256 12 256) ".." index 0
//   csum tree (7)     empty
//   uuid tree (9)     UUID_KEY_SUBVOL for the fs tree uuid -> [5]
//   free space (10)   FREE_SPACE_INFO + maximal FREE_SPACE_EXTENTs per block group, nothing else
//   block group (11)  with MkfsConfig::block_group_tree only: the BLOCK_GROUP_ITEMs (then not in the
//                     extent tree), compat_ro BLOCK_GROUP_TREE
// The superblock carries the system chunk in sys_chunk_array, backup root slot 0, and
// uuid_tree_generation = generation (the UUID tree is complete, so the kernel need not rescan).
#include <sys/time.h>
#include <uuid/uuid.h>

#include <algorithm>
#include <cstring>

#include "tools/mkfs/leaf_builder.h"
#include "tools/mkfs/mkfs.h"
#include "tree/block_io.h"
#include "tree/chunk_map.h"
#include "tree/superblock.h"
#include "tree/tree_checker.h"

namespace ubtrfs::mkfs {
namespace {

// A window on the first `size` bytes of a device: superblock mirrors beyond the filesystem size (e.g.
// with -b smaller than the device) must not be written, as the kernel does not write them either.
// Also counts the writes it passes on.
class DeviceWindow final : public io::BlockDevice {
 public:
  DeviceWindow(io::BlockDevice& dev, uint64_t size) : dev_(dev), size_(std::min(size, dev.size())) {}
  uint64_t size() const override { return size_; }
  bool read_only() const override { return dev_.read_only(); }
  std::string name() const override { return dev_.name(); }
  Status read(uint64_t off, std::span<uint8_t> buf) override {
    if (off > size_ || buf.size() > size_ - off) return fail(EINVAL, "read beyond filesystem end at {}", off);
    return dev_.read(off, buf);
  }
  Status write(uint64_t off, std::span<const uint8_t> buf) override {
    if (off > size_ || buf.size() > size_ - off) return fail(EINVAL, "write beyond filesystem end at {}", off);
    ++writes_;
    return dev_.write(off, buf);
  }
  Status flush() override { return dev_.flush(); }
  size_t writes() const { return writes_; }

 private:
  io::BlockDevice& dev_;
  uint64_t size_;
  size_t writes_ = 0;
};

UuidBytes random_uuid() {
  UuidBytes u;
  uuid_generate(u.data());
  return u;
}

Timespec timespec_at(uint64_t sec) {
  Timespec t{};
  t.sec = sec;
  t.nsec = 0;
  return t;
}

InodeItem dir_inode(uint64_t generation, uint64_t nbytes, uint64_t now) {
  InodeItem i{};
  i.generation = generation;
  i.transid = generation;
  i.size = 0;
  i.nbytes = nbytes;
  i.nlink = 1;
  i.mode = 040755;
  i.atime = i.ctime = i.mtime = i.otime = timespec_at(now);
  return i;
}

// ROOT_ITEM for a tree whose single leaf sits at `bytenr`. The embedded inode follows what mkfs.btrfs
// writes (a 040755 dir stub; all zero for the data-reloc tree, FORMAT.md §3.13).
RootItem root_item(uint64_t objectid, uint64_t bytenr, uint64_t generation, uint32_t nodesize, uint64_t now,
                   const UuidBytes* uuid) {
  RootItem r{};
  if (objectid != kDataRelocTreeObjectid) {
    r.inode.generation = 1;
    r.inode.size = 3;
    r.inode.nbytes = nodesize;
    r.inode.nlink = 1;
    r.inode.mode = 040755;
  }
  r.generation = generation;
  r.root_dirid = (objectid == kFsTreeObjectid || objectid == kDataRelocTreeObjectid) ? kFirstFreeObjectid : 0;
  r.bytenr = bytenr;
  r.byte_limit = 0;
  r.bytes_used = nodesize;
  r.last_snapshot = 0;
  r.flags = 0;
  r.refs = 1;
  r.level = 0;
  r.generation_v2 = generation;
  if (uuid) std::memcpy(r.uuid, uuid->data(), 16);
  if (objectid == kFsTreeObjectid) {
    r.ctransid = generation;
    r.otransid = generation;
    r.ctime = r.otime = timespec_at(now);
  }
  return r;
}

uint64_t uuid_half(const UuidBytes& u, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u[at + i]) << (8 * i);
  return v;
}

// Free runs of one block group: the complement of its tree blocks (mirror stripes count as free).
std::vector<Range> free_runs(const ChunkPlan& bg, const std::vector<uint64_t>& blocks, uint32_t nodesize) {
  std::vector<Range> runs;
  uint64_t cursor = bg.logical;
  for (uint64_t b : blocks) {
    if (b > cursor) runs.push_back({cursor, b - cursor});
    cursor = b + nodesize;
  }
  if (cursor < bg.logical + bg.length) runs.push_back({cursor, bg.logical + bg.length - cursor});
  return runs;
}

DevItem make_dev_item(const Layout& l, const UuidBytes& dev_uuid, const UuidBytes& fsid) {
  DevItem d{};
  d.devid = 1;
  d.total_bytes = l.total_bytes;
  d.bytes_used = l.dev_bytes_used();
  d.io_align = l.sectorsize;
  d.io_width = l.sectorsize;
  d.sector_size = l.sectorsize;
  d.type = 0;
  d.generation = 0;
  d.start_offset = 0;
  d.dev_group = 0;
  d.seek_speed = 0;
  d.bandwidth = 0;
  std::memcpy(d.uuid, dev_uuid.data(), 16);
  std::memcpy(d.fsid, fsid.data(), 16);
  return d;
}

Status zero_range(io::BlockDevice& dev, uint64_t off, uint64_t len) {
  if (off >= dev.size()) return {};
  len = std::min(len, dev.size() - off);
  static const std::vector<uint8_t> zeros(1 << 20, 0);
  while (len) {
    const uint64_t n = std::min<uint64_t>(len, zeros.size());
    UBTRFS_TRY_STATUS(dev.write(off, std::span<const uint8_t>(zeros.data(), n)));
    off += n;
    len -= n;
  }
  return {};
}

}  // namespace

Result<MkfsResult> make_btrfs(io::BlockDevice& raw_dev, const MkfsConfig& config) {
  if (raw_dev.read_only()) return fail(EROFS, "{} is opened read-only", raw_dev.name());
  MkfsResult out;
  out.layout = UBTRFS_TRY(compute_layout(config, raw_dev.size()));
  const Layout& l = out.layout;
  const uint64_t gen = kInitialGeneration;
  const uint64_t now = config.now_sec ? *config.now_sec : static_cast<uint64_t>(time(nullptr));
  out.fsid = config.fsid.value_or(random_uuid());
  out.dev_uuid = config.dev_uuid.value_or(random_uuid());
  out.chunk_tree_uuid = config.chunk_tree_uuid.value_or(random_uuid());
  out.fs_tree_uuid = config.fs_tree_uuid.value_or(random_uuid());

  FsParams fs;
  fs.nodesize = l.nodesize;
  fs.sectorsize = l.sectorsize;
  fs.csum_type = config.csum_type;
  fs.fsid = out.fsid;
  fs.chunk_tree_uuid = out.chunk_tree_uuid;
  fs.incompat_flags = kIncompatMixedBackref | kIncompatExtendedIref | kIncompatSkinnyMetadata | kIncompatNoHoles |
                      (l.nodesize > 4096 ? kIncompatBigMetadata : 0) | (l.mixed ? kIncompatMixedGroups : 0);
  fs.compat_ro_flags = kCompatRoFreeSpaceTree | kCompatRoFreeSpaceTreeValid |
                       (l.block_group_tree ? kCompatRoBlockGroupTree : 0);
  fs.super_generation = gen;

  std::map<uint64_t, LeafBuilder> trees;
  for (const auto& [id, bytenr] : l.tree_bytenr) trees.emplace(id, LeafBuilder(id, bytenr));
  auto bytenr_of = [&](uint64_t id) { return l.tree_bytenr.at(id); };

  // ---- root tree ----
  {
    LeafBuilder& root = trees.at(kRootTreeObjectid);
    for (uint64_t id : {kExtentTreeObjectid, kDevTreeObjectid, kFsTreeObjectid, kCsumTreeObjectid, kUuidTreeObjectid,
                        kFreeSpaceTreeObjectid, kBlockGroupTreeObjectid, kDataRelocTreeObjectid}) {
      if (!l.tree_bytenr.contains(id)) continue;  // the block group tree only when asked for
      const UuidBytes* uuid = id == kFsTreeObjectid ? &out.fs_tree_uuid : nullptr;
      root.add_struct(Key{id, kRootItemKey, 0}, root_item(id, bytenr_of(id), gen, l.nodesize, now, uuid));
    }
    root.add_struct(Key{kRootTreeDirObjectid, kInodeItemKey, 0}, dir_inode(gen, l.nodesize, now));
    root.add(Key{kRootTreeDirObjectid, kInodeRefKey, kRootTreeDirObjectid}, inode_ref(0, ".."));
    root.add(Key{kRootTreeDirObjectid, kDirItemKey, io::name_hash("default")},
             dir_item(Key{kFsTreeObjectid, kRootItemKey, ~0ull}, gen, "default", kFtDir));
    root.add(Key{kFsTreeObjectid, kInodeRefKey, kRootTreeDirObjectid}, inode_ref(0, "default"));
  }

  // ---- chunk tree and dev tree ----
  const DevItem dev_item = make_dev_item(l, out.dev_uuid, out.fsid);
  {
    LeafBuilder& chunk = trees.at(kChunkTreeObjectid);
    LeafBuilder& dev = trees.at(kDevTreeObjectid);
    chunk.add_struct(Key{kDevItemsObjectid, kDevItemKey, 1}, dev_item);
    for (const ChunkPlan* c : l.chunks()) {
      chunk.add(Key{kFirstChunkTreeObjectid, kChunkItemKey, c->logical},
                chunk_item(c->length, c->type, l.sectorsize, c->physical, out.dev_uuid));
      for (uint64_t phys : c->physical) {
        DevExtent e{};
        e.chunk_tree = kChunkTreeObjectid;
        e.chunk_objectid = kFirstChunkTreeObjectid;
        e.chunk_offset = c->logical;
        e.length = c->length;
        std::memcpy(e.chunk_tree_uuid, out.chunk_tree_uuid.data(), 16);
        dev.add_struct(Key{1, kDevExtentKey, phys}, e);
      }
    }
  }

  // ---- extent tree and free space tree ----
  {
    LeafBuilder& extent = trees.at(kExtentTreeObjectid);
    LeafBuilder& fst = trees.at(kFreeSpaceTreeObjectid);
    LeafBuilder& bg_items = l.block_group_tree ? trees.at(kBlockGroupTreeObjectid) : extent;
    for (const ChunkPlan* c : l.chunks()) {
      std::vector<uint64_t> blocks;
      for (const auto& [id, bytenr] : l.tree_bytenr)
        if (bytenr >= c->logical && bytenr < c->logical + c->length) blocks.push_back(bytenr);
      std::sort(blocks.begin(), blocks.end());
      BlockGroupItem bg{};
      bg.used = blocks.size() * l.nodesize;
      bg.chunk_objectid = kFirstChunkTreeObjectid;
      bg.flags = c->type;
      bg_items.add_struct(Key{c->logical, kBlockGroupItemKey, c->length}, bg);

      const auto runs = free_runs(*c, blocks, l.nodesize);
      FreeSpaceInfo info{};
      info.extent_count = static_cast<uint32_t>(runs.size());
      info.flags = 0;
      fst.add_struct(Key{c->logical, kFreeSpaceInfoKey, c->length}, info);
      for (const Range& r : runs) fst.add(Key{r.start, kFreeSpaceExtentKey, r.length}, {});
    }
    for (const auto& [id, bytenr] : l.tree_bytenr)
      extent.add(Key{bytenr, kMetadataItemKey, 0}, metadata_item(gen, id));
  }

  // ---- subvolume-like trees ----
  for (uint64_t id : {kFsTreeObjectid, kDataRelocTreeObjectid}) {
    LeafBuilder& t = trees.at(id);
    t.add_struct(Key{kFirstFreeObjectid, kInodeItemKey, 0},
                 dir_inode(gen, id == kFsTreeObjectid ? l.nodesize : 0, now));
    t.add(Key{kFirstFreeObjectid, kInodeRefKey, kFirstFreeObjectid}, inode_ref(0, ".."));
  }
  {
    le64 subvol{};
    subvol.set(kFsTreeObjectid);
    trees.at(kUuidTreeObjectid)
        .add_struct(Key{uuid_half(out.fs_tree_uuid, 0), kUuidKeySubvol, uuid_half(out.fs_tree_uuid, 8)}, subvol);
  }

  // ---- build and check every leaf ----
  for (auto& [id, builder] : trees) {
    auto block = UBTRFS_TRY(builder.build(fs, gen));
    if (auto ck = check_leaf(fs, block); !ck)
      return fail(EUCLEAN, "mkfs built an invalid leaf for tree {}: {}", static_cast<int64_t>(id), ck.error().message);
    out.leaves.emplace(id, std::move(block));
  }

  // ---- superblock ----
  Superblock& sb = out.super;
  std::memset(&sb, 0, sizeof(sb));
  std::memcpy(sb.fsid, out.fsid.data(), 16);
  sb.bytenr = kSuperInfoOffset;
  sb.flags = kHeaderFlagWritten;
  sb.magic = kSuperMagic;
  sb.generation = gen;
  sb.root = bytenr_of(kRootTreeObjectid);
  sb.chunk_root = bytenr_of(kChunkTreeObjectid);
  sb.log_root = 0;
  sb.log_root_transid = 0;
  sb.total_bytes = l.total_bytes;
  sb.bytes_used = l.bytes_used();
  sb.root_dir_objectid = kRootTreeDirObjectid;
  sb.num_devices = 1;
  sb.sectorsize = l.sectorsize;
  sb.nodesize = l.nodesize;
  sb.leafsize = l.nodesize;
  sb.stripesize = l.sectorsize;
  sb.chunk_root_generation = gen;
  sb.compat_flags = 0;
  sb.compat_ro_flags = fs.compat_ro_flags;
  sb.incompat_flags = fs.incompat_flags;
  sb.csum_type = static_cast<uint16_t>(config.csum_type);
  sb.root_level = 0;
  sb.chunk_root_level = 0;
  sb.log_root_level = 0;
  sb.dev_item = dev_item;
  std::memcpy(sb.label, config.label.data(), std::min<size_t>(config.label.size(), kLabelSize - 1));
  sb.cache_generation = 0;
  sb.uuid_tree_generation = gen;
  {
    const Bytes sys = chunk_item(l.system.length, l.system.type, l.sectorsize, l.system.physical, out.dev_uuid);
    DiskKey k{};
    k.set(Key{kFirstChunkTreeObjectid, kChunkItemKey, l.system.logical});
    store(sb.sys_chunk_array, k);
    std::memcpy(sb.sys_chunk_array + sizeof(DiskKey), sys.data(), sys.size());
    sb.sys_chunk_array_size = static_cast<uint32_t>(sizeof(DiskKey) + sys.size());
  }
  {
    RootBackup& b = sb.super_roots[0];
    b.tree_root = bytenr_of(kRootTreeObjectid);
    b.tree_root_gen = gen;
    b.chunk_root = bytenr_of(kChunkTreeObjectid);
    b.chunk_root_gen = gen;
    b.extent_root = bytenr_of(kExtentTreeObjectid);
    b.extent_root_gen = gen;
    b.fs_root = bytenr_of(kFsTreeObjectid);
    b.fs_root_gen = gen;
    b.dev_root = bytenr_of(kDevTreeObjectid);
    b.dev_root_gen = gen;
    b.csum_root = bytenr_of(kCsumTreeObjectid);
    b.csum_root_gen = gen;
    b.total_bytes = l.total_bytes;
    b.bytes_used = l.bytes_used();
    b.num_devices = 1;
  }
  csum_superblock(sb);

  // ---- write: wipe, trees, flush, supers, flush ----
  DeviceWindow whole(raw_dev, raw_dev.size());
  UBTRFS_TRY_STATUS(zero_range(whole, 0, kReserved1MForSuper));  // includes the primary super
  for (int mirror = 1; mirror < kSuperMirrorMax; ++mirror)
    if (super_offset(mirror) + kSuperInfoSize <= whole.size())
      UBTRFS_TRY_STATUS(zero_range(whole, super_offset(mirror), kSuperInfoSize));
  for (const auto& [off, len] : config.extra_wipe) UBTRFS_TRY_STATUS(zero_range(whole, off, len));
  UBTRFS_TRY_STATUS(whole.flush());

  ChunkMap map;
  for (const ChunkPlan* c : l.chunks()) {
    ChunkMapping m;
    m.logical = c->logical;
    m.length = c->length;
    m.type = c->type;
    for (uint64_t p : c->physical) {
      ChunkStripe s;
      s.devid = 1;
      s.physical = p;
      s.dev_uuid = out.dev_uuid;
      m.stripes.push_back(s);
    }
    UBTRFS_TRY_STATUS(map.add(std::move(m)));
  }
  for (const auto& [id, block] : out.leaves)
    UBTRFS_TRY_STATUS(write_tree_block(whole, map, l.tree_bytenr.at(id), block));
  UBTRFS_TRY_STATUS(whole.flush());

  DeviceWindow fs_window(raw_dev, l.total_bytes);
  UBTRFS_TRY_STATUS(write_superblocks(fs_window, sb));
  UBTRFS_TRY_STATUS(fs_window.flush());
  out.writes = whole.writes() + fs_window.writes();
  return out;
}

}  // namespace ubtrfs::mkfs
