// Shared tree blocks: the reference rules of snapshots (btrfs extent-tree.c `btrfs_inc_ref`,
// `btrfs_dec_ref`, `btrfs_lookup_extent_info`, `btrfs_set_disk_extent_flags`; ctree.c
// `update_ref_for_cow`). Methods of ExtentAllocator, declared in extent_allocator.h.
//
// After a snapshot, the source and the snapshot reach the same blocks below their root nodes. Each
// block's extent item counts the references to it; the references a block *holds* on its children
// (and, for a leaf, on the data extents its file extent items name) are either keyed to the
// block's owner root (TREE_BLOCK_REF root / EXTENT_DATA_REF root,ino,offset) or, once the block
// carries FULL_BACKREF, shared references keyed by the block's own address (SHARED_BLOCK_REF /
// SHARED_DATA_REF parent). The first COW of a shared block in one of the trees moves those
// references so that the copy and the original each hold exactly what they point to:
// - refs > 1, the COWing root owns the block and it is not FULL_BACKREF: the original gets
//   shared refs on all its children and FULL_BACKREF; the keyed refs it held now belong to the
//   copy (same owner root), so the copy adds nothing;
// - refs > 1 otherwise (another root owns it, or it is FULL_BACKREF already): the copy adds keyed
//   refs for the COWing root; the original keeps what it holds;
// - refs == 1 and FULL_BACKREF (the other trees let go): the copy adds keyed refs, the original's
//   shared refs go with it;
// - refs == 1, keyed: the ordinary COW (the copy takes over the keyed refs).
// Additions are queued before drops, so a concurrent reader never sees a count dip to 1 that is
// really 2 (the decision that matters is only refs == 1 vs > 1).
// The COW then drops only the COWing root's keyed ref on the original when others still hold it.
#include <spdlog/spdlog.h>

#include "alloc/extent_allocator.h"
#include "tree/ctree.h"
#include "tree/print_tree.h"

namespace ubtrfs::alloc {

Result<ExtentAllocator::ExtentInfo> ExtentAllocator::lookup_extent_info(uint64_t bytenr, int level) {
  if (!extent_root_) return fail(EUCLEAN, "extent info of tree block {}: no extent tree is attached", bytenr);
  for (;;) {
    uint64_t epoch = 0;
    const DelayedRefs::Pending pend = refs_.pending_for_lookup(bytenr, &epoch);
    ExtentInfo info;
    if (!(pend.queued && pend.must_insert)) {
      // The item on disk: METADATA_ITEM (skinny) or EXTENT_ITEM with a tree_block_info; the kernel
      // looks for both forms, an image may hold either.
      bool found = false;
      const Key keys[2] = {Key{bytenr, kMetadataItemKey, static_cast<uint64_t>(level)},
                           Key{bytenr, kExtentItemKey, fs_.nodesize}};
      for (const Key& k : keys) {
        Path p;
        const int ret = UBTRFS_TRY(search_slot(nullptr, *extent_root_, k, p, 0, false));
        if (ret != 0) continue;
        auto d = p.leaf().item_data(p.slots[0]);
        if (d.size() < sizeof(ExtentItem))
          return fail(EUCLEAN, "extent item {} of tree block {} is {} bytes, too short", key_tuple_str(k), bytenr, d.size());
        info.refs = get_le64(d, 0);
        info.flags = get_le64(d, 16);
        found = true;
        break;
      }
      if (!found && !pend.queued)
        return fail(EUCLEAN, "tree block {} (level {}) has no extent item in the extent tree", bytenr, level);
    }
    // A runner took (and maybe applied) heads while the tree was read: the read may count the
    // queued change twice or not at all. Read again.
    if (refs_.take_epoch() != epoch) continue;
    const int64_t refs = static_cast<int64_t>(info.refs) + pend.ref_mod;
    if (refs < 0)
      return fail(EUCLEAN, "tree block {}: {} references on disk and {} queued", bytenr, info.refs, pend.ref_mod);
    info.refs = static_cast<uint64_t>(refs);
    info.flags |= pend.set_flags;
    return info;
  }
}

Status ExtentAllocator::mod_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref, int delta) {
  const uint64_t parent = full_backref ? eb.start() : 0;
  const uint64_t owner = eb.owner();
  const int n = static_cast<int>(eb.nritems());
  uint64_t queued = 0;
  if (eb.is_leaf()) {
    for (int slot = 0; slot < n; ++slot) {
      const Key k = eb.item_key(slot);
      if (k.type != kExtentDataKey) continue;
      auto d = eb.item_data(slot);
      if (d.size() < kFileExtentInlineDataStart)
        return fail(EUCLEAN, "leaf {} slot {}: file extent item {} is {} bytes", eb.start(), slot, key_tuple_str(k), d.size());
      const uint8_t type = d[offsetof(FileExtentItem, type)];
      if (type == kFileExtentInline) continue;
      if (d.size() < sizeof(FileExtentItem))
        return fail(EUCLEAN, "leaf {} slot {}: file extent item {} is {} bytes", eb.start(), slot, key_tuple_str(k), d.size());
      const uint64_t disk_bytenr = get_le64(d, offsetof(FileExtentItem, disk_bytenr));
      if (disk_bytenr == 0) continue;  // a hole
      const uint64_t disk_num_bytes = get_le64(d, offsetof(FileExtentItem, disk_num_bytes));
      const uint64_t extent_offset = get_le64(d, offsetof(FileExtentItem, offset));
      const bool new_head =
          full_backref ? UBTRFS_TRY(refs_.add_shared_data_ref(disk_bytenr, disk_num_bytes, parent, delta, h.transid))
                       : UBTRFS_TRY(refs_.add_data_ref(disk_bytenr, disk_num_bytes, owner, k.objectid,
                                                       k.offset - extent_offset, delta, false, h.transid));
      queued += new_head ? 1 : 0;
    }
  } else {
    const int child_level = eb.level() - 1;
    for (int slot = 0; slot < n; ++slot) {
      const uint64_t child = eb.node_blockptr(slot);
      const bool new_head =
          full_backref ? UBTRFS_TRY(refs_.add_shared_tree_ref(child, fs_.nodesize, parent, child_level, delta, h.transid))
                       : UBTRFS_TRY(refs_.add_tree_ref(child, fs_.nodesize, owner, child_level, delta, false, h.transid));
      queued += new_head ? 1 : 0;
    }
  }
  h.delayed_ref_updates += queued;
  return {};
}

Status ExtentAllocator::inc_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref) {
  return mod_ref(h, eb, full_backref, +1);
}

Status ExtentAllocator::dec_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref) {
  return mod_ref(h, eb, full_backref, -1);
}

Status ExtentAllocator::set_extent_flags(TreeHandle& h, uint64_t bytenr, uint64_t flags) {
  if (UBTRFS_TRY(refs_.add_extent_flags(bytenr, fs_.nodesize, flags, h.transid))) h.delayed_ref_updates++;
  return {};
}

Result<bool> ExtentAllocator::update_ref_for_cow(TreeHandle& h, TreeRoot& root, const ExtentBuffer& buf,
                                                 const ExtentBuffer& cow) {
  const ExtentInfo info = UBTRFS_TRY(lookup_extent_info(buf.start(), buf.level()));
  const uint64_t rid = root.objectid();
  const uint64_t owner = buf.owner();
  const bool full = info.flags & kBlockFlagFullBackref;
  if (info.refs == 0)
    return fail(EUCLEAN, "COW of tree block {} (level {}, owner {}) in root {}: its extent item has 0 references",
                buf.start(), buf.level(), owner, rid);
  if (info.refs > 1) {
    if (owner == rid && !full) {
      UBTRFS_TRY_STATUS(inc_ref(h, buf, true));
      UBTRFS_TRY_STATUS(set_extent_flags(h, buf.start(), kBlockFlagFullBackref));
    } else {
      UBTRFS_TRY_STATUS(inc_ref(h, cow, false));
    }
    root.ctx().stats.count_shared_cow();
    return false;
  }
  if (full) {
    UBTRFS_TRY_STATUS(inc_ref(h, cow, false));
    UBTRFS_TRY_STATUS(dec_ref(h, buf, true));
  } else if (owner != rid) {
    // The keyed refs it holds are its owner's; handing them to a copy in another root would leave
    // them naming a root that does not reach them. The kernel's invariants exclude this.
    return fail(EUCLEAN,
                "COW of tree block {} (level {}) in root {}: owned by root {}, one reference and no FULL_BACKREF",
                buf.start(), buf.level(), rid, owner);
  }
  return true;
}

void ExtentAllocator::drop_tree_block_ref(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, int level) {
  if (auto r = refs_.add_tree_ref(bytenr, fs_.nodesize, root_objectid, level, -1, false, h.transid); !r)
    record_error(r.error());
  else if (*r)
    h.delayed_ref_updates++;
}

Status ExtentAllocator::drop_shared_tree_ref(TreeHandle& h, uint64_t bytenr, int level, uint64_t parent) {
  if (UBTRFS_TRY(refs_.add_shared_tree_ref(bytenr, fs_.nodesize, parent, level, -1, h.transid)))
    h.delayed_ref_updates++;
  return {};
}

}  // namespace ubtrfs::alloc
