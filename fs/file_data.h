// FileData: the contents of regular files — delalloc buffers, the flusher that turns them into data
// extents, reads through delalloc and extents with checksum verification, truncate, fallocate,
// hole punching, SEEK_DATA/SEEK_HOLE (btrfs inode.c `cow_file_range` / `cow_file_range_inline`,
// file.c `btrfs_fallocate` / `btrfs_punch_hole` / `find_desired_extent`, `btrfs_truncate`).
//
// Lifecycle of a write (btrfs buffered write + writeback, KERNEL.md §10): write() copies the bytes
// into the inode's InodeDelalloc and updates the INODE_ITEM (size, mtime, ctime) in a short handle.
// A flush (flush_inode for fsync, flush_all as the commit's pre-commit flusher, or the writer itself
// when delalloc passes kDelallocFlushBytes) takes each run of dirty sectors and either writes the
// whole file as one inline extent (offset 0, size <= kMaxInline, no other extent: the kernel's
// can_cow_file_range_inline with max_inline=2048) or reserves data extents, writes them to every
// stripe copy, drops the old extents of the range, inserts the REG items, their data refs and the
// per-sector checksums, and adjusts nbytes. The commit then makes it durable.
//
// Errors (btrfs_abort_transaction): a failure after a handle changed a tree (drop_extents, extent /
// csum / ref insertion, inode update, hole items) aborts the transaction through the handle, so
// the half-done change is never committed and the filesystem turns read-only; failures before the
// first change (reading the inode, reserving or writing data, filling delalloc) just return. A
// sector of a checksummed extent without a checksum reads as EIO (the kernel's "csum hole").
//
// Invariants: a sector is either in delalloc or defined by the extents; delalloc sectors lie
// below round_up(i_size); INODE_ITEM nbytes = sum over the extents (file_extent.h).
// Locking: every method REQUIRES the caller holds the inode's InodeLocks lock (exclusive to modify,
// shared for read / seek_data_hole / pending_bytes may hold either or none) and no TransHandle;
// flush_all takes the locks itself and so REQUIRES the caller holds none. mu_ guards only the map
// of per-inode buffers; a buffer's content is guarded by its inode's lock, and a buffer is erased
// only under that lock held exclusively.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>

#include "fs/delalloc.h"
#include "fs/file_extent.h"
#include "fs/fs_info.h"
#include "fs/inode.h"
#include "io/status.h"

namespace ubtrfs::fs {

// btrfs max_inline default (BTRFS_DEFAULT_MAX_INLINE).
inline constexpr uint64_t kMaxInline = 2048;
// Delalloc above this makes a writer flush its own inode and ask for a commit.
inline constexpr uint64_t kDelallocFlushBytes = 64ull << 20;

class FileData {
 public:
  FileData(FsInfo& fs, const InodeNumbers& numbers, InodeLocks& locks);
  ~FileData();
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;

  // ---- the contract of fs_contract.md ------------------------------------------------------------
  // Truncate down/up: drops delalloc and extents past the new size, zeroes the tail of the last
  // sector, updates size, nbytes, mtime, ctime. REQUIRES: exclusive lock.
  [[nodiscard]] Status set_size(InodeId id, uint64_t new_size);
  // Drops all delalloc and extents of an inode being deleted. REQUIRES: exclusive lock.
  [[nodiscard]] Status evict(InodeId id);
  // Delalloc bytes not on disk yet (st_blocks).
  uint64_t pending_bytes(InodeId id);
  // Every dirty inode to disk (takes each inode's lock). REQUIRES: no inode lock, no handle.
  [[nodiscard]] Status flush_all();
  // One inode to disk. REQUIRES: exclusive lock.
  [[nodiscard]] Status flush_inode(InodeId id);
  // The commit's csum deleter: a data extent's last reference went away (or its allocation was
  // cancelled), its checksums go too (btrfs __btrfs_free_extent -> btrfs_del_csums). Runs in the
  // committer with its handle.
  [[nodiscard]] Status delete_csums(TreeHandle& h, uint64_t bytenr, uint64_t len);

  // ---- file contents (filesystem_data.cpp) -------------------------------------------------------
  // Bytes at [off, off + out.size()) clamped to i_size. Errors: EIO on a checksum mismatch (logged
  // with inode, offset, bytenr, expected and found csum) or a read failure. REQUIRES: shared lock.
  [[nodiscard]] Result<size_t> read(InodeId id, uint64_t off, std::span<uint8_t> out);
  // REQUIRES: exclusive lock. Errors: EFBIG past the maximum file size, EROFS, tree errors.
  [[nodiscard]] Result<size_t> write(InodeId id, uint64_t off, std::span<const uint8_t> data);
  // mode 0 / KEEP_SIZE: PREALLOC extents over holes; PUNCH_HOLE|KEEP_SIZE: drop and zero.
  // REQUIRES: exclusive lock. Errors: EOPNOTSUPP for other modes, ENOSPC.
  [[nodiscard]] Status fallocate(InodeId id, int mode, uint64_t off, uint64_t len);
  // SEEK_DATA / SEEK_HOLE. Unwritten prealloc counts as a hole (btrfs find_desired_extent since
  // 6.1). Errors: ENXIO at or past EOF / no data after off. REQUIRES: shared lock.
  [[nodiscard]] Result<uint64_t> seek_data_hole(InodeId id, uint64_t off, int whence);

  uint64_t total_delalloc() const { return total_bytes_.load(std::memory_order_relaxed); }

 private:
  struct Dirty {
    explicit Dirty(uint32_t sectorsize) : data(sectorsize) {}
    InodeDelalloc data;                // GUARDED_BY(inode lock)
    std::atomic<uint64_t> bytes{0};    // mirror of data.bytes(), readable without the lock
  };
  class AllocatorRefs;

  Result<TreeRoot*> root_of(InodeId id);
  Dirty* find_dirty(InodeId id);
  Dirty& dirty_of(InodeId id);
  void account(InodeId id, Dirty& d);  // refreshes byte counters; erases an empty buffer

  // Current content of [off, off + out.size()) from extents + delalloc, not clamped to i_size.
  [[nodiscard]] Status read_raw(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off, std::span<uint8_t> out);
  // Extents only (what delalloc would be filled from).
  [[nodiscard]] Status read_extents(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off,
                                    std::span<uint8_t> out);
  // Reads a disk range and verifies its data checksums (all mirrors tried). REQUIRES: aligned.
  [[nodiscard]] Status read_verified(InodeId id, uint64_t file_off, uint64_t logical, std::span<uint8_t> out,
                                     bool verify);
  [[nodiscard]] Status write_disk(uint64_t logical, std::span<const uint8_t> data);
  // Makes the sector holding `off` a delalloc sector filled from the extents, zeroed past i_size.
  [[nodiscard]] Status load_sector(InodeId id, TreeRoot& root, const InodeItem& ii, Dirty& d, uint64_t off);
  [[nodiscard]] Result<bool> sector_has_data(InodeId id, TreeRoot& root, uint64_t sector_off);
  [[nodiscard]] Result<bool> has_inline_extent(TreeRoot& root, uint64_t ino);
  [[nodiscard]] Status flush_locked(InodeId id);
  [[nodiscard]] Status flush_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size);
  [[nodiscard]] Status flush_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len, bool nodatasum);
  // Without NO_HOLES: explicit hole items for every gap of [0, round_up(size)).
  [[nodiscard]] Status fill_holes(TransHandle& th, TreeRoot& root, uint64_t ino, uint64_t size);
  [[nodiscard]] Status punch_hole(InodeId id, uint64_t off, uint64_t len);
  [[nodiscard]] Status preallocate(InodeId id, uint64_t off, uint64_t len, bool keep_size);

  FsInfo& fs_;
  const InodeNumbers& numbers_;
  InodeLocks& locks_;
  std::unique_ptr<AllocatorRefs> refs_;
  std::mutex mu_;
  std::map<InodeId, std::unique_ptr<Dirty>> dirty_;  // GUARDED_BY(mu_) (the map, not the buffers)
  std::atomic<uint64_t> total_bytes_{0};
};

}  // namespace ubtrfs::fs
