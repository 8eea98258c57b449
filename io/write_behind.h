// WriteBehindDevice: file data written to the device behind the thread that produced it — the part
// the kernel's page cache and writeback play for btrfs data (btrfs_writepages submits the bios and
// the flusher goes on; the ordered extent completes later). The delalloc flusher (fs/file_data_flush.cpp
// flush_run) fills a buffer, hands it over and goes on filling the next one while a worker thread
// writes it; before this, the FUSE thread that crossed the dirty threshold did the host's
// page-cache copy itself, with the inode lock and a transaction handle held (issue 10's profile:
// 65 % of the daemon's samples in a sequential write).
//
// Owns: the queue of writes not yet done (a buffer and the device offsets of its copies), the
// worker thread, a pool of recycled buffers, the first error a queued write met, and counters.
// Invariants:
//   - coherence: every call through this device sees queued writes as done — a read, write,
//     write_many or discard overlapping a queued range first waits until that range is written, so
//     a read never returns what the device held before, and a later write is never overtaken.
//   - durability: flush() waits until every queued write is done, then flushes the inner device;
//     it fails with the first error a queued write met, and keeps failing (sticky): the trees
//     already point at that data, so no commit may ever claim it is on disk. write_behind() refuses
//     new writes with that error too.
//   - memory: at most max_queued_bytes are queued; write_behind() waits for room.
//   - writers that submit on fd() directly bypass the queue (the io_uring tree-block writer). They
//     write tree blocks, which never overlap queued data: a data extent and a tree block share space
//     only after one of them was freed, and freed space is reused only after the commit that freed
//     it, whose flush() drained the queue.
// Thread safety: every method may be called from any thread. The worker writes through the inner
// device, so shutdown_gate() (the inner one) also stops the queued writes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::io {

struct WriteBehindStats {
  uint64_t writes = 0;             // buffers queued
  uint64_t bytes = 0;              // bytes queued (each copy counted)
  uint64_t producer_waits = 0;     // write_behind() calls that waited for room
  uint64_t overlap_waits = 0;      // reads/writes/discards that waited for a queued range
  uint64_t flush_waits = 0;        // flush() calls that found writes queued
  uint64_t max_queued_bytes = 0;   // high-water mark of the queue
  uint64_t failed = 0;             // queued writes the device refused
};

class WriteBehindDevice final : public BlockDevice {
 public:
  // 16 MiB: the worker writes a 1 MiB buffer into an image file's page cache in about 1-3 ms, so a
  // few buffers in flight keep it busy; the bound counts against the daemon's memory budget.
  static constexpr uint64_t kDefaultMaxQueuedBytes = 16ull << 20;
  // A write at least this large is part of a stream. Callers queue only such extents (a smaller
  // one, e.g. the fsync of a small file, costs more in the handoff than in the write), and the
  // worker starts the device's writeback at once after writing such a buffer
  // (sync_file_range SYNC_FILE_RANGE_WRITE on fd(); nothing is waited for).
  static constexpr uint64_t kStreamMinBytes = 256ull << 10;

  // REQUIRES: inner is not null and writable.
  explicit WriteBehindDevice(std::shared_ptr<BlockDevice> inner,
                             uint64_t max_queued_bytes = kDefaultMaxQueuedBytes);
  // Writes what is still queued (errors are logged: nobody is left to report them to) and stops.
  ~WriteBehindDevice() override;
  WriteBehindDevice(const WriteBehindDevice&) = delete;
  WriteBehindDevice& operator=(const WriteBehindDevice&) = delete;

  uint64_t size() const override { return inner_->size(); }
  bool read_only() const override { return inner_->read_only(); }
  std::string name() const override { return inner_->name(); }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  std::vector<Status> write_many(std::span<const DeviceWrite> writes) override;
  Status flush() override;
  Status discard(uint64_t off, uint64_t len) override;
  int fd() const override { return inner_->fd(); }
  ShutdownGate* shutdown_gate() override { return inner_->shutdown_gate(); }

  // An empty buffer for write_behind(), with the capacity of a recycled one when the pool has one
  // (a fresh 1 MiB allocation is an mmap and 256 page faults).
  std::vector<uint8_t> take_buffer();
  // Queues `data` to be written at every offset in `offsets` (the copies of one logical range) and
  // returns; waits while the queue is full. The ranges must lie inside the device.
  // Errors: the sticky error of an earlier queued write (nothing is queued then), EINVAL.
  [[nodiscard]] Status write_behind(std::span<const uint64_t> offsets, std::vector<uint8_t>&& data);
  // Waits until every write queued so far is done (flush() without the device flush).
  void drain();

  WriteBehindStats stats() const;

 private:
  struct Job {
    std::vector<uint8_t> data;
    std::vector<uint64_t> offsets;
  };
  void run();
  // REQUIRES: mu_ held. Whether [off, off+len) overlaps a queued (or in-flight) range.
  bool overlaps_locked(uint64_t off, uint64_t len) const;
  // Waits until [off, off+len) overlaps nothing queued; counts a wait.
  void wait_for_range(uint64_t off, uint64_t len);
  Status sticky_error_locked() const;

  std::shared_ptr<BlockDevice> inner_;
  const uint64_t max_queued_bytes_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // the worker: a job was queued, or stop
  std::condition_variable done_cv_;  // waiters: a job finished (room, ranges, drain)
  std::deque<std::unique_ptr<Job>> queue_;        // GUARDED_BY(mu_), FIFO
  std::multimap<uint64_t, uint64_t> ranges_;      // GUARDED_BY(mu_): start -> length, queued + in flight
  uint64_t max_range_len_ = 0;                    // GUARDED_BY(mu_): longest length ever queued
  uint64_t queued_bytes_ = 0;                     // GUARDED_BY(mu_): queued + in flight, each buffer once
  uint64_t jobs_pending_ = 0;                     // GUARDED_BY(mu_): queued + in flight
  std::atomic<uint64_t> ranges_pending_{0};       // ranges_.size(), read without mu_ on the read path
  std::vector<std::vector<uint8_t>> pool_;        // GUARDED_BY(mu_)
  bool failed_ = false;                           // GUARDED_BY(mu_)
  int error_ = 0;                                 // GUARDED_BY(mu_)
  std::string error_message_;                     // GUARDED_BY(mu_)
  bool stop_ = false;                             // GUARDED_BY(mu_)
  WriteBehindStats stats_;                        // GUARDED_BY(mu_)
  std::thread worker_;
};

}  // namespace ubtrfs::io
