// Delalloc: the dirty file data of one inode that write() accepted but no extent holds yet (btrfs
// "delayed allocation": dirty page-cache pages tagged EXTENT_DELALLOC until writeback allocates
// and writes their extents; KERNEL.md §10).
//
// Owns: whole sectors of file content keyed by their sector-aligned file offset. A sector is
// either absent (the file's extents define it) or present with its complete content: a write that
// covers a sector only partly first has the rest filled from what the file holds (the `fill`
// callback; btrfs reads the page before a partial write, `prepare_uptodate_page`). Bytes of a
// present sector past the file size are zero (truncate and write keep that), so a sector can be
// written to disk as is.
// Entry points: write, overlay (reads), truncate / zero_range (set_size, punch hole), runs + drop
// (the flusher takes contiguous runs, writes them, then drops them), bytes.
// Thread safety: none; the owner (FileData) guards each inode's InodeDelalloc with the inode lock.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

class InodeDelalloc {
 public:
  explicit InodeDelalloc(uint32_t sectorsize) : sectorsize_(sectorsize) {}

  // Fills `sector` (sectorsize bytes) with the current content of the file sector starting at the
  // given offset (zeros past EOF).
  using FillFn = std::function<Status(uint64_t sector_offset, std::span<uint8_t> sector)>;

  // Copies `data` to file offset `off`. Sectors that become present and are not fully covered are
  // filled first. Errors: the fill callback's (nothing is changed for the failing sector).
  [[nodiscard]] Status write(uint64_t off, std::span<const uint8_t> data, const FillFn& fill);
  // Makes the sector holding `off` present (filled) without changing its content.
  [[nodiscard]] Status load_sector(uint64_t off, const FillFn& fill);
  // Copies the present bytes overlapping [off, off + out.size()) into out (absent ones untouched).
  void overlay(uint64_t off, std::span<uint8_t> out) const;
  bool has_sector(uint64_t off) const { return pages_.count(round_down(off)) != 0; }

  // File shrinks or grows to `size`: sectors at or past round_up(size) go; the tail of the
  // sector holding `size` is zeroed.
  void truncate(uint64_t size);
  // Zeroes [start, end): present sectors fully inside are dropped (the caller drops the extents
  // under them), partial ones zeroed.
  void zero_range(uint64_t start, uint64_t end);

  struct Run {
    uint64_t start = 0, len = 0;
  };
  // Maximal runs of contiguous present sectors, in file order.
  std::vector<Run> runs() const;
  // The content of [start, start + len). REQUIRES: every sector of it present, aligned bounds.
  std::vector<uint8_t> copy(uint64_t start, uint64_t len) const;
  // Forgets the sectors of [start, start + len) (written to extents). Aligned bounds.
  void drop(uint64_t start, uint64_t len);
  // First present sector at or after round_down(off), if any.
  std::optional<uint64_t> next_present(uint64_t off) const;

  uint64_t bytes() const { return static_cast<uint64_t>(pages_.size()) * sectorsize_; }
  bool empty() const { return pages_.empty(); }
  uint32_t sectorsize() const { return sectorsize_; }
  // Number of maximal runs (what runs().size() returns), kept up to date on every change: the
  // delalloc reservation counts one outstanding extent per run (btrfs outstanding_extents).
  size_t run_count() const { return runs_; }
  // Sectors of [off, off + len) not present yet (what a write of that range would add).
  uint64_t absent_bytes(uint64_t off, uint64_t len) const;

 private:
  using PageMap = std::map<uint64_t, std::unique_ptr<uint8_t[]>>;
  uint64_t round_down(uint64_t x) const { return x - x % sectorsize_; }
  uint64_t round_up(uint64_t x) const { return round_down(x + sectorsize_ - 1); }
  // Every insertion and removal goes through these two, which keep runs_ exact.
  PageMap::iterator insert_page(uint64_t s, std::unique_ptr<uint8_t[]> page);
  PageMap::iterator erase_page(PageMap::iterator it);

  uint32_t sectorsize_;
  PageMap pages_;  // sector offset -> sectorsize bytes
  size_t runs_ = 0;
};

}  // namespace ubtrfs::fs
