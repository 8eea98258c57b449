// Buffer cache: every extent buffer in memory, by logical address, under a byte budget, and the
// write-out of dirty buffers (btrfs `fs_info->buffer_tree` + the btree inode's page cache and its
// writepages; ARCHITECTURE.md "Memory pressure", KERNEL.md §8).
//
// Owns: one reference to each cached ExtentBuffer, the LRU order, the set of DIRTY buffers (in
// address order, as writepages walks the btree inode), the io_uring writer tree blocks go out
// through, and the writeback counters.
//
// Invariants:
// - At most one live (non-STALE) buffer per bytenr is in the map. A freed buffer is removed and
//   marked STALE (`forget`); a newly allocated block replaces whatever the map held (`create`).
// - Only CLEAN, unreferenced (the cache's reference is the only one), not-under-writeback buffers
//   are evicted. Dirty buffers are never evicted: over budget with nothing clean to drop, the cache
//   asks the writeback thread (the pressure hook) and writers wait in balance_dirty() until written
//   buffers can go. The effective budget is at least kMinCachedBlocks, so a search's restarted path
//   is not evicted from under it.
// - A buffer is in dirty_ whenever its DIRTY bit is set (mark_dirty sets the bit then registers;
//   a write sets WRITEBACK, clears DIRTY under the tree lock, and unregisters at completion only if
//   the bit is still clear).
// - The write of a block goes out from the buffer itself, as the kernel's does from the btree
//   folios (lock_extent_buffer_for_io + write_one_eb): under the tree write lock WRITEBACK is set,
//   DIRTY cleared and the header flag WRITTEN set; the lock is dropped; then the checksum is stored,
//   the write-time tree checker runs and every copy is submitted; completion clears WRITEBACK. While
//   WRITEBACK is set nobody modifies the block: should_cow copies it (or, with fix 1, waits for the
//   write), so what is checksummed is what reaches the device.
// - At most one writeback pass (background or commit) is in flight at a time (wb_mu_), and a pass
//   returns only when every write it submitted completed: the commit's pass therefore also waits for
//   background writes still in flight — of blocks freed meanwhile too, whose pinned addresses the
//   commit is about to unpin.
// - A write that fails (device error, or the write-time checker refusing the block) leaves the
//   buffer DIRTY: the next pass (the commit's at the latest) writes it again; the commit's own
//   failure aborts the transaction. Nothing written is ever silently lost.
//
// Locking order: wb_mu_ before tree locks (the commit's pass waits for tree locks; a background
// pass only try-locks); mu_ is a leaf lock: never held while taking a tree lock or wb_mu_, never
// held across device I/O.
//
// Entry points: find / read (read-through via block_io.h read_tree_block, with the expectation from
// the parent pointer) / create / forget / mark_dirty; write_dirty (WB_SYNC_ALL, the commit's
// write-out) and writeback (WB_SYNC_NONE, skips buffers that are locked, under writeback or
// inhibited — the writeback thread of tree/writeback.h calls it); balance_dirty (writer throttle).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"
#include "io/uring_writer.h"
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

// What a WB_SYNC_NONE pass may write.
struct WbPolicy {
  uint64_t max_bytes = UINT64_MAX;  // stop after this many bytes of blocks (one copy each)
  int64_t min_age_ms = 0;           // only buffers dirty for at least this long (kupdate)
  // Candidate order: false = address order from a cyclic cursor (the kernel's range_cyclic
  // writepages of the btree inode); true = least recently used first (what memory reclaim would
  // pick: a hot block written now is only dirtied, or copied, again).
  bool coldest_first = false;
};

struct WbPassResult {
  uint64_t blocks = 0;            // blocks written (each to all its copies)
  uint64_t skipped_inhibited = 0;
  uint64_t skipped_held = 0;      // re-copies held for the commit (fix 2's transaction scope)
  uint64_t skipped_locked = 0;
  uint64_t skipped_in_flight = 0;
  uint64_t failed = 0;            // writes that failed and left their buffer dirty
  bool paused = false;            // a commit was running: nothing was tried
};

class BufferCache {
 public:
  // The budget never drops below this many blocks (four full-height paths).
  static constexpr uint64_t kMinCachedBlocks = 4 * kMaxLevel;
  // Blocks prepared per io_uring batch (each DUP block is two writes).
  static constexpr size_t kWriteBatch = 32;

  struct Counters {
    uint64_t hits = 0, misses = 0, evictions = 0;
    uint64_t blocks_written = 0;             // by any pass
    uint64_t background_blocks_written = 0;  // by WB_SYNC_NONE passes
    uint64_t background_passes = 0;
    uint64_t bytes_written = 0;              // device bytes, every copy
    uint64_t skipped_inhibited = 0, skipped_locked = 0, skipped_in_flight = 0;
    uint64_t skipped_held = 0;               // re-copies held for the commit (fix 2's transaction scope)
    uint64_t write_errors = 0;               // failed writes (buffer left dirty)
    uint64_t dirty_bytes_max = 0;            // high-water mark of dirty buffers
    uint64_t throttled = 0;                  // balance_dirty() waits
    uint64_t pressure_kicks = 0;             // evictions that found only dirty buffers
    uint64_t paused_passes = 0;              // background passes refused during a commit
  };

  // Test-only: called for every block after it was prepared for a write (state changed, checksum
  // stored, write-time check passed) and before it is submitted, without any lock.
  using BeforeSubmitHook = std::function<void(const ExtentBuffer&)>;

  BufferCache(io::BlockDevice& dev, const ChunkMap& map, const FsParams& fs, uint64_t budget_bytes);
  ~BufferCache();

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

  // WB_SYNC_ALL (btrfs `btrfs_write_and_wait_transaction`): waits for a background pass in flight,
  // then writes every dirty buffer (waiting for tree locks, ignoring inhibitors) and waits for all of
  // it. Errors: the first failure (the caller aborts the transaction); failing buffers stay dirty.
  [[nodiscard]] Status write_dirty();
  // The same for the dirty buffers `pick` selects only (an fsync writes the tree log's blocks,
  // btrfs_write_marked_extents on the log's dirty pages, WB_SYNC_ALL).
  [[nodiscard]] Status write_dirty_if(const std::function<bool(const ExtentBuffer&)>& pick);
  // WB_SYNC_NONE: writes dirty buffers that are not locked, not inhibited (fix 2) and not under
  // writeback, in address order from where the previous pass stopped (the kernel's range_cyclic
  // writepages), as far as `policy` allows. A failed write is counted, logged and left dirty.
  WbPassResult writeback(const WbPolicy& policy);
  // The same with only a byte limit (tests).
  [[nodiscard]] Result<uint64_t> writeback(uint64_t max_bytes);

  // The commit's critical section (delayed items, delayed refs, block group and root items until
  // its own write-out) pauses background writeback: a block written in the middle of it would be
  // copied again by the next converge pass, whose copy queues new delayed refs, whose run copies
  // more blocks — with a cache small enough that writeback never stops, the commit never
  // converged ("did not converge after 1000 passes", then read-only). The commit writes every
  // dirty block itself; while paused the cache may exceed its budget by the blocks the commit
  // dirties (an in-flight path's pin). pause_background() returns once no background pass runs.
  void pause_background();
  void resume_background();
  class BackgroundPause {
   public:
    explicit BackgroundPause(BufferCache& c) : c_(c) { c_.pause_background(); }
    ~BackgroundPause() { c_.resume_background(); }
    BackgroundPause(const BackgroundPause&) = delete;
    BackgroundPause& operator=(const BackgroundPause&) = delete;

   private:
    BufferCache& c_;
  };

  // Evicts clean unreferenced buffers, least recently used first, until under budget.
  void evict_to_budget();

  // Writer throttle (btrfs `btrfs_btree_balance_dirty`): when the cache is over budget because of
  // dirty buffers, asks the writeback thread for a pass and waits for it (at most `max_wait`).
  // REQUIRES: no tree lock held, no inhibitor held (the caller's handle ended).
  void balance_dirty(std::chrono::milliseconds max_wait);

  // Called (under no lock of the caller's, but possibly under mu_) when dirty buffers passed the
  // background threshold or eviction found only dirty buffers: must only signal, never block.
  void set_pressure_hook(std::function<void()> hook);
  // Dirty bytes above which the pressure hook is called (0: never).
  void set_background_threshold(uint64_t bytes) { bg_thresh_.store(bytes, std::memory_order_relaxed); }
  // Pressure: over budget and eviction could not get under it (dirty buffers in the way).
  bool under_pressure() const { return pressure_.load(std::memory_order_acquire); }
  // Wakes balance_dirty() waiters after a background pass.
  void notify_pass_done();

  uint64_t budget() const { return budget_.load(std::memory_order_relaxed); }
  // The budget eviction works to (budget(), at least kMinCachedBlocks blocks).
  uint64_t effective_budget() const;
  void set_budget(uint64_t b) { budget_.store(b, std::memory_order_relaxed); }
  uint64_t size_bytes() const;
  size_t nr_buffers() const;
  size_t nr_dirty() const;
  uint64_t dirty_bytes() const;
  bool over_budget() const { return size_bytes() > effective_budget(); }
  Counters counters() const;
  io::UringWriterStats io_stats() const;

  void set_before_submit_hook_for_test(BeforeSubmitHook hook) { before_submit_ = std::move(hook); }
  // Test-only: called in read() after the device read returned, before its result is used.
  void set_after_device_read_hook_for_test(std::function<void(uint64_t bytenr)> hook) {
    after_device_read_ = std::move(hook);
  }

 private:
  struct Entry {
    EbRef eb;
    std::list<uint64_t>::iterator lru;
  };
  // btrfs `lock_extent_buffer_for_io`, the state change. REQUIRES: eb write-locked by the caller.
  // Returns false if there is nothing to write (stale, or not dirty).
  static bool start_write_locked(ExtentBuffer& eb);
  // The rest of a batch after start_write_locked and the unlock: checksum, write-time check, submit
  // every copy through the ring, wait, completion. Returns the number of blocks that failed; the
  // first error goes to *first_error.
  uint64_t write_batch(std::vector<EbRef>& batch, bool background, std::optional<Error>* first_error);
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
  std::atomic<uint64_t> bg_thresh_{0};
  std::atomic<bool> pressure_{false};

  // Serialises writeback passes; owns the ring (btrfs: one writepages per btree inode at a time).
  std::mutex wb_mu_;
  std::atomic<int> background_paused_{0};
  // Writes to the device, started and completed, per slot of addresses (bytenr / nodesize modulo
  // the array size; a shared slot only costs a neighbour a needless re-read). read() re-reads when
  // a write of its slot was in flight or began while it read — see read().
  static constexpr size_t kWriteSlots = 1024;
  std::array<std::atomic<uint64_t>, kWriteSlots> writes_started_{};
  std::array<std::atomic<uint64_t>, kWriteSlots> writes_done_{};
  size_t write_slot(uint64_t bytenr) const { return (bytenr / fs_.nodesize) % kWriteSlots; }
  std::unique_ptr<io::UringWriter> writer_;  // GUARDED_BY(wb_mu_)
  uint64_t cursor_ = 0;                      // GUARDED_BY(wb_mu_): where the next background pass starts
  BeforeSubmitHook before_submit_;           // set before any writeback runs
  std::function<void(uint64_t)> after_device_read_;  // set before any read runs

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> map_by_bytenr_;  // GUARDED_BY(mu_)
  std::list<uint64_t> lru_;                            // GUARDED_BY(mu_); front = most recent
  std::map<uint64_t, EbRef> dirty_;                    // GUARDED_BY(mu_), by address
  uint64_t bytes_ = 0;                                 // GUARDED_BY(mu_)
  Counters counters_;                                  // GUARDED_BY(mu_)
  std::function<void()> pressure_hook_;                // GUARDED_BY(mu_)
  uint64_t passes_done_ = 0;                           // GUARDED_BY(mu_)
  std::condition_variable pass_cv_;                    // with mu_
};

}  // namespace ubtrfs
