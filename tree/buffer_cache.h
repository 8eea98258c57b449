// Buffer cache: every extent buffer in memory, by logical address, under a byte budget
// (btrfs `fs_info->buffer_tree` + the btree inode's page cache; ARCHITECTURE.md "Memory pressure").
//
// Owns: one reference to each cached ExtentBuffer, the LRU order, the set of DIRTY buffers, and
// the synchronous write paths.
//
// Invariants:
// - At most one live (non-STALE) buffer per bytenr is in the map. A freed buffer is removed and
//   marked STALE (`forget`); a newly allocated block replaces whatever the map held (`create`).
// - Only CLEAN, unreferenced (the cache's reference is the only one), not-under-writeback buffers
//   are evicted. Dirty buffers are never evicted: the budget can be exceeded until they are written
//   (`over_budget()` is the seam the background writeback thread will watch). The effective budget
//   is at least kMinCachedBlocks, so a search's restarted path is not evicted from under it.
// - A buffer is in dirty_ whenever its DIRTY bit is set (mark_dirty sets the bit then registers;
//   writeback clears the bit under the tree lock, then unregisters only if the bit is still clear).
//
// Locking order: mu_ is a leaf lock: never held while taking a tree lock (writeback try-locks or
// locks after dropping mu_), never held across device I/O.
//
// Entry points: find / read (read-through via block_io.h read_tree_block, with the expectation from
// the parent pointer) / create / forget / mark_dirty; write_dirty (WB_SYNC_ALL, the commit's
// write-out) and writeback (WB_SYNC_NONE, skips buffers that are locked, under writeback or
// inhibited — the later io_uring writeback thread calls this).
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>

#include "io/block_device.h"
#include "io/status.h"
#include "tree/block_io.h"
#include "tree/chunk_map.h"
#include "tree/extent_buffer.h"
#include "tree/fs_params.h"

namespace ubtrfs {

// btrfs writeback_control sync modes.
enum class WbMode {
  kSyncAll,   // commit / fsync: write everything dirty, wait for locks, ignore inhibitors
  kSyncNone,  // background: opportunistic, skip locked / inhibited / in-flight buffers
};

class BufferCache {
 public:
  // The budget never drops below this many blocks (four full-height paths).
  static constexpr uint64_t kMinCachedBlocks = 4 * kMaxLevel;

  struct Counters {
    uint64_t hits = 0, misses = 0, evictions = 0, blocks_written = 0;
  };

  BufferCache(io::BlockDevice& dev, const ChunkMap& map, const FsParams& fs, uint64_t budget_bytes)
      : dev_(dev), map_(map), fs_(fs), budget_(budget_bytes), super_gen_(fs.super_generation) {}

  const FsParams& fs() const { return fs_; }
  // The last committed generation, which the read-time and write-time checkers compare block
  // generations against (gen <= super_generation + 1). Set by the commit after the superblock write.
  void set_super_generation(uint64_t g) { super_gen_.store(g, std::memory_order_release); }
  uint64_t super_generation() const { return super_gen_.load(std::memory_order_acquire); }

  // The cached buffer for `bytenr`, or nullptr. Counts as a use for LRU.
  EbRef find(uint64_t bytenr);
  // find(), else read through read_tree_block (checksum + tree checker + expectation) and insert.
  // REQUIRES: the caller holds no tree lock it would deadlock on (the read may take a while).
  // Errors: those of read_tree_block (EIO, EUCLEAN).
  [[nodiscard]] Result<EbRef> read(const TreeBlockExpect& expect);
  // A zero-filled buffer for a block just allocated at `bytenr`; any cached buffer for that address
  // (a leftover of the block's previous life) is marked STALE and dropped.
  EbRef create(uint64_t bytenr);
  // The block was freed: mark STALE, clear DIRTY, drop it from the cache.
  void forget(const EbRef& eb);
  // btrfs `btrfs_mark_buffer_dirty`. REQUIRES: the tree lock held (the buffer is being modified,
  // or fix 1 re-dirties it).
  void mark_dirty(const EbRef& eb);

  // WB_SYNC_ALL (btrfs `btrfs_write_and_wait_transaction`): write every dirty buffer — checksum,
  // write-time check_leaf/check_node, write_tree_block to all copies — after setting WRITTEN in its
  // header, then clear DIRTY. Waits for tree locks. Errors: the first failure (the caller aborts the
  // transaction); the failing buffer stays dirty.
  [[nodiscard]] Status write_dirty();
  // WB_SYNC_NONE: write up to `max_bytes` of dirty buffers that are not locked, not inhibited
  // (fix 2) and not under writeback, oldest first. Returns bytes written.
  [[nodiscard]] Result<uint64_t> writeback(uint64_t max_bytes);

  // Evicts clean unreferenced buffers, least recently used first, until under budget.
  void evict_to_budget();

  uint64_t budget() const { return budget_.load(std::memory_order_relaxed); }
  void set_budget(uint64_t b) { budget_.store(b, std::memory_order_relaxed); }
  uint64_t size_bytes() const;
  size_t nr_buffers() const;
  size_t nr_dirty() const;
  bool over_budget() const { return size_bytes() > budget(); }
  Counters counters() const;

 private:
  struct Entry {
    EbRef eb;
    std::list<uint64_t>::iterator lru;
  };
  // Writes one buffer. REQUIRES: eb DIRTY, write-locked by the caller, mu_ not held.
  // Leaves the buffer clean+WRITTEN+WRITEBACK and unlocked on return path handled by caller.
  [[nodiscard]] Status write_one_locked(const EbRef& eb);
  void insert_locked(const EbRef& eb);  // REQUIRES: mu_ held
  void erase_locked(std::unordered_map<uint64_t, Entry>::iterator it);  // REQUIRES: mu_ held
  void evict_locked();  // REQUIRES: mu_ held
  FsParams io_params() const {  // fs_ with the current super generation
    FsParams p = fs_;
    p.super_generation = super_generation();
    return p;
  }

  io::BlockDevice& dev_;
  const ChunkMap& map_;
  const FsParams fs_;
  std::atomic<uint64_t> budget_;
  std::atomic<uint64_t> super_gen_;

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> map_by_bytenr_;  // GUARDED_BY(mu_)
  std::list<uint64_t> lru_;                            // GUARDED_BY(mu_); front = most recent
  std::unordered_map<uint64_t, EbRef> dirty_;          // GUARDED_BY(mu_)
  uint64_t bytes_ = 0;                                 // GUARDED_BY(mu_)
  Counters counters_;                                  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs
