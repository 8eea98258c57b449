// search_slot and its restarts (btrfs ctree.c `btrfs_search_slot`, `btrfs_search_slot_get_root`,
// `setup_nodes_for_search`, `read_block_for_search`, `unlock_up`, `btrfs_next_leaf`), KERNEL.md §9.
//
// The walk: take the root (read-locked, or write-locked if its level <= write_lock_level; retry if
// the root pointer changed while we waited); per level: COW if needed — which needs this block and
// its parent write-locked, else restart "write_lock" with write_lock_level = level + 1; binary
// search; for nodes, make sure the node can absorb the child's split or merge (split_node /
// balance_level, which need the parent write-locked, else restart "setup_nodes"); a slot-0 descent
// while inserting or deleting needs the parent write-locked (the parent key may change), else
// restart "slot_zero"; unlock the levels above that no change can reach (unlock_up); then the child:
// in the cache -> lock it and go on, not in the cache -> release the path, read it, restart
// "read_block". At the leaf, an insert that does not fit splits the leaf (no restart: level 1 is
// write-locked for inserts). Blocks COWed before a restart stay COWed and are reused on the retry
// (they are this transaction's and unwritten) — unless writeback wrote them meanwhile: the seed's
// amplification.
#include <cassert>
#include <cstring>

#include "tree/ctree_internal.h"

namespace ubtrfs {

void Path::unlock_level(int level) {
  if (!nodes[level]) return;
  if (locks[level] == LockState::kWrite) nodes[level]->unlock_write();
  else if (locks[level] == LockState::kRead) nodes[level]->unlock_read();
  locks[level] = LockState::kNone;
}

void Path::release() {
  for (int i = 0; i < kMaxLevel; ++i) {
    unlock_level(i);
    nodes[i].reset();
    slots[i] = 0;
  }
}

bool key_successor(Key& k) {
  if (k.offset != ~0ull) {
    ++k.offset;
    return true;
  }
  k.offset = 0;
  if (k.type != 0xFF) {
    ++k.type;
    return true;
  }
  k.type = 0;
  if (k.objectid != ~0ull) {
    ++k.objectid;
    return true;
  }
  return false;
}

bool key_predecessor(Key& k) {
  if (k.offset != 0) {
    --k.offset;
    return true;
  }
  k.offset = ~0ull;
  if (k.type != 0) {
    --k.type;
    return true;
  }
  k.type = 0xFF;
  if (k.objectid != 0) {
    --k.objectid;
    return true;
  }
  return false;
}

Status create_empty_tree(TreeHandle& h, TreeRoot& root) {
  assert(!root.node());
  EbRef eb = UBTRFS_TRY(ctree::alloc_tree_block(h, root, 0, 0));
  root.set_node(eb);
  eb->unlock_write();
  return {};
}

namespace {

// btrfs `btrfs_search_slot_get_root`: lock the root block, read-locked if its level is above
// write_lock_level, else write-locked; retry whenever the root pointer moved while we waited
// (btrfs `btrfs_lock_root_node` / `btrfs_read_lock_root_node`).
EbRef get_root(TreeRoot& root, Path& p, int write_lock_level) {
  if (write_lock_level < kMaxLevel) {
    for (;;) {
      EbRef b = root.node();
      b->lock_read();
      if (!root.is_node(b)) {
        b->unlock_read();
        continue;
      }
      const int level = b->level();
      if (level > write_lock_level) {
        p.nodes[level] = b;
        p.locks[level] = LockState::kRead;
        return b;
      }
      b->unlock_read();
      break;
    }
  }
  for (;;) {
    EbRef b = root.node();
    b->lock_write();
    if (!root.is_node(b)) {
      b->unlock_write();
      continue;
    }
    const int level = b->level();
    p.nodes[level] = b;
    p.locks[level] = LockState::kWrite;
    return b;
  }
}

// btrfs `unlock_up`: unlock levels above `level` that the pending change cannot reach — those above
// a slot that is not 0 (a key change stops there), and at or above lowest_unlock. When a level at or
// below write_lock_level is unlocked, write_lock_level drops with it (never below the initial one).
void unlock_up(Path& p, int level, int lowest_unlock, int min_write_lock_level, int* write_lock_level) {
  int skip_level = level;
  bool check_skip = true;
  for (int i = level; i < kMaxLevel; ++i) {
    if (!p.nodes[i] || p.locks[i] == LockState::kNone) break;
    if (check_skip && p.slots[i] == 0) {
      skip_level = i + 1;
      continue;
    }
    if (i >= lowest_unlock && i > skip_level) {
      check_skip = false;
      p.unlock_level(i);
      if (write_lock_level && i > min_write_lock_level && i <= *write_lock_level) *write_lock_level = i - 1;
    }
  }
}

enum class Step { kGo, kRestart };

// btrfs `setup_nodes_for_search`: before descending from node p.nodes[level], make sure it can take
// one more pointer (insert: split it if nearly full) or lose one (delete: balance it if under half).
Result<Step> setup_nodes_for_search(TreeHandle* h, TreeRoot& root, Path& p, int level, int ins_len,
                                    int* write_lock_level) {
  ExtentBuffer& b = *p.nodes[level];
  const uint32_t max = b.max_ptrs();
  const bool need_split = ins_len > 0 && b.nritems() >= max - 3;
  const bool need_balance = ins_len < 0 && b.nritems() < max / 2;
  if (!need_split && !need_balance) return Step::kGo;
  if (*write_lock_level < level + 1) {
    *write_lock_level = level + 1;
    root.ctx().stats.count_restart(RestartSite::kSetupNodes, root.objectid(), level);
    p.release();
    return Step::kRestart;
  }
  if (need_split) {
    UBTRFS_TRY_STATUS(ctree::split_node(*h, root, p, level));
  } else {
    UBTRFS_TRY_STATUS(ctree::balance_level(*h, root, p, level));
    if (!p.nodes[level]) {
      root.ctx().stats.count_restart(RestartSite::kSetupNodes, root.objectid(), level);
      p.release();
      return Step::kRestart;
    }
  }
  return Step::kGo;
}

}  // namespace

namespace {

// The first key of the subtree right of the search path (tightest level wins).
struct NextKey {
  bool valid = false;
  Key key;
};

Result<int> search_slot_impl(TreeHandle* h, TreeRoot& root, const Key& key, Path& p, int ins_len, bool cow,
                             NextKey* next) {
  assert(!cow || h);
  TreeStats& stats = root.ctx().stats;
  const int lowest_level = p.lowest_level;
  int write_lock_level = 0;
  int lowest_unlock = 1;
  if (ins_len < 0) {
    lowest_unlock = 2;  // a leaf merge changes level 1, a removed leaf may change level 2's key
    write_lock_level = 2;
  } else if (ins_len > 0) {
    write_lock_level = 1;
  }
  if (!cow) write_lock_level = -1;
  if (cow && lowest_level) write_lock_level = kMaxLevel;
  const int min_write_lock_level = write_lock_level;
  uint64_t failed_read = 0;  // bytenr whose read failed on the previous pass
  // COWs of this search, its restarts included (the seed's per-search count, v2's cow_count).
  struct SearchCows {
    TreeStats* stats;
    uint64_t start = ctree::thread_cow_count();
    ~SearchCows() {
      if (stats) stats->count_search(ctree::thread_cow_count() - start);
    }
  } search_cows{cow ? &stats : nullptr};

again:
  if (next) next->valid = false;
  EbRef b = get_root(root, p, write_lock_level);
  for (;;) {
    int level = b->level();
    if (cow) {
      // btrfs: COW needs write locks on this block and on its parent.
      if (ctree::should_cow(*h, root, b)) {
        const bool has_parent = level + 1 < kMaxLevel && p.nodes[level + 1];
        if (level > write_lock_level || (has_parent && level + 1 > write_lock_level)) {
          write_lock_level = level + 1;
          stats.count_restart(RestartSite::kWriteLock, root.objectid(), level);
          p.release();
          goto again;
        }
        assert(p.locks[level] == LockState::kWrite);
        EbRef parent = has_parent ? p.nodes[level + 1] : nullptr;
        b = UBTRFS_TRY(ctree::cow_block(*h, root, b, parent, has_parent ? p.slots[level + 1] : 0));
        p.nodes[level] = b;
      }
    }
    auto [found, slot] = b->bin_search(key);
    if (level == 0) {
      p.slots[0] = slot;
      if (ins_len > 0 && (!found || p.search_for_extension) &&
          b->leaf_free_space() < static_cast<uint32_t>(ins_len)) {
        assert(write_lock_level >= 1 && p.locks[0] == LockState::kWrite);
        UBTRFS_TRY_STATUS(ctree::split_leaf(*h, root, p, key, static_cast<uint32_t>(ins_len), found));
      }
      unlock_up(p, 0, lowest_unlock, min_write_lock_level, nullptr);
      return found ? 0 : 1;
    }
    bool dec = false;
    if (!found && slot > 0) {
      dec = true;
      --slot;
    }
    p.slots[level] = slot;
    if (cow && ins_len) {
      auto step = UBTRFS_TRY(setup_nodes_for_search(h, root, p, level, ins_len, &write_lock_level));
      if (step == Step::kRestart) goto again;
      b = p.nodes[level];
      slot = p.slots[level];
    }
    if (next && slot + 1 < static_cast<int>(b->nritems())) {
      next->valid = true;
      next->key = b->node_key(slot + 1);
    }
    // Slot 0: a change of the child's first key changes this node's key 0, hence the parent's key.
    if (slot == 0 && ins_len && write_lock_level < level + 1) {
      write_lock_level = level + 1;
      stats.count_restart(RestartSite::kSlotZero, root.objectid(), level);
      p.release();
      goto again;
    }
    unlock_up(p, level, lowest_unlock, min_write_lock_level, &write_lock_level);
    if (level == lowest_level) {
      if (dec) ++p.slots[level];
      return found ? 0 : 1;
    }
    // btrfs `read_block_for_search`.
    const uint64_t child_bytenr = b->node_blockptr(slot);
    const uint64_t child_gen = b->node_ptr_generation(slot);
    EbRef child = root.ctx().cache.find(child_bytenr);
    if (child && child->level() != level - 1) {
      // A corrupt node pointing at a cached block of another level (itself, an ancestor, a
      // sibling): the read path checks the level of what it reads, a cached block must pass the
      // same check, or the descent never reaches a leaf.
      return fail(EUCLEAN, "bad tree block {}: level {}, its parent {} slot {} expects {}", child_bytenr,
                  child->level(), b->start(), slot, level - 1);
    }
    if (child && child->generation() != child_gen) {
      // A cached buffer of another life of this address while a live pointer names it: the cache
      // invariant (create() replaces leftovers) is broken. Never loop on it.
      return fail(EUCLEAN, "parent transid verify failed on {} wanted {} found {} (cached)", child_bytenr, child_gen,
                  child->generation());
    }
    if (!child) {
      TreeBlockExpect ex;
      ex.bytenr = child_bytenr;
      ex.level = static_cast<uint8_t>(level - 1);
      ex.generation = child_gen;
      ex.first_key = b->node_key(slot);
      stats.count_restart(RestartSite::kReadBlock, root.objectid(), level - 1);
      p.release();
      child.reset();
      auto rd = root.ctx().cache.read(ex);
      if (!rd) {
        // The pointer may have changed while nothing was locked; fail only if it fails twice.
        if (failed_read == child_bytenr) return std::unexpected(rd.error());
        failed_read = child_bytenr;
      }
      goto again;
    }
    level = level - 1;
    if (level <= write_lock_level) {
      child->lock_write();
      p.locks[level] = LockState::kWrite;
    } else {
      child->lock_read();
      p.locks[level] = LockState::kRead;
    }
    p.nodes[level] = child;
    b = std::move(child);
  }
}

}  // namespace

Result<int> search_slot(TreeHandle* h, TreeRoot& root, const Key& key, Path& p, int ins_len, bool cow) {
  p.forward_floor = key;
  return search_slot_impl(h, root, key, p, ins_len, cow, nullptr);
}

Status insert_empty_items(TreeHandle& h, TreeRoot& root, Path& p, std::span<const Key> keys,
                          std::span<const uint32_t> sizes) {
  assert(!keys.empty() && keys.size() == sizes.size());
  uint64_t total = 0;
  for (uint32_t s : sizes) total += s + sizeof(Item);
  if (total > root.ctx().fs.nodesize - sizeof(Header))
    return fail(EOVERFLOW, "items of {} bytes do not fit in one leaf of root {}", total, root.objectid());
  const int ret = UBTRFS_TRY(search_slot(&h, root, keys[0], p, static_cast<int>(total), true));
  if (ret == 0) {
    const Key& k = keys[0];
    p.release();
    return fail(EEXIST, "key [{} {} {}] already exists in root {}", k.objectid, k.type, k.offset, root.objectid());
  }
  ExtentBuffer& leaf = p.leaf();
  const int slot = p.slots[0];
  if (slot < static_cast<int>(leaf.nritems()) && !(keys.back() < leaf.item_key(slot))) {
    const Key& k = keys.back();
    p.release();
    return fail(EEXIST, "key [{} {} {}] collides with an existing key in root {}", k.objectid, k.type, k.offset,
                root.objectid());
  }
  leaf_insert_slots(leaf, slot, keys, sizes);
  ctree::mark_dirty(root, p.nodes[0]);
  if (slot == 0) ctree::fixup_low_keys(root, p, keys[0], 1);
  return {};
}

Status insert_item(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> data) {
  Path p;
  const uint32_t size = static_cast<uint32_t>(data.size());
  UBTRFS_TRY_STATUS(insert_empty_items(h, root, p, std::span<const Key>(&key, 1), std::span<const uint32_t>(&size, 1)));
  auto dst = p.leaf().item_data(p.slots[0]);
  if (!data.empty()) std::memcpy(dst.data(), data.data(), data.size());
  return {};
}

Status delete_item(TreeHandle& h, TreeRoot& root, const Key& key) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(&h, root, key, p, -1, true));
  if (ret != 0)
    return fail(ENOENT, "key [{} {} {}] not found in root {}", key.objectid, key.type, key.offset, root.objectid());
  return del_items(h, root, p, p.slots[0], 1);
}

Status overwrite_item_front(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body) {
  Path p;
  if (UBTRFS_TRY(search_slot(&h, root, key, p, 0, true)) != 0)
    return fail(EUCLEAN, "tree {}: item [{} {} {}] to update is missing", root.objectid(), key.objectid, key.type,
                key.offset);
  auto data = p.leaf().item_data(p.slots[0]);
  if (data.size() < body.size())
    return fail(EUCLEAN, "tree {}: item [{} {} {}] has size {}, need {}", root.objectid(), key.objectid, key.type,
                key.offset, data.size(), body.size());
  std::memcpy(data.data(), body.data(), body.size());
  ctree::mark_dirty(root, p.nodes[0]);
  return {};
}

Result<std::optional<std::vector<uint8_t>>> lookup_item(TreeRoot& root, const Key& key) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(nullptr, root, key, p, 0, false));
  if (ret != 0) return std::optional<std::vector<uint8_t>>{};
  auto d = p.leaf().item_data(p.slots[0]);
  return std::optional<std::vector<uint8_t>>(std::vector<uint8_t>(d.begin(), d.end()));
}

Result<bool> next_leaf(TreeRoot& root, Path& p) {
  ExtentBuffer& leaf = p.leaf();
  assert(leaf.nritems() > 0);
  Key probe = leaf.item_key(static_cast<int>(leaf.nritems()) - 1);
  p.release();
  if (!key_successor(probe)) return false;
  // Never back below the key this walk started from (see ctree.h): what lies between the old
  // leaf's last key and it was inserted while the path was released.
  if (p.forward_floor && probe < *p.forward_floor) probe = *p.forward_floor;
  if (const auto& hook = root.next_leaf_unlocked_hook_for_test()) hook();
  for (;;) {
    NextKey next;
    UBTRFS_TRY(search_slot_impl(nullptr, root, probe, p, 0, false, &next));
    if (p.slots[0] < static_cast<int>(p.leaf().nritems())) return true;
    p.release();
    // The leaf ends before `probe`: continue at the first key of the next subtree (btrfs
    // `btrfs_find_next_key`); it is greater than probe, so the loop advances.
    if (!next.valid) return false;
    probe = next.key;
  }
}

Result<bool> prev_leaf(TreeRoot& root, Path& p) {
  ExtentBuffer& leaf = p.leaf();
  assert(leaf.nritems() > 0);
  Key probe = leaf.item_key(0);
  p.release();
  if (!key_predecessor(probe)) return false;
  p.forward_floor.reset();  // the walk goes below its search key on purpose (see Path)
  const int ret = UBTRFS_TRY(search_slot_impl(nullptr, root, probe, p, 0, false, nullptr));
  // The descent lands in the leaf whose first key <= probe (or the leftmost leaf).
  const int slot = ret == 0 ? p.slots[0] : p.slots[0] - 1;
  if (slot < 0) {
    p.release();
    return false;
  }
  p.slots[0] = slot;
  return true;
}

Result<bool> next_item(TreeRoot& root, Path& p) {
  if (p.slots[0] + 1 < static_cast<int>(p.leaf().nritems())) {
    ++p.slots[0];
    return true;
  }
  return next_leaf(root, p);
}

Result<bool> prev_item(TreeRoot& root, Path& p) {
  if (p.slots[0] > 0) {
    --p.slots[0];
    return true;
  }
  return prev_leaf(root, p);
}

}  // namespace ubtrfs
