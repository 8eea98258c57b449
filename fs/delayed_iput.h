// Delayed iputs (btrfs_add_delayed_iput / btrfs_run_delayed_iputs, run by the kernel's cleaner
// thread and by the RUN_DELAYED_IPUTS flush state; KERNEL.md §4.3): the eviction of an inode whose
// last link and last FUSE lookup are gone, taken off the thread that read the FORGET and done by a
// worker in batches.
//
// Why: a FORGET costs the kernel nothing to send, but evicting at once puts a transaction handle
// and four write-locked tree searches on the /dev/fuse reader per inode, beside the request
// threads' unlinks on the same leaves (about a third of unlink throughput, issue 10). A batch of
// inodes, consecutive in the tree, is evicted with a few leaf operations per handle
// (fs/evict.h evict_inodes).
//
// Invariants:
// - an inode is queued only with link count 0 and lookup count 0 (Filesystem::forget): nothing can
//   reach it again, so the delay changes nothing anyone sees but the free space, which the flush
//   state RUN_DELAYED_IPUTS (before COMMIT_TRANS, for data and metadata tickets alike) returns;
// - its ORPHAN_ITEM stays in the tree until its eviction ends: a crash in between leaves it to
//   the next mount's orphan cleanup, as a crash before the FORGET would;
// - run_all() returns after every inode queued before the call was evicted or failed (a batch the
//   worker is running included): "run and wait for delayed iputs". Unmount, the sync ioctls and
//   the flush state call it.
// Thread safety: add/run_all/stop/counters from any thread; batches never run concurrently
// (run_mu_). The evictor must not call back into this object.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "fs/inode.h"
#include "io/status.h"

namespace ubtrfs::fs {

// How long the worker lets FORGETs gather before it evicts fewer than a full batch.
inline constexpr std::chrono::milliseconds kDelayedIputDelay{20};
// The most inodes one batch evicts (their locks are held together).
inline constexpr size_t kDelayedIputBatch = 256;

struct DelayedIputCounters {
  uint64_t queued = 0;   // inodes queued since mount
  uint64_t evicted = 0;  // of which evicted (the rest failed or are still queued)
  uint64_t failed = 0;   // inodes whose batch failed (left to the next mount's orphan cleanup)
  uint64_t batches = 0;
  uint64_t pending = 0;  // queued now
};

class DelayedIputs {
 public:
  // Evicts a batch (each inode re-checked under its lock); returns how many it evicted.
  using Evictor = std::function<Result<size_t>(std::vector<InodeId>)>;
  explicit DelayedIputs(Evictor evictor);
  ~DelayedIputs();
  DelayedIputs(const DelayedIputs&) = delete;
  DelayedIputs& operator=(const DelayedIputs&) = delete;

  // btrfs_add_delayed_iput. Ignored after stop().
  void add(InodeId id);
  // btrfs_run_delayed_iputs + btrfs_wait_on_delayed_iputs: evicts everything queued, in the
  // caller's thread, after the worker's batch in progress. Returns the number evicted; the first
  // batch error (the rest still ran).
  [[nodiscard]] Result<size_t> run_all();
  // Ends the worker; what is still queued stays queued (run_all may still evict it) and later
  // add()s are dropped: their orphan items remain for the next mount.
  void stop();
  DelayedIputCounters counters() const;
  // Tests: the workers of every mount leave the queue alone while paused (run_all still runs
  // it), so that a test can reach the RUN_DELAYED_IPUTS flush state with inodes queued.
  static void set_workers_paused_for_test(bool paused);

 private:
  void worker_main();
  std::vector<InodeId> take_batch();  // the oldest kDelayedIputBatch queued (fewer if fewer)
  Result<size_t> run_batch(std::vector<InodeId> batch);  // REQUIRES: run_mu_ held

  Evictor evictor_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<InodeId> queue_;   // GUARDED_BY(mu_)
  bool stop_ = false;           // GUARDED_BY(mu_)
  DelayedIputCounters counters_;  // GUARDED_BY(mu_) (pending derived from queue_)
  std::mutex run_mu_;           // one batch at a time; order: run_mu_ -> inode locks -> mu_
  std::thread worker_;
};

}  // namespace ubtrfs::fs
