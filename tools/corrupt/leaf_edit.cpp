// Leaf and node surgery for ubtrfs-corrupt; see leaf_edit.h. Field offsets come from the packed
// structs of tree/format.h (FORMAT.md §3), so they are the on-disk ones by construction.
#include "tools/corrupt/leaf_edit.h"

#include <charconv>
#include <cstring>
#include <optional>
#include <sstream>

#include "tree/print_tree.h"

namespace ubtrfs::corrupt {

namespace {

struct Named {
  const char* name;
  Field field;
};

#define F(S, m) \
  Field { offsetof(S, m), sizeof(S::m) }

const std::vector<Named> kInodeFields = {
    {"generation", F(InodeItem, generation)},
    {"transid", F(InodeItem, transid)},
    {"size", F(InodeItem, size)},
    {"nbytes", F(InodeItem, nbytes)},
    {"nlink", F(InodeItem, nlink)},
    {"uid", F(InodeItem, uid)},
    {"gid", F(InodeItem, gid)},
    {"mode", F(InodeItem, mode)},
    {"rdev", F(InodeItem, rdev)},
    {"flags", F(InodeItem, flags)},
};
const std::vector<Named> kInodeRefFields = {{"index", F(InodeRef, index)}, {"name_len", F(InodeRef, name_len)}};
const std::vector<Named> kExtrefFields = {{"parent", F(InodeExtref, parent_objectid)},
                                          {"index", F(InodeExtref, index)}};
const std::vector<Named> kDirFields = {
    {"location_objectid", Field{0, 8}}, {"location_type", Field{8, 1}},     {"location_offset", Field{9, 8}},
    {"transid", F(DirItem, transid)},   {"data_len", F(DirItem, data_len)}, {"name_len", F(DirItem, name_len)},
    {"type", F(DirItem, type)},
};
const std::vector<Named> kFileExtentFields = {
    {"generation", F(FileExtentItem, generation)},   {"ram_bytes", F(FileExtentItem, ram_bytes)},
    {"compression", F(FileExtentItem, compression)}, {"type", F(FileExtentItem, type)},
    {"disk_bytenr", F(FileExtentItem, disk_bytenr)}, {"disk_num_bytes", F(FileExtentItem, disk_num_bytes)},
    {"offset", F(FileExtentItem, offset)},           {"num_bytes", F(FileExtentItem, num_bytes)},
};
// Extent items: the first inline ref follows the 24-byte extent_item (skinny / data) or the
// tree_block_info (non-skinny tree block); "ref_type"/"ref_offset"/"ref_count" address it.
const std::vector<Named> kExtentFields = {
    {"refs", F(ExtentItem, refs)},   {"generation", F(ExtentItem, generation)},
    {"flags", F(ExtentItem, flags)}, {"ref_type", Field{24, 1}},
    {"ref_offset", Field{25, 8}},    {"ref_root", Field{25, 8}},
    {"ref_objectid", Field{33, 8}},  {"ref_data_offset", Field{41, 8}},
    {"ref_count", Field{49, 4}},
};
const std::vector<Named> kBgFields = {{"used", F(BlockGroupItem, used)},
                                      {"chunk_objectid", F(BlockGroupItem, chunk_objectid)},
                                      {"flags", F(BlockGroupItem, flags)}};
const std::vector<Named> kFsiFields = {{"extent_count", F(FreeSpaceInfo, extent_count)},
                                       {"flags", F(FreeSpaceInfo, flags)}};
const std::vector<Named> kDevItemFields = {
    {"devid", F(DevItem, devid)}, {"total_bytes", F(DevItem, total_bytes)}, {"bytes_used", F(DevItem, bytes_used)}};
const std::vector<Named> kDevExtentFields = {{"chunk_tree", F(DevExtent, chunk_tree)},
                                             {"chunk_objectid", F(DevExtent, chunk_objectid)},
                                             {"chunk_offset", F(DevExtent, chunk_offset)},
                                             {"length", F(DevExtent, length)}};
const std::vector<Named> kChunkFields = {{"length", F(ChunkItem, length)},
                                         {"owner", F(ChunkItem, owner)},
                                         {"stripe_len", F(ChunkItem, stripe_len)},
                                         {"type", F(ChunkItem, type)},
                                         {"num_stripes", F(ChunkItem, num_stripes)},
                                         {"stripe0_offset", Field{sizeof(ChunkItem) + 8, 8}},
                                         {"stripe1_offset", Field{sizeof(ChunkItem) + 40, 8}}};
const std::vector<Named> kRootFields = {
    {"generation", F(RootItem, generation)}, {"root_dirid", F(RootItem, root_dirid)},
    {"bytenr", F(RootItem, bytenr)},         {"bytes_used", F(RootItem, bytes_used)},
    {"flags", F(RootItem, flags)},           {"refs", F(RootItem, refs)},
    {"level", F(RootItem, level)},           {"generation_v2", F(RootItem, generation_v2)}};
const std::vector<Named> kExtentDataRefFields = {{"root", F(ExtentDataRef, root)},
                                                 {"objectid", F(ExtentDataRef, objectid)},
                                                 {"offset", F(ExtentDataRef, offset)},
                                                 {"count", F(ExtentDataRef, count)}};
const std::vector<Named> kHeaderFields = {{"bytenr", F(Header, bytenr)},
                                          {"flags", F(Header, flags)},
                                          {"generation", F(Header, generation)},
                                          {"owner", F(Header, owner)},
                                          {"nritems", F(Header, nritems)},
                                          {"level", F(Header, level)},
                                          {"fsid0", Field{offsetof(Header, fsid), 1}},
                                          {"csum0", Field{0, 1}}};
const std::vector<Named> kSuperFields = {
    {"generation", F(Superblock, generation)},
    {"root", F(Superblock, root)},
    {"chunk_root", F(Superblock, chunk_root)},
    {"log_root", F(Superblock, log_root)},
    {"total_bytes", F(Superblock, total_bytes)},
    {"bytes_used", F(Superblock, bytes_used)},
    {"num_devices", F(Superblock, num_devices)},
    {"sectorsize", F(Superblock, sectorsize)},
    {"nodesize", F(Superblock, nodesize)},
    {"sys_chunk_array_size", F(Superblock, sys_chunk_array_size)},
    {"chunk_root_generation", F(Superblock, chunk_root_generation)},
    {"compat_ro_flags", F(Superblock, compat_ro_flags)},
    {"incompat_flags", F(Superblock, incompat_flags)},
    {"csum_type", F(Superblock, csum_type)},
    {"root_level", F(Superblock, root_level)},
    {"cache_generation", F(Superblock, cache_generation)},
    {"uuid_tree_generation", F(Superblock, uuid_tree_generation)},
    {"magic", F(Superblock, magic)},
    {"flags", F(Superblock, flags)},
    {"dev_item.bytes_used", Field{offsetof(Superblock, dev_item) + offsetof(DevItem, bytes_used), 8}},
    {"dev_item.total_bytes", Field{offsetof(Superblock, dev_item) + offsetof(DevItem, total_bytes), 8}},
    {"backup0.tree_root_gen", Field{offsetof(Superblock, super_roots) + offsetof(RootBackup, tree_root_gen), 8}},
};

#undef F

Result<Field> lookup(const std::vector<Named>& table, const std::string& name, const char* what) {
  std::string known;
  for (const auto& n : table) {
    if (name == n.name) return n.field;
    known += known.empty() ? n.name : std::string(", ") + n.name;
  }
  return fail(ENOENT, "unknown {} field '{}' (known: {})", what, name, known);
}

uint32_t nritems(std::span<const uint8_t> b) { return load<Header>(b.data()).nritems; }
size_t item_pos(int slot) { return sizeof(Header) + static_cast<size_t>(slot) * sizeof(Item); }

Status check_slot(std::span<const uint8_t> b, int slot) {
  if (b.size() < sizeof(Header)) return fail(EINVAL, "block too small");
  const uint32_t n = nritems(b);
  const bool leaf = load<Header>(b.data()).level == 0;
  const size_t entry = leaf ? sizeof(Item) : sizeof(KeyPtr);
  if (slot < 0 || static_cast<uint32_t>(slot) >= n ||
      sizeof(Header) + (static_cast<size_t>(slot) + 1) * entry > b.size())
    return fail(EINVAL, "slot {} out of range (nritems {})", slot, n);
  return {};
}

std::optional<uint64_t> parse_u64(const std::string& s) {
  if (s.empty()) return std::nullopt;
  if (s[0] == '-') {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return static_cast<uint64_t>(v);
  }
  uint64_t v = 0;
  int base = 10;
  const char* b = s.data();
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    b += 2;
  }
  auto [p, ec] = std::from_chars(b, s.data() + s.size(), v, base);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

uint64_t get_le(const uint8_t* p, size_t size) {
  uint64_t v = 0;
  for (size_t i = 0; i < size; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void put_le(uint8_t* p, size_t size, uint64_t v) {
  for (size_t i = 0; i < size; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

Result<int> find_slot(std::span<const uint8_t> leaf, const Key& key) {
  const uint32_t n = nritems(leaf);
  for (uint32_t i = 0; i < n && item_pos(static_cast<int>(i)) + sizeof(Item) <= leaf.size(); ++i)
    if (load<Item>(leaf.data() + item_pos(static_cast<int>(i))).key.cpu() == key) return static_cast<int>(i);
  return fail(ENOENT, "key ({} {} {}) not found in the leaf", key.objectid, key.type, key.offset);
}

Result<std::pair<size_t, size_t>> item_body_range(std::span<const uint8_t> leaf, int slot) {
  UBTRFS_TRY_STATUS(check_slot(leaf, slot));
  const auto it = load<Item>(leaf.data() + item_pos(slot));
  const size_t off = sizeof(Header) + it.offset.get();
  const size_t size = it.size;
  if (off > leaf.size() || size > leaf.size() - off) return fail(EINVAL, "item {} body lies outside the block", slot);
  return std::make_pair(off, size);
}

Status delete_item(std::span<uint8_t> leaf, int slot) {
  UBTRFS_TRY_STATUS(check_slot(leaf, slot));
  const uint32_t n = nritems(leaf);
  const auto victim = load<Item>(leaf.data() + item_pos(slot));
  const uint32_t size = victim.size;
  // Data of the later items lies below the victim's; shift it up by `size`.
  uint32_t low = victim.offset;  // lowest data offset of the later items
  for (uint32_t i = static_cast<uint32_t>(slot) + 1; i < n; ++i)
    low = std::min(low, load<Item>(leaf.data() + item_pos(static_cast<int>(i))).offset.get());
  const size_t base = sizeof(Header);
  if (base + victim.offset.get() > leaf.size()) return fail(EINVAL, "item data outside the block");
  std::memmove(leaf.data() + base + low + size, leaf.data() + base + low, victim.offset.get() - low);
  for (uint32_t i = static_cast<uint32_t>(slot) + 1; i < n; ++i) {
    auto it = load<Item>(leaf.data() + item_pos(static_cast<int>(i)));
    it.offset = it.offset.get() + size;
    store(leaf.data() + item_pos(static_cast<int>(i) - 1), it);
  }
  std::memset(leaf.data() + item_pos(static_cast<int>(n) - 1), 0, sizeof(Item));
  auto h = load<Header>(leaf.data());
  h.nritems = n - 1;
  store(leaf.data(), h);
  return {};
}

Status swap_keys(std::span<uint8_t> leaf, int slot) {
  UBTRFS_TRY_STATUS(check_slot(leaf, slot));
  UBTRFS_TRY_STATUS(check_slot(leaf, slot + 1));
  auto a = load<Item>(leaf.data() + item_pos(slot));
  auto b = load<Item>(leaf.data() + item_pos(slot + 1));
  std::swap(a.key, b.key);
  store(leaf.data() + item_pos(slot), a);
  store(leaf.data() + item_pos(slot + 1), b);
  return {};
}

Status set_key(std::span<uint8_t> block, int slot, const Key& key) {
  UBTRFS_TRY_STATUS(check_slot(block, slot));
  const bool leaf = load<Header>(block.data()).level == 0;
  const size_t pos = sizeof(Header) + static_cast<size_t>(slot) * (leaf ? sizeof(Item) : sizeof(KeyPtr));
  DiskKey dk{};
  dk.set(key);
  store(block.data() + pos, dk);
  return {};
}

Result<Field> item_field(uint8_t key_type, const std::string& name, bool skinny_metadata_item) {
  switch (key_type) {
    case kInodeItemKey:
      return lookup(kInodeFields, name, "INODE_ITEM");
    case kInodeRefKey:
      return lookup(kInodeRefFields, name, "INODE_REF");
    case kInodeExtrefKey:
      return lookup(kExtrefFields, name, "INODE_EXTREF");
    case kDirItemKey:
    case kDirIndexKey:
    case kXattrItemKey:
      return lookup(kDirFields, name, "DIR_ITEM");
    case kExtentDataKey:
      return lookup(kFileExtentFields, name, "EXTENT_DATA");
    case kExtentItemKey:
    case kMetadataItemKey: {
      auto f = UBTRFS_TRY(lookup(kExtentFields, name, "EXTENT_ITEM"));
      (void)skinny_metadata_item;
      return f;
    }
    case kExtentDataRefKey:
      return lookup(kExtentDataRefFields, name, "EXTENT_DATA_REF");
    case kBlockGroupItemKey:
      return lookup(kBgFields, name, "BLOCK_GROUP_ITEM");
    case kFreeSpaceInfoKey:
      return lookup(kFsiFields, name, "FREE_SPACE_INFO");
    case kDevItemKey:
      return lookup(kDevItemFields, name, "DEV_ITEM");
    case kDevExtentKey:
      return lookup(kDevExtentFields, name, "DEV_EXTENT");
    case kChunkItemKey:
      return lookup(kChunkFields, name, "CHUNK_ITEM");
    case kRootItemKey:
      return lookup(kRootFields, name, "ROOT_ITEM");
    default:
      return fail(ENOENT, "no field table for key type {}: use --item-byte", key_type);
  }
}

Result<Field> header_field(const std::string& name) { return lookup(kHeaderFields, name, "header"); }
Result<Field> super_field(const std::string& name) { return lookup(kSuperFields, name, "superblock"); }

Result<Key> parse_key(const std::string& text) {
  std::istringstream in(text);
  std::string o, t, f, extra;
  if (!(in >> o >> t >> f) || (in >> extra)) return fail(EINVAL, "key '{}' is not 'OBJECTID TYPE OFFSET'", text);
  Key k;
  static const std::pair<const char*, uint64_t> kObjNames[] = {{"ROOT_TREE", 1},
                                                               {"EXTENT_TREE", 2},
                                                               {"CHUNK_TREE", 3},
                                                               {"DEV_TREE", 4},
                                                               {"FS_TREE", 5},
                                                               {"CSUM_TREE", 7},
                                                               {"FREE_SPACE_TREE", 10},
                                                               {"DEV_ITEMS", 1},
                                                               {"FIRST_CHUNK_TREE", 256},
                                                               {"EXTENT_CSUM", kExtentCsumObjectid},
                                                               {"ORPHAN", kOrphanObjectid},
                                                               {"DATA_RELOC_TREE", kDataRelocTreeObjectid},
                                                               {"TREE_LOG", kTreeLogObjectid}};
  bool named = false;
  for (const auto& [n, v] : kObjNames)
    if (o == n) {
      k.objectid = v;
      named = true;
    }
  if (!named) {
    auto v = parse_u64(o);
    if (!v) return fail(EINVAL, "bad objectid '{}' in key '{}'", o, text);
    k.objectid = *v;
  }
  if (auto v = parse_u64(t); v && *v < 256) {
    k.type = static_cast<uint8_t>(*v);
  } else {
    bool found = false;
    for (int ty = 0; ty < 256 && !found; ++ty)
      if (key_type_str(0, static_cast<uint8_t>(ty)) == t || key_type_str(k.objectid, static_cast<uint8_t>(ty)) == t) {
        k.type = static_cast<uint8_t>(ty);
        found = true;
      }
    if (!found) return fail(EINVAL, "unknown key type '{}' in key '{}'", t, text);
  }
  auto v = parse_u64(f);
  if (!v) return fail(EINVAL, "bad offset '{}' in key '{}'", f, text);
  k.offset = *v;
  return k;
}

}  // namespace ubtrfs::corrupt
