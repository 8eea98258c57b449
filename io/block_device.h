// The one interface behind which all device I/O happens (STYLE.md §9).
//
// Owns: the byte-addressed view of a disk image, a real block device, or memory. Offsets here are
// physical device offsets; logical btrfs addresses are mapped above this layer (tree/chunk_map.h).
// Invariants: read() and write() are exact — they transfer the whole span or return an error (short
// counts and EINTR are retried inside); a device opened read-only refuses every write with EROFS and
// never modifies a byte. flush() returns only when all completed writes are durable.
// Thread safety: every method may be called concurrently from several threads (pread/pwrite
// semantics); the caller orders overlapping writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "io/status.h"

namespace ubtrfs::io {

class ShutdownGate;  // io/shutdown_gate.h

// One range of a BlockDevice::write_many() batch.
struct DeviceWrite {
  uint64_t offset = 0;
  std::span<const uint8_t> data;
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  // Size in bytes (BLKGETSIZE64 for block devices, st_size for files).
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // Human-readable name for messages: the path, or "memory".
  virtual std::string name() const = 0;

  // REQUIRES: off + buf.size() <= size(). Errors: EIO (device), EINVAL (out of range).
  [[nodiscard]] virtual Status read(uint64_t off, std::span<uint8_t> buf) = 0;
  // REQUIRES: off + buf.size() <= size(). Errors: EROFS (read-only), EIO, ENOSPC, EINVAL.
  [[nodiscard]] virtual Status write(uint64_t off, std::span<const uint8_t> buf) = 0;
  [[nodiscard]] virtual Status flush() = 0;
  // Writes every range (they must not overlap; no order among them), the device free to have them
  // all in flight at once; one Status per range, in order. Durability as write(): flush() after.
  // The default writes them one by one; a network device (io/nbd_device.h) sends them together.
  [[nodiscard]] virtual std::vector<Status> write_many(std::span<const DeviceWrite> writes) {
    std::vector<Status> results;
    results.reserve(writes.size());
    for (const DeviceWrite& w : writes) results.push_back(write(w.offset, w.data));
    return results;
  }
  // Tells the device that [off, off+len) holds nothing worth keeping (FITRIM, -o discard): an image
  // file gets a hole punched (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, so it shrinks on disk and
  // reads back zeros), a block device gets BLKDISCARD (contents then unspecified). The caller owns
  // the range: nothing may read it for data or write it concurrently.
  // REQUIRES: off + len <= size(). Errors: EOPNOTSUPP (the device or its filesystem cannot discard:
  // the default), EROFS (read-only), EINVAL (out of range), EIO.
  [[nodiscard]] virtual Status discard(uint64_t off, uint64_t len) {
    return fail(EOPNOTSUPP, "{}: discard of offset {} length {}: not supported", name(), off, len);
  }

  // Raw file descriptor for io_uring submission, or -1 if the device is not backed by one
  // (memory and fault-injecting devices); callers then fall back to write().
  virtual int fd() const { return -1; }
  // The emergency-shutdown gate in front of this device (io/shutdown_gate.h), or null. A writer
  // that submits on fd() directly must pass each write through it.
  virtual ShutdownGate* shutdown_gate() { return nullptr; }
};

enum class OpenMode { kReadOnly, kReadWrite };

// Opens an image file or a block device. A block device that is mounted (or, for kReadWrite, held
// exclusively by someone else) is refused with EBUSY. The file is not created: ENOENT if absent.
// An NBD URI (nbd://, nbds://, nbd+unix://...; io/nbd_device.h) opens the export on that server.
[[nodiscard]] Result<std::unique_ptr<BlockDevice>> open_device(const std::string& path, OpenMode mode);

// Whether `path` is a block device set read-only (BLKROGET: blockdev --setro, a write-protected
// medium); a mount then falls back to read-only, as mount(8) does for a kernel filesystem. Image
// files and NBD URIs answer false (their read-write open fails with its own precise error).
[[nodiscard]] Result<bool> write_protected(const std::string& path);

// In-memory device for tests; zero-filled.
class MemoryDevice final : public BlockDevice {
 public:
  explicit MemoryDevice(uint64_t size) : data_(size) {}
  uint64_t size() const override { return data_.size(); }
  bool read_only() const override { return false; }
  std::string name() const override { return "memory"; }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  Status flush() override { return {}; }
  // Zero-fills the range (a punched hole reads back zeros) and counts it.
  Status discard(uint64_t off, uint64_t len) override;
  uint64_t discarded_bytes() const;

  // Direct access for tests that corrupt bytes on purpose. Not synchronized with read/write.
  std::vector<uint8_t>& bytes() { return data_; }

 private:
  mutable std::mutex mu_;  // makes concurrent overlapping read/write well-defined for TSan
  std::vector<uint8_t> data_;
  uint64_t discarded_ = 0;  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::io
