// Context implementation: item iteration over the recorded leaves and the extent-tree indexes the
// accounting passes share (FORMAT.md §3.9 extent items and refs, §3.11 block groups). See context.h.
#include "tools/fsck/context.h"

#include <algorithm>

namespace ubtrfs::fsck {

const TreeInfo* Context::tree(uint64_t id) const {
  for (const auto& t : trees)
    if (t.id == id && !t.is_log) return &t;
  return nullptr;
}

bool Context::any_damaged() const {
  return std::any_of(trees.begin(), trees.end(), [](const TreeInfo& t) { return t.damaged && !t.is_log; });
}

bool Context::damaged(uint64_t id) const {
  const TreeInfo* t = tree(id);
  return t == nullptr || t->damaged;
}

bool Context::is_fs_tree(uint64_t id) {
  return id == kFsTreeObjectid || id == kDataRelocTreeObjectid || (id >= kFirstFreeObjectid && id <= kLastFreeObjectid);
}

std::vector<ItemView> Context::items(const TreeInfo& t) const {
  std::vector<ItemView> out;
  for (uint64_t leaf : t.leaves) {
    auto it = blocks.find(leaf);
    if (it == blocks.end() || !it->second.readable) continue;
    const auto& b = it->second;
    for (const auto& li : leaf_items(b.data)) out.push_back(ItemView{li.key, leaf, b.header_owner, li.body});
  }
  return out;
}

std::vector<ItemView> Context::items(uint64_t tree_id) const {
  const TreeInfo* t = tree(tree_id);
  if (!t) return {};
  return items(*t);
}

bool parse_extent_item(const FsParams& fs, const Key& key, std::span<const uint8_t> body, ExtentRecord& out) {
  if (body.size() < sizeof(ExtentItem)) return false;
  const auto ei = load<ExtentItem>(body.data());
  out.key = key;
  out.start = key.objectid;
  out.refs = ei.refs;
  out.flags = ei.flags;
  out.tree_block = out.flags & kExtentFlagTreeBlock;
  size_t pos = sizeof(ExtentItem);
  if (key.type == kMetadataItemKey) {
    out.length = fs.nodesize;
    out.level = static_cast<uint8_t>(key.offset);
  } else {
    out.length = key.offset;
    if (out.tree_block) {
      if (body.size() < pos + sizeof(TreeBlockInfo)) return false;
      out.level = load<TreeBlockInfo>(body.data() + pos).level;
      pos += sizeof(TreeBlockInfo);
    }
  }
  while (pos < body.size()) {
    const uint8_t type = body[pos];
    const size_t sz = extent_inline_ref_size(type);
    if (sz == 0 || body.size() - pos < sz) return false;
    ExtentRef r;
    r.type = type;
    if (type == kExtentDataRefKey) {
      const auto dr = load<ExtentDataRef>(body.data() + pos + 1);
      r.root_or_parent = dr.root;
      r.ino = dr.objectid;
      r.offset = dr.offset;
      r.count = dr.count;
    } else {
      r.root_or_parent = load<le64>(body.data() + pos + 1);
      if (type == kSharedDataRefKey) r.count = load<le32>(body.data() + pos + 9);
      if (type == kExtentOwnerRefKey) r.count = 0;  // simple-quota owner, not a reference
    }
    out.listed.push_back(r);
    pos += sz;
  }
  return true;
}

void Context::index_extent_tree() {
  extents.clear();
  block_groups.clear();
  const TreeInfo* et = tree(kExtentTreeObjectid);
  extent_tree_available = et != nullptr;
  if (!et) return;
  ExtentRecord* last = nullptr;
  auto add_bg = [&](const ItemView& it) {
    if (it.body.size() < sizeof(BlockGroupItem)) return;
    const auto bg = load<BlockGroupItem>(it.body.data());
    block_groups[it.key.objectid] =
        BlockGroupRecord{it.key.objectid, it.key.offset, bg.used, bg.flags, bg.chunk_objectid};
  };
  for (const auto& it : items(*et)) {
    switch (it.key.type) {
      case kExtentItemKey:
      case kMetadataItemKey: {
        ExtentRecord r;
        if (!parse_extent_item(params, it.key, it.body, r)) {
          report_.error("extent-refs", Where{kExtentTreeObjectid, it.key.objectid, it.key, {}},
                        fmt::format("extent item {} in leaf {} cannot be parsed", key_text(it.key), it.leaf));
          last = nullptr;
          break;
        }
        auto [pos, inserted] = extents.emplace(r.start, std::move(r));
        if (!inserted) {
          report_.error("extent-refs", Where{kExtentTreeObjectid, it.key.objectid, it.key, {}},
                        fmt::format("duplicate extent item {} for bytenr {}", key_text(it.key), it.key.objectid));
          last = nullptr;
          break;
        }
        last = &pos->second;
        break;
      }
      case kTreeBlockRefKey:
      case kSharedBlockRefKey:
      case kExtentDataRefKey:
      case kSharedDataRefKey: {
        if (!last || last->start != it.key.objectid) {
          report_.error("extent-orphan", Where{kExtentTreeObjectid, it.key.objectid, it.key, {}},
                        fmt::format("keyed backref {} has no extent item", key_text(it.key)));
          break;
        }
        ExtentRef r;
        r.type = it.key.type;
        r.keyed = true;
        if (it.key.type == kExtentDataRefKey && it.body.size() >= sizeof(ExtentDataRef)) {
          const auto dr = load<ExtentDataRef>(it.body.data());
          r.root_or_parent = dr.root;
          r.ino = dr.objectid;
          r.offset = dr.offset;
          r.count = dr.count;
        } else {
          r.root_or_parent = it.key.offset;
          if (it.key.type == kSharedDataRefKey && it.body.size() >= 4) r.count = load<le32>(it.body.data());
        }
        last->listed.push_back(r);
        break;
      }
      case kBlockGroupItemKey:
        add_bg(it);
        break;
      default:
        break;
    }
  }
  if (params.compat_ro_flags & kCompatRoBlockGroupTree)
    for (const auto& it : items(kBlockGroupTreeObjectid))
      if (it.key.type == kBlockGroupItemKey) add_bg(it);
}

std::vector<std::pair<uint64_t, uint64_t>> super_stripe_ranges(const Context& ctx) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& c : ctx.map.all())
    for (const auto& s : c.stripes)
      for (int m = 0; m < kSuperMirrorMax; ++m) {
        const uint64_t off = super_offset(m);
        if (off < s.physical || off - s.physical >= c.length) continue;
        const uint64_t logical = c.logical + (off - s.physical);
        const uint64_t start = logical - (logical - c.logical) % kStripeLen;
        out.emplace_back(start, std::min(start + kStripeLen, c.logical + c.length));
      }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace ubtrfs::fsck
