// FreeSpace: the free byte ranges of one block group, in memory (btrfs free-space-cache.c's
// btrfs_free_space_ctl, without the on-disk v1 cache).
//
// Owns: a set of disjoint, maximal [start, start+len) ranges inside the block group. Adding merges
// with neighbours, so the set is always the maximal runs the free space tree must record
// (FORMAT.md §3.12: adjacent FREE_SPACE_EXTENTs are an error). Removing splits runs.
// Invariants: ranges never overlap, never touch (they would have been merged), never leave the
// block group; free_bytes() is their sum. Adding space that is already free, or removing space that
// is not entirely free, is refused (EUCLEAN): it means double accounting somewhere above.
// Thread safety: none; the owning BlockGroup serializes access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "io/status.h"

namespace ubtrfs::alloc {

class FreeSpace {
 public:
  FreeSpace(uint64_t bg_start, uint64_t bg_length) : bg_start_(bg_start), bg_end_(bg_start + bg_length) {}

  // Marks [start, start+len) free. Errors: EUCLEAN if outside the block group or overlapping free space.
  [[nodiscard]] Status add(uint64_t start, uint64_t len);
  // Marks [start, start+len) used. Errors: EUCLEAN unless the whole range is free.
  [[nodiscard]] Status remove(uint64_t start, uint64_t len);

  // Lowest `align`-aligned start of `len` free bytes at or after `hint` (wrapping to the block
  // group start), such that the range does not cross a multiple of `boundary` counted from the
  // block group start (0: no boundary; tree blocks use 64 KiB, FORMAT.md §2.1).
  std::optional<uint64_t> find(uint64_t len, uint64_t align, uint64_t hint = 0, uint64_t boundary = 0) const;

  bool is_free(uint64_t start, uint64_t len) const;
  uint64_t free_bytes() const { return free_bytes_; }
  size_t extent_count() const { return runs_.size(); }
  // Maximal free runs: start -> length, in address order.
  const std::map<uint64_t, uint64_t>& runs() const { return runs_; }

 private:
  std::optional<uint64_t> find_in(uint64_t from, uint64_t to, uint64_t len, uint64_t align, uint64_t boundary) const;

  uint64_t bg_start_;
  uint64_t bg_end_;
  uint64_t free_bytes_ = 0;
  std::map<uint64_t, uint64_t> runs_;
};

}  // namespace ubtrfs::alloc
