// Extent buffers: the in-memory form of one tree block (btrfs extent_io.h `struct extent_buffer`).
//
// Owns: nodesize bytes of block image, the buffer state bits (DIRTY, WRITEBACK, STALE), the
// `writeback_inhibitors` count of fix 2 (ARCHITECTURE.md "COW and the two fixes"), and the per-block
// reader/writer tree lock (btrfs locking.c `btrfs_tree_lock` / `btrfs_tree_read_lock`).
//
// Invariants:
// - `start()` (the logical address) never changes; the header's bytenr equals it once the block is
//   initialised. The header flag WRITTEN (on-disk bit 0) is the one the COW decision reads; the
//   buffer bits are in-memory only.
// - The block image is read or modified only with the tree lock held (read lock to read, write lock
//   to modify). The state bits and the inhibitor count are atomics and may be read without the lock.
// - While WRITEBACK is set the block image is on its way to the device from this very buffer
//   (buffer_cache.h): nobody modifies it — should_cow copies the block, or with fix 1 waits for the
//   write (wait_writeback) before re-dirtying it.
// - A STALE buffer was freed (COWed away, merged away); it is no longer in the cache, nobody points
//   to it, and it is never written.
// - Lifetime is shared ownership (`EbRef`): the buffer cache holds one reference; paths, handles
//   (inhibit sets) and callers hold the others. A buffer only the cache references is "unreferenced".
//
// Locking order: tree locks are taken top-down (parent before child) and, between siblings, only
// while the common parent is write-locked; the cache mutex is never held while waiting for a tree
// lock (writeback only try-locks).
//
// Entry points: header accessors (generation, owner, nritems, level, flags), leaf accessors (item
// key/offset/size/data, free space) and node accessors (key, blockptr, ptr generation), plus the byte
// movers `memmove_within` / `copy_from` used to shift items (btrfs `memmove_extent_buffer`,
// `copy_extent_buffer`).
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <memory>
#include <shared_mutex>
#include <span>
#include <vector>

#include "tree/format.h"

namespace ubtrfs {

class ExtentBuffer {
 public:
  // In-memory state bits (btrfs EXTENT_BUFFER_*), not on disk.
  static constexpr uint32_t kDirty = 1u << 0;      // modified since last write; never evicted
  static constexpr uint32_t kWriteback = 1u << 1;  // a write of this block is in flight
  static constexpr uint32_t kStale = 1u << 2;      // freed; must not be used or written
  // A re-copy: this buffer is the second or later copy of its logical block in the running
  // transaction (background writeback wrote an earlier copy and a handle had to COW it again).
  // With fix 2's transaction scope (TreeHandle::wb_hold_recopied) background writeback leaves it to
  // the commit, so no logical block is copied more than twice per transaction. Set once, on the
  // new write-locked copy; the commit (WB_SYNC_ALL) ignores it.
  static constexpr uint32_t kHeldForCommit = 1u << 3;

  ExtentBuffer(uint64_t start, uint32_t nodesize) : start_(start), data_(nodesize, 0) { touch(); }  // a new buffer is about to be used
  ExtentBuffer(const ExtentBuffer&) = delete;
  ExtentBuffer& operator=(const ExtentBuffer&) = delete;

  uint64_t start() const { return start_; }
  uint32_t len() const { return static_cast<uint32_t>(data_.size()); }
  std::span<uint8_t> bytes() { return data_; }
  std::span<const uint8_t> bytes() const { return data_; }

  // ---- state bits -------------------------------------------------------------------------------
  bool test_flag(uint32_t f) const { return bflags_.load(std::memory_order_acquire) & f; }
  // Returns true if the bit was clear before.
  bool test_and_set_flag(uint32_t f) { return !(bflags_.fetch_or(f, std::memory_order_acq_rel) & f); }
  // Returns true if the bit was set before.
  bool test_and_clear_flag(uint32_t f) { return bflags_.fetch_and(~f, std::memory_order_acq_rel) & f; }
  bool dirty() const { return test_flag(kDirty); }
  bool stale() const { return test_flag(kStale); }
  bool under_writeback() const { return test_flag(kWriteback); }
  bool held_for_commit() const { return test_flag(kHeldForCommit); }
  // Writeback completion (btrfs `end_extent_buffer_writeback`): clears WRITEBACK and wakes every
  // wait_writeback() caller.
  void end_writeback() {
    bflags_.fetch_and(~kWriteback, std::memory_order_acq_rel);
    bflags_.notify_all();
  }
  // btrfs `wait_on_extent_buffer_writeback`. Never waits for a lock: the write in flight completes
  // whatever locks the caller holds (the writer reaps completions without tree locks).
  void wait_writeback() const {
    for (uint32_t f = bflags_.load(std::memory_order_acquire); f & kWriteback;
         f = bflags_.load(std::memory_order_acquire))
      bflags_.wait(f, std::memory_order_acquire);
  }
  // When DIRTY last went from clear to set (steady-clock milliseconds), for the periodic pass of
  // background writeback (the kernel's dirty_expire). Written by mark_dirty only.
  int64_t dirtied_at_ms() const { return dirtied_at_ms_.load(std::memory_order_relaxed); }
  void set_dirtied_at_ms(int64_t t) { dirtied_at_ms_.store(t, std::memory_order_relaxed); }

  // How many times this block's content was copied in the running transaction to get here: 1 for
  // the first COW of an older block, n + 1 for a COW of a block that itself had n (the seed's
  // "COW count" of one logical block in one transaction). 0 for blocks read from disk or created
  // empty. REQUIRES: the tree lock (set on a new, write-locked copy; read under the lock).
  uint32_t cow_copies() const { return cow_copies_; }
  void set_cow_copies(uint32_t n) { cow_copies_ = n; }
  // The same count within one handle: the id of the handle whose COW made this buffer and how
  // many copies of the logical block that handle made (what fix 2 bounds: a handle's own copies
  // cannot be written behind its back, so it never copies them again). REQUIRES: the tree lock.
  uint64_t cow_handle() const { return cow_handle_; }
  uint32_t handle_copies() const { return handle_copies_; }
  void set_handle_copies(uint64_t handle, uint32_t n) {
    cow_handle_ = handle;
    handle_copies_ = n;
  }

  // Fix 2: number of live handles that COWed or reused this buffer and want background writeback to
  // leave it alone (btrfs `writeback_inhibitors`).
  std::atomic<int32_t>& writeback_inhibitors() { return writeback_inhibitors_; }
  int32_t inhibitors() const { return writeback_inhibitors_.load(std::memory_order_acquire); }

  // ---- tree lock (btrfs locking.c) --------------------------------------------------------------
  // A blocking lock is a use by a tree path and stamps the buffer's last use; writeback's
  // try_lock_write is not a use (it would make every block it writes look hot).
  void lock_write() {
    lock_.lock();
    touch();
  }
  bool try_lock_write() { return lock_.try_lock(); }
  void unlock_write() { lock_.unlock(); }
  void lock_read() {
    lock_.lock_shared();
    touch();
  }
  // Recency for coldest-first writeback (the role of the page LRU's referenced bit): the use epoch
  // of the buffer's last use, larger = used more recently. Epochs advance once per background
  // writeback pass, so "used since the last pass" is one class, like the referenced bit.
  uint64_t last_use() const { return last_use_.load(std::memory_order_relaxed); }
  // Starts a new use epoch (the background writeback pass, at its start).
  static void advance_use_epoch() { use_epoch_.fetch_add(1, std::memory_order_relaxed); }
  void unlock_read() { lock_.unlock_shared(); }

  // ---- header (FORMAT.md §2.1) ------------------------------------------------------------------
  // REQUIRES for all accessors below: the tree lock held (write lock for setters).
  const Header& header() const { return *reinterpret_cast<const Header*>(data_.data()); }
  Header& header() { return *reinterpret_cast<Header*>(data_.data()); }
  uint64_t bytenr() const { return header().bytenr; }
  uint64_t generation() const { return header().generation; }
  void set_generation(uint64_t g) { header().generation = g; }
  uint64_t owner() const { return header().owner; }
  void set_owner(uint64_t o) { header().owner = o; }
  uint32_t nritems() const { return header().nritems; }
  void set_nritems(uint32_t n) { header().nritems = n; }
  int level() const { return header().level; }
  void set_level(int l) { header().level = static_cast<uint8_t>(l); }
  uint64_t header_flags() const { return header().flags; }
  bool header_flag(uint64_t f) const { return header_flags() & f; }
  void set_header_flag(uint64_t f) { header().flags = header_flags() | f; }
  void clear_header_flag(uint64_t f) { header().flags = header_flags() & ~f; }
  bool written() const { return header_flag(kHeaderFlagWritten); }
  bool is_leaf() const { return level() == 0; }

  // ---- leaf (FORMAT.md §2.3) --------------------------------------------------------------------
  uint32_t leaf_data_size() const { return ubtrfs::leaf_data_size(len()); }
  Item& item(int slot) { return *reinterpret_cast<Item*>(data_.data() + item_nr_offset(slot)); }
  const Item& item(int slot) const { return *reinterpret_cast<const Item*>(data_.data() + item_nr_offset(slot)); }
  Key item_key(int slot) const { return item(slot).key.cpu(); }
  void set_item_key(int slot, const Key& k) { item(slot).key.set(k); }
  uint32_t item_offset(int slot) const { return item(slot).offset; }
  uint32_t item_size(int slot) const { return item(slot).size; }
  void set_item_offset(int slot, uint32_t v) { item(slot).offset = v; }
  void set_item_size(int slot, uint32_t v) { item(slot).size = v; }
  // End of the item's data, relative to the end of the header.
  uint32_t item_end(int slot) const { return item_offset(slot) + item_size(slot); }
  std::span<uint8_t> item_data(int slot) {
    return {data_.data() + sizeof(Header) + item_offset(slot), item_size(slot)};
  }
  std::span<const uint8_t> item_data(int slot) const {
    return {data_.data() + sizeof(Header) + item_offset(slot), item_size(slot)};
  }
  // Offset (relative to the header end) of the lowest byte of item data; leaf_data_size() if empty.
  uint32_t leaf_data_end() const { return nritems() ? item_offset(static_cast<int>(nritems()) - 1) : leaf_data_size(); }
  // Bytes used by items [start, start+nr): headers plus data (btrfs `leaf_space_used`).
  uint32_t leaf_space_used(int start, int nr) const {
    if (nr <= 0) return 0;
    return item_end(start) - item_offset(start + nr - 1) + static_cast<uint32_t>(nr) * sizeof(Item);
  }
  // btrfs `btrfs_leaf_free_space`.
  uint32_t leaf_free_space() const { return leaf_data_end() - nritems() * static_cast<uint32_t>(sizeof(Item)); }

  // ---- node (FORMAT.md §2.4) --------------------------------------------------------------------
  KeyPtr& key_ptr(int slot) { return *reinterpret_cast<KeyPtr*>(data_.data() + key_ptr_offset(slot)); }
  const KeyPtr& key_ptr(int slot) const {
    return *reinterpret_cast<const KeyPtr*>(data_.data() + key_ptr_offset(slot));
  }
  Key node_key(int slot) const { return key_ptr(slot).key.cpu(); }
  void set_node_key(int slot, const Key& k) { key_ptr(slot).key.set(k); }
  uint64_t node_blockptr(int slot) const { return key_ptr(slot).blockptr; }
  void set_node_blockptr(int slot, uint64_t v) { key_ptr(slot).blockptr = v; }
  uint64_t node_ptr_generation(int slot) const { return key_ptr(slot).generation; }
  void set_node_ptr_generation(int slot, uint64_t v) { key_ptr(slot).generation = v; }
  uint32_t max_ptrs() const { return nodeptrs_per_block(len()); }

  // First key of the block (item 0 or ptr 0). REQUIRES: nritems() > 0.
  Key first_key() const { return is_leaf() ? item_key(0) : node_key(0); }

  // Binary search (btrfs `btrfs_bin_search`): returns {found, slot}; slot is the match, or the first
  // slot whose key is greater than `key` (nritems() if none).
  std::pair<bool, int> bin_search(const Key& key) const;

  // ---- byte movers (offsets are absolute within the block) ---------------------------------------
  void memmove_within(size_t dst, size_t src, size_t n) {
    assert(dst + n <= len() && src + n <= len());
    std::memmove(data_.data() + dst, data_.data() + src, n);
  }
  void copy_from(const ExtentBuffer& src, size_t dst, size_t src_off, size_t n) {
    assert(dst + n <= len() && src_off + n <= src.len());
    std::memcpy(data_.data() + dst, src.data_.data() + src_off, n);
  }

  static constexpr size_t item_nr_offset(int slot) { return sizeof(Header) + static_cast<size_t>(slot) * sizeof(Item); }
  static constexpr size_t key_ptr_offset(int slot) { return sizeof(Header) + static_cast<size_t>(slot) * sizeof(KeyPtr); }
  // Absolute offset of leaf data offset `off` (which is relative to the header end).
  static constexpr size_t leaf_data_abs(uint32_t off) { return sizeof(Header) + off; }

 private:
  static inline std::atomic<uint64_t> use_epoch_{1};
  // On the path of every blocking lock: a relaxed load, and a store only on the first use in an
  // epoch, so hot nodes (a root every operation locks) are not a cache line every thread writes
  // (a process-wide fetch_add here was one atomic read-modify-write per lock).
  void touch() {
    const uint64_t e = use_epoch_.load(std::memory_order_relaxed);
    if (last_use_.load(std::memory_order_relaxed) != e) last_use_.store(e, std::memory_order_relaxed);
  }

  const uint64_t start_;
  std::vector<uint8_t> data_;
  mutable std::atomic<uint32_t> bflags_{0};
  std::atomic<int32_t> writeback_inhibitors_{0};
  std::atomic<int64_t> dirtied_at_ms_{0};
  std::atomic<uint64_t> last_use_{0};
  uint32_t cow_copies_ = 0;  // GUARDED_BY(lock_)
  uint64_t cow_handle_ = 0;      // GUARDED_BY(lock_)
  uint32_t handle_copies_ = 0;   // GUARDED_BY(lock_)
  std::shared_mutex lock_;
};

using EbRef = std::shared_ptr<ExtentBuffer>;

// Leaf item surgery shared by insert, delete, split and push (btrfs ctree.c `setup_items_for_insert`,
// `btrfs_del_items` data shifting, `copy_for_split`, `__push_leaf_left/right`).
// REQUIRES for all: leaves write-locked; no overlap of `dst` and `src`.

// Opens `nr` item slots at `slot` with the given keys and data sizes; data is left uninitialised.
// REQUIRES: leaf_free_space() >= sum(sizes) + nr * sizeof(Item); keys sorted and fitting at `slot`.
void leaf_insert_slots(ExtentBuffer& leaf, int slot, std::span<const Key> keys, std::span<const uint32_t> sizes);
// Removes items [slot, slot+nr), closing the data gap.
void leaf_delete_slots(ExtentBuffer& leaf, int slot, int nr);
// Appends src items [start, start+nr) to the end of dst. REQUIRES: they fit, keys stay sorted.
void leaf_append_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr);
// Prepends src items [start, start+nr) to the front of dst. REQUIRES: they fit, keys stay sorted.
void leaf_prepend_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr);
// Node pointer movers (btrfs `copy_extent_buffer` on key ptrs).
void node_insert_ptr(ExtentBuffer& node, int slot, const Key& key, uint64_t blockptr, uint64_t gen);
void node_delete_ptrs(ExtentBuffer& node, int slot, int nr);
void node_append_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr);
void node_prepend_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr);

}  // namespace ubtrfs
