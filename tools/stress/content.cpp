// FileContent: the extent-map model of a file's bytes (see content.h for the invariants).
#include "tools/stress/content.h"

#include <algorithm>
#include <cstring>

#include "tools/stress/prng.h"

namespace ubtrfs::stress {

namespace {

uint64_t pattern_word(uint64_t seed, uint64_t word_index) {
  return splitmix64(seed ^ (word_index * 0xd6e8feb86659fd93ULL));
}

}  // namespace

uint8_t pattern_byte(uint64_t seed, uint64_t offset) {
  return static_cast<uint8_t>(pattern_word(seed, offset >> 3) >> ((offset & 7) * 8));
}

void fill_pattern(uint64_t seed, uint64_t offset, std::span<uint8_t> out) {
  size_t i = 0;
  const size_t n = out.size();
  while (i < n && ((offset + i) & 7) != 0) {
    out[i] = pattern_byte(seed, offset + i);
    ++i;
  }
  while (i + 8 <= n) {
    const uint64_t w = pattern_word(seed, (offset + i) >> 3);
    for (int b = 0; b < 8; ++b) out[i + b] = static_cast<uint8_t>(w >> (b * 8));
    i += 8;
  }
  while (i < n) {
    out[i] = pattern_byte(seed, offset + i);
    ++i;
  }
}

uint64_t FileContent::data_bytes() const {
  uint64_t total = 0;
  for (const auto& [start, e] : extents_) total += e.end - start;
  return total;
}

uint64_t FileContent::allocated() const {
  // Data plus preallocation, but never more than the file could cover.
  return std::min(data_bytes() + prealloc_, std::max(size_, prealloc_end_));
}

void FileContent::clear_range(uint64_t start, uint64_t end) {
  if (start >= end) return;
  auto it = extents_.lower_bound(start);
  if (it != extents_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > start) it = prev;
  }
  while (it != extents_.end() && it->first < end) {
    const uint64_t e_start = it->first;
    const Extent e = it->second;
    it = extents_.erase(it);
    if (e_start < start) extents_.emplace(e_start, Extent{start, e.seed});
    if (e.end > end) {
      extents_.emplace(end, Extent{e.end, e.seed});
      break;
    }
  }
}

void FileContent::write(uint64_t off, uint64_t len, uint64_t seed) {
  if (len == 0) return;
  clear_range(off, off + len);
  extents_.emplace(off, Extent{off + len, seed});
  size_ = std::max(size_, off + len);
}

void FileContent::truncate(uint64_t new_size) {
  if (new_size < size_) {
    clear_range(new_size, size_);
    // Preallocation past the new size is freed by the truncate on every filesystem we test.
    prealloc_ = std::min(prealloc_, new_size);
    prealloc_end_ = std::min(prealloc_end_, new_size);
  }
  size_ = new_size;
}

void FileContent::punch(uint64_t off, uint64_t len) {
  clear_range(off, std::min(off + len, size_));
  prealloc_ = prealloc_ > len ? prealloc_ - len : 0;
}

void FileContent::fallocate(uint64_t off, uint64_t len, bool keep_size) {
  prealloc_ += len;
  prealloc_end_ = std::max(prealloc_end_, off + len);
  if (!keep_size) size_ = std::max(size_, off + len);
}

void FileContent::copy_from(const FileContent& src, uint64_t off, uint64_t n) {
  if (n == 0) return;
  const uint64_t end = off + n;
  clear_range(off, end);
  auto it = src.extents_.lower_bound(off);
  if (it != src.extents_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > off) it = prev;
  }
  for (; it != src.extents_.end() && it->first < end; ++it)
    extents_.emplace(std::max(it->first, off), Extent{std::min(it->second.end, end), it->second.seed});
  size_ = std::max(size_, end);
}

size_t FileContent::read(uint64_t off, std::span<uint8_t> out) const {
  if (off >= size_) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size_ - off));
  const uint64_t end = off + n;
  std::memset(out.data(), 0, n);
  auto it = extents_.lower_bound(off);
  if (it != extents_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > off) it = prev;
  }
  for (; it != extents_.end() && it->first < end; ++it) {
    const uint64_t s = std::max(it->first, off);
    const uint64_t e = std::min(it->second.end, end);
    fill_pattern(it->second.seed, s, out.subspan(s - off, e - s));
  }
  return n;
}

}  // namespace ubtrfs::stress
