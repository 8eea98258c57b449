// MemoryDevice: a zero-filled byte vector behind the BlockDevice interface, for unit tests.
#include <cstring>

#include "io/block_device.h"

namespace ubtrfs::io {

Status MemoryDevice::read(uint64_t off, std::span<uint8_t> buf) {
  if (off > data_.size() || buf.size() > data_.size() - off)
    return fail(EINVAL, "read beyond end of memory device: offset {} length {} size {}", off, buf.size(),
                data_.size());
  std::lock_guard lock(mu_);
  if (!buf.empty()) std::memcpy(buf.data(), data_.data() + off, buf.size());
  return {};
}

Status MemoryDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  if (off > data_.size() || buf.size() > data_.size() - off)
    return fail(EINVAL, "write beyond end of memory device: offset {} length {} size {}", off, buf.size(),
                data_.size());
  std::lock_guard lock(mu_);
  if (!buf.empty()) std::memcpy(data_.data() + off, buf.data(), buf.size());
  return {};
}

Status MemoryDevice::discard(uint64_t off, uint64_t len) {
  if (off > data_.size() || len > data_.size() - off)
    return fail(EINVAL, "discard beyond end of memory device: offset {} length {} size {}", off, len, data_.size());
  std::lock_guard lock(mu_);
  if (len) std::memset(data_.data() + off, 0, len);
  discarded_ += len;
  return {};
}

uint64_t MemoryDevice::discarded_bytes() const {
  std::lock_guard lock(mu_);
  return discarded_;
}

}  // namespace ubtrfs::io
