// ShutdownGate and GatedDevice: the device end of an emergency shutdown (the kernel's
// btrfs_force_shutdown / xfs_do_force_shutdown, reached by FS_IOC_GOINGDOWN): from the moment the
// gate is shut, not one more byte and not one more flush reaches the image, whoever asks — the
// commit, the writeback thread, the delalloc flusher, a log-tree write, an in-place overwrite.
//
// Owns: the shut flag and the count of device writes/flushes in flight. GatedDevice owns (shares)
// the device it wraps and passes every call through its gate.
// Invariants:
//   - enter() succeeds only while the gate is open; every successful enter() is paired with one
//     leave(). shut_down() closes the gate and returns only when no entered operation is left, so
//     when it returns, nothing is being written and nothing will be: the image is exactly what a
//     power cut at that instant would have left (an io_uring write already in the kernel is waited
//     for, not cancelled — it was issued before the cut).
//   - after shut_down(), GatedDevice::write and flush fail with EIO and touch nothing; reads pass
//     (whether a read is allowed is the filesystem's decision; unmount may still read).
//   - shut_down() is idempotent; the gate never reopens (a shut filesystem must be remounted).
// Writers that bypass BlockDevice::write (the io_uring writer submits on fd()) find the gate with
// BlockDevice::shutdown_gate() and bracket each submission with enter()/leave() themselves.
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::io {

class ShutdownGate {
 public:
  // Counts one operation in flight; false (nothing counted) once the gate is shut.
  [[nodiscard]] bool enter();
  // REQUIRES: a successful enter() not yet left.
  void leave();
  // Refuses every later enter(), then waits until the operations in flight have left.
  void shut_down();
  bool is_shut() const { return shut_.load(std::memory_order_acquire); }
  // Operations refused since the gate was shut (tests, stats).
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> shut_{false};
  std::atomic<uint64_t> refused_{0};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t in_flight_ = 0;  // GUARDED_BY(mu_)
};

class GatedDevice final : public BlockDevice {
 public:
  // REQUIRES: inner is not null.
  explicit GatedDevice(std::shared_ptr<BlockDevice> inner) : inner_(std::move(inner)) {}

  uint64_t size() const override { return inner_->size(); }
  bool read_only() const override { return inner_->read_only(); }
  std::string name() const override { return inner_->name(); }
  Status read(uint64_t off, std::span<uint8_t> buf) override { return inner_->read(off, buf); }
  // EIO once the gate is shut; the inner device's result otherwise.
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  // Each range enters the gate as write() would; the admitted ones go to the inner device's
  // write_many together (an NBD device keeps them in flight at once).
  std::vector<Status> write_many(std::span<const DeviceWrite> writes) override;
  Status flush() override;
  // EIO once the gate is shut, like write(): a discard changes what the image holds.
  Status discard(uint64_t off, uint64_t len) override;
  int fd() const override { return inner_->fd(); }
  ShutdownGate* shutdown_gate() override { return &gate_; }

  BlockDevice& inner() { return *inner_; }

 private:
  std::shared_ptr<BlockDevice> inner_;
  ShutdownGate gate_;
};

}  // namespace ubtrfs::io
