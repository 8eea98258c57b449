// WritebackThread: background writeback of dirty tree blocks — the userspace form of the kernel's
// WB_SYNC_NONE writeback of the btree inode (KERNEL.md §8, §12; ARCHITECTURE.md "What runs").
//
// Owns: one thread that decides when to run a BufferCache::writeback pass and how far:
//   - pressure: the cache is over its budget and eviction found only dirty buffers — write enough
//     non-inhibited dirty buffers that the cache can get back under budget (reclaim cannot drop
//     dirty btree folios, so memory pressure leads to writeback first, which sets WRITTEN);
//   - background threshold: dirty bytes above min(ratio % of the cache budget, thresh bytes) (the
//     kernel's dirty_background_ratio and its 32 MiB BTRFS_DIRTY_METADATA_THRESH) — write until
//     half the threshold is left;
//   - periodic (kupdate): every `interval`, buffers dirty for longer than `expire`.
// The passes themselves (address order from a cyclic cursor, skipping locked, inhibited and
// in-flight buffers, io_uring batches) are BufferCache's; the commit's WB_SYNC_ALL pass is too.
// Invariants: at most one pass at a time (BufferCache's wb_mu_); the thread never holds a tree
// lock while waiting; after each pass it wakes the writers throttled in balance_dirty(). A pass that
// made no progress (everything dirty inhibited or locked) is not repeated for a few milliseconds,
// kicks or not, so pressure never turns into a busy loop.
// Lifecycle: start() after the filesystem is open read-write; stop() after the final commit of
// unmount (it keeps the cache within budget while the last delalloc becomes tree blocks; nothing
// is dirty afterwards) and before the device closes. The destructor stops.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "tree/buffer_cache.h"

namespace ubtrfs {

struct WritebackOptions {
  bool enabled = true;                 // writeback=on|off
  uint64_t thresh_bytes = 32ull << 20;  // wb_thresh_mb: absolute background threshold
  unsigned ratio_pct = 10;             // wb_ratio: background threshold as % of the cache budget
  uint32_t interval_ms = 5000;         // wb_interval: periodic wakeup (dirty_writeback_centisecs)
  uint32_t expire_ms = 30000;          // wb_expire: age written by the periodic pass (dirty_expire)
  bool coldest_first = true;           // wb_order=lru|address (WbPolicy::coldest_first)
};

class WritebackThread {
 public:
  struct Stats {
    uint64_t pressure_passes = 0, threshold_passes = 0, periodic_passes = 0, idle_passes = 0;
  };

  WritebackThread(BufferCache& cache, const WritebackOptions& opts);
  ~WritebackThread();
  WritebackThread(const WritebackThread&) = delete;
  WritebackThread& operator=(const WritebackThread&) = delete;

  void start();
  void stop();
  // Wake the thread (pressure, threshold crossed). Never blocks; callable under any lock.
  void kick();
  // min(ratio % of the cache budget, thresh), the dirty bytes above which it writes.
  uint64_t background_threshold() const;
  const WritebackOptions& options() const { return opts_; }
  Stats stats() const;

 private:
  void run();

  BufferCache& cache_;
  const WritebackOptions opts_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                 // GUARDED_BY(mu_)
  std::atomic<bool> kicked_{false};
  Stats stats_;                       // GUARDED_BY(mu_)
};

}  // namespace ubtrfs
