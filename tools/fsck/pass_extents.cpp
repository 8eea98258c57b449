// Pass 4: the extent tree against the references that actually exist (FORMAT.md §3.9, §6.1.1-2).
//
// Tree blocks: every block reached from a (non-log) root has exactly one METADATA_ITEM (or
// non-skinny tree-block EXTENT_ITEM) whose
//  - level equals the block's level,
//  - refs equals the number of distinct pointers to the block (node key pointers, and root items /
//    the superblock for root blocks), and equals the sum of its listed backrefs,
//  - a block reached only from its owner's tree has a TREE_BLOCK_REF to that owner (or a
//    SHARED_BLOCK_REF); for any block, every TREE_BLOCK_REF root must be a tree that reaches it and
//    every SHARED_BLOCK_REF parent must point to it (shared snapshot blocks carry the refs of the
//    trees and parents that hold them, not necessarily the owner's).
// A missing item is what `btrfs check --mode=lowmem` calls "backref lost".
//
// Data extents: each REG/PREALLOC EXTENT_DATA with disk_bytenr != 0 is a reference to the extent
// (disk_bytenr, EXTENT_ITEM, disk_num_bytes), counted once per leaf (shared snapshot leaves once)
// under (leaf owner root, ino, key offset - extent offset) — or under the leaf's bytenr when that
// leaf is FULL_BACKREF, as SHARED_DATA_REF. The EXTENT_ITEM's refs must equal the number found
// ("ref mismatch on [X Y] extent item N, found M" in btrfs check), and each listed EXTENT_DATA_REF /
// SHARED_DATA_REF count must equal the references found for its key.
// Extent items nothing refers to are reported as extent-orphan; so are file extents pointing at no
// extent item. Where a tree is damaged, the checks its missing items would feed are skipped.
#include <map>
#include <set>
#include <tuple>

#include "tools/fsck/context.h"

namespace ubtrfs::fsck {

namespace {

std::string range_text(uint64_t start, uint64_t len) { return fmt::format("[{} {}]", start, len); }

void check_tree_block_refs(Context& ctx, bool skip_orphans) {
  Report& rep = ctx.report();
  for (const auto& [bytenr, b] : ctx.blocks) {
    if (b.is_log) continue;
    const uint64_t tree = b.first_tree;
    auto e = ctx.extents.find(bytenr);
    if (e == ctx.extents.end() || !e->second.tree_block) {
      if (!ctx.damaged(kExtentTreeObjectid))
        rep.error("extent-backref", Where{tree, bytenr, {}, {}},
                  fmt::format("tree block {} ({} tree, level {}, owner {}) has no METADATA_ITEM in the extent tree: "
                              "backref lost",
                              bytenr, tree_name(tree), b.level, b.header_owner));
      continue;
    }
    const ExtentRecord& x = e->second;
    std::set<uint64_t> node_parents;
    std::set<uint64_t> root_parents;
    std::set<uint64_t> reaching_trees;
    for (const auto& p : b.parents) {
      if (p.parent == 0)
        root_parents.insert(p.tree);
      else
        node_parents.insert(p.parent);
      reaching_trees.insert(p.tree);
    }
    const uint64_t found = node_parents.size() + root_parents.size();
    if (b.readable && x.level != b.level)
      rep.error("extent-backref", Where{tree, bytenr, x.key, {}},
                fmt::format("extent item {} says level {}, but tree block {} has level {}", key_text(x.key), x.level,
                            bytenr, b.level));
    if (x.refs != found)
      rep.error("extent-refs", Where{tree, bytenr, x.key, {}},
                fmt::format("ref mismatch on tree block {}: extent item {} refs {}, found {} pointers to it",
                            range_text(bytenr, x.length), key_text(x.key), x.refs, found));
    uint64_t listed_sum = 0;
    bool has_owner_ref = false;
    for (const auto& r : x.listed) {
      listed_sum += r.count;
      if (r.type == kTreeBlockRefKey) {
        if (r.root_or_parent == b.header_owner) has_owner_ref = true;
        if (!reaching_trees.count(r.root_or_parent))
          rep.error("extent-backref", Where{tree, bytenr, x.key, {}},
                    fmt::format("extent item {} has a TREE_BLOCK_REF to root {}, which does not reach tree block {}",
                                key_text(x.key), r.root_or_parent, bytenr));
      } else if (r.type == kSharedBlockRefKey) {
        has_owner_ref = true;
        if (!node_parents.count(r.root_or_parent))
          rep.error("extent-backref", Where{tree, bytenr, x.key, {}},
                    fmt::format("extent item {} has a SHARED_BLOCK_REF to parent {}, which does not point to it",
                                key_text(x.key), r.root_or_parent));
      } else if (r.type == kExtentDataRefKey || r.type == kSharedDataRefKey) {
        rep.error("extent-backref", Where{tree, bytenr, x.key, {}},
                  fmt::format("tree block extent item {} holds a data backref (type {})", key_text(x.key), r.type));
      }
    }
    if (listed_sum != x.refs)
      rep.error("extent-refs", Where{tree, bytenr, x.key, {}},
                fmt::format("extent item {} refs {}, but its backrefs count {}", key_text(x.key), x.refs, listed_sum));
    // Shared blocks (snapshots) carry the refs of whoever points to them, not necessarily the
    // owner's; the owner rule is only exact for a block that its owner's tree alone reaches.
    const bool unshared = reaching_trees.size() == 1 && *reaching_trees.begin() == b.header_owner;
    if (!has_owner_ref && b.readable && unshared)
      rep.error("extent-backref", Where{tree, bytenr, x.key, {}},
                fmt::format("tree block {} ({} tree, level {}): extent item {} has no backref to owner root {}: "
                            "backref lost",
                            bytenr, tree_name(tree), b.level, key_text(x.key), b.header_owner));
  }
  for (const auto& [start, x] : ctx.extents) {
    if (!x.tree_block || ctx.blocks.count(start)) continue;
    if (skip_orphans) continue;
    rep.error("extent-orphan", Where{kExtentTreeObjectid, start, x.key, {}},
              fmt::format("extent item {} describes tree block {} that no tree points to", key_text(x.key), start));
  }
}

struct DataRefs {
  uint64_t disk_num_bytes = 0;
  Key first_user{};  // one EXTENT_DATA key that refers to it, for messages
  uint64_t first_root = 0;
  std::map<std::tuple<uint64_t, uint64_t, uint64_t>, uint64_t> by_owner;  // (root, ino, offset) -> count
  std::map<uint64_t, uint64_t> by_leaf;                                   // shared leaf -> count
  uint64_t total = 0;
};

void check_data_refs(Context& ctx) {
  Report& rep = ctx.report();
  std::map<uint64_t, DataRefs> found;
  std::set<uint64_t> damaged_roots;
  for (const auto& t : ctx.trees)
    if (t.damaged && Context::is_fs_tree(t.id)) damaged_roots.insert(t.id);

  for (const auto& [bytenr, b] : ctx.blocks) {
    // Subvolume trees hold file extents; so may the root tree (v1 free space cache inodes).
    if (b.is_log || !b.readable || b.level != 0 ||
        !(Context::is_fs_tree(b.header_owner) || b.header_owner == kRootTreeObjectid))
      continue;
    auto le = ctx.extents.find(bytenr);
    const bool full_backref = le != ctx.extents.end() && (le->second.flags & kBlockFlagFullBackref);
    for (const auto& it : leaf_items(b.data)) {
      if (it.key.type != kExtentDataKey || it.body.size() < sizeof(FileExtentItem)) continue;
      const auto fe = load<FileExtentItem>(it.body.data());
      if (fe.type == kFileExtentInline || fe.disk_bytenr.get() == 0) continue;
      DataRefs& d = found[fe.disk_bytenr];
      if (d.total == 0) {
        d.disk_num_bytes = fe.disk_num_bytes;
        d.first_user = it.key;
        d.first_root = b.header_owner;
      } else if (d.disk_num_bytes != fe.disk_num_bytes.get()) {
        rep.error(
            "extent-refs", Where{b.header_owner, fe.disk_bytenr, it.key, it.key.objectid},
            fmt::format("root {} file extent {} says disk extent {}, another reference says length {}", b.header_owner,
                        key_text(it.key), range_text(fe.disk_bytenr, fe.disk_num_bytes), d.disk_num_bytes));
      }
      ++d.total;
      if (full_backref)
        ++d.by_leaf[bytenr];
      else
        ++d.by_owner[{b.header_owner, it.key.objectid, it.key.offset - fe.offset.get()}];
    }
  }

  // Every reference needs an extent item of the same range.
  for (const auto& [start, d] : found) {
    auto e = ctx.extents.find(start);
    if (e == ctx.extents.end() || e->second.tree_block) {
      if (!ctx.damaged(kExtentTreeObjectid))
        rep.error("extent-orphan", Where{d.first_root, start, d.first_user, d.first_user.objectid},
                  fmt::format("root {} inode {} file extent {} refers to data extent {} which has no extent item "
                              "(ref mismatch: extent item 0, found {})",
                              d.first_root, d.first_user.objectid, key_text(d.first_user),
                              range_text(start, d.disk_num_bytes), d.total));
      continue;
    }
    if (e->second.length != d.disk_num_bytes)
      rep.error("extent-refs", Where{d.first_root, start, e->second.key, {}},
                fmt::format("data extent item {} has length {}, but file extent {} of root {} says {}",
                            key_text(e->second.key), e->second.length, key_text(d.first_user), d.first_root,
                            d.disk_num_bytes));
  }

  for (const auto& [start, x] : ctx.extents) {
    if (x.tree_block) continue;
    if (auto c = ctx.map.find(start); c && !(c->type & kBlockGroupData))
      rep.error("extent-refs", Where{kExtentTreeObjectid, start, x.key, {}},
                fmt::format("data extent item {} lies in a non-data chunk at {} (type 0x{:x})", key_text(x.key),
                            c->logical, c->type));
    bool involves_damage = false;
    for (const auto& r : x.listed)
      if ((r.type == kExtentDataRefKey && damaged_roots.count(r.root_or_parent)) ||
          (r.type == kSharedDataRefKey &&
           (!ctx.blocks.count(r.root_or_parent) || !ctx.blocks.at(r.root_or_parent).readable)))
        involves_damage = true;
    if (involves_damage) continue;
    auto f = found.find(start);
    static const DataRefs kNone;
    const DataRefs& d = f == found.end() ? kNone : f->second;
    const std::string where = range_text(start, x.length);
    if (d.total == 0) {
      if (damaged_roots.empty())
        rep.error("extent-orphan", Where{kExtentTreeObjectid, start, x.key, {}},
                  fmt::format("data extent {} (extent item {} refs {}) has no file extent referring to it", where,
                              key_text(x.key), x.refs));
      continue;
    }
    if (x.refs != d.total && damaged_roots.empty())
      rep.error(
          "extent-refs", Where{kExtentTreeObjectid, start, x.key, {}},
          fmt::format("ref mismatch on {}: extent item {} refs {}, found {}", where, key_text(x.key), x.refs, d.total));
    uint64_t listed_sum = 0;
    std::map<std::tuple<uint64_t, uint64_t, uint64_t>, uint64_t> listed_owner;
    std::map<uint64_t, uint64_t> listed_leaf;
    for (const auto& r : x.listed) {
      listed_sum += r.count;
      if (r.type == kExtentDataRefKey)
        listed_owner[{r.root_or_parent, r.ino, r.offset}] += r.count;
      else if (r.type == kSharedDataRefKey)
        listed_leaf[r.root_or_parent] += r.count;
      else if (r.type == kTreeBlockRefKey || r.type == kSharedBlockRefKey)
        rep.error("extent-backref", Where{kExtentTreeObjectid, start, x.key, {}},
                  fmt::format("data extent item {} holds a tree block backref (type {})", key_text(x.key), r.type));
    }
    if (listed_sum != x.refs)
      rep.error(
          "extent-refs", Where{kExtentTreeObjectid, start, x.key, {}},
          fmt::format("data extent item {} refs {}, but its backrefs count {}", key_text(x.key), x.refs, listed_sum));
    for (const auto& [k, n] : listed_owner) {
      auto [root, ino, off] = k;
      if (damaged_roots.count(root)) continue;
      auto g = d.by_owner.find(k);
      const uint64_t have = g == d.by_owner.end() ? 0 : g->second;
      if (have != n)
        rep.error("extent-refs", Where{root, start, x.key, ino},
                  fmt::format("data extent {} backref (root {} inode {} offset {}) count {}, found {} file extents",
                              where, root, ino, off, n, have));
    }
    for (const auto& [k, n] : d.by_owner) {
      if (listed_owner.count(k)) continue;
      auto [root, ino, off] = k;
      rep.error(
          "extent-refs", Where{root, start, x.key, ino},
          fmt::format("data extent {} has no backref for root {} inode {} offset {} ({} file extents refer to it)",
                      where, root, ino, off, n));
    }
    for (const auto& [leaf, n] : listed_leaf) {
      auto g = d.by_leaf.find(leaf);
      const uint64_t have = g == d.by_leaf.end() ? 0 : g->second;
      if (have != n)
        rep.error("extent-refs", Where{kExtentTreeObjectid, start, x.key, {}},
                  fmt::format("data extent {} shared backref (parent {}) count {}, found {}", where, leaf, n, have));
    }
    for (const auto& [leaf, n] : d.by_leaf)
      if (!listed_leaf.count(leaf))
        rep.error("extent-refs", Where{kExtentTreeObjectid, start, x.key, {}},
                  fmt::format("data extent {} has no shared backref for full-backref leaf {} ({} references)", where,
                              leaf, n));
  }
}

}  // namespace

// Log tree blocks (and the log's new data extents) have no extent items: they are free space in the
// committed state, which is why the allocator may not hand them out before replay. A log block
// that overlaps an extent the extent tree allocates means the log was written over live metadata
// or data (or the extent tree reuses a log block): the log cannot be replayed safely.
void check_log_blocks_free(Context& ctx) {
  for (const auto& [bytenr, b] : ctx.blocks) {
    if (!b.is_log) continue;
    const uint64_t end = bytenr + ctx.params.nodesize;
    auto it = ctx.extents.lower_bound(end);
    while (it != ctx.extents.begin()) {
      --it;
      const ExtentRecord& x = it->second;
      if (x.start + x.length <= bytenr) break;  // extents are disjoint: nothing earlier reaches in
      ctx.report().error("log-overlap", Where{kTreeLogObjectid, bytenr, {}, {}},
                         fmt::format("log tree block {} overlaps allocated extent {}", bytenr,
                                     range_text(x.start, x.length)));
      break;
    }
  }
}

void check_extents(Context& ctx) {
  if (!ctx.extent_tree_available) {
    ctx.report().error("extent-backref", Where{kExtentTreeObjectid, {}, {}, {}},
                       "the root tree has no extent tree (tree 2): no accounting can be checked");
    return;
  }
  const bool skip = ctx.any_damaged();
  if (skip)
    ctx.report().warning("extent-orphan", Where{},
                         "some trees are damaged: extent items of unreachable tree blocks are not reported");
  check_tree_block_refs(ctx, skip);
  check_data_refs(ctx);
  check_log_blocks_free(ctx);
}

}  // namespace ubtrfs::fsck
