// CommittedTrees: see committed_tree.h.
#include "fs/committed_tree.h"

#include <mutex>

#include "fs/fs_info.h"
#include "tree/block_io.h"

namespace ubtrfs::fs {

CommittedTrees::CommittedTrees(FsInfo& fs) : fs_(fs), params_(fs.params()) {
  std::lock_guard g(fs.super_mu());
  const Superblock& sb = fs.committed_super();
  generation_ = sb.generation;
  params_.super_generation = generation_;
  root_tree_.tree_id = kRootTreeObjectid;
  root_tree_.key = Key{kRootTreeObjectid, kRootItemKey, 0};
  root_tree_.bytenr = sb.root;
  root_tree_.generation = sb.generation;
  root_tree_.level = sb.root_level;
}

Result<std::vector<uint8_t>> CommittedTrees::read_block(const TreeBlockExpect& expect) const {
  return read_tree_block(fs_.device(), fs_.chunk_map(), params_, expect);
}

Result<RootLocation> CommittedTrees::find_root(uint64_t tree_id) const {
  if (tree_id == kRootTreeObjectid) return root_tree_;
  std::optional<RootLocation> found;
  Status bad;
  UBTRFS_TRY_STATUS(for_each_from(root_tree_, Key{tree_id, kRootItemKey, 0},
                                  [&](const Key& k, std::span<const uint8_t> body) {
                                    if (k.objectid != tree_id || k.type != kRootItemKey) return false;
                                    if (body.size() < offsetof(RootItem, level) + 1) {
                                      bad = fail(EUCLEAN, "root item {} is {} bytes", tree_id, body.size());
                                      return false;
                                    }
                                    const RootItem ri = load_root_item(body);
                                    RootLocation loc;
                                    loc.tree_id = tree_id;
                                    loc.key = k;
                                    loc.bytenr = ri.bytenr;
                                    loc.generation = ri.generation;
                                    loc.level = ri.level;
                                    found = loc;
                                    return false;
                                  }));
  UBTRFS_TRY_STATUS(bad);
  if (!found) return fail(ENOENT, "tree {} not found in the committed root tree", tree_id);
  return *found;
}

Status CommittedTrees::for_each_from(const RootLocation& root, const Key& start, const Visitor& visit) const {
  TreeBlockExpect e;
  e.bytenr = root.bytenr;
  e.level = root.level;
  e.generation = root.generation;
  e.owner = root.tree_id;
  auto r = walk(root, e, start, visit);
  if (!r) return std::unexpected(r.error());
  return {};
}

Result<bool> CommittedTrees::walk(const RootLocation& root, const TreeBlockExpect& expect, const Key& start,
                                  const Visitor& visit) const {
  auto block = read_block(expect);
  if (!block)
    return fail(block.error().err, "committed {} tree: {}", tree_short_name(root.tree_id), block.error().message);
  const auto h = load<Header>(block->data());
  if (h.level == 0) {
    for (const auto& it : leaf_items(*block)) {
      if (it.key < start) continue;
      if (!visit(it.key, it.body)) return false;
    }
    return true;
  }
  const uint32_t n = h.nritems;
  // The first child that may hold `start`: the last pointer whose key is <= start.
  uint32_t first = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const auto kp = load<KeyPtr>(block->data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
    if (kp.key.cpu() <= start) first = i;
    else break;
  }
  for (uint32_t i = first; i < n; ++i) {
    const auto kp = load<KeyPtr>(block->data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
    TreeBlockExpect child;
    child.bytenr = kp.blockptr;
    child.level = static_cast<uint8_t>(h.level - 1);
    child.generation = kp.generation.get();
    child.owner = root.tree_id;
    child.first_key = kp.key.cpu();
    if (!UBTRFS_TRY(walk(root, child, start, visit))) return false;
  }
  return true;
}

}  // namespace ubtrfs::fs
