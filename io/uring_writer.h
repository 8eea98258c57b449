// UringWriter: batched asynchronous writes to a BlockDevice through io_uring, for the writeback
// thread and transaction commit.
//
// Owns: one io_uring instance (queue depth fixed at construction) submitting against dev.fd(), and
// the bookkeeping of every write between submit() and wait_all(). It does not own the device or the
// buffers.
// Lifecycle: submit() any number of batches, then wait_all(), which returns only when every write
// submitted since the previous wait_all() has completed or failed; the writer is then empty and
// reusable. The destructor waits like wait_all() (errors are logged, not lost silently).
// Invariants:
//   - REQUIRES: every buffer passed to submit() stays valid and unmodified until wait_all() returns.
//   - a write is either fully on the device or reported: short completions are resubmitted for the
//     remainder, EINTR/EAGAIN completions are retried, every other failure becomes an Error returned
//     by wait_all() (the first one, with the count of the others).
//   - writes are range-checked against dev.size() and refused with EROFS on a read-only device
//     before anything is queued, exactly as BlockDevice::write would.
//   - no ordering between writes of one wait_all() window: the caller must not submit overlapping
//     ranges in the same window (btrfs never does: one tree block, one location).
//   - durability is not implied: call dev.flush() after wait_all() for that.
// Fallback: when dev.fd() < 0 (memory and fault-injecting devices) or io_uring cannot be set up
// (old kernel, seccomp, io_uring_disabled), each submission goes synchronously through one
// BlockDevice::write_many call inside submit() (an NBD device has them in flight together);
// errors are still reported by wait_all(). The switch is logged
// once per process at info level. A ring that fails mid-flight falls back the same way.
// Thread safety: every method takes an internal mutex, so the writer may be handed between threads,
// but it is meant for one submitter at a time: wait_all() waits for all writes, including those
// another thread submitted, and holds the mutex while it waits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::io {

struct WriteRequest {
  uint64_t offset = 0;               // physical device offset
  std::span<const uint8_t> data;     // must outlive the next wait_all()
  uint64_t tag = 0;                  // the caller's name for the request, reported if it fails
};

struct UringWriterStats {
  uint64_t writes_completed = 0;  // requests fully on the device
  uint64_t bytes_written = 0;
  uint64_t short_writes = 0;      // completions with fewer bytes than asked, resubmitted
  uint64_t retries = 0;           // EINTR/EAGAIN completions resubmitted
  uint64_t submit_calls = 0;      // io_uring_submit() batches
  uint64_t errors = 0;            // requests that failed
};

class UringWriter {
 public:
  static constexpr unsigned kDefaultQueueDepth = 64;
  static constexpr unsigned kMaxQueueDepth = 4096;

  // REQUIRES: dev outlives the writer. queue_depth is clamped to [1, kMaxQueueDepth].
  explicit UringWriter(BlockDevice& dev, unsigned queue_depth = kDefaultQueueDepth);
  ~UringWriter();
  UringWriter(const UringWriter&) = delete;
  UringWriter& operator=(const UringWriter&) = delete;

  // Queues the writes and starts as many as the ring has room for; does not wait for the device
  // (but may reap completions already there). Invalid requests are recorded as errors for wait_all().
  void submit(std::span<const WriteRequest> writes);

  // Waits until every submitted write has completed. Returns the first error of the window (its
  // message names the device and offset, and counts further failures), or success. `failed_tags`
  // (optional) receives the tag of every request that failed, so a caller can tell which of its
  // writes did not reach the device.
  [[nodiscard]] Status wait_all(std::vector<uint64_t>* failed_tags = nullptr);

  // True while writes go through io_uring, false in the synchronous fallback.
  bool uses_uring() const;
  unsigned queue_depth() const;
  UringWriterStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

namespace detail {

// One write in flight, advanced as completions arrive. Exposed for unit tests of completion handling.
struct WriteProgress {
  uint64_t offset = 0;
  const uint8_t* data = nullptr;
  size_t length = 0;  // bytes still to write
};

enum class CompletionAction { kDone, kResubmit, kFailed };

// Applies a completion result `res` (bytes written, or -errno) for an SQE that asked for
// `submitted_len` bytes of `w`: advances `w` past the bytes written. kResubmit when bytes remain or
// the error is transient (EINTR, EAGAIN); kFailed for any other error or a zero-byte completion.
CompletionAction complete_write(WriteProgress& w, size_t submitted_len, int res);

}  // namespace detail
}  // namespace ubtrfs::io
