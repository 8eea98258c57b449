// UringWriter implementation: a fixed table of slots, one per possible in-flight write, fed from a
// queue of requests; see uring_writer.h for the contract.
//
// Bookkeeping (all under mu_): a request waits in queued_ until a slot is free; a slot that needs
// an SQE (new or resubmitted remainder) is listed in to_prep_; prepped_ lists slots whose SQE is in
// the SQ ring but not yet consumed by the kernel (io_uring_submit may take fewer than offered);
// in_kernel_ counts SQEs the kernel has consumed and not completed. Every busy slot is in exactly
// one of to_prep_, prepped_, or the kernel. in_kernel_ + prepped_.size() <= depth, so the
// completion ring (twice the SQ size) can never overflow.
#include "io/uring_writer.h"

#include <liburing.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "io/shutdown_gate.h"

namespace ubtrfs::io {

namespace detail {

CompletionAction complete_write(WriteProgress& w, size_t submitted_len, int res) {
  if (res < 0) return (res == -EINTR || res == -EAGAIN) ? CompletionAction::kResubmit : CompletionAction::kFailed;
  if (res == 0 && submitted_len > 0) return CompletionAction::kFailed;
  const size_t n = std::min(static_cast<size_t>(res), std::min(submitted_len, w.length));
  w.offset += n;
  w.data += n;
  w.length -= n;
  return w.length == 0 ? CompletionAction::kDone : CompletionAction::kResubmit;
}

}  // namespace detail

namespace {

// One SQE never asks for more than this (the SQE length is 32 bits; 1 GiB keeps it well inside).
constexpr size_t kMaxSqeBytes = size_t{1} << 30;

std::atomic<bool> logged_no_fd{false};
std::atomic<bool> logged_no_ring{false};

void log_fallback_once(std::atomic<bool>& flag, const std::string& why) {
  if (!flag.exchange(true)) spdlog::info("io_uring not used, writing synchronously: {}", why);
}

}  // namespace

struct UringWriter::Impl {
  struct Slot {
    detail::WriteProgress progress;
    uint64_t request_offset = 0;  // where the request started, for messages
    size_t request_length = 0;
    uint64_t tag = 0;
    size_t submitted_len = 0;     // bytes the current SQE asks for
  };

  Impl(BlockDevice& d, unsigned depth) : dev(d), depth(depth), gate(d.shutdown_gate()) {}

  BlockDevice& dev;
  const unsigned depth;
  // The device's shutdown gate (io/shutdown_gate.h), or null: every SQE enters it when prepped and
  // leaves it when its completion is reaped, so a shutdown waits for writes already in the kernel
  // and refuses the rest (including the remainder of a short write).
  ShutdownGate* const gate;

  mutable std::mutex mu;
  bool ring_initialized = false;  // io_uring_queue_exit is due in the destructor
  bool ring_ok = false;           // false: synchronous fallback
  io_uring ring{};
  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
  std::deque<WriteRequest> queued;
  std::vector<uint32_t> to_prep;
  std::deque<uint32_t> prepped;
  unsigned in_kernel = 0;
  std::vector<Error> errors;
  std::vector<uint64_t> failed_tags;
  UringWriterStats stats;

  bool idle() const { return queued.empty() && to_prep.empty() && prepped.empty() && in_kernel == 0; }

  void record_error(Error e, uint64_t tag) {
    ++stats.errors;
    errors.push_back(std::move(e));
    failed_tags.push_back(tag);
  }

  void write_sync(uint64_t off, std::span<const uint8_t> data, uint64_t tag) {
    if (auto st = dev.write(off, data); !st) {
      record_error(st.error(), tag);
      return;
    }
    ++stats.writes_completed;
    stats.bytes_written += data.size();
  }

  // Moves queued requests into free slots.
  void fill_slots() {
    while (!queued.empty() && !free_slots.empty()) {
      const uint32_t idx = free_slots.back();
      free_slots.pop_back();
      const WriteRequest& r = queued.front();
      slots[idx] = Slot{{r.offset, r.data.data(), r.data.size()}, r.offset, r.data.size(), 0, r.tag};
      queued.pop_front();
      to_prep.push_back(idx);
    }
  }

  void prep_sqes() {
    size_t used = 0;
    for (; used < to_prep.size(); ++used) {
      Slot& s = slots[to_prep[used]];
      if (gate && !gate->enter()) {
        record_error(Error{EIO, fmt::format("{}: filesystem shut down, write at offset {} length {} refused",
                                            dev.name(), s.progress.offset, s.progress.length)},
                     s.tag);
        free_slots.push_back(to_prep[used]);
        continue;
      }
      io_uring_sqe* sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) {  // cannot happen while in_kernel + prepped <= depth; retried later
        if (gate) gate->leave();
        break;
      }
      s.submitted_len = std::min(s.progress.length, kMaxSqeBytes);
      io_uring_prep_write(sqe, dev.fd(), s.progress.data, static_cast<unsigned>(s.submitted_len),
                          s.progress.offset);
      io_uring_sqe_set_data64(sqe, to_prep[used]);
      prepped.push_back(to_prep[used]);
    }
    to_prep.erase(to_prep.begin(), to_prep.begin() + static_cast<ptrdiff_t>(used));
  }

  // Offers the prepped SQEs to the kernel. Returns false if the ring is unusable.
  bool submit_prepped() {
    while (!prepped.empty()) {
      const int ret = io_uring_submit(&ring);
      ++stats.submit_calls;
      if (ret > 0) {
        const size_t n = std::min(static_cast<size_t>(ret), prepped.size());
        prepped.erase(prepped.begin(), prepped.begin() + static_cast<ptrdiff_t>(n));
        in_kernel += static_cast<unsigned>(n);
        continue;
      }
      if (ret == -EINTR) continue;
      // Nothing taken: transient pressure is resolved by reaping, if anything is in flight.
      if ((ret == 0 || ret == -EAGAIN || ret == -EBUSY) && in_kernel > 0) return true;
      spdlog::error("io_uring submit on {} failed: {}, finishing writes synchronously", dev.name(),
                    std::strerror(ret < 0 ? -ret : EIO));
      return false;
    }
    return true;
  }

  void handle_completion(uint32_t idx, int res) {
    if (gate) gate->leave();
    Slot& s = slots[idx];
    const size_t asked = s.submitted_len;
    switch (detail::complete_write(s.progress, asked, res)) {
      case detail::CompletionAction::kDone:
        ++stats.writes_completed;
        stats.bytes_written += s.request_length;
        free_slots.push_back(idx);
        break;
      case detail::CompletionAction::kResubmit:
        if (res < 0)
          ++stats.retries;
        else if (static_cast<size_t>(res) < asked)
          ++stats.short_writes;
        to_prep.push_back(idx);
        break;
      case detail::CompletionAction::kFailed: {
        const int err = res < 0 ? -res : EIO;
        record_error(Error{err, fmt::format("write error on {} at offset {} length {} (request at offset {} "
                                            "length {}): {}",
                                            dev.name(), s.progress.offset, s.progress.length, s.request_offset,
                                            s.request_length, res < 0 ? std::strerror(err) : "no bytes written")},
                     s.tag);
        free_slots.push_back(idx);
        break;
      }
    }
  }

  // Handles every completion already posted; if `wait`, first blocks for at least one.
  void reap(bool wait) {
    if (in_kernel == 0) return;
    io_uring_cqe* cqe = nullptr;
    if (wait) {
      int ret;
      do {
        ret = io_uring_wait_cqe(&ring, &cqe);
      } while (ret == -EINTR);
      if (ret < 0) {
        // Not expected with a live ring; give the kernel a moment rather than spin.
        spdlog::warn("io_uring wait on {} failed: {}", dev.name(), std::strerror(-ret));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return;
      }
    }
    while (in_kernel > 0 && io_uring_peek_cqe(&ring, &cqe) == 0 && cqe != nullptr) {
      const auto idx = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&ring, cqe);
      --in_kernel;
      handle_completion(idx, res);
    }
  }

  // The ring failed: drain what the kernel holds, write everything else synchronously, and stay in
  // the fallback from now on. SQEs left unconsumed in the SQ ring are never submitted (nothing calls
  // io_uring_submit again) and are discarded by io_uring_queue_exit.
  void abandon_ring() {
    std::vector<uint32_t> redo(prepped.begin(), prepped.end());
    // Prepped SQEs entered the gate but will never complete: they leave it here (dev.write below
    // passes through the gate again on its own).
    if (gate)
      for (size_t i = 0; i < prepped.size(); ++i) gate->leave();
    redo.insert(redo.end(), to_prep.begin(), to_prep.end());
    prepped.clear();
    to_prep.clear();
    while (in_kernel > 0) {
      reap(true);
      // Resubmissions the drain produced are finished synchronously too.
      redo.insert(redo.end(), to_prep.begin(), to_prep.end());
      to_prep.clear();
    }
    ring_ok = false;
    for (uint32_t idx : redo) {
      Slot& s = slots[idx];
      if (auto st = dev.write(s.progress.offset, {s.progress.data, s.progress.length}); !st) {
        record_error(st.error(), s.tag);
      } else {
        ++stats.writes_completed;
        stats.bytes_written += s.request_length;
      }
      free_slots.push_back(idx);
    }
    while (!queued.empty()) {
      const WriteRequest r = queued.front();
      queued.pop_front();
      write_sync(r.offset, r.data, r.tag);
    }
  }

  // Starts whatever can be started; if `wait`, blocks for at least one completion when any is due.
  void pump(bool wait) {
    fill_slots();
    prep_sqes();
    if (!submit_prepped()) {
      abandon_ring();
      return;
    }
    reap(wait);
  }
};

UringWriter::UringWriter(BlockDevice& dev, unsigned queue_depth)
    : impl_(std::make_unique<Impl>(dev, std::clamp(queue_depth, 1u, kMaxQueueDepth))) {
  Impl& m = *impl_;
  if (dev.fd() < 0) {
    log_fallback_once(logged_no_fd, fmt::format("device {} has no file descriptor", dev.name()));
    return;
  }
  const int ret = io_uring_queue_init(m.depth, &m.ring, 0);
  if (ret < 0) {
    log_fallback_once(logged_no_ring, fmt::format("io_uring setup failed: {}", std::strerror(-ret)));
    return;
  }
  m.ring_initialized = true;
  m.ring_ok = true;
  m.slots.resize(m.depth);
  m.free_slots.reserve(m.depth);
  for (uint32_t i = m.depth; i > 0; --i) m.free_slots.push_back(i - 1);
}

UringWriter::~UringWriter() {
  if (auto st = wait_all(); !st)
    spdlog::error("writes to {} failed and nobody waited for them: {}", impl_->dev.name(), st.error().message);
  if (impl_->ring_initialized) io_uring_queue_exit(&impl_->ring);
}

void UringWriter::submit(std::span<const WriteRequest> writes) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const uint64_t size = m.dev.size();
  // Synchronous fallback: one write_many() call for the whole submission, so a device that can
  // have requests in flight (io/nbd_device.h) gets them together.
  std::vector<DeviceWrite> batch;
  std::vector<uint64_t> batch_tags;
  for (const WriteRequest& r : writes) {
    if (m.dev.read_only()) {
      m.record_error(Error{EROFS, fmt::format("device {} is read-only, write at offset {} length {} refused",
                                              m.dev.name(), r.offset, r.data.size())},
                     r.tag);
      continue;
    }
    if (r.offset > size || r.data.size() > size - r.offset) {
      m.record_error(Error{EINVAL, fmt::format("write beyond end of device {}: offset {} length {} size {}",
                                               m.dev.name(), r.offset, r.data.size(), size)},
                     r.tag);
      continue;
    }
    if (r.data.empty()) {
      ++m.stats.writes_completed;
      continue;
    }
    if (m.ring_ok) {
      m.queued.push_back(r);
    } else {
      batch.push_back({r.offset, r.data});
      batch_tags.push_back(r.tag);
    }
  }
  if (m.ring_ok) m.pump(false);
  if (!batch.empty()) {
    std::vector<Status> results = m.dev.write_many(batch);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!results[i]) {
        m.record_error(results[i].error(), batch_tags[i]);
        continue;
      }
      ++m.stats.writes_completed;
      m.stats.bytes_written += batch[i].data.size();
    }
  }
}

Status UringWriter::wait_all(std::vector<uint64_t>* failed_tags) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  while (m.ring_ok && !m.idle()) m.pump(true);
  if (failed_tags) failed_tags->insert(failed_tags->end(), m.failed_tags.begin(), m.failed_tags.end());
  m.failed_tags.clear();
  if (m.errors.empty()) return {};
  Error first = std::move(m.errors.front());
  if (m.errors.size() > 1) first.message += fmt::format(" (and {} more write errors)", m.errors.size() - 1);
  m.errors.clear();
  return fail(std::move(first));
}

bool UringWriter::uses_uring() const {
  std::lock_guard lock(impl_->mu);
  return impl_->ring_ok;
}

unsigned UringWriter::queue_depth() const { return impl_->depth; }

UringWriterStats UringWriter::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats;
}

}  // namespace ubtrfs::io
