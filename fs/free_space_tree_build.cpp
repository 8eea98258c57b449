// Building the free space tree of an image that has none; see free_space_tree_build.h.
#include "fs/free_space_tree_build.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <mutex>

#include "alloc/free_space_tree.h"
#include "fs/fs_info.h"
#include "tree/ctree.h"
#include "tree/format.h"

namespace ubtrfs::fs {

Result<AllocatedByGroup> allocated_extents_by_group(TreeRoot& extent_tree, const FsParams& fs,
                                                    const std::map<uint64_t, uint64_t>& groups) {
  AllocatedByGroup out;
  for (const auto& [start, len] : groups) out[start];
  Path path;
  UBTRFS_TRY(search_slot(nullptr, extent_tree, Key{0, 0, 0}, path, 0, false));
  bool more = path.slot() < static_cast<int>(path.leaf().nritems()) || UBTRFS_TRY(next_leaf(extent_tree, path));
  while (more) {
    const Key k = path.leaf().item_key(path.slot());
    uint64_t len = 0;
    if (k.type == kExtentItemKey) len = k.offset;
    else if (k.type == kMetadataItemKey) len = fs.nodesize;
    if (len) {
      // The group holding the extent: the last one starting at or before it.
      auto g = groups.upper_bound(k.objectid);
      if (g == groups.begin())
        return fail(EUCLEAN, "extent tree: extent item [{} {} {}] lies before every block group", k.objectid, k.type,
                    k.offset);
      --g;
      if (k.objectid + len > g->first + g->second || k.objectid + len < k.objectid)
        return fail(EUCLEAN, "extent tree: extent item [{} {} {}] is not inside block group [{}, +{})", k.objectid,
                    k.type, k.offset, g->first, g->second);
      auto& v = out[g->first];
      if (!v.empty() && v.back().first + v.back().second > k.objectid)
        return fail(EUCLEAN, "extent tree: extent item [{} {} {}] overlaps the extent at {}", k.objectid, k.type,
                    k.offset, v.back().first);
      v.emplace_back(k.objectid, len);
    }
    more = UBTRFS_TRY(next_item(extent_tree, path));
  }
  return out;
}

Status build_free_space_tree(FsInfo& fs, TreeHandle& h) {
  const FsParams& params = fs.params();
  // The groups whose BLOCK_GROUP_ITEM is in the tree. A chunk made in this transaction whose items
  // are still pending is not among them: the chunk creator adds its free space tree entries when it
  // inserts them later in this commit, the tree existing by then.
  std::map<uint64_t, uint64_t> groups;
  {
    TreeRoot& items = *fs.block_group_items_root().tree;
    Path path;
    UBTRFS_TRY(search_slot(nullptr, items, Key{0, kBlockGroupItemKey, 0}, path, 0, false));
    bool more = path.slot() < static_cast<int>(path.leaf().nritems()) || UBTRFS_TRY(next_leaf(items, path));
    while (more) {
      const Key k = path.leaf().item_key(path.slot());
      if (k.type == kBlockGroupItemKey) groups.emplace(k.objectid, k.offset);
      more = UBTRFS_TRY(next_item(items, path));
    }
  }
  // The extent tree as the transaction has it now: extents whose refs are still queued are not in
  // it yet and are recorded free here; running those refs later in this commit marks them
  // allocated in the new tree (CommitSpace), as it does for every extent.
  const AllocatedByGroup allocated = UBTRFS_TRY(allocated_extents_by_group(*fs.extent_root().tree, params, groups));

  auto tree = std::make_unique<TreeRoot>(fs.tree_ctx(), kFreeSpaceTreeObjectid);
  UBTRFS_TRY_STATUS(create_empty_tree(h, *tree));
  alloc::FreeSpaceTree fst(*tree, params);
  size_t runs_total = 0;
  for (const auto& [start, len] : groups) {
    std::map<uint64_t, uint64_t> runs;
    uint64_t cur = start;
    for (const auto& [s, l] : allocated.at(start)) {
      if (s > cur) runs.emplace(cur, s - cur);
      cur = s + l;
    }
    if (cur < start + len) runs.emplace(cur, start + len - cur);
    runs_total += runs.size();
    UBTRFS_TRY_STATUS(fst.add_group_with_runs(h, start, len, runs));
  }

  // Its ROOT_ITEM, as btrfs_create_tree fills one for a tree that is not a subvolume.
  auto rec = std::make_unique<RootRecord>();
  RootItem& ri = rec->item;
  std::memset(&ri, 0, sizeof ri);
  {
    EbRef node = tree->node();
    ri.bytenr = node->start();
    ri.generation = node->generation();
    ri.generation_v2 = node->generation();
    ri.level = static_cast<uint8_t>(node->level());
  }
  ri.refs = 1;
  ri.bytes_used = params.nodesize;
  rec->item_size = sizeof(RootItem);
  rec->key_offset = 0;
  rec->tree = std::move(tree);
  UBTRFS_TRY_STATUS(insert_item(h, fs.root_tree(), Key{kFreeSpaceTreeObjectid, kRootItemKey, 0},
                                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ri), sizeof ri)));
  fs.install_free_space_root(std::move(rec));
  spdlog::info("{}: built the free space tree ({} block groups, {} free extents) in transaction {}: from now on the "
               "image keeps its free space there (space cache v2), as the kernel does by default since Linux 5.15",
               fs.path(), groups.size(), runs_total, h.transid);
  return {};
}

}  // namespace ubtrfs::fs
