// Making room: new root, node split, leaf split into two or three leaves, and pushing leaf items to
// the left/right neighbour first (btrfs ctree.c `insert_new_root`, `split_node`, `split_leaf`,
// `push_leaf_right`, `push_leaf_left`, `copy_for_split`, `insert_ptr`, `fixup_low_keys`).
//
// Locking: everything here runs inside search_slot with the path's block and its parent
// write-locked (write_lock_level >= 1 for inserts, raised by the "setup_nodes" restart for node
// splits). A neighbour leaf is locked only while the common parent is write-locked, and COWed
// before it is changed. Every new block is write-locked from birth until it joins (or leaves) the path.
//
// Splitting a leaf: the target (the new item at slots[0], or the item slots[0] growing by `need`) must
// end up in a leaf with `need` free bytes. First try moving items to a neighbour; then pick the cut
// point that balances the two halves best while both fit; if no single cut works (a big item in the
// middle of a full leaf), isolate the target: split before it, then give it a leaf of its own.
#include <cassert>
#include <limits>
#include <vector>

#include "tree/ctree_internal.h"

namespace ubtrfs::ctree {

Result<EbRef> lock_sibling(TreeRoot& root, Path& p, int level, int sslot) {
  ExtentBuffer& parent = *p.nodes[level + 1];
  if (sslot < 0 || sslot >= static_cast<int>(parent.nritems())) return EbRef{};
  EbRef sib = UBTRFS_TRY(read_node_slot(root, parent, sslot));
  // Safe to wait: whoever holds the sibling got it through the parent we hold write-locked and
  // only locks downward from it. Try first: uncontended in the common case.
  if (!sib->try_lock_write()) sib->lock_write();
  return sib;
}

void fixup_low_keys(TreeRoot& root, Path& p, const Key& key, int level) {
  for (int i = level; i < kMaxLevel; ++i) {
    if (!p.nodes[i]) break;
    assert(p.locks[i] == LockState::kWrite);
    p.nodes[i]->set_node_key(p.slots[i], key);
    mark_dirty(root, p.nodes[i]);
    if (p.slots[i] != 0) break;
  }
}

void insert_ptr(TreeRoot& root, Path& p, int level, int slot, const Key& key, uint64_t bytenr, uint64_t gen) {
  assert(p.locks[level] == LockState::kWrite);
  node_insert_ptr(*p.nodes[level], slot, key, bytenr, gen);
  mark_dirty(root, p.nodes[level]);
}

void del_ptr(TreeRoot& root, Path& p, int level, int slot) {
  ExtentBuffer& node = *p.nodes[level];
  assert(p.locks[level] == LockState::kWrite);
  node_delete_ptrs(node, slot, 1);
  mark_dirty(root, p.nodes[level]);
  assert(node.nritems() > 0);
  if (slot == 0 && node.nritems() > 0) fixup_low_keys(root, p, node.node_key(0), level + 1);
}

Status insert_new_root(TreeHandle& h, TreeRoot& root, Path& p, int level) {
  const EbRef& lower = p.nodes[level - 1];
  assert(lower && root.is_node(lower) && p.locks[level - 1] == LockState::kWrite);
  EbRef c = UBTRFS_TRY(alloc_tree_block(h, root, level, lower->start()));
  node_insert_ptr(*c, 0, lower->nritems() ? lower->first_key() : kMinKey, lower->start(), lower->generation());
  root.set_node(c);
  p.nodes[level] = c;
  p.locks[level] = LockState::kWrite;
  p.slots[level] = 0;
  return {};
}

Status split_node(TreeHandle& h, TreeRoot& root, Path& p, int level) {
  if (!p.nodes[level + 1]) UBTRFS_TRY_STATUS(insert_new_root(h, root, p, level + 1));
  EbRef c = p.nodes[level];
  const int n = static_cast<int>(c->nritems());
  const int mid = (n + 1) / 2;
  EbRef split = UBTRFS_TRY(alloc_tree_block(h, root, level, c->start()));
  node_append_from(*split, *c, mid, n - mid);
  c->set_nritems(static_cast<uint32_t>(mid));
  mark_dirty(root, c);
  insert_ptr(root, p, level + 1, p.slots[level + 1] + 1, split->first_key(), split->start(), split->generation());
  if (p.slots[level] >= mid) {
    p.slots[level] -= mid;
    c->unlock_write();
    p.nodes[level] = split;
    p.slots[level + 1] += 1;
  } else {
    split->unlock_write();
  }
  return {};
}

namespace {

// New empty leaf next to p.nodes[0] (after it if `after`, else before) that will hold only the
// target item, whose key becomes the pointer key. The path moves to it (slot 0).
Status new_leaf_for_target(TreeHandle& h, TreeRoot& root, Path& p, const Key& target_key, bool after) {
  EbRef right = UBTRFS_TRY(alloc_tree_block(h, root, 0, p.nodes[0]->start()));
  const int pslot = after ? p.slots[1] + 1 : p.slots[1];
  insert_ptr(root, p, 1, pslot, target_key, right->start(), right->generation());
  p.nodes[0]->unlock_write();
  p.nodes[0] = right;
  p.slots[0] = 0;
  p.slots[1] = pslot;
  if (pslot == 0) fixup_low_keys(root, p, target_key, 2);
  return {};
}

// btrfs `copy_for_split`: items [mid, n) of the path leaf move to a new right leaf; the path follows
// the target if it moved.
Status copy_for_split(TreeHandle& h, TreeRoot& root, Path& p, int mid, bool target_right) {
  EbRef l = p.nodes[0];
  const int n = static_cast<int>(l->nritems());
  EbRef right = UBTRFS_TRY(alloc_tree_block(h, root, 0, l->start()));
  leaf_append_from(*right, *l, mid, n - mid);
  leaf_delete_slots(*l, mid, n - mid);
  mark_dirty(root, l);
  insert_ptr(root, p, 1, p.slots[1] + 1, right->first_key(), right->start(), right->generation());
  if (target_right) {
    p.slots[0] -= mid;
    l->unlock_write();
    p.nodes[0] = right;
    p.slots[1] += 1;
  } else {
    right->unlock_write();
  }
  return {};
}

// btrfs `push_leaf_right` for an insert/extend: move the smallest tail of the leaf past the target
// into the right neighbour so that the leaf gets `need` free bytes; or, when appending, put the
// target at the front of the right neighbour. Returns true if the path leaf now has room.
Result<bool> push_right_for_insert(TreeHandle& h, TreeRoot& root, Path& p, uint32_t need, bool extend) {
  if (!p.nodes[1]) return false;
  const int pslot = p.slots[1];
  EbRef right = UBTRFS_TRY(lock_sibling(root, p, 0, pslot + 1));
  if (!right) return false;
  EbRef l = p.nodes[0];
  const int n = static_cast<int>(l->nritems());
  const int s = p.slots[0];
  const uint32_t rfree = right->leaf_free_space();
  // Smallest k (items [k, n) move) with the target staying in l.
  const int kmin = extend ? s + 1 : s;
  int k = n;
  uint32_t lfree = l->leaf_free_space();
  while (lfree < need && k > kmin && l->leaf_space_used(k - 1, n - k + 1) <= rfree) {
    --k;
    lfree = l->leaf_free_space() + l->leaf_space_used(k, n - k);
  }
  const bool fits_in_l = lfree >= need && k < n;
  const bool append_to_right = !fits_in_l && !extend && s == n && rfree >= need;
  if (!fits_in_l && !append_to_right) {
    right->unlock_write();
    return false;
  }
  right = UBTRFS_TRY(cow_block(h, root, right, p.nodes[1], pslot + 1));
  if (fits_in_l) {
    leaf_prepend_from(*right, *l, k, n - k);
    leaf_delete_slots(*l, k, n - k);
    mark_dirty(root, l);
    mark_dirty(root, right);
    p.nodes[1]->set_node_key(pslot + 1, right->first_key());
    mark_dirty(root, p.nodes[1]);
    right->unlock_write();
  } else {
    // The new item will be right's first; insert_empty_items fixes the parent key (slot != 0).
    l->unlock_write();
    p.nodes[0] = right;
    p.slots[0] = 0;
    p.slots[1] = pslot + 1;
  }
  return true;
}

// btrfs `push_leaf_left` for an insert/extend: move the smallest head of the leaf before the target
// into the left neighbour; or, when inserting at slot 0, put the target at the end of the left one.
Result<bool> push_left_for_insert(TreeHandle& h, TreeRoot& root, Path& p, uint32_t need, bool extend) {
  if (!p.nodes[1]) return false;
  const int pslot = p.slots[1];
  if (pslot == 0) return false;
  EbRef left = UBTRFS_TRY(lock_sibling(root, p, 0, pslot - 1));
  if (!left) return false;
  EbRef l = p.nodes[0];
  const int n = static_cast<int>(l->nritems());
  const int s = p.slots[0];
  const uint32_t lfree_left = left->leaf_free_space();
  // Largest allowed k: items [0, k) move; the target (slot s) stays, and l keeps at least one item.
  const int kmax = std::min(s, n - 1);
  int k = 0;
  uint32_t lfree = l->leaf_free_space();
  while (lfree < need && k < kmax && l->leaf_space_used(0, k + 1) <= lfree_left) {
    ++k;
    lfree = l->leaf_free_space() + l->leaf_space_used(0, k);
  }
  const bool fits_in_l = lfree >= need && k > 0;
  const bool append_to_left = !fits_in_l && !extend && s == 0 && lfree_left >= need;
  if (!fits_in_l && !append_to_left) {
    left->unlock_write();
    return false;
  }
  left = UBTRFS_TRY(cow_block(h, root, left, p.nodes[1], pslot - 1));
  if (fits_in_l) {
    leaf_append_from(*left, *l, 0, k);
    leaf_delete_slots(*l, 0, k);
    mark_dirty(root, l);
    mark_dirty(root, left);
    p.slots[0] -= k;
    fixup_low_keys(root, p, l->first_key(), 1);
    left->unlock_write();
  } else {
    // The new item goes after left's last item: no key above changes.
    const int ln = static_cast<int>(left->nritems());
    l->unlock_write();
    p.nodes[0] = left;
    p.slots[0] = ln;
    p.slots[1] = pslot - 1;
  }
  return true;
}

}  // namespace

Status split_leaf(TreeHandle& h, TreeRoot& root, Path& p, const Key& key, uint32_t need, bool extend) {
  const uint32_t lds = leaf_data_size(root.ctx().fs.nodesize);
  {
    const ExtentBuffer& l = *p.nodes[0];
    const uint32_t target_size = extend ? l.item_size(p.slots[0]) + sizeof(Item) + need : need;
    if (target_size > lds)
      return fail(EOVERFLOW, "item of {} bytes does not fit in a leaf of root {}", target_size, root.objectid());
  }
  if (p.nodes[1]) {
    if (UBTRFS_TRY(push_right_for_insert(h, root, p, need, extend))) return {};
    if (UBTRFS_TRY(push_left_for_insert(h, root, p, need, extend))) return {};
  } else {
    UBTRFS_TRY_STATUS(insert_new_root(h, root, p, 1));
  }
  for (int round = 0; round < 2; ++round) {
    ExtentBuffer& l = *p.nodes[0];
    if (l.leaf_free_space() >= need) return {};
    const int n = static_cast<int>(l.nritems());
    const int s = p.slots[0];
    // Sizes of the leaf's content as it will be: the new item (insert) or the grown item (extend).
    // Virtual index v: for insert, v == s is the new item and v > s is original v-1.
    const int nv = extend ? n : n + 1;
    auto vsize = [&](int v) -> uint32_t {
      if (extend) return l.leaf_space_used(v, 1) + (v == s ? need : 0);
      if (v == s) return need;
      return l.leaf_space_used(v < s ? v : v - 1, 1);
    };
    std::vector<uint32_t> prefix(nv + 1, 0);
    for (int v = 0; v < nv; ++v) prefix[v + 1] = prefix[v] + vsize(v);
    // Cut c: virtual items [0, c) stay left, [c, nv) go right; 1 <= c <= nv-1.
    int best = -1;
    uint32_t best_imbalance = std::numeric_limits<uint32_t>::max();
    for (int c = 1; c < nv; ++c) {
      const uint32_t left = prefix[c], right = prefix[nv] - prefix[c];
      if (left > lds || right > lds) continue;
      const uint32_t imb = left > right ? left - right : right - left;
      if (imb < best_imbalance) {
        best_imbalance = imb;
        best = c;
      }
    }
    if (best < 0) {
      // No single cut: isolate the target. Items from s on go right; the next round gives the
      // target a leaf of its own (insert) or splits after it (extend).
      assert(round == 0 && s > 0 && s < n);
      UBTRFS_TRY_STATUS(copy_for_split(h, root, p, s, /*target_right=*/extend));
      continue;
    }
    const bool target_right = best <= s;
    if (extend) {
      UBTRFS_TRY_STATUS(copy_for_split(h, root, p, best, target_right));
    } else {
      // Original items [mid, n) move right.
      const int mid = target_right ? best : best - 1;
      if (target_right && mid == n) {
        UBTRFS_TRY_STATUS(new_leaf_for_target(h, root, p, key, true));
      } else if (!target_right && mid == 0) {
        UBTRFS_TRY_STATUS(new_leaf_for_target(h, root, p, key, false));
      } else {
        UBTRFS_TRY_STATUS(copy_for_split(h, root, p, mid, target_right));
      }
    }
  }
  assert(p.nodes[0]->leaf_free_space() >= need);
  return {};
}

}  // namespace ubtrfs::ctree
