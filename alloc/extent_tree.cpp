// The extent tree updater (btrfs extent-tree.c `__btrfs_run_delayed_refs` and the backref
// helpers it calls); the rules are listed in extent_tree.h.
//
// Shape: for each head, load the extent's whole state (its EXTENT_ITEM/METADATA_ITEM parsed, and
// every keyed backref item of the bytenr), apply the head's ref changes to that in-memory state
// with the kernel's placement rules, then write back only what changed. Loading everything first
// keeps the B-tree operations simple (exact-key search, insert, delete) and makes the refusal
// checks (a drop of a missing ref, a count going negative) happen before any byte is modified.
#include "alloc/extent_tree.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "io/checksum.h"
#include "tree/ctree.h"
#include "tree/print_tree.h"

namespace ubtrfs::alloc {

namespace {

void put_le64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
void put_le32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

std::string ref_text(const ExtentBackref& r) {
  switch (r.type) {
    case kTreeBlockRefKey:
      return fmt::format("TREE_BLOCK_REF root {}", r.offset);
    case kExtentDataRefKey:
      return fmt::format("EXTENT_DATA_REF root {} ino {} offset {}", r.root, r.objectid, r.data_offset);
    case kSharedBlockRefKey:
      return fmt::format("SHARED_BLOCK_REF parent {}", r.offset);
    case kSharedDataRefKey:
      return fmt::format("SHARED_DATA_REF parent {}", r.offset);
    default:
      return fmt::format("ref type {} offset {}", r.type, r.offset);
  }
}

bool is_keyed_backref_type(uint8_t t) {
  return t == kTreeBlockRefKey || t == kExtentDataRefKey || t == kSharedBlockRefKey || t == kSharedDataRefKey;
}

}  // namespace

// ---- codec -------------------------------------------------------------------------------------

uint64_t ExtentBackref::sequence() const {
  if (type == kExtentDataRefKey) return io::extent_data_ref_hash(root, objectid, data_offset);
  return offset;
}

bool ExtentBackref::same_ref(const ExtentBackref& o) const {
  if (type != o.type) return false;
  if (type == kExtentDataRefKey) return root == o.root && objectid == o.objectid && data_offset == o.data_offset;
  return offset == o.offset;
}

uint32_t ExtentItemBody::encoded_size() const {
  uint32_t n = sizeof(ExtentItem) + (has_block_info ? sizeof(TreeBlockInfo) : 0);
  for (const auto& r : inline_refs) n += static_cast<uint32_t>(extent_inline_ref_size(r.type));
  return n;
}

Result<ExtentItemBody> parse_extent_item(const Key& key, std::span<const uint8_t> d) {
  ExtentItemBody b;
  if (key.type != kExtentItemKey && key.type != kMetadataItemKey)
    return fail(EUCLEAN, "extent tree key {} is not an extent item", key_tuple_str(key));
  if (d.size() < sizeof(ExtentItem))
    return fail(EUCLEAN, "extent item {} has {} bytes, less than an extent_item", key_tuple_str(key), d.size());
  b.refs = get_le64(d, 0);
  b.generation = get_le64(d, 8);
  b.flags = get_le64(d, 16);
  size_t pos = sizeof(ExtentItem);
  if (key.type == kExtentItemKey && (b.flags & kExtentFlagTreeBlock)) {
    if (d.size() < pos + sizeof(TreeBlockInfo))
      return fail(EUCLEAN, "tree block extent item {} too short for tree_block_info", key_tuple_str(key));
    TreeBlockInfo info;
    std::memcpy(&info, d.data() + pos, sizeof(info));
    b.has_block_info = true;
    b.block_key = info.key.cpu();
    b.block_level = info.level;
    pos += sizeof(TreeBlockInfo);
  }
  while (pos < d.size()) {
    ExtentBackref r;
    r.type = d[pos];
    const size_t sz = extent_inline_ref_size(r.type);
    if (sz == 0) return fail(EUCLEAN, "extent item {}: unknown inline ref type {} at byte {}", key_tuple_str(key), r.type, pos);
    if (pos + sz > d.size())
      return fail(EUCLEAN, "extent item {}: inline ref type {} at byte {} runs past the item end {}", key_tuple_str(key),
                  r.type, pos, d.size());
    if (r.type == kExtentDataRefKey) {
      r.root = get_le64(d, pos + 1);
      r.objectid = get_le64(d, pos + 9);
      r.data_offset = get_le64(d, pos + 17);
      r.count = get_le32(d, pos + 25);
    } else {
      r.offset = get_le64(d, pos + 1);
      r.count = r.type == kSharedDataRefKey ? get_le32(d, pos + 9) : 1;
    }
    b.inline_refs.push_back(r);
    pos += sz;
  }
  return b;
}

std::vector<uint8_t> encode_extent_item(const ExtentItemBody& b) {
  std::vector<uint8_t> out;
  out.reserve(b.encoded_size());
  put_le64(out, b.refs);
  put_le64(out, b.generation);
  put_le64(out, b.flags);
  if (b.has_block_info) {
    put_le64(out, b.block_key.objectid);
    out.push_back(b.block_key.type);
    put_le64(out, b.block_key.offset);
    out.push_back(b.block_level);
  }
  for (const auto& r : b.inline_refs) {
    out.push_back(r.type);
    if (r.type == kExtentDataRefKey) {
      put_le64(out, r.root);
      put_le64(out, r.objectid);
      put_le64(out, r.data_offset);
      put_le32(out, static_cast<uint32_t>(r.count));
    } else {
      put_le64(out, r.offset);
      if (r.type == kSharedDataRefKey) put_le32(out, static_cast<uint32_t>(r.count));
    }
  }
  return out;
}

Result<ExtentBackref> parse_keyed_backref(const Key& key, std::span<const uint8_t> d) {
  ExtentBackref r;
  r.type = key.type;
  switch (key.type) {
    case kTreeBlockRefKey:
    case kSharedBlockRefKey:
      r.offset = key.offset;
      return r;
    case kSharedDataRefKey:
      if (d.size() != sizeof(SharedDataRef))
        return fail(EUCLEAN, "keyed backref {} has {} bytes, expected {}", key_tuple_str(key), d.size(),
                    sizeof(SharedDataRef));
      r.offset = key.offset;
      r.count = get_le32(d, 0);
      return r;
    case kExtentDataRefKey:
      if (d.size() != sizeof(ExtentDataRef))
        return fail(EUCLEAN, "keyed backref {} has {} bytes, expected {}", key_tuple_str(key), d.size(),
                    sizeof(ExtentDataRef));
      r.root = get_le64(d, 0);
      r.objectid = get_le64(d, 8);
      r.data_offset = get_le64(d, 16);
      r.count = get_le32(d, 24);
      return r;
    default:
      return fail(EUCLEAN, "extent tree key {} is not a keyed backref", key_tuple_str(key));
  }
}

std::vector<uint8_t> encode_keyed_backref(const ExtentBackref& r) {
  std::vector<uint8_t> out;
  if (r.type == kExtentDataRefKey) {
    put_le64(out, r.root);
    put_le64(out, r.objectid);
    put_le64(out, r.data_offset);
    put_le32(out, static_cast<uint32_t>(r.count));
  } else if (r.type == kSharedDataRefKey) {
    put_le32(out, static_cast<uint32_t>(r.count));
  }
  return out;
}

size_t inline_insert_position(const std::vector<ExtentBackref>& refs, const ExtentBackref& ref) {
  // Types ascending; within the new ref's type, after every ref whose sequence is >= its own
  // (descending sequence, equal hashes keep insertion order) — lookup_inline_extent_backref.
  const uint64_t seq = ref.sequence();
  size_t i = 0;
  for (; i < refs.size(); ++i) {
    if (refs[i].type < ref.type) continue;
    if (refs[i].type > ref.type) break;
    if (refs[i].sequence() < seq) break;
  }
  return i;
}

// ---- running heads -------------------------------------------------------------------------------

namespace {

// Everything the extent tree holds about one extent.
struct ExtentState {
  uint64_t bytenr = 0;
  bool found = false;
  Key item_key{};
  ExtentItemBody body;
  std::vector<uint8_t> orig_body;
  std::map<Key, std::vector<uint8_t>> orig_keyed;  // keyed backref items as found
  std::map<Key, ExtentBackref> keyed;              // keyed backrefs after the changes
};

Result<ExtentState> load_extent(TreeRoot& root, uint64_t bytenr) {
  ExtentState st;
  st.bytenr = bytenr;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root, Key{bytenr, kExtentItemKey, 0}, p, 0, false));
  bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
  if (!valid && p.leaf().nritems() > 0) valid = UBTRFS_TRY(next_leaf(root, p));
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    // Keyed refs sort after the item; a BLOCK_GROUP_ITEM may share the objectid (192 ends it).
    if (k.objectid != bytenr || k.type >= kBlockGroupItemKey) break;
    auto data = p.leaf().item_data(p.slots[0]);
    if (k.type == kExtentItemKey || k.type == kMetadataItemKey) {
      if (st.found) return fail(EUCLEAN, "extent {} has two extent items: {} and {}", bytenr, key_tuple_str(st.item_key), key_tuple_str(k));
      st.found = true;
      st.item_key = k;
      st.orig_body.assign(data.begin(), data.end());
      st.body = UBTRFS_TRY(parse_extent_item(k, data));
    } else if (is_keyed_backref_type(k.type)) {
      st.orig_keyed.emplace(k, std::vector<uint8_t>(data.begin(), data.end()));
      st.keyed.emplace(k, UBTRFS_TRY(parse_keyed_backref(k, data)));
    }
    valid = UBTRFS_TRY(next_item(root, p));
  }
  if (!st.found && !st.orig_keyed.empty())
    return fail(EUCLEAN, "extent {} has keyed backref {} but no extent item", bytenr,
                key_tuple_str(st.orig_keyed.begin()->first));
  return st;
}

// The key of a keyed backref matching `ref`, if any.
std::optional<Key> find_keyed(const ExtentState& st, const ExtentBackref& ref) {
  if (ref.type == kExtentDataRefKey) {
    // Collisions were resolved by probing upwards: any item at or after the hash may hold it.
    for (auto it = st.keyed.lower_bound(Key{st.bytenr, kExtentDataRefKey, ref.sequence()});
         it != st.keyed.end() && it->first.type == kExtentDataRefKey; ++it)
      if (it->second.same_ref(ref)) return it->first;
    return std::nullopt;
  }
  Key k{st.bytenr, ref.type, ref.offset};
  if (st.keyed.contains(k)) return k;
  return std::nullopt;
}

Status add_ref(ExtentState& st, const FsParams& fs, ExtentBackref ref, uint64_t count) {
  const bool countable = ref.type == kExtentDataRefKey || ref.type == kSharedDataRefKey;
  for (auto& r : st.body.inline_refs) {
    if (!r.same_ref(ref)) continue;
    if (!countable)
      return fail(EUCLEAN, "extent {}: adding {} which already exists", st.bytenr, ref_text(ref));
    if (r.count + count > UINT32_MAX)
      return fail(EOVERFLOW, "extent {}: {} count overflows", st.bytenr, ref_text(ref));
    r.count += count;
    st.body.refs += count;
    return {};
  }
  if (auto k = find_keyed(st, ref)) {
    ExtentBackref& r = st.keyed.at(*k);
    if (!countable) return fail(EUCLEAN, "extent {}: adding {} which already exists", st.bytenr, ref_text(ref));
    if (r.count + count > UINT32_MAX)
      return fail(EOVERFLOW, "extent {}: {} count overflows", st.bytenr, ref_text(ref));
    r.count += count;
    st.body.refs += count;
    return {};
  }
  if (!countable && count != 1)
    return fail(EUCLEAN, "extent {}: adding {} {} times", st.bytenr, ref_text(ref), count);
  if (count > UINT32_MAX) return fail(EOVERFLOW, "extent {}: {} count overflows", st.bytenr, ref_text(ref));
  ref.count = count;
  const uint32_t ref_size = static_cast<uint32_t>(extent_inline_ref_size(ref.type));
  if (st.body.encoded_size() + ref_size < max_extent_item_size(fs.nodesize) && st.keyed.empty()) {
    st.body.inline_refs.insert(st.body.inline_refs.begin() + inline_insert_position(st.body.inline_refs, ref), ref);
  } else {
    Key k{st.bytenr, ref.type, ref.type == kExtentDataRefKey ? ref.sequence() : ref.offset};
    if (ref.type == kExtentDataRefKey)
      while (st.keyed.contains(k)) {
        if (k.offset == UINT64_MAX) return fail(EOVERFLOW, "extent {}: no free key for {}", st.bytenr, ref_text(ref));
        ++k.offset;  // hash collision: the next free offset (insert_extent_data_ref)
      }
    st.keyed.emplace(k, ref);
  }
  st.body.refs += count;
  return {};
}

Status drop_ref(ExtentState& st, const ExtentBackref& ref, uint64_t count) {
  if (st.body.refs < count)
    return fail(EUCLEAN, "extent {}: dropping {} x{} but the extent item has only {} refs", st.bytenr, ref_text(ref),
                count, st.body.refs);
  auto& refs = st.body.inline_refs;
  for (auto it = refs.begin(); it != refs.end(); ++it) {
    if (!it->same_ref(ref)) continue;
    if (it->count < count)
      return fail(EUCLEAN, "extent {}: dropping {} x{} but it has count {}", st.bytenr, ref_text(ref), count,
                  it->count);
    it->count -= count;
    if (it->count == 0) refs.erase(it);
    st.body.refs -= count;
    return {};
  }
  if (auto k = find_keyed(st, ref)) {
    ExtentBackref& r = st.keyed.at(*k);
    if (r.count < count)
      return fail(EUCLEAN, "extent {}: dropping {} x{} but keyed ref {} has count {}", st.bytenr, ref_text(ref), count,
                  key_tuple_str(*k), r.count);
    r.count -= count;
    if (r.count == 0) st.keyed.erase(*k);
    st.body.refs -= count;
    return {};
  }
  return fail(EUCLEAN, "extent {}: dropping {} which does not exist", st.bytenr, ref_text(ref));
}

// Rewrites the extent item at `key` with `body` (resizing it in place).
Status rewrite_item(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body, uint32_t old_size) {
  const uint32_t new_size = static_cast<uint32_t>(body.size());
  Path p;
  const uint32_t grow = new_size > old_size ? new_size - old_size : 0;
  p.search_for_extension = grow > 0;
  const int ret = UBTRFS_TRY(search_slot(&h, root, key, p, static_cast<int>(grow), true));
  if (ret != 0) return fail(EUCLEAN, "extent item {} vanished while being updated", key_tuple_str(key));
  if (p.leaf().item_size(p.slots[0]) != old_size)
    return fail(EUCLEAN, "extent item {} changed size under the updater", key_tuple_str(key));
  if (grow > 0) extend_item(root, p, grow);
  else if (new_size < old_size) truncate_item(root, p, new_size, true);
  auto dst = p.leaf().item_data(p.slots[0]);
  std::memcpy(dst.data(), body.data(), body.size());
  return {};
}

Status overwrite_item(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(&h, root, key, p, 0, true));
  if (ret != 0 || p.leaf().item_size(p.slots[0]) != body.size())
    return fail(EUCLEAN, "keyed backref {} vanished or changed size while being updated", key_tuple_str(key));
  std::memcpy(p.leaf().item_data(p.slots[0]).data(), body.data(), body.size());
  return {};
}

// Writes back the differences between the loaded state and the changed one.
Status store_extent(TreeHandle& h, TreeRoot& root, ExtentState& st) {
  auto body = encode_extent_item(st.body);
  if (body != st.orig_body)
    UBTRFS_TRY_STATUS(rewrite_item(h, root, st.item_key, body, static_cast<uint32_t>(st.orig_body.size())));
  for (const auto& [k, old] : st.orig_keyed)
    if (!st.keyed.contains(k)) UBTRFS_TRY_STATUS(delete_item(h, root, k));
  for (const auto& [k, ref] : st.keyed) {
    auto bytes = encode_keyed_backref(ref);
    auto it = st.orig_keyed.find(k);
    if (it == st.orig_keyed.end()) UBTRFS_TRY_STATUS(insert_item(h, root, k, bytes));
    else if (it->second != bytes) UBTRFS_TRY_STATUS(overwrite_item(h, root, k, bytes));
  }
  return {};
}

Status delete_extent(TreeHandle& h, TreeRoot& root, const ExtentState& st) {
  UBTRFS_TRY_STATUS(delete_item(h, root, st.item_key));
  for (const auto& [k, old] : st.orig_keyed) UBTRFS_TRY_STATUS(delete_item(h, root, k));
  return {};
}

// A head's changes merged per backref (tree refs by root only), positives first.
struct RefChange {
  ExtentBackref ref;
  int64_t delta = 0;
};

std::vector<RefChange> merge_changes(const DelayedRefHead& head, int* level) {
  // (parent, root, objectid, offset): shared refs by parent, keyed refs by their identity.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>, int64_t> merged;
  *level = -1;
  for (const auto& [rk, d] : head.refs) {
    if (head.is_data) {
      merged[{rk.parent, rk.root, rk.objectid, rk.offset}] += d;
    } else {
      merged[{rk.parent, rk.root, 0, 0}] += d;
      if (d > 0 && *level < 0) *level = static_cast<int>(rk.objectid);
    }
  }
  if (*level < 0 && !head.refs.empty()) *level = static_cast<int>(head.refs.begin()->first.objectid);
  std::vector<RefChange> out;
  for (const auto& [id, d] : merged) {
    if (d == 0) continue;
    RefChange c;
    c.delta = d;
    const uint64_t parent = std::get<0>(id);
    if (parent != 0) {
      c.ref.type = head.is_data ? kSharedDataRefKey : kSharedBlockRefKey;
      c.ref.offset = parent;
    } else if (head.is_data) {
      c.ref.type = kExtentDataRefKey;
      c.ref.root = std::get<1>(id);
      c.ref.objectid = std::get<2>(id);
      c.ref.data_offset = std::get<3>(id);
    } else {
      c.ref.type = kTreeBlockRefKey;
      c.ref.offset = std::get<1>(id);
    }
    out.push_back(c);
  }
  std::stable_partition(out.begin(), out.end(), [](const RefChange& c) { return c.delta > 0; });
  return out;
}

// The first key of a cached tree block (tree_block_info on non-skinny filesystems).
Key cached_first_key(TreeRoot& root, uint64_t bytenr) {
  EbRef eb = root.ctx().cache.find(bytenr);
  if (!eb) return Key{};
  eb->lock_read();
  Key k = eb->nritems() > 0 ? eb->first_key() : Key{};
  eb->unlock_read();
  return k;
}

Status insert_new_extent(TreeHandle& h, TreeRoot& root, const FsParams& fs, const DelayedRefHead& head,
                         const std::vector<RefChange>& changes, int level) {
  ExtentState st;
  st.bytenr = head.bytenr;
  st.body.generation = head.first_ref_generation;
  if (head.is_data) {
    st.item_key = Key{head.bytenr, kExtentItemKey, head.num_bytes};
    st.body.flags = kExtentFlagData;
  } else if (fs.skinny_metadata()) {
    st.item_key = Key{head.bytenr, kMetadataItemKey, static_cast<uint64_t>(level)};
    st.body.flags = kExtentFlagTreeBlock | head.set_flags;
  } else {
    st.item_key = Key{head.bytenr, kExtentItemKey, head.num_bytes};
    st.body.flags = kExtentFlagTreeBlock | head.set_flags;
    st.body.has_block_info = true;
    st.body.block_key = cached_first_key(root, head.bytenr);
    st.body.block_level = static_cast<uint8_t>(level);
  }
  for (const auto& c : changes) UBTRFS_TRY_STATUS(add_ref(st, fs, c.ref, static_cast<uint64_t>(c.delta)));
  UBTRFS_TRY_STATUS(insert_item(h, root, st.item_key, encode_extent_item(st.body)));
  for (const auto& [k, ref] : st.keyed) UBTRFS_TRY_STATUS(insert_item(h, root, k, encode_keyed_backref(ref)));
  return {};
}

}  // namespace

Result<RunRefsStats> run_delayed_refs(TreeHandle& h, TreeRoot& extent_root, const FsParams& fs,
                                      std::vector<DelayedRefHead>& heads, ExtentSpace& space) {
  RunRefsStats stats;
  for (const DelayedRefHead& head : heads) {
    ++stats.heads;
    const char* kind = head.is_data ? "data" : "tree block";
    int level = 0;
    const std::vector<RefChange> changes = merge_changes(head, &level);
    if (head.must_insert && changes.empty()) {
      // Allocated and dropped again in this transaction: the item never materialises.
      UBTRFS_TRY_STATUS(space.extent_cancelled(h, head.bytenr, head.num_bytes, head.is_data));
      ++stats.cancelled;
      continue;
    }
    if (changes.empty() && head.set_flags == 0) continue;  // adds and drops cancelled: nothing to do
    ExtentState st = UBTRFS_TRY(load_extent(extent_root, head.bytenr));
    if (head.must_insert) {
      if (st.found)
        return fail(EUCLEAN, "{} extent {} allocated in transaction {} but the extent tree already has {}", kind,
                    head.bytenr, head.first_ref_generation, key_tuple_str(st.item_key));
      for (const auto& c : changes)
        if (c.delta < 0)
          return fail(EUCLEAN, "new {} extent {}: dropping {} which was never added", kind, head.bytenr,
                      ref_text(c.ref));
      UBTRFS_TRY_STATUS(insert_new_extent(h, extent_root, fs, head, changes, level));
      UBTRFS_TRY_STATUS(space.extent_inserted(h, head.bytenr, head.num_bytes, head.is_data));
      ++stats.inserted;
      continue;
    }
    if (!st.found) {
      if (changes.empty())
        return fail(EUCLEAN, "tree block {} has no extent item to set flags {:#x} on", head.bytenr, head.set_flags);
      return fail(EUCLEAN, "{} extent {} has no extent item for a change of {} x{}", kind, head.bytenr,
                  ref_text(changes.front().ref), changes.front().delta);
    }
    const bool item_is_data = st.body.flags & kExtentFlagData;
    if (item_is_data != head.is_data || (!head.is_data && !(st.body.flags & kExtentFlagTreeBlock)))
      return fail(EUCLEAN, "extent item {} has flags {:#x} but the delayed ref is for a {} extent",
                  key_tuple_str(st.item_key), st.body.flags, kind);
    if (head.is_data && st.item_key.offset != head.num_bytes)
      return fail(EUCLEAN, "extent item {} disagrees with the delayed ref's length {}", key_tuple_str(st.item_key),
                  head.num_bytes);
    if (head.set_flags & ~kBlockFlagFullBackref)
      return fail(EUCLEAN, "extent item {}: unexpected flags {:#x} to set", key_tuple_str(st.item_key), head.set_flags);
    st.body.flags |= head.set_flags;
    for (const auto& c : changes) {
      if (c.delta > 0) UBTRFS_TRY_STATUS(add_ref(st, fs, c.ref, static_cast<uint64_t>(c.delta)));
      else UBTRFS_TRY_STATUS(drop_ref(st, c.ref, static_cast<uint64_t>(-c.delta)));
    }
    if (st.body.refs == 0) {
      if (!st.body.inline_refs.empty() || !st.keyed.empty())
        return fail(EUCLEAN, "extent item {}: refs reached 0 but backrefs remain ({} inline, {} keyed)",
                    key_tuple_str(st.item_key), st.body.inline_refs.size(), st.keyed.size());
      UBTRFS_TRY_STATUS(delete_extent(h, extent_root, st));
      UBTRFS_TRY_STATUS(space.extent_deleted(h, head.bytenr, head.num_bytes, head.is_data));
      ++stats.deleted;
    } else {
      UBTRFS_TRY_STATUS(store_extent(h, extent_root, st));
      ++stats.updated;
    }
  }
  return stats;
}

}  // namespace ubtrfs::alloc
