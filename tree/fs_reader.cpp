// FsReader implementation; see fs_reader.h for what it owns and its invariants.
//
// Bootstrap order (FORMAT.md §5.1): primary superblock (validated, feature gate for reading) ->
// SYSTEM chunks from sys_chunk_array -> chunk tree (every CHUNK_ITEM added to the map) -> root tree.
// Tree walks follow key pointers with the parent's expectations, so a block that is well-formed but
// misplaced (wrong level, stale generation, wrong first key, foreign owner) is reported where it is.
#include "tree/fs_reader.h"

#include <algorithm>
#include <cctype>
#include <charconv>

#include "tree/block_io.h"
#include "tree/superblock.h"

namespace ubtrfs {

namespace {
// Incompat features whose trees this reader cannot find or map: global roots, the raid stripe tree,
// the remap tree, zoned allocation.
constexpr uint64_t kIncompatLayoutUnsupported =
    kIncompatExtentTreeV2 | kIncompatRaidStripeTree | kIncompatRemapTree | kIncompatZoned;
}  // namespace

Result<std::unique_ptr<FsReader>> FsReader::open(io::BlockDevice& dev) {
  std::unique_ptr<FsReader> r(new FsReader(dev));
  r->super_ = UBTRFS_TRY(read_superblock(dev));
  // Reading tree blocks only needs the block format: every known incompat bit is fine except the
  // ones that change where trees live or how blocks map (the chunk map refuses RAID profiles and
  // other devices itself). Unknown bits are refused: their meaning cannot be guessed.
  const uint64_t incompat = r->super_.incompat_flags;
  if (const uint64_t unknown = incompat & ~kIncompatKnown)
    return fail(EOPNOTSUPP, "{}: cannot open: unknown incompat features 0x{:x} ({})", dev.name(), unknown,
                incompat_flag_names(unknown));
  if (const uint64_t layout = incompat & kIncompatLayoutUnsupported)
    return fail(EOPNOTSUPP, "{}: cannot open: unsupported incompat features 0x{:x} ({})", dev.name(), layout,
                incompat_flag_names(layout));
  if (r->super_.num_devices.get() != 1)
    return fail(EOPNOTSUPP, "{}: cannot open: filesystem has {} devices, only single-device filesystems are supported",
                dev.name(), r->super_.num_devices.get());
  r->params_ = FsParams::from_super(r->super_);
  if (auto st = r->map_.load_sys_chunk_array(r->super_); !st)
    return fail(st.error().err, "{}: {}", dev.name(), st.error().message);
  if (auto st = r->load_chunk_tree(); !st) return fail(st.error().err, "{}: {}", dev.name(), st.error().message);
  return r;
}

Result<std::unique_ptr<FsReader>> FsReader::open_path(const std::string& path) {
  auto dev = UBTRFS_TRY(io::open_device(path, io::OpenMode::kReadOnly));
  auto r = UBTRFS_TRY(open(*dev));
  r->owned_ = std::move(dev);
  return r;
}

RootLocation FsReader::root_tree_root() const {
  RootLocation t;
  t.tree_id = kRootTreeObjectid;
  t.key = Key{kRootTreeObjectid, kRootItemKey, 0};
  t.bytenr = super_.root;
  t.generation = super_.generation;
  t.level = super_.root_level;
  return t;
}

RootLocation FsReader::chunk_tree_root() const {
  RootLocation t;
  t.tree_id = kChunkTreeObjectid;
  t.key = Key{kChunkTreeObjectid, kRootItemKey, 0};
  t.bytenr = super_.chunk_root;
  t.generation = super_.chunk_root_generation;
  t.level = super_.chunk_root_level;
  return t;
}

std::optional<RootLocation> FsReader::log_tree_root() const {
  if (super_.log_root.get() == 0) return std::nullopt;
  RootLocation t;
  t.tree_id = kTreeLogObjectid;
  t.key = Key{kTreeLogObjectid, kRootItemKey, 0};
  t.bytenr = super_.log_root;
  t.generation = super_.generation + 1;
  t.level = super_.log_root_level;
  t.check_generation = false;
  return t;
}

Status FsReader::load_chunk_tree() {
  // The chunk tree must be readable with the SYSTEM chunks alone; every chunk item it holds is then
  // added (the SYSTEM ones again, which ChunkMap::add accepts as identical).
  return for_each_item(chunk_tree_root(), [&](const Key& k, std::span<const uint8_t> body) -> Status {
    if (k.type != kChunkItemKey) return {};
    auto st = map_.add_chunk_item(k.offset, body);
    if (!st) return fail(st.error().err, "chunk tree item {}: {}", k.offset, st.error().message);
    return {};
  });
}

Result<std::vector<uint8_t>> FsReader::read_block(const TreeBlockExpect& expect) const {
  return read_tree_block(*dev_, map_, params_, expect);
}

Status FsReader::walk(const RootLocation& root, const TreeBlockExpect& expect, const BlockVisitor& visit) const {
  auto block = read_block(expect);
  if (!block)
    return fail(block.error().err, "{} tree: {}", tree_short_name(root.tree_id), block.error().message);
  UBTRFS_TRY_STATUS(visit(*block));
  const auto h = load<Header>(block->data());
  if (h.level == 0) return {};
  const uint32_t n = h.nritems;
  for (uint32_t i = 0; i < n; ++i) {
    const auto kp = load<KeyPtr>(block->data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
    TreeBlockExpect child;
    child.bytenr = kp.blockptr;
    child.level = static_cast<uint8_t>(h.level - 1);
    if (root.check_generation) child.generation = kp.generation.get();
    child.owner = root.tree_id;
    child.first_key = kp.key.cpu();
    UBTRFS_TRY_STATUS(walk(root, child, visit));
  }
  return {};
}

Status FsReader::walk_blocks(const RootLocation& root, const BlockVisitor& visit) const {
  TreeBlockExpect e;
  e.bytenr = root.bytenr;
  e.level = root.level;
  if (root.check_generation) e.generation = root.generation;
  e.owner = root.tree_id;
  return walk(root, e, visit);
}

Status FsReader::for_each_item(const RootLocation& root, const ItemVisitor& visit) const {
  return walk_blocks(root, [&](std::span<const uint8_t> block) -> Status {
    if (load<Header>(block.data()).level != 0) return {};
    for (const auto& it : leaf_items(block)) UBTRFS_TRY_STATUS(visit(it.key, it.body));
    return {};
  });
}

Result<std::optional<std::vector<uint8_t>>> FsReader::lookup(const RootLocation& root, const Key& key) const {
  // Descend by key: at each node follow the last pointer whose key is <= the wanted key.
  TreeBlockExpect e;
  e.bytenr = root.bytenr;
  e.level = root.level;
  if (root.check_generation) e.generation = root.generation;
  e.owner = root.tree_id;
  for (;;) {
    auto block = read_block(e);
    if (!block) return fail(block.error().err, "{} tree: {}", tree_short_name(root.tree_id), block.error().message);
    const auto h = load<Header>(block->data());
    if (h.level == 0) {
      for (const auto& it : leaf_items(*block))
        if (it.key == key) return std::optional<std::vector<uint8_t>>(std::vector<uint8_t>(it.body.begin(), it.body.end()));
      return std::optional<std::vector<uint8_t>>();
    }
    const uint32_t n = h.nritems;
    std::optional<KeyPtr> pick;
    for (uint32_t i = 0; i < n; ++i) {
      const auto kp = load<KeyPtr>(block->data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
      if (i > 0 && key < kp.key.cpu()) break;
      pick = kp;
    }
    TreeBlockExpect child;
    child.bytenr = pick->blockptr;
    child.level = static_cast<uint8_t>(h.level - 1);
    if (root.check_generation) child.generation = pick->generation.get();
    child.owner = root.tree_id;
    child.first_key = pick->key.cpu();
    e = child;
  }
}

Result<std::vector<RootLocation>> FsReader::list_roots() const { return list_roots_in(root_tree_root()); }

Result<std::vector<RootLocation>> FsReader::list_roots_in(const RootLocation& container) const {
  std::vector<RootLocation> out;
  auto st = for_each_item(container, [&](const Key& k, std::span<const uint8_t> body) -> Status {
    if (k.type != kRootItemKey) return {};
    const RootItem ri = load_root_item(body);  // size checked by the tree checker
    RootLocation t;
    t.tree_id = k.objectid;
    t.key = k;
    t.bytenr = ri.bytenr;
    t.generation = ri.generation;
    t.level = ri.level;
    t.check_generation = container.check_generation;
    out.push_back(t);
    return {};
  });
  if (!st) return fail(st.error());
  return out;
}

Result<RootLocation> FsReader::find_root(uint64_t tree_id) const {
  if (tree_id == kRootTreeObjectid) return root_tree_root();
  if (tree_id == kChunkTreeObjectid) return chunk_tree_root();
  if (tree_id == kTreeLogObjectid) {
    if (auto l = log_tree_root()) return *l;
    return fail(ENOENT, "the superblock records no log tree");
  }
  auto roots = UBTRFS_TRY(list_roots());
  for (const auto& r : roots)
    if (r.tree_id == tree_id) return r;
  return fail(ENOENT, "tree {} not found in the root tree", tree_id);
}

std::vector<LeafItem> leaf_items(std::span<const uint8_t> leaf) {
  std::vector<LeafItem> out;
  if (leaf.size() < sizeof(Header)) return out;
  const uint32_t n = load<Header>(leaf.data()).nritems;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t ioff = sizeof(Header) + static_cast<uint64_t>(i) * sizeof(Item);
    if (ioff + sizeof(Item) > leaf.size()) break;  // defensive: only checked leaves are passed in
    const auto it = load<Item>(leaf.data() + ioff);
    const uint64_t start = sizeof(Header) + static_cast<uint64_t>(it.offset.get());
    const uint64_t size = it.size;
    if (start > leaf.size() || size > leaf.size() - start) break;
    out.push_back(LeafItem{it.key.cpu(), it.offset, it.size, leaf.subspan(start, size)});
  }
  return out;
}

namespace {

struct TreeName {
  const char* name;
  uint64_t id;
};
constexpr TreeName kTreeNames[] = {
    {"root", kRootTreeObjectid},         {"extent", kExtentTreeObjectid},
    {"chunk", kChunkTreeObjectid},       {"dev", kDevTreeObjectid},
    {"fs", kFsTreeObjectid},             {"csum", kCsumTreeObjectid},
    {"quota", kQuotaTreeObjectid},       {"uuid", kUuidTreeObjectid},
    {"free-space", kFreeSpaceTreeObjectid}, {"block-group", kBlockGroupTreeObjectid},
    {"data-reloc", kDataRelocTreeObjectid}, {"log", kTreeLogObjectid},
    // aliases accepted by parse_tree_id only (first match wins in tree_short_name)
    {"device", kDevTreeObjectid},        {"checksum", kCsumTreeObjectid},
    {"free_space", kFreeSpaceTreeObjectid}, {"fst", kFreeSpaceTreeObjectid},
    {"data_reloc", kDataRelocTreeObjectid}, {"tree_log", kTreeLogObjectid},
    {"root_tree", kRootTreeObjectid},    {"extent_tree", kExtentTreeObjectid},
    {"chunk_tree", kChunkTreeObjectid},  {"dev_tree", kDevTreeObjectid},
    {"fs_tree", kFsTreeObjectid},        {"csum_tree", kCsumTreeObjectid},
    {"quota_tree", kQuotaTreeObjectid},  {"uuid_tree", kUuidTreeObjectid},
    {"free_space_tree", kFreeSpaceTreeObjectid}, {"block_group_tree", kBlockGroupTreeObjectid},
    {"data_reloc_tree", kDataRelocTreeObjectid},
};

}  // namespace

std::string tree_short_name(uint64_t tree_id) {
  for (const auto& t : kTreeNames)
    if (t.id == tree_id) return t.name;
  return std::to_string(tree_id);
}

std::optional<uint64_t> parse_tree_id(const std::string& s) {
  if (s.empty()) return std::nullopt;
  std::string lower;
  for (char c : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& t : kTreeNames)
    if (lower == t.name) return t.id;
  uint64_t v = 0;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (*b == '-') {  // negative ids as progs accepts them, e.g. -9 for the data reloc tree
    int64_t nv = 0;
    auto [p, ec] = std::from_chars(b, e, nv);
    if (ec != std::errc() || p != e) return std::nullopt;
    return static_cast<uint64_t>(nv);
  }
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p != e) return std::nullopt;
  return v;
}

}  // namespace ubtrfs
