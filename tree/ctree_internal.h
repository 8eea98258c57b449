// Private to the ctree_*.cpp files: the building blocks shared by search, split and balance.
// Every function here REQUIRES the locks named in its comment; none takes a lock upward.
#pragma once

#include "tree/ctree.h"

namespace ubtrfs::ctree {

inline void mark_dirty(TreeRoot& root, const EbRef& eb) { root.ctx().cache.mark_dirty(eb); }

// btrfs `should_cow_block` (KERNEL.md §7): true if `eb` must be copied before modification.
// Fix 1 (h.cow_overwrite) re-dirties a WRITTEN block of this transaction instead (after waiting for
// a write of it in flight). A "no COW" answer also takes fix 2's writeback inhibitor.
// REQUIRES: eb locked (read or write). `write_in_flight` (optional) is set when a write of the
// block was in flight (without fix 1 that block is copied).
bool should_cow(TreeHandle& h, TreeRoot& root, const EbRef& eb, bool* write_in_flight = nullptr);

// COWs (copies made) by the calling thread so far; search_slot counts COWs per search with it.
uint64_t thread_cow_count();

// btrfs `btrfs_alloc_tree_block` as seen from the tree: allocate, create the buffer, initialise the
// header (fsid, chunk tree uuid, bytenr, flags = backref rev 1, generation = transid, owner, level,
// nritems 0), write-lock it, mark it dirty and take fix 2's inhibitor.
[[nodiscard]] Result<EbRef> alloc_tree_block(TreeHandle& h, TreeRoot& root, int level, uint64_t hint);
// btrfs `btrfs_free_tree_block`: hand the address back to the allocator (pinned or reusable, its
// decision) and drop the buffer from the cache. REQUIRES: eb write-locked, unreachable.
void free_tree_block(TreeHandle& h, TreeRoot& root, const EbRef& eb);

// btrfs `btrfs_cow_block` / `btrfs_force_cow_block`: if should_cow, copy `eb` to a new block, point
// the parent (or the root) at it with ptr generation = transid, free the old one. Returns the block to
// modify, write-locked (eb itself when no COW was needed; otherwise eb is unlocked).
// REQUIRES: eb write-locked; parent write-locked, or parent null and eb the root node.
[[nodiscard]] Result<EbRef> cow_block(TreeHandle& h, TreeRoot& root, const EbRef& eb, const EbRef& parent,
                                      int pslot);

// Synchronous read of a child for sibling access while holding locks (btrfs `btrfs_read_node_slot`).
[[nodiscard]] Result<EbRef> read_node_slot(TreeRoot& root, const ExtentBuffer& parent, int slot);
// Write-locks the sibling at slot `sslot` of the level+1 node of the path (the caller COWs it
// before changing it); null if there is no such slot. REQUIRES: that parent write-locked.
[[nodiscard]] Result<EbRef> lock_sibling(TreeRoot& root, Path& p, int level, int sslot);

// btrfs `fixup_low_keys`: set the pointer key to `key` from `level` up while the path slot is 0.
// REQUIRES: those levels write-locked.
void fixup_low_keys(TreeRoot& root, Path& p, const Key& key, int level);
// btrfs `insert_ptr`. REQUIRES: p.nodes[level] write-locked with room.
void insert_ptr(TreeRoot& root, Path& p, int level, int slot, const Key& key, uint64_t bytenr, uint64_t gen);
// btrfs `del_ptr`: removes pointer `slot` at `level`, fixing keys above if slot 0 went.
// REQUIRES: p.nodes[level] write-locked, nritems > 1 unless it is the root.
void del_ptr(TreeRoot& root, Path& p, int level, int slot);

// btrfs `insert_new_root`: a new root at `level` with one pointer to the current root at level-1.
// REQUIRES: p.nodes[level-1] is the root, write-locked.
[[nodiscard]] Status insert_new_root(TreeHandle& h, TreeRoot& root, Path& p, int level);
// btrfs `split_node`. REQUIRES: p.nodes[level] write-locked and COWed; p.nodes[level+1] write-locked
// (or absent: a new root is made).
[[nodiscard]] Status split_node(TreeHandle& h, TreeRoot& root, Path& p, int level);
// btrfs `split_leaf` (with push_leaf_right/left first): afterwards p.nodes[0] has `need` free bytes
// for an insert of `key` before slots[0] (extend=false) or to grow item slots[0] (extend=true).
// REQUIRES: leaf and level 1 write-locked (or the leaf is the root), leaf COWed. Errors: EOVERFLOW.
[[nodiscard]] Status split_leaf(TreeHandle& h, TreeRoot& root, Path& p, const Key& key, uint32_t need, bool extend);
// btrfs `balance_level`: merge or redistribute p.nodes[level] with a sibling when it is under half
// full, or collapse a root node with one child. Sets p.nodes[level] to null if the path's node went
// away (the caller restarts). REQUIRES: level and level+1 write-locked and COWed.
[[nodiscard]] Status balance_level(TreeHandle& h, TreeRoot& root, Path& p, int level);

}  // namespace ubtrfs::ctree
