// The COW decision and copy-on-write of one tree block (btrfs ctree.c `should_cow_block`,
// `btrfs_cow_block`, `btrfs_force_cow_block`; extent-tree.c `btrfs_alloc_tree_block` /
// `btrfs_free_tree_block` as seen from the tree). ARCHITECTURE.md "COW and the two fixes",
// KERNEL.md §7.
//
// Base rule: a block is modified in place only if it was born in the running transaction
// (generation == transid) and was never written (header flag WRITTEN clear).
//
// Fix 1 (cow_overwrite): a WRITTEN block of this transaction is re-dirtied and modified in place.
// Upstream merged this and reverted it after fstests btrfs/232 showed write-time tree-checker
// errors ("bad key order", "first key mismatch") and btrfs check errors; no root cause was
// published (KERNEL.md §7.2). The way in-place overwrite corrupts a block is a race between the
// writer's state check, the re-dirty and a write in flight: extent buffer writeback sends the
// buffer itself to the device (the kernel's btree folios; our buffer_cache.cpp likewise) and
// computes the checksum and runs the write-time checker on it after dropping the tree lock,
// relying on WRITEBACK to keep modifiers away. A modifier that decides "overwrite in place"
// without seeing WRITEBACK — because it looked before the writer set it, or did not look at all —
// modifies the image while it is being checksummed, checked and copied to the device: the
// checker sees a half-moved leaf ("bad key order"), or the block reaches the device with a
// checksum of the content before the change, or with keys its parent no longer agrees with
// ("first key mismatch" on the next read). Why ours cannot: (1) the writer moves DIRTY to
// WRITEBACK and sets WRITTEN only under the block's tree write lock (buffer_cache.cpp
// start_write_locked); (2) this function runs with the block's tree lock held (read or write),
// so its state check and re-dirty are atomic with respect to (1); (3) a write in flight is seen
// here (WRITEBACK) and waited for before the re-dirty — never modified under the write; (4) the
// re-dirty puts the block back into the dirty set the commit writes (mark_dirty), and WRITTEN
// stays set so a later free pins the address instead of reusing it while a write may still land
// there; (5) the commit's write-out first waits for every background write in flight, freed
// blocks' included; (6) a second way, found later by the 8-writer race test: content at one
// address now changes within a transaction, so a device read overlapping an overwrite, its
// write-out and the clean buffer's eviction returns the old version with the same generation and
// would re-enter the cache ("first key mismatch", lost changes). BufferCache::read() retries a
// read that a write of its address overlapped (read_never_resurrects_a_version_overwritten_in_place).
// tests/tree/cow_overwrite_race_test.cpp replays the race deterministically:
// with the guard off (TreeHandle::cow_overwrite_unguarded_for_test) a block reaches the device
// torn; with it on, never. Excluded as upstream does: log trees (an fsync makes their blocks
// reachable from the superblock), RELOC blocks outside the reloc tree. Upstream copies a block
// whose write is in flight; we wait for the write instead, so a block is copied at most once per
// transaction (the benchmark's "1").
//
// Fix 2 (wb_inhibit) takes an inhibitor on every block the handle COWs or reuses; its transaction
// scope (TreeHandle::wb_hold_recopied) holds a block copied a second time in the transaction from
// background writeback until the commit, so that no block is copied more than twice.
#include <algorithm>
#include <cstring>

#include "tree/ctree_internal.h"

namespace ubtrfs::ctree {

namespace {
// COWs made by this thread; search_slot reads the difference around one search.
thread_local uint64_t tls_cows = 0;

void inhibit(TreeHandle& h, TreeRoot& root, const EbRef& eb) {
  if (auto r = h.inhibit_writeback(eb); r && *r != InhibitSet::AddResult::kAlreadyHeld)
    root.ctx().stats.count_inhibit(*r == InhibitSet::AddResult::kReplaced);
}
}  // namespace

uint64_t thread_cow_count() { return tls_cows; }

bool should_cow(TreeHandle& h, TreeRoot& root, const EbRef& eb, bool* write_in_flight) {
  // KERNEL.md §7.2, in the patch's order. REQUIRES: eb locked (read or write) by this thread.
  if (eb->generation() != h.transid) return true;
  const bool overwrite = h.cow_overwrite && root.objectid() != kTreeLogObjectid;
  if (eb->under_writeback() && !h.cow_overwrite_unguarded_for_test) {
    if (!overwrite) {
      if (write_in_flight) *write_in_flight = true;
      return true;
    }
    // Fix 1: the write goes out from this buffer; let it finish, then overwrite in place. The
    // writer reaps completions without tree locks, so holding ours while waiting cannot deadlock.
    eb->wait_writeback();
    root.ctx().stats.count_in_flight_wait();
  }
  if (eb->header_flag(kHeaderFlagReloc) && root.objectid() != kTreeRelocObjectid) return true;
  // A snapshot taken in this transaction shares this transaction's blocks too (btrfs FORCE_COW).
  if (root.force_cow()) return true;
  if (eb->written()) {
    if (!overwrite) return true;
    mark_dirty(root, eb);  // fix 1: back into the transaction's dirty set; WRITTEN stays
    root.ctx().stats.count_overwrite();
  }
  inhibit(h, root, eb);
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
  inhibit(h, root, eb);
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
  // The seed's "COW count" of this logical block in this transaction (a block read back from disk
  // lost its count; it was copied at least once to be of this generation).
  const bool same_transaction = eb->generation() == h.transid;
  const uint32_t copies = same_transaction ? std::max<uint32_t>(eb->cow_copies(), 1) + 1 : 1;
  cow->set_cow_copies(copies);
  // The hold never needs clearing: the copy is born in this transaction, the commit writes it
  // clean, and any change in a later transaction copies it again (generation != transid) into a
  // buffer without the flag (writeback_holds_a_second_copy_for_the_commit checks both).
  if (copies >= 2 && h.wb_inhibit && h.wb_hold_recopied) {
    cow->test_and_set_flag(ExtentBuffer::kHeldForCommit);
    root.ctx().stats.count_held_for_commit();
  }
  const uint32_t handle_copies = same_transaction && eb->cow_handle() == h.id ? eb->handle_copies() + 1 : 1;
  cow->set_handle_copies(h.id, handle_copies);
  ++tls_cows;
  // btrfs_block_can_be_shared: a subvolume tree's block at or below the last snapshot's generation
  // (or any block while a snapshot of this transaction is being taken) may be referenced by
  // another tree too; the root block never is (a snapshot copies it). update_ref_for_cow moves
  // the references the old block holds before the copy replaces it.
  bool last_ref = true;
  if (root.shareable() && parent &&
      (eb->generation() <= root.last_snapshot() || root.force_cow() || eb->header_flag(kHeaderFlagReloc))) {
    auto r = h.allocator->update_ref_for_cow(h, root, *eb, *cow);
    if (!r) {
      // The copy is nobody's: give it back (it was never linked, nothing references it).
      free_tree_block(h, root, cow);
      cow->unlock_write();
      return fail(r.error());
    }
    last_ref = *r;
  }
  if (!parent) {
    assert(root.is_node(eb));
    root.set_node(cow);
  } else {
    assert(parent->node_blockptr(pslot) == eb->start());
    parent->set_node_blockptr(pslot, cow->start());
    parent->set_node_ptr_generation(pslot, h.transid);
    mark_dirty(root, parent);
  }
  root.ctx().stats.count_cow(same_transaction, write_in_flight);
  root.ctx().stats.count_block_copies(copies);
  root.ctx().stats.count_handle_copies(handle_copies);
  if (last_ref) {
    free_tree_block(h, root, eb);
  } else {
    // Other trees still hold the old block: only this root's reference goes; the bytes and the
    // cached buffer stay (dirty or not, it is still part of those trees).
    h.allocator->drop_tree_block_ref(h, root.objectid(), eb->start(), level);
  }
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
