// Giving room back: item deletion with leaf merge, node balancing, root shrink, and the in-place
// item resizes (btrfs ctree.c `btrfs_del_items`, `btrfs_del_leaf`, `balance_level`,
// `push_node_left`, `balance_node_right`, `btrfs_extend_item`, `btrfs_truncate_item`).
//
// Locking: deletes search with write_lock_level 2 and lowest_unlock 2, so the leaf and its level-1
// parent stay write-locked and a slot-0 chain above them is write-locked too ("slot_zero"). Node
// balancing runs from setup_nodes_for_search with the node and its parent write-locked
// ("setup_nodes"). A neighbour is locked only under the write-locked common parent, and COWed
// before it changes.
//
// Shape rules: a node met on the way down of a delete with fewer than max_ptrs/2 pointers is merged
// with a neighbour (if both fit in one node) or the two are evened out, so it has >= 2 pointers and
// the leaf removal below it cannot empty it. A root node with one child is replaced by that child
// (the search then restarts). A leaf that becomes empty is removed; one under a third full is merged
// into a neighbour when it fits entirely. Only a root leaf is ever empty.
#include <cassert>
#include <cstring>

#include "tree/ctree_internal.h"

namespace ubtrfs {

namespace ctree {

namespace {

// btrfs `btrfs_del_leaf`: drop the path leaf's pointer and free it. REQUIRES: level 1 write-locked.
void del_leaf(TreeHandle& h, TreeRoot& root, Path& p) {
  EbRef leaf = p.nodes[0];
  del_ptr(root, p, 1, p.slots[1]);
  free_tree_block(h, root, leaf);
  p.unlock_level(0);
  p.nodes[0].reset();
}

}  // namespace

Status balance_level(TreeHandle& h, TreeRoot& root, Path& p, int level) {
  EbRef mid = p.nodes[level];
  assert(p.locks[level] == LockState::kWrite);
  if (!p.nodes[level + 1]) {
    // Root shrink: a root node with one child hands the root to the child.
    if (mid->nritems() != 1) return {};
    EbRef child = UBTRFS_TRY(read_node_slot(root, *mid, 0));
    child->lock_write();
    auto cowed = cow_block(h, root, child, mid, 0);
    if (!cowed) {
      child->unlock_write();
      return std::unexpected(cowed.error());
    }
    child = *cowed;
    root.set_node(child);
    child->unlock_write();
    free_tree_block(h, root, mid);
    p.unlock_level(level);
    p.nodes[level].reset();
    return {};
  }
  const uint32_t max = mid->max_ptrs();
  // Only a node at most a quarter full is merged or evened out (btrfs balance_level), although
  // the search calls us below half (setup_nodes_for_search): with the threshold at half, two
  // half-full siblings merged into one full node, the next insertion split it into two half-full
  // ones, the next deletion merged them again — every cycle a node freed and another allocated.
  // In the commit's converge loop each cycle queued the delayed refs that drove the next one
  // ("did not converge after 1000 passes": the extent tree's level-1 node, freed and reallocated
  // each pass). The gap between a quarter and full is the hysteresis.
  if (mid->nritems() > max / 4) return {};
  const EbRef& parent = p.nodes[level + 1];
  assert(p.locks[level + 1] == LockState::kWrite);
  const int pslot = p.slots[level + 1];
  const int sslot = pslot > 0 ? pslot - 1 : pslot + 1;
  EbRef sib = UBTRFS_TRY(lock_sibling(root, p, level, sslot));
  if (!sib) return {};  // only child: nothing to balance with
  auto cowed = cow_block(h, root, sib, parent, sslot);
  if (!cowed) {
    sib->unlock_write();
    return std::unexpected(cowed.error());
  }
  sib = *cowed;
  const bool mid_is_left = sslot > pslot;
  EbRef l = mid_is_left ? mid : sib;
  EbRef r = mid_is_left ? sib : mid;
  const int lslot = mid_is_left ? pslot : sslot;
  const int ln = static_cast<int>(l->nritems());
  const int rn = static_cast<int>(r->nritems());
  const int g = mid_is_left ? p.slots[level] : ln + p.slots[level];  // path slot over l ++ r
  mark_dirty(root, l);
  mark_dirty(root, r);
  if (static_cast<uint32_t>(ln + rn) <= max) {
    // Merge r into l (btrfs push_node_left with empty = 1) and drop r.
    node_append_from(*l, *r, 0, rn);
    del_ptr(root, p, level + 1, lslot + 1);
    free_tree_block(h, root, r);
    r->unlock_write();
    p.nodes[level] = l;  // still write-locked (it was either mid or the locked sibling)
    p.locks[level] = LockState::kWrite;
    p.slots[level] = g;
    p.slots[level + 1] = lslot;
    return {};
  }
  // Even out (btrfs balance_node_right / push_node_left without emptying).
  const int target = (ln + rn) / 2;
  if (ln < target) {
    const int m = target - ln;
    node_append_from(*l, *r, 0, m);
    node_delete_ptrs(*r, 0, m);
  } else if (ln > target) {
    const int m = ln - target;
    node_prepend_from(*r, *l, ln - m, m);
    l->set_nritems(static_cast<uint32_t>(ln - m));
  }
  parent->set_node_key(lslot + 1, r->node_key(0));
  mark_dirty(root, parent);
  const int newln = static_cast<int>(l->nritems());
  if (g < newln) {
    r->unlock_write();
    p.nodes[level] = l;
    p.slots[level] = g;
    p.slots[level + 1] = lslot;
  } else {
    l->unlock_write();
    p.nodes[level] = r;
    p.slots[level] = g - newln;
    p.slots[level + 1] = lslot + 1;
  }
  p.locks[level] = LockState::kWrite;
  return {};
}

}  // namespace ctree

Status del_items(TreeHandle& h, TreeRoot& root, Path& p, int slot, int nr) {
  using namespace ctree;
  EbRef leaf = p.nodes[0];
  assert(p.locks[0] == LockState::kWrite);
  leaf_delete_slots(*leaf, slot, nr);
  mark_dirty(root, leaf);
  const uint32_t lds = leaf->leaf_data_size();
  if (!p.nodes[1]) {
    p.release();
    return {};  // the root leaf may become empty
  }
  if (leaf->nritems() == 0) {
    del_leaf(h, root, p);
    p.release();
    return {};
  }
  if (slot == 0) fixup_low_keys(root, p, leaf->first_key(), 1);
  const int n = static_cast<int>(leaf->nritems());
  const uint32_t used = leaf->leaf_space_used(0, n);
  if (used < lds / 3) {
    const int pslot = p.slots[1];
    // Merge the whole leaf into the left neighbour if it fits (btrfs push_leaf_left, empty = 1) ...
    EbRef left = UBTRFS_TRY(lock_sibling(root, p, 0, pslot - 1));
    if (left && left->leaf_free_space() >= used) {
      left = UBTRFS_TRY(cow_block(h, root, left, p.nodes[1], pslot - 1));
      leaf_append_from(*left, *leaf, 0, n);
      mark_dirty(root, left);
      left->unlock_write();
      leaf_delete_slots(*leaf, 0, n);
      del_leaf(h, root, p);
      p.release();
      return {};
    }
    if (left) left->unlock_write();
    // ... else into the right one (btrfs push_leaf_right, empty = 1).
    EbRef right = UBTRFS_TRY(lock_sibling(root, p, 0, pslot + 1));
    if (right && right->leaf_free_space() >= used) {
      right = UBTRFS_TRY(cow_block(h, root, right, p.nodes[1], pslot + 1));
      leaf_prepend_from(*right, *leaf, 0, n);
      mark_dirty(root, right);
      p.nodes[1]->set_node_key(pslot + 1, right->first_key());
      right->unlock_write();
      leaf_delete_slots(*leaf, 0, n);
      del_leaf(h, root, p);
      p.release();
      return {};
    }
    if (right) right->unlock_write();
  }
  p.release();
  return {};
}

void extend_item(TreeRoot& root, Path& p, uint32_t extra) {
  ExtentBuffer& leaf = p.leaf();
  const int s = p.slots[0];
  const int n = static_cast<int>(leaf.nritems());
  assert(p.locks[0] == LockState::kWrite && leaf.leaf_free_space() >= extra);
  const uint32_t data_end = leaf.leaf_data_end();
  const uint32_t old_end = leaf.item_end(s);
  leaf.memmove_within(ExtentBuffer::leaf_data_abs(data_end - extra), ExtentBuffer::leaf_data_abs(data_end),
                      old_end - data_end);
  for (int i = s; i < n; ++i) leaf.set_item_offset(i, leaf.item_offset(i) - extra);
  leaf.set_item_size(s, leaf.item_size(s) + extra);
  std::memset(leaf.bytes().data() + ExtentBuffer::leaf_data_abs(old_end - extra), 0, extra);
  ctree::mark_dirty(root, p.nodes[0]);
}

void set_item_key_safe(TreeRoot& root, Path& p, const Key& key) {
  ExtentBuffer& leaf = p.leaf();
  const int s = p.slots[0];
  assert(p.locks[0] == LockState::kWrite);
  assert(s == 0 || leaf.item_key(s - 1) < key);
  assert(s + 1 >= static_cast<int>(leaf.nritems()) || key < leaf.item_key(s + 1));
  leaf.set_item_key(s, key);
  ctree::mark_dirty(root, p.nodes[0]);
  if (s == 0) ctree::fixup_low_keys(root, p, key, 1);
}

void truncate_item(TreeRoot& root, Path& p, uint32_t new_size, bool from_end) {
  ExtentBuffer& leaf = p.leaf();
  const int s = p.slots[0];
  const int n = static_cast<int>(leaf.nritems());
  const uint32_t old_size = leaf.item_size(s);
  assert(p.locks[0] == LockState::kWrite && new_size <= old_size);
  const uint32_t diff = old_size - new_size;
  if (diff == 0) return;
  const uint32_t data_end = leaf.leaf_data_end();
  // Bytes that move up by `diff`: everything below the kept part of item s.
  const uint32_t move_top = from_end ? leaf.item_end(s) - diff : leaf.item_offset(s);
  leaf.memmove_within(ExtentBuffer::leaf_data_abs(data_end + diff), ExtentBuffer::leaf_data_abs(data_end),
                      move_top - data_end);
  for (int i = s; i < n; ++i) leaf.set_item_offset(i, leaf.item_offset(i) + diff);
  leaf.set_item_size(s, new_size);
  ctree::mark_dirty(root, p.nodes[0]);
}

}  // namespace ubtrfs
