// Pass 2: every tree block of every tree, every copy (FORMAT.md §2, §5.1, §7.5).
//
// Walk order: the chunk tree from the superblock (its CHUNK_ITEMs complete the chunk map that the
// sys_chunk_array started), then the root tree, then every tree a ROOT_ITEM names, then the log
// root tree and the log trees it names, if the superblock records one.
//
// For each block pointer (bytenr, level, generation, owner and first key as the parent says), every
// copy is read — both stripes of a DUP chunk — and each copy goes through check_tree_block
// (checksum, header against the expectations, key order and item layout: tree/tree_checker.h).
//  - No copy passes: the block is reported with the first copy's reason, classified as
//    tree-block-csum, tree-block-header, transid or tree-checker, and its tree is marked damaged.
//    A block whose only fault is a transid mismatch is still used (btrfs check does the same:
//    "Ignoring transid failure"), so the rest of the tree is checked; so is a leaf whose item
//    table is sound although the checker refused an item body (leaf_layout_usable).
//  - A copy passes: it is the block's content. Every other copy must be byte-identical; a copy that
//    differs is reported as dup-mirror, whether it fails the checks (corrupt) or passes them (a
//    stale but well-formed older version). `btrfs check` 6.2 does not look at copy 2 at all, and
//    only prints a warning for a bad copy 1 (§7.5), so this is our own rule.
// A block reached twice (snapshots share subtrees) is read once; every pointer to it is recorded
// (BlockRecord::parents) for the extent pass, which compares them with the METADATA_ITEM refs.
// Placement: each block must lie in a METADATA chunk (SYSTEM for the chunk tree) and not cross a
// 64 KiB stripe boundary (§2.1, "crossing stripe boundary" in btrfs check).
#include <cstring>

#include "tools/fsck/context.h"
#include "tree/superblock.h"
#include "tree/tree_checker.h"

namespace ubtrfs::fsck {

namespace {

std::string classify(const std::string& msg) {
  if (msg.find("checksum verify failed") != std::string::npos) return "tree-block-csum";
  if (msg.find("parent transid verify failed") != std::string::npos) return "transid";
  if (msg.find("corrupt leaf") != std::string::npos || msg.find("corrupt node") != std::string::npos) {
    if (msg.find("owner mismatch") != std::string::npos) return "tree-block-header";
    return "tree-checker";
  }
  return "tree-block-header";
}

// True when a leaf's item table is usable even though the tree checker refused an item body: item
// headers inside the block, data inside the data area, keys strictly increasing. Such a leaf is
// reported but still read, so that the passes after this one can say what the broken item means
// (an inode whose INODE_ITEM was removed makes the checker complain about the next item's
// "previous key objectid"; the inode pass then reports the missing inode item).
bool leaf_layout_usable(std::span<const uint8_t> b) {
  const auto h = load<Header>(b.data());
  if (h.level != 0) return false;
  const uint64_t n = h.nritems;
  if (sizeof(Header) + n * sizeof(Item) > b.size()) return false;
  Key prev{};
  for (uint64_t i = 0; i < n; ++i) {
    const auto it = load<Item>(b.data() + sizeof(Header) + i * sizeof(Item));
    const uint64_t start = sizeof(Header) + static_cast<uint64_t>(it.offset.get());
    if (start < sizeof(Header) + n * sizeof(Item) || start + it.size.get() > b.size()) return false;
    const Key k = it.key.cpu();
    if (i > 0 && !(prev < k)) return false;
    prev = k;
  }
  return true;
}

class Walker {
 public:
  explicit Walker(Context& ctx) : ctx_(ctx), rep_(ctx.report()) {}

  void walk(TreeInfo& t) {
    TreeBlockExpect e;
    e.bytenr = t.root.bytenr;
    e.level = t.root.level;
    if (t.root.check_generation) e.generation = t.root.generation;
    e.owner = t.is_log ? kTreeLogObjectid : t.id;
    visit(t, e, 0);
  }

 private:
  std::string where_text(const TreeInfo& t, uint64_t bytenr, std::optional<uint8_t> level) const {
    return fmt::format("tree block {} ({} tree{})", bytenr, tree_name(t.id),
                       level ? fmt::format(", level {}", *level) : std::string());
  }

  void visit(TreeInfo& t, const TreeBlockExpect& e, uint64_t parent) {
    auto [it, inserted] = ctx_.blocks.try_emplace(e.bytenr);
    BlockRecord& rec = it->second;
    rec.parents.push_back(ParentRef{parent, t.id});
    if (!inserted) {
      if (!rec.readable) {
        t.damaged = true;
        return;
      }
      if (e.level && rec.level != *e.level) {
        rep_.error("tree-block-header", Where{t.id, e.bytenr, {}, {}},
                   fmt::format("{}: referenced from {} as level {} but the block has level {}",
                               where_text(t, e.bytenr, rec.level), parent, *e.level, rec.level));
        t.damaged = true;
        return;
      }
      collect(t, rec);
      return;
    }
    rec.bytenr = e.bytenr;
    rec.first_tree = t.id;
    rec.is_log = t.is_log;
    if (!read_copies(t, e, rec)) {
      t.damaged = true;
      return;
    }
    if (rec.level == 0) {
      t.leaves.push_back(rec.bytenr);
      return;
    }
    const uint32_t n = load<Header>(rec.data.data()).nritems;
    for (uint32_t i = 0; i < n; ++i) {
      const auto kp = load<KeyPtr>(rec.data.data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
      TreeBlockExpect child;
      child.bytenr = kp.blockptr;
      child.level = static_cast<uint8_t>(rec.level - 1);
      if (t.root.check_generation) child.generation = kp.generation.get();
      child.owner = t.is_log ? kTreeLogObjectid : t.id;
      child.first_key = kp.key.cpu();
      visit(t, child, rec.bytenr);
    }
  }

  // A subtree already read through another tree: add its leaves to this tree too.
  void collect(TreeInfo& t, const BlockRecord& rec) {
    if (rec.level == 0) {
      t.leaves.push_back(rec.bytenr);
      return;
    }
    const uint32_t n = load<Header>(rec.data.data()).nritems;
    for (uint32_t i = 0; i < n; ++i) {
      const auto kp = load<KeyPtr>(rec.data.data() + sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr));
      auto child = ctx_.blocks.find(kp.blockptr);
      if (child == ctx_.blocks.end() || !child->second.readable || child->second.level + 1 != rec.level) {
        t.damaged = true;
        continue;
      }
      collect(t, child->second);
    }
  }

  bool read_copies(TreeInfo& t, const TreeBlockExpect& e, BlockRecord& rec) {
    const uint32_t ns = ctx_.params.nodesize;
    auto copies = ctx_.map.map(e.bytenr, ns);
    if (!copies) {
      rep_.error(
          "tree-block-placement", Where{t.id, e.bytenr, {}, {}},
          fmt::format("{}: not mapped by any chunk: {}", where_text(t, e.bytenr, e.level), copies.error().message));
      return false;
    }
    const size_t nc = copies->size();
    std::vector<std::vector<uint8_t>> bufs(nc, std::vector<uint8_t>(ns));
    std::vector<std::optional<std::string>> why(nc);  // nullopt = copy passes
    for (size_t m = 0; m < nc; ++m) {
      const uint64_t phys = (*copies)[m];
      if (phys > ctx_.dev().size() || ns > ctx_.dev().size() - phys) {
        why[m] = fmt::format("copy {} at physical {} lies beyond the device end {}", m + 1, phys, ctx_.dev().size());
        continue;
      }
      if (auto rd = ctx_.dev().read(phys, bufs[m]); !rd) {
        why[m] = fmt::format("copy {} unreadable: {}", m + 1, rd.error().message);
        continue;
      }
      if (auto ck = check_tree_block(ctx_.params, bufs[m], e); !ck) why[m] = ck.error().message;
    }
    int good = -1;
    for (size_t m = 0; m < nc; ++m)
      if (!why[m]) {
        good = static_cast<int>(m);
        break;
      }
    if (good < 0) {
      const std::string& msg = *why[0];
      rep_.error(classify(msg), Where{t.id, e.bytenr, {}, {}},
                 fmt::format("{}: {}{}", where_text(t, e.bytenr, e.level), msg, nc > 1 ? " (every copy is bad)" : ""));
      // Like btrfs check, carry on with a block whose only fault is its generation; and with a
      // leaf whose item table is sound although an item body was refused.
      for (size_t m = 0; m < nc && good < 0; ++m) {
        if (why[m]->find("parent transid verify failed") != std::string::npos) {
          TreeBlockExpect relaxed = e;
          relaxed.generation.reset();
          if (check_tree_block(ctx_.params, bufs[m], relaxed)) good = static_cast<int>(m);
        } else if (why[m]->starts_with("corrupt leaf") && why[m]->find("owner mismatch") == std::string::npos &&
                   leaf_layout_usable(bufs[m])) {
          good = static_cast<int>(m);
        }
      }
      if (good < 0) return false;
    } else if (good > 0) {
      rep_.error(
          "dup-mirror", Where{t.id, e.bytenr, {}, {}},
          fmt::format("{}: copy 1 is bad, copy {} is good: {}", where_text(t, e.bytenr, e.level), good + 1, *why[0]));
    }
    for (size_t m = 0; m < nc; ++m) {
      if (static_cast<int>(m) == good || static_cast<int>(m) < good) continue;  // earlier bad copies reported
      if (bufs[m] == bufs[good]) continue;
      const uint64_t other_gen = load<Header>(bufs[m].data()).generation;
      rep_.error(
          "dup-mirror", Where{t.id, e.bytenr, {}, {}},
          fmt::format("{}: copy {} differs from copy {} (generation {} vs {}){}", where_text(t, e.bytenr, e.level),
                      m + 1, good + 1, other_gen, load<Header>(bufs[good].data()).generation.get(),
                      why[m] ? ": " + *why[m] : std::string(", both pass the checks: stale copy")));
    }
    rec.data = std::move(bufs[good]);
    const auto h = load<Header>(rec.data.data());
    rec.level = h.level;
    rec.generation = h.generation;
    rec.header_owner = h.owner;
    rec.readable = true;
    return true;
  }

  Context& ctx_;
  Report& rep_;
};

TreeInfo make_tree(uint64_t id, uint64_t bytenr, uint64_t gen, uint8_t level, bool log) {
  TreeInfo t;
  t.id = id;
  t.is_log = log;
  t.root.tree_id = id;
  t.root.bytenr = bytenr;
  t.root.generation = gen;
  t.root.level = level;
  t.root.check_generation = !log;
  return t;
}

// Adds every ROOT_ITEM of `source` as a tree to walk.
std::vector<TreeInfo> trees_named_by(Context& ctx, const TreeInfo& source, bool log) {
  std::vector<TreeInfo> out;
  for (const auto& it : ctx.items(source)) {
    if (it.key.type != kRootItemKey) continue;
    if (it.body.size() < kRootItemLegacySize) continue;  // the tree checker refuses these
    const RootItem ri = load_root_item(it.body);
    if (log && it.key.objectid != kTreeLogObjectid) continue;
    const uint64_t id = log ? kTreeLogObjectid : it.key.objectid;
    TreeInfo t = make_tree(id, ri.bytenr, ri.generation, ri.level, log);
    t.root.key = it.key;
    out.push_back(std::move(t));
  }
  return out;
}

void check_placement(Context& ctx) {
  const uint32_t ns = ctx.params.nodesize;
  for (const auto& [bytenr, rec] : ctx.blocks) {
    if (!rec.readable) continue;
    auto c = ctx.map.find(bytenr);
    if (!c) continue;  // reported when it was read
    const bool chunk_tree = rec.header_owner == kChunkTreeObjectid;
    const uint64_t want = chunk_tree ? kBlockGroupSystem : kBlockGroupMetadata;
    if (!(c->type & want))
      ctx.report().error(
          "tree-block-placement", Where{rec.first_tree, bytenr, {}, {}},
          fmt::format("tree block {} ({} tree) lies in a chunk of type 0x{:x} at {}, expected {}", bytenr,
                      tree_name(rec.first_tree), c->type, c->logical, chunk_tree ? "SYSTEM" : "METADATA"));
    const uint64_t rel = bytenr - c->logical;
    if (rel / kStripeLen != (rel + ns - 1) / kStripeLen)
      ctx.report().error(
          "tree-block-placement", Where{rec.first_tree, bytenr, {}, {}},
          fmt::format("tree block {} ({} tree) crosses a 64 KiB stripe boundary", bytenr, tree_name(rec.first_tree)));
  }
}

}  // namespace

void check_tree_blocks(Context& ctx) {
  Walker walker(ctx);
  const Superblock& sb = ctx.super;

  TreeInfo chunk = make_tree(kChunkTreeObjectid, sb.chunk_root, sb.chunk_root_generation, sb.chunk_root_level, false);
  walker.walk(chunk);
  ctx.chunk_tree_ok = !chunk.damaged;
  ctx.trees.push_back(chunk);
  for (const auto& it : ctx.items(ctx.trees.back())) {
    if (it.key.type != kChunkItemKey) continue;
    if (auto st = ctx.map.add_chunk_item(it.key.offset, it.body); !st)
      ctx.report().error(
          "chunk", Where{kChunkTreeObjectid, it.leaf, it.key, {}},
          fmt::format("chunk item {} in leaf {} cannot be mapped: {}", key_text(it.key), it.leaf, st.error().message));
  }

  TreeInfo root = make_tree(kRootTreeObjectid, sb.root, sb.generation, sb.root_level, false);
  walker.walk(root);
  ctx.trees.push_back(root);
  for (auto& t : trees_named_by(ctx, ctx.trees.back(), false)) {
    if (t.id == kRootTreeObjectid || t.id == kChunkTreeObjectid) continue;
    walker.walk(t);
    ctx.trees.push_back(std::move(t));
  }

  if (sb.log_root.get() != 0) {
    TreeInfo log = make_tree(kTreeLogObjectid, sb.log_root, sb.generation + 1, sb.log_root_level, true);
    walker.walk(log);
    ctx.trees.push_back(log);
    for (auto& t : trees_named_by(ctx, ctx.trees.back(), true)) {
      walker.walk(t);
      ctx.trees.push_back(std::move(t));
    }
  }
  check_placement(ctx);
}

}  // namespace ubtrfs::fsck
