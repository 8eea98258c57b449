// Filesystem::tree_search: the items of any tree between two keys, as BTRFS_IOC_TREE_SEARCH returns
// them (btrfs ioctl.c `search_ioctl`, `copy_to_sk`, `key_in_sk`) — what `btrfs subvolume list`
// and libbtrfsutil read the root tree with.
//
// The kernel's rules, kept exactly because callers page through a tree with them:
//   - the range is lexicographic on the whole key: (min_objectid, min_type, min_offset) ..
//     (max_objectid, max_type, max_offset); an item of another type between the two bounds is
//     returned (callers filter by type themselves);
//   - only items of leaves whose generation lies in [min_transid, max_transid] are returned, each
//     with that generation as its transid;
//   - at most nr_items items, and at most buf_size bytes of (32-byte header + item data): the
//     search stops before the first item that does not fit, and an item that does not fit even
//     alone is EOVERFLOW (the kernel also reports the size it needed).
// The search reads the committed-or-running trees as they are, without delayed items (the
// kernel's does the same: delayed inode items are not in the tree until they run).
#include "fs/filesystem.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

inline constexpr size_t kSearchHeaderSize = 32;  // struct btrfs_ioctl_search_header

}  // namespace

Result<TreeRoot*> Filesystem::search_tree_of(uint64_t tree_id) {
  switch (tree_id) {
    case kRootTreeObjectid:
      return &fs_->root_tree();
    case kExtentTreeObjectid:
      return fs_->extent_root().tree.get();
    case kChunkTreeObjectid:
      return &fs_->chunk_tree();
    case kDevTreeObjectid:
      return fs_->dev_root().tree.get();
    case kCsumTreeObjectid:
      return fs_->csum_root().tree.get();
    case kUuidTreeObjectid:
      if (RootRecord* r = fs_->uuid_root()) return r->tree.get();
      break;
    case kFreeSpaceTreeObjectid:
      if (RootRecord* r = fs_->free_space_root()) return r->tree.get();
      break;
    default:
      if (tree_id == kFsTreeObjectid || (tree_id >= kFirstFreeObjectid && tree_id < kLastFreeObjectid)) {
        RootRecord* r = UBTRFS_TRY(fs_->fs_root(tree_id));
        return r->tree.get();
      }
  }
  return fail(ENOENT, "no tree {} to search", tree_id);
}

Result<TreeSearchResult> Filesystem::tree_search(uint64_t tree_id, const TreeSearchRange& r, size_t max_items,
                                                 size_t max_bytes) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("tree search"));
  TreeRoot* tree = UBTRFS_TRY(search_tree_of(tree_id));
  TreeSearchResult out;
  if (max_items == 0) return out;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, *tree, r.min, p, 0, false));
  if (p.leaf().nritems() == 0) return out;
  if (p.slot() >= static_cast<int>(p.leaf().nritems()) && !UBTRFS_TRY(next_leaf(*tree, p))) return out;
  size_t bytes = 0;
  for (;;) {
    const ExtentBuffer& leaf = p.leaf();
    const Key key = leaf.item_key(p.slot());
    if (key > r.max) break;
    const uint64_t gen = leaf.generation();
    if (key >= r.min && gen >= r.min_transid && gen <= r.max_transid) {
      const auto data = leaf.item_data(p.slot());
      const size_t cost = kSearchHeaderSize + data.size();
      if (bytes + cost > max_bytes) {
        if (out.items.empty())
          return fail(EOVERFLOW, "tree {}: item [{} {} {}] of {} bytes does not fit the search buffer of {}", tree_id,
                      key.objectid, key.type, key.offset, data.size(), max_bytes);
        break;
      }
      bytes += cost;
      out.items.push_back(TreeSearchItem{gen, key, std::vector<uint8_t>(data.begin(), data.end())});
      if (out.items.size() >= max_items) break;
    }
    if (!UBTRFS_TRY(next_item(*tree, p))) break;
  }
  return out;
}

}  // namespace ubtrfs::fs
