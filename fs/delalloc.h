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
//
// Sector buffers come from a SectorPool shared by every inode of a filesystem when one is given:
// the kernel's dirty pages come from one page allocator, not from per-CPU heaps that keep what was
// freed in them. With malloc, every FUSE worker thread writing data grows its own arena by up to
// the dirty limit and keeps it (measured: 8 writers, cache_mb=16, VmHWM 51 MB against 28 MB with a
// single arena); a shared free list reuses the same buffers whichever thread writes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

// A free list of sector-sized buffers. get() reuses a free buffer or allocates one; put() keeps a
// buffer for reuse while fewer than max_free_bytes are kept, else frees it. So the buffers that
// exist never exceed the most ever in use at once. Thread safety: internally locked (mu_ is a leaf).
class SectorPool {
 public:
  SectorPool(uint32_t sectorsize, uint64_t max_free_bytes);
  ~SectorPool();
  SectorPool(const SectorPool&) = delete;
  SectorPool& operator=(const SectorPool&) = delete;
  // A buffer of sectorsize bytes, content undefined.
  uint8_t* get();
  void put(uint8_t* sector);
  uint32_t sectorsize() const { return sectorsize_; }
  uint64_t free_bytes() const;
  uint64_t allocated_bytes() const;  // buffers that exist, free or in use

 private:
  const uint32_t sectorsize_;
  const size_t max_free_;
  mutable std::mutex mu_;
  std::vector<uint8_t*> free_;  // GUARDED_BY(mu_)
  size_t allocated_ = 0;        // GUARDED_BY(mu_)
};

class InodeDelalloc {
 public:
  // `pool`: where sector buffers come from and go back to (must outlive this); nullptr: new/delete.
  explicit InodeDelalloc(uint32_t sectorsize, SectorPool* pool = nullptr) : sectorsize_(sectorsize), pool_(pool) {}

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
  struct SectorDeleter {
    SectorPool* pool = nullptr;
    void operator()(uint8_t* p) const {
      if (pool)
        pool->put(p);
      else
        delete[] p;
    }
  };
  using Page = std::unique_ptr<uint8_t[], SectorDeleter>;
  using PageMap = std::map<uint64_t, Page>;
  uint64_t round_down(uint64_t x) const { return x - x % sectorsize_; }
  uint64_t round_up(uint64_t x) const { return round_down(x + sectorsize_ - 1); }
  // A zeroed sector buffer.
  Page new_page() const;
  // Every insertion and removal goes through these two, which keep runs_ exact.
  PageMap::iterator insert_page(uint64_t s, Page page);
  PageMap::iterator erase_page(PageMap::iterator it);

  uint32_t sectorsize_;
  SectorPool* pool_;
  PageMap pages_;  // sector offset -> sectorsize bytes
  size_t runs_ = 0;
};

}  // namespace ubtrfs::fs
