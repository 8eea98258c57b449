// The B-tree: search with COW, insert, delete, split, merge (btrfs ctree.c).
//
// Owns the algorithms over tree blocks; the blocks themselves live in the buffer cache, the root
// pointer in TreeRoot, the COW context in TreeHandle. Files: ctree_search.cpp (search_slot, paths,
// unlock_up, restarts, next/prev leaf), ctree_cow.cpp (should_cow, cow_block), ctree_split.cpp
// (insert, leaf/node split, push to neighbours, new root), ctree_balance.cpp (delete, leaf merge,
// node balance, root shrink, extend/truncate).
//
// Invariants kept by every operation that returns success (FORMAT.md §2.3, §2.4):
// - keys strictly increase within and across blocks; node ptr key == child's first key; node ptr
//   generation == child header generation; child level == parent level - 1;
// - leaf data is packed (no gaps); nodes hold 1..max_ptrs pointers; only a root leaf may be empty;
// - every block modified in a transaction has generation == transid, is DIRTY, and was COWed (or
//   allocated) in this transaction first — a WRITTEN block or an older one is never modified in place
//   (unless fix 1 is on: then a WRITTEN block of this transaction is re-dirtied instead).
//
// Concurrency (ARCHITECTURE.md "Concurrency in the B-tree"; KERNEL.md §9): per-block rw locks,
// lock coupling from the root down, `write_lock_level` (1 insert, 2 delete, -1 read) raised on
// demand with a restart, upper levels unlocked as soon as a change cannot reach them (unlock_up).
// A block is modified only write-locked, and a parent pointer only with the parent write-locked;
// siblings are locked only while their common parent is write-locked. Restarts release the whole
// path and are counted in TreeStats by site ("write_lock", "setup_nodes", "slot_zero",
// "read_block"), root objectid and level.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "io/status.h"
#include "tree/extent_buffer.h"
#include "tree/tree_root.h"

namespace ubtrfs {

enum class LockState : uint8_t { kNone = 0, kRead, kWrite };

// btrfs `struct btrfs_path`: the blocks from a leaf (index 0) up to the root, the slot taken at each
// level and the lock held on each. Upper levels may stay referenced but unlocked after unlock_up.
struct Path {
  std::array<EbRef, kMaxLevel> nodes{};
  std::array<int, kMaxLevel> slots{};
  std::array<LockState, kMaxLevel> locks{};
  int lowest_level = 0;  // stop the descent at this level (btrfs p->lowest_level); write-locks all
  // btrfs p->search_for_extension: with ins_len > 0 and the key found, make room to grow that item by
  // ins_len. Without it a found key gets no split (the caller is an insert that will see EEXIST).
  bool search_for_extension = false;
  // The key of the search that positioned this path (set by search_slot): next_leaf never lands
  // below it (rule a_leaf_crossing_never_passes_back_over_the_search_key, next_leaf below).
  // prev_leaf drops it: a walk that stepped back across a leaf on purpose sees everything on its
  // way forward again. (prev_leaf needs no mirror bound: a search lands in the leaf whose first key
  // is at or below its key, so a backward crossing starts below the key already.)
  std::optional<Key> forward_floor;

  Path() = default;
  Path(const Path&) = delete;
  Path& operator=(const Path&) = delete;
  ~Path() { release(); }

  // btrfs `btrfs_release_path`: unlock and drop every level.
  void release();
  void unlock_level(int level);
  ExtentBuffer& leaf() { return *nodes[0]; }
  int slot() const { return slots[0]; }
};

// A new empty root leaf for `root` (btrfs `btrfs_create_tree`). REQUIRES: root has no node yet.
[[nodiscard]] Status create_empty_tree(TreeHandle& h, TreeRoot& root);

// btrfs `btrfs_search_slot`. Returns 0 if `key` was found (path->slots[0] is its slot), 1 if not
// (slots[0] is where it would be inserted). ins_len > 0: the caller will insert ins_len bytes (item
// header included) or extend the found item by ins_len; the leaf is split so they fit. ins_len < 0:
// the caller will delete; nodes on the way are balanced. cow: blocks on the path are COWed and
// write-locked up to write_lock_level. REQUIRES: path released; h non-null if cow. On success the
// leaf is locked (write-locked if cow). Errors: EIO/EUCLEAN (read), ENOSPC (allocator).
[[nodiscard]] Result<int> search_slot(TreeHandle* h, TreeRoot& root, const Key& key, Path& path, int ins_len,
                                      bool cow);

// btrfs `btrfs_insert_empty_items`: searches and opens slots for `keys` (sorted, contiguous: no
// existing key between them) with the given data sizes; path->slots[0] is the first new item, data
// uninitialised. REQUIRES: sum(sizes) + n * sizeof(Item) <= leaf data size. Errors: EEXIST.
[[nodiscard]] Status insert_empty_items(TreeHandle& h, TreeRoot& root, Path& path, std::span<const Key> keys,
                                        std::span<const uint32_t> sizes);
// btrfs `btrfs_insert_item`: one item with its data. Errors: EEXIST, EOVERFLOW (too large).
[[nodiscard]] Status insert_item(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> data);

// btrfs `btrfs_del_items`: deletes items [slot, slot+nr) of path->nodes[0] (found by a search with
// ins_len < 0 and cow), then merges the leaf into a neighbour or removes it if it became small or
// empty. The path is released on return.
[[nodiscard]] Status del_items(TreeHandle& h, TreeRoot& root, Path& path, int slot, int nr);
// Search + del_items for one key. Errors: ENOENT.
[[nodiscard]] Status delete_item(TreeHandle& h, TreeRoot& root, const Key& key);
// Rewrites the leading body.size() bytes of an existing item in place; the item keeps its size
// (btrfs write_extent_buffer on a found slot: ROOT_ITEM, BLOCK_GROUP_ITEM, qgroup items).
// Errors: EUCLEAN when the item is missing or shorter than body.
[[nodiscard]] Status overwrite_item_front(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body);

// btrfs `btrfs_extend_item`: grows the item at path->slots[0] by `extra` bytes at its end (new bytes
// zeroed). REQUIRES: found by search_slot(ins_len = extra, cow) with path.search_for_extension set,
// so the leaf has room.
void extend_item(TreeRoot& root, Path& path, uint32_t extra);
// btrfs `btrfs_truncate_item`: shrinks the item to new_size, dropping bytes at the end (from_end) or
// the front. REQUIRES: path from a cow search, new_size <= item size.
void truncate_item(TreeRoot& root, Path& path, uint32_t new_size, bool from_end);
// btrfs `btrfs_set_item_key_safe`: gives the item at path->slots[0] a new key, and the parents too
// when it is the leaf's first item. REQUIRES: path from a cow search (the slot-0 levels stay
// write-locked, as for del_items); the new key sorts between the item's neighbours.
void set_item_key_safe(TreeRoot& root, Path& path, const Key& key);

// btrfs `btrfs_next_leaf` / `btrfs_prev_leaf`: move the path to the leaf after (before) the current
// one, read-locked (or as the search with `cow` would lock it); slots[0] = 0 (last item). Returns
// false at the end (beginning) of the tree; the path is then released. Implemented as a fresh
// search for the key after the current leaf's last key (before its first key), so concurrent
// splits and merges are harmless. REQUIRES: path holds a locked, non-empty leaf.
// Nothing is locked between the two searches, so the key after the old leaf's last key alone would
// let another thread's insert slip in between: a caller that searched for K and landed past the end
// of a leaf (every key there below K) would be handed a key below K — another inode's item, taken
// as the first of its range (an eviction deleted a directory's DIR_INDEX that way, a read would
// stop at it and see a hole). So the new search starts at no less than the key the path was
// positioned by (Path::forward_floor): rule
// a_leaf_crossing_never_passes_back_over_the_search_key (tests/tree/ctree_walk_race_test.cpp,
// and through the filesystem tests/fs/delayed_dir_index_test.cpp).
[[nodiscard]] Result<bool> next_leaf(TreeRoot& root, Path& path);
[[nodiscard]] Result<bool> prev_leaf(TreeRoot& root, Path& path);
// Step one item forward/backward, crossing leaves. Returns false at the end (beginning).
[[nodiscard]] Result<bool> next_item(TreeRoot& root, Path& path);
[[nodiscard]] Result<bool> prev_item(TreeRoot& root, Path& path);

// Read-only lookup of one item's data (copy). Returns nullopt if absent.
[[nodiscard]] Result<std::optional<std::vector<uint8_t>>> lookup_item(TreeRoot& root, const Key& key);

// Key arithmetic for "the key after / before" (all fields unsigned, FORMAT.md §2.2). Return false
// on overflow (kMaxKey / kMinKey).
bool key_successor(Key& k);
bool key_predecessor(Key& k);

}  // namespace ubtrfs
