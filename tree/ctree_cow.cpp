// The COW decision and copy-on-write of one tree block (btrfs ctree.c `should_cow_block`,
// `btrfs_cow_block`, `btrfs_force_cow_block`; extent-tree.c `btrfs_alloc_tree_block` /
// `btrfs_free_tree_block` as seen from the tree). ARCHITECTURE.md "COW and the two fixes".
//
// Base rule: a block is modified in place only if it was born in the running transaction
// (generation == transid) and was never written (header flag WRITTEN clear). Fix 1 (cow_overwrite)
// additionally reuses a WRITTEN block of this transaction unless its write is in flight or it
// belongs to a log tree; it re-dirties it (back into the commit's dirty set) and keeps WRITTEN so a
// later free pins it. The check and the re-dirty happen with the tree lock held, and writeback takes
// the write lock (or try-lock) to clear DIRTY and set WRITTEN, so they are atomic with respect to the
// writer. Fix 2 (wb_inhibit) takes an inhibitor on every block the handle COWs or reuses.
#include <cstring>

#include "tree/ctree_internal.h"

namespace ubtrfs::ctree {

bool should_cow(TreeHandle& h, TreeRoot& root, const EbRef& eb, bool* write_in_flight) {
  if (eb->generation() != h.transid) return true;
  if (eb->written()) {
    if (!h.cow_overwrite || root.objectid() == kTreeLogObjectid) return true;
    if (eb->test_flag(ExtentBuffer::kWriteback)) {
      if (write_in_flight) *write_in_flight = true;
      return true;
    }
    mark_dirty(root, eb);  // fix 1: back into the transaction's dirty set; WRITTEN stays
  }
  h.inhibit_writeback(eb);
  return false;
}

Result<EbRef> alloc_tree_block(TreeHandle& h, TreeRoot& root, int level, uint64_t hint) {
  const FsParams& fs = root.ctx().fs;
  const uint64_t bytenr = UBTRFS_TRY(h.allocator->alloc_tree_block(h, root.objectid(), level, hint));
  EbRef eb = root.ctx().cache.create(bytenr);
  // Nobody can reach the new buffer yet, so the lock is free. try-lock: a lock taken at birth
  // imposes no order on the locks already held (TSan's deadlock detector agrees).
  [[maybe_unused]] const bool locked = eb->try_lock_write();
  assert(locked);
  Header& hd = eb->header();
  std::memcpy(hd.fsid, fs.fsid.data(), 16);
  std::memcpy(hd.chunk_tree_uuid, fs.chunk_tree_uuid.data(), 16);
  hd.bytenr = bytenr;
  hd.flags = kMixedBackrefRev << kBackrefRevShift;
  hd.generation = h.transid;
  hd.owner = root.objectid();
  hd.nritems = 0;
  hd.level = static_cast<uint8_t>(level);
  mark_dirty(root, eb);
  h.inhibit_writeback(eb);
  return eb;
}

void free_tree_block(TreeHandle& h, TreeRoot& root, const EbRef& eb) {
  h.allocator->free_tree_block(h, root.objectid(), eb->start(), eb->generation(), eb->written());
  root.ctx().cache.forget(eb);
}

Result<EbRef> cow_block(TreeHandle& h, TreeRoot& root, const EbRef& eb, const EbRef& parent, int pslot) {
  bool write_in_flight = false;
  if (!should_cow(h, root, eb, &write_in_flight)) return eb;
  const int level = eb->level();
  EbRef cow = UBTRFS_TRY(alloc_tree_block(h, root, level, eb->start()));
  // Copy everything after the header fields alloc_tree_block set: items/pointers and nritems.
  cow->copy_from(*eb, sizeof(Header), sizeof(Header), eb->len() - sizeof(Header));
  cow->set_nritems(eb->nritems());
  if (!parent) {
    assert(root.is_node(eb));
    root.set_node(cow);
  } else {
    assert(parent->node_blockptr(pslot) == eb->start());
    parent->set_node_blockptr(pslot, cow->start());
    parent->set_node_ptr_generation(pslot, h.transid);
    mark_dirty(root, parent);
  }
  root.ctx().stats.count_cow(eb->generation() == h.transid, write_in_flight);
  free_tree_block(h, root, eb);
  eb->unlock_write();
  return cow;
}

Result<EbRef> read_node_slot(TreeRoot& root, const ExtentBuffer& parent, int slot) {
  TreeBlockExpect ex;
  ex.bytenr = parent.node_blockptr(slot);
  ex.level = static_cast<uint8_t>(parent.level() - 1);
  ex.generation = parent.node_ptr_generation(slot);
  ex.first_key = parent.node_key(slot);
  return root.ctx().cache.read(ex);
}

}  // namespace ubtrfs::ctree
