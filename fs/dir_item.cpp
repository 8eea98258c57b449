// Directory entries and inode back references (btrfs dir-item.c / inode-item.c): see dir_item.h.
//
// Bodies are parsed with bounds checks on every field (a corrupt item is EUCLEAN naming its key,
// never a crash), edited as byte vectors and written back whole through write_item_body.
#include "fs/dir_item.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "io/checksum.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

std::string key_text(const Key& k) { return fmt::format("[{} {} {}]", k.objectid, k.type, k.offset); }

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
void store_append(std::vector<uint8_t>& out, const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
void append_bytes(std::vector<uint8_t>& out, std::string_view s) { out.insert(out.end(), s.begin(), s.end()); }

// Items with keys in [lo, hi], in key order (copies; locks released on return). A key below `lo`
// inserted while the walk crossed from the leaf its search ended in never comes back: next_leaf
// does not search below the path's search key (rule
// a_leaf_crossing_never_passes_back_over_the_search_key, tree/ctree.h). Before that rule the
// eviction's delete_items_of deleted a directory's fresh DIR_INDEX that way ("no dir index";
// tests/fs/delayed_dir_index_test.cpp, a_range_walk_checks_its_lower_bound).
Result<std::vector<std::pair<Key, std::vector<uint8_t>>>> collect_items(TreeRoot& root, const Key& lo, const Key& hi,
                                                                        size_t max) {
  std::vector<std::pair<Key, std::vector<uint8_t>>> out;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root, lo, p, 0, false));
  if (p.leaf().nritems() == 0) return out;
  bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
  if (!valid) valid = UBTRFS_TRY(next_leaf(root, p));
  while (valid && out.size() < max) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (hi < k) break;
    auto d = p.leaf().item_data(p.slots[0]);
    out.emplace_back(k, std::vector<uint8_t>(d.begin(), d.end()));
    valid = UBTRFS_TRY(next_item(root, p));
  }
  return out;
}

// INODE_REF body entries: {index u64, name_len u16, name}.
Result<std::vector<InodeRefRecord>> parse_inode_ref(std::span<const uint8_t> body, const Key& key) {
  std::vector<InodeRefRecord> out;
  size_t off = 0;
  while (off < body.size()) {
    if (body.size() - off < sizeof(InodeRef))
      return fail(EUCLEAN, "inode ref {} truncated at offset {} of {}", key_text(key), off, body.size());
    const auto ref = load<InodeRef>(body.data() + off);
    const size_t len = ref.name_len.get();
    off += sizeof(InodeRef);
    if (len == 0 || len > kNameLen || body.size() - off < len)
      return fail(EUCLEAN, "inode ref {} has bad name length {} at offset {}", key_text(key), len, off);
    out.push_back({key.offset, ref.index.get(), std::string(reinterpret_cast<const char*>(body.data() + off), len), false});
    off += len;
  }
  return out;
}

// INODE_EXTREF body entries: {parent u64, index u64, name_len u16, name}.
Result<std::vector<InodeRefRecord>> parse_inode_extref(std::span<const uint8_t> body, const Key& key) {
  std::vector<InodeRefRecord> out;
  size_t off = 0;
  while (off < body.size()) {
    if (body.size() - off < sizeof(InodeExtref))
      return fail(EUCLEAN, "inode extref {} truncated at offset {} of {}", key_text(key), off, body.size());
    const auto ref = load<InodeExtref>(body.data() + off);
    const size_t len = ref.name_len.get();
    off += sizeof(InodeExtref);
    if (len == 0 || len > kNameLen || body.size() - off < len)
      return fail(EUCLEAN, "inode extref {} has bad name length {} at offset {}", key_text(key), len, off);
    out.push_back({ref.parent_objectid.get(), ref.index.get(),
                   std::string(reinterpret_cast<const char*>(body.data() + off), len), true});
    off += len;
  }
  return out;
}

void append_inode_ref(std::vector<uint8_t>& body, uint64_t index, std::string_view name) {
  InodeRef r{};
  r.index = index;
  r.name_len = static_cast<uint16_t>(name.size());
  store_append(body, r);
  append_bytes(body, name);
}

void append_inode_extref(std::vector<uint8_t>& body, uint64_t parent, uint64_t index, std::string_view name) {
  InodeExtref r{};
  r.parent_objectid = parent;
  r.index = index;
  r.name_len = static_cast<uint16_t>(name.size());
  store_append(body, r);
  append_bytes(body, name);
}

std::vector<uint8_t> serialize_refs(const std::vector<InodeRefRecord>& refs) {
  std::vector<uint8_t> body;
  for (const auto& r : refs) {
    if (r.extref)
      append_inode_extref(body, r.parent, r.index, r.name);
    else
      append_inode_ref(body, r.index, r.name);
  }
  return body;
}

std::vector<uint8_t> serialize_entries(const std::vector<DirEntryRecord>& entries) {
  std::vector<uint8_t> body;
  for (const auto& e : entries) append_dir_entry(body, e);
  return body;
}

}  // namespace

Result<std::vector<DirEntryRecord>> parse_dir_entries(std::span<const uint8_t> body, const Key& key) {
  std::vector<DirEntryRecord> out;
  size_t off = 0;
  while (off < body.size()) {
    if (body.size() - off < sizeof(DirItem))
      return fail(EUCLEAN, "dir item {} truncated at offset {} of {}", key_text(key), off, body.size());
    const auto di = load<DirItem>(body.data() + off);
    const size_t name_len = di.name_len.get(), data_len = di.data_len.get();
    off += sizeof(DirItem);
    if (name_len == 0 || name_len > kNameLen)
      return fail(EUCLEAN, "dir item {} has bad name length {}", key_text(key), name_len);
    if (body.size() - off < name_len + data_len)
      return fail(EUCLEAN, "dir item {} entry of {} name and {} data bytes overruns the item of {} bytes",
                  key_text(key), name_len, data_len, body.size());
    const uint8_t ft = di.type & ~kFtEncrypted;
    if (ft == kFtUnknown || ft >= kFtMax) return fail(EUCLEAN, "dir item {} has invalid type {}", key_text(key), ft);
    DirEntryRecord e;
    e.location = di.location.cpu();
    e.type = di.type;
    e.transid = di.transid.get();
    e.name.assign(reinterpret_cast<const char*>(body.data() + off), name_len);
    off += name_len;
    e.data.assign(body.data() + off, body.data() + off + data_len);
    off += data_len;
    out.push_back(std::move(e));
  }
  return out;
}

void append_dir_entry(std::vector<uint8_t>& body, const DirEntryRecord& e) {
  DirItem di{};
  di.location.set(e.location);
  di.transid = e.transid;
  di.data_len = static_cast<uint16_t>(e.data.size());
  di.name_len = static_cast<uint16_t>(e.name.size());
  di.type = e.type;
  store_append(body, di);
  append_bytes(body, e.name);
  body.insert(body.end(), e.data.begin(), e.data.end());
}

Status write_item_body(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body) {
  const uint32_t limit = max_item_size(root.ctx().fs.nodesize);
  if (body.size() > limit)
    return fail(EOVERFLOW, "item {} of {} bytes exceeds the maximum item size {} of root {}", key_text(key),
                body.size(), limit, root.objectid());
  // The current size, read without COW (the caller serialises writers of this objectid).
  size_t old_size = 0;
  bool exists = false;
  {
    Path p;
    if (UBTRFS_TRY(search_slot(nullptr, root, key, p, 0, false)) == 0) {
      exists = true;
      old_size = p.leaf().item_size(p.slots[0]);
    }
  }
  if (!exists) {
    if (body.empty()) return {};
    return insert_item(h, root, key, body);
  }
  if (body.empty()) return delete_item(h, root, key);
  Path p;
  if (body.size() > old_size) {
    const auto extra = static_cast<uint32_t>(body.size() - old_size);
    p.search_for_extension = true;
    if (UBTRFS_TRY(search_slot(&h, root, key, p, static_cast<int>(extra), true)) != 0)
      return fail(EUCLEAN, "item {} of root {} vanished while growing it", key_text(key), root.objectid());
    extend_item(root, p, extra);
  } else {
    if (UBTRFS_TRY(search_slot(&h, root, key, p, 0, true)) != 0)
      return fail(EUCLEAN, "item {} of root {} vanished while rewriting it", key_text(key), root.objectid());
    if (body.size() < old_size) truncate_item(root, p, static_cast<uint32_t>(body.size()), true);
  }
  auto dst = p.leaf().item_data(p.slots[0]);
  std::memcpy(dst.data(), body.data(), body.size());
  root.ctx().cache.mark_dirty(p.nodes[0]);
  return {};
}

Status delete_items_of(TreeHandle& h, TreeRoot& root, uint64_t objectid, uint8_t min_type, uint8_t max_type) {
  const Key lo{objectid, min_type, 0}, hi{objectid, max_type, ~0ull};
  for (;;) {
    Path p;
    UBTRFS_TRY(search_slot(&h, root, lo, p, -1, true));
    if (p.leaf().nritems() == 0) return {};
    int slot = p.slots[0];
    const int nritems = static_cast<int>(p.leaf().nritems());
    if (slot >= nritems) {
      // The first key >= lo is in a later leaf (or none): find it, then delete by exact key.
      p.release();
      auto items = UBTRFS_TRY(collect_items(root, lo, hi, 1));
      if (items.empty()) return {};
      UBTRFS_TRY_STATUS(delete_item(h, root, items[0].first));
      continue;
    }
    int nr = 0;
    while (slot + nr < nritems && !(hi < p.leaf().item_key(slot + nr))) ++nr;
    if (nr == 0) return {};
    UBTRFS_TRY_STATUS(del_items(h, root, p, slot, nr));
  }
}

uint8_t file_type_of_mode(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return kFtRegFile;
    case S_IFDIR: return kFtDir;
    case S_IFCHR: return kFtChrdev;
    case S_IFBLK: return kFtBlkdev;
    case S_IFIFO: return kFtFifo;
    case S_IFSOCK: return kFtSock;
    case S_IFLNK: return kFtSymlink;
    default: return kFtUnknown;
  }
}

uint32_t mode_of_file_type(uint8_t type) {
  switch (type & ~kFtEncrypted) {
    case kFtRegFile: return S_IFREG;
    case kFtDir: return S_IFDIR;
    case kFtChrdev: return S_IFCHR;
    case kFtBlkdev: return S_IFBLK;
    case kFtFifo: return S_IFIFO;
    case kFtSock: return S_IFSOCK;
    case kFtSymlink: return S_IFLNK;
    default: return 0;
  }
}

// ---- DIR_ITEM + DIR_INDEX ------------------------------------------------------------------------

Status insert_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name, const Key& location,
                        uint8_t type, uint64_t index, DirIndexQueue* queue) {
  const Key item_key{dir, kDirItemKey, io::name_hash(name)};
  auto old = UBTRFS_TRY(lookup_item(root, item_key));
  std::vector<DirEntryRecord> entries;
  if (old) entries = UBTRFS_TRY(parse_dir_entries(*old, item_key));
  for (const auto& e : entries)
    if (e.name == name) return fail(EEXIST, "name '{}' already exists in directory {}", name, dir);
  DirEntryRecord e;
  e.name = std::string(name);
  e.location = location;
  e.type = type;
  e.transid = h.transid;
  entries.push_back(e);
  // The kernel (insert_with_overflow) refuses to grow a collision item beyond one leaf item.
  const auto body = serialize_entries(entries);
  if (body.size() > max_item_size(root.ctx().fs.nodesize))
    return fail(EOVERFLOW, "dir item {} of colliding names cannot hold '{}' in directory {}", key_text(item_key),
                name, dir);
  const Key index_key{dir, kDirIndexKey, index};
  if (UBTRFS_TRY(lookup_item(root, index_key)))
    return fail(EEXIST, "dir index {} already exists for '{}'", key_text(index_key), name);
  UBTRFS_TRY_STATUS(write_item_body(h, root, item_key, body));
  std::vector<uint8_t> index_body;
  append_dir_entry(index_body, e);
  if (queue) return queue->insert(dir, index, std::move(index_body));
  return insert_item(h, root, index_key, index_body);
}

Status check_dir_index(TreeRoot& root, uint64_t dir, uint64_t index, std::string_view name) {
  const Key index_key{dir, kDirIndexKey, index};
  auto index_body = UBTRFS_TRY(lookup_item(root, index_key));
  if (!index_body) return fail(ENOENT, "no dir index {} for '{}'", key_text(index_key), name);
  auto idx = UBTRFS_TRY(parse_dir_entries(*index_body, index_key));
  if (idx.size() != 1 || idx[0].name != name)
    return fail(EUCLEAN, "dir index {} does not hold '{}'", key_text(index_key), name);
  return {};
}

Status check_dir_item_room(TreeRoot& root, uint64_t dir, std::string_view name) {
  const Key item_key{dir, kDirItemKey, io::name_hash(name)};
  auto old = UBTRFS_TRY(lookup_item(root, item_key));
  if (!old) return {};
  auto entries = UBTRFS_TRY(parse_dir_entries(*old, item_key));
  for (const auto& e : entries)
    if (e.name == name) return fail(EEXIST, "name '{}' already exists in directory {}", name, dir);
  DirEntryRecord e;
  e.name = std::string(name);
  entries.push_back(e);
  if (serialize_entries(entries).size() > max_item_size(root.ctx().fs.nodesize))
    return fail(EOVERFLOW, "dir item {} of colliding names cannot hold '{}' in directory {}", key_text(item_key),
                name, dir);
  return {};
}

Result<std::optional<DirEntryRecord>> lookup_dir_entry(TreeRoot& root, uint64_t dir, std::string_view name) {
  const Key item_key{dir, kDirItemKey, io::name_hash(name)};
  auto body = UBTRFS_TRY(lookup_item(root, item_key));
  if (!body) return std::optional<DirEntryRecord>{};
  auto entries = UBTRFS_TRY(parse_dir_entries(*body, item_key));
  for (auto& e : entries)
    if (e.name == name) return std::optional<DirEntryRecord>(std::move(e));
  return std::optional<DirEntryRecord>{};
}

Status delete_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name, uint64_t index,
                        DirIndexQueue* queue) {
  const Key item_key{dir, kDirItemKey, io::name_hash(name)};
  auto body = UBTRFS_TRY(lookup_item(root, item_key));
  if (!body) return fail(ENOENT, "no dir item {} for '{}' in directory {}", key_text(item_key), name, dir);
  auto entries = UBTRFS_TRY(parse_dir_entries(*body, item_key));
  const auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntryRecord& e) { return e.name == name; });
  if (it == entries.end()) return fail(ENOENT, "dir item {} has no name '{}' (directory {})", key_text(item_key), name, dir);
  entries.erase(it);
  const Key index_key{dir, kDirIndexKey, index};
  if (queue) {
    // The queue checks the DIR_INDEX (queued or in the tree) before anything changes.
    UBTRFS_TRY_STATUS(queue->remove(dir, index, name));
    return write_item_body(h, root, item_key, serialize_entries(entries));
  }
  // The DIR_INDEX must carry the same name (a mismatch means the caller's index is wrong).
  UBTRFS_TRY_STATUS(check_dir_index(root, dir, index, name));
  UBTRFS_TRY_STATUS(write_item_body(h, root, item_key, serialize_entries(entries)));
  return delete_item(h, root, index_key);
}

Status retarget_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name, uint64_t index,
                          const Key& location, uint8_t type, uint64_t transid) {
  const Key item_key{dir, kDirItemKey, io::name_hash(name)};
  const Key index_key{dir, kDirIndexKey, index};
  for (const Key& key : {item_key, index_key}) {
    auto body = UBTRFS_TRY(lookup_item(root, key));
    if (!body) return fail(ENOENT, "no item {} for '{}' in directory {}", key_text(key), name, dir);
    auto entries = UBTRFS_TRY(parse_dir_entries(*body, key));
    bool found = false;
    for (auto& e : entries) {
      if (e.name != name) continue;
      e.location = location;
      e.type = type;
      e.transid = transid;
      found = true;
    }
    if (!found) return fail(ENOENT, "item {} has no name '{}' (directory {})", key_text(key), name, dir);
    UBTRFS_TRY_STATUS(write_item_body(h, root, key, serialize_entries(entries)));
  }
  return {};
}

Result<uint64_t> highest_dir_index(TreeRoot& root, uint64_t dir) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(nullptr, root, Key{dir, kDirIndexKey, ~0ull}, p, 0, false));
  if (ret == 0) return ~0ull;
  if (p.leaf().nritems() == 0) return 0;
  bool valid = true;
  if (p.slots[0] > 0)
    --p.slots[0];
  else
    valid = UBTRFS_TRY(prev_leaf(root, p));
  if (!valid) return 0;
  const Key k = p.leaf().item_key(p.slots[0]);
  return (k.objectid == dir && k.type == kDirIndexKey) ? k.offset : 0;
}

Result<std::vector<IndexedEntry>> read_dir_index(TreeRoot& root, uint64_t dir, uint64_t start, size_t max) {
  auto items = UBTRFS_TRY(collect_items(root, Key{dir, kDirIndexKey, start}, Key{dir, kDirIndexKey, ~0ull}, max));
  std::vector<IndexedEntry> out;
  out.reserve(items.size());
  for (auto& [k, body] : items) {
    auto entries = UBTRFS_TRY(parse_dir_entries(body, k));
    if (entries.size() != 1) return fail(EUCLEAN, "dir index {} holds {} entries, expect 1", key_text(k), entries.size());
    out.push_back({k.offset, std::move(entries[0])});
  }
  return out;
}

// ---- INODE_REF / INODE_EXTREF ------------------------------------------------------------------

Status insert_inode_ref(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t parent, std::string_view name,
                        uint64_t index, bool extended_iref) {
  const uint32_t limit = max_item_size(root.ctx().fs.nodesize);
  const Key ref_key{ino, kInodeRefKey, parent};
  auto old = UBTRFS_TRY(lookup_item(root, ref_key));
  std::vector<InodeRefRecord> refs;
  if (old) refs = UBTRFS_TRY(parse_inode_ref(*old, ref_key));
  for (const auto& r : refs)
    if (r.name == name) return fail(EEXIST, "inode {} already has name '{}' in directory {}", ino, name, parent);
  std::vector<uint8_t> body = old ? *old : std::vector<uint8_t>{};
  append_inode_ref(body, index, name);
  if (body.size() <= limit) {
    // An EXTREF of the same name would be a duplicate (names move there only when the REF is full).
    if (UBTRFS_TRY(find_inode_ref(root, ino, parent, name)))
      return fail(EEXIST, "inode {} already has name '{}' in directory {}", ino, name, parent);
    return write_item_body(h, root, ref_key, body);
  }
  // btrfs_insert_inode_ref got -EOVERFLOW: the kernel moves on to an extended ref, or EMLINK.
  if (!extended_iref)
    return fail(EMLINK, "inode ref {} is full ({} bytes) and extended inode refs are off", key_text(ref_key),
                old ? old->size() : 0);
  const Key ext_key{ino, kInodeExtrefKey, io::extref_hash(parent, name)};
  auto ext_old = UBTRFS_TRY(lookup_item(root, ext_key));
  std::vector<uint8_t> ext_body;
  if (ext_old) {
    for (const auto& r : UBTRFS_TRY(parse_inode_extref(*ext_old, ext_key)))
      if (r.parent == parent && r.name == name)
        return fail(EEXIST, "inode {} already has name '{}' in directory {}", ino, name, parent);
    ext_body = *ext_old;
  }
  append_inode_extref(ext_body, parent, index, name);
  return write_item_body(h, root, ext_key, ext_body);
}

Result<std::optional<uint64_t>> find_inode_ref(TreeRoot& root, uint64_t ino, uint64_t parent, std::string_view name) {
  const Key ref_key{ino, kInodeRefKey, parent};
  if (auto body = UBTRFS_TRY(lookup_item(root, ref_key)))
    for (const auto& r : UBTRFS_TRY(parse_inode_ref(*body, ref_key)))
      if (r.name == name) return std::optional<uint64_t>(r.index);
  const Key ext_key{ino, kInodeExtrefKey, io::extref_hash(parent, name)};
  if (auto body = UBTRFS_TRY(lookup_item(root, ext_key)))
    for (const auto& r : UBTRFS_TRY(parse_inode_extref(*body, ext_key)))
      if (r.parent == parent && r.name == name) return std::optional<uint64_t>(r.index);
  return std::optional<uint64_t>{};
}

Result<uint64_t> delete_inode_ref(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t parent, std::string_view name) {
  const Key ref_key{ino, kInodeRefKey, parent};
  if (auto body = UBTRFS_TRY(lookup_item(root, ref_key))) {
    auto refs = UBTRFS_TRY(parse_inode_ref(*body, ref_key));
    for (size_t i = 0; i < refs.size(); ++i) {
      if (refs[i].name != name) continue;
      const uint64_t index = refs[i].index;
      refs.erase(refs.begin() + static_cast<ptrdiff_t>(i));
      UBTRFS_TRY_STATUS(write_item_body(h, root, ref_key, serialize_refs(refs)));
      return index;
    }
  }
  const Key ext_key{ino, kInodeExtrefKey, io::extref_hash(parent, name)};
  if (auto body = UBTRFS_TRY(lookup_item(root, ext_key))) {
    auto refs = UBTRFS_TRY(parse_inode_extref(*body, ext_key));
    for (size_t i = 0; i < refs.size(); ++i) {
      if (refs[i].parent != parent || refs[i].name != name) continue;
      const uint64_t index = refs[i].index;
      refs.erase(refs.begin() + static_cast<ptrdiff_t>(i));
      UBTRFS_TRY_STATUS(write_item_body(h, root, ext_key, serialize_refs(refs)));
      return index;
    }
  }
  return fail(ENOENT, "inode {} has no name '{}' in directory {}", ino, name, parent);
}

Result<std::vector<InodeRefRecord>> list_inode_refs(TreeRoot& root, uint64_t ino) {
  auto items = UBTRFS_TRY(collect_items(root, Key{ino, kInodeRefKey, 0}, Key{ino, kInodeExtrefKey, ~0ull}, ~size_t{0}));
  std::vector<InodeRefRecord> out;
  for (auto& [k, body] : items) {
    auto refs = UBTRFS_TRY(k.type == kInodeRefKey ? parse_inode_ref(body, k) : parse_inode_extref(body, k));
    out.insert(out.end(), refs.begin(), refs.end());
  }
  return out;
}

}  // namespace ubtrfs::fs
