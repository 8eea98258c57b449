// FreeSpace implementation; see free_space.h for the invariants.
#include "alloc/free_space.h"

namespace ubtrfs::alloc {

Status FreeSpace::add(uint64_t start, uint64_t len) {
  if (len == 0) return {};
  if (start < bg_start_ || start > bg_end_ || len > bg_end_ - start)
    return fail(EUCLEAN, "free space [{}, +{}) outside block group [{}, {})", start, len, bg_start_, bg_end_);
  uint64_t end = start + len;
  auto next = runs_.lower_bound(start);
  if (next != runs_.end() && next->first < end)
    return fail(EUCLEAN, "free space [{}, +{}) overlaps free run [{}, +{})", start, len, next->first, next->second);
  if (next != runs_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second > start)
      return fail(EUCLEAN, "free space [{}, +{}) overlaps free run [{}, +{})", start, len, prev->first, prev->second);
    if (prev->first + prev->second == start) {  // merge left
      start = prev->first;
      runs_.erase(prev);
    }
  }
  if (next != runs_.end() && next->first == end) {  // merge right
    end += next->second;
    runs_.erase(next);
  }
  runs_[start] = end - start;
  free_bytes_ += len;
  return {};
}

Status FreeSpace::remove(uint64_t start, uint64_t len) {
  if (len == 0) return {};
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return fail(EUCLEAN, "range [{}, +{}) is not free", start, len);
  --it;
  uint64_t run_start = it->first, run_end = it->first + it->second;
  if (start + len > run_end || start < run_start) return fail(EUCLEAN, "range [{}, +{}) is not free", start, len);
  runs_.erase(it);
  if (run_start < start) runs_[run_start] = start - run_start;
  if (start + len < run_end) runs_[start + len] = run_end - (start + len);
  free_bytes_ -= len;
  return {};
}

bool FreeSpace::is_free(uint64_t start, uint64_t len) const {
  auto it = runs_.upper_bound(start);
  if (it == runs_.begin()) return false;
  --it;
  return start >= it->first && start + len <= it->first + it->second;
}

std::optional<uint64_t> FreeSpace::find_in(uint64_t from, uint64_t to, uint64_t len, uint64_t align,
                                           uint64_t boundary) const {
  auto it = runs_.upper_bound(from);
  if (it != runs_.begin()) --it;
  for (; it != runs_.end() && it->first < to; ++it) {
    uint64_t run_end = it->first + it->second;
    uint64_t s = std::max(it->first, from);
    // Align relative to the block group start (block groups are sector aligned, so this is also
    // absolute alignment for sector-sized `align`).
    auto align_up = [&](uint64_t v) { return bg_start_ + (v - bg_start_ + align - 1) / align * align; };
    s = align_up(s);
    while (s + len <= run_end) {
      if (boundary == 0) return s;
      uint64_t rel = s - bg_start_;
      uint64_t next_boundary = (rel / boundary + 1) * boundary;
      if (rel + len <= next_boundary) return s;
      s = align_up(bg_start_ + next_boundary);
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> FreeSpace::find(uint64_t len, uint64_t align, uint64_t hint, uint64_t boundary) const {
  if (len == 0 || len > free_bytes_) return std::nullopt;
  if (align == 0) align = 1;
  if (hint < bg_start_ || hint >= bg_end_) hint = bg_start_;
  if (auto s = find_in(hint, bg_end_, len, align, boundary)) return s;
  if (hint > bg_start_) return find_in(bg_start_, hint + len, len, align, boundary);
  return std::nullopt;
}

}  // namespace ubtrfs::alloc
