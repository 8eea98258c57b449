// FileData: the contents of regular files — delalloc buffers, the flusher that turns them into data
// extents, reads through delalloc and extents with checksum verification, truncate, fallocate,
// hole punching, SEEK_DATA/SEEK_HOLE (btrfs inode.c `cow_file_range` / `cow_file_range_inline`,
// file.c `btrfs_fallocate` / `btrfs_punch_hole` / `find_desired_extent`, `btrfs_truncate`).
// The code: file_data.cpp (reservations, reads, size changes, eviction), file_data_write.cpp
// (write()), file_data_flush.cpp (the flusher), file_compress.cpp, file_nocow.cpp,
// file_fallocate.cpp (fallocate, punch, SEEK_DATA/SEEK_HOLE), file_clone.cpp.
//
// Lifecycle of a write (btrfs buffered write + writeback, KERNEL.md §10): write() reserves, then
// copies the bytes into the inode's InodeDelalloc and updates the INODE_ITEM (size, mtime, ctime).
// A flush (flush_inode for fsync, flush_all as the commit's pre-commit flusher, flush_some for the
// reclaim thread, or the writers themselves under the dirty limits below) takes each run of
// dirty sectors and either writes the whole file as one inline extent (offset 0, size <=
// kMaxInline, no other extent: the kernel's can_cow_file_range_inline with max_inline=2048) or
// allocates data extents, writes them to every stripe copy, drops the old extents of the range,
// inserts the REG items, their data refs and the per-sector checksums, and adjusts nbytes (the
// data itself goes through the device's write-behind queue, io/write_behind.h: the flusher hands
// each filled buffer over and goes on; every read and the commit's flush see it written). When
// the inode's data may be compressed (mount option, flag or property: fs/compress_policy.h) the
// runs go through file_compress.cpp instead: compressed extents of at most 128 KiB, compressed
// inline extents, plain extents where compression does not pay. The commit then makes it durable.
//
// Reservations (the ENOSPC seed, "Delayed allocation"; KERNEL.md §10): every sector that becomes
// dirty holds sectorsize bytes of DATA may_use from the moment write() (or a truncate/punch that
// must rewrite a partial sector) accepted it until the flusher gives it an extent (the allocation
// takes it out of may_use) or it is dropped (truncate, punch, evict give it back) — so the flusher
// always finds room for what was acknowledged and a full device is ENOSPC at write(). A write that
// only partly fits is a short write of what fits. Each inode with dirty sectors also holds a
// delalloc metadata reserve sized as the kernel sizes it: insert_size(outstanding extents + csum
// leaves) + metadata_size(1) (the inode update) + delayed_ref_bytes(outstanding extents); the flush
// charges its tree blocks to it (a join handle pointed at it), so flushing never waits on a ticket.
// The reserves are grown before anything changes (a failure changes nothing) and shrunk to the
// exact target after every change (settle()). A write waits for space with its inode lock
// dropped (WriteReservation::wait_unlocked): before the lock it takes its data (flushing) and only
// the metadata that is there without flushing, under the lock it computes its exact need, and if
// that needs flushing it gives the lock up, waits, and tries again — so waiting writers never
// hold the locks the flusher needs, and a write that appends to a dirty run (needing no
// metadata) never waits for metadata at all. Short of data under the lock, it first writes its
// own delalloc out (its overwrites become pinned extents the next commit frees) and plans the
// write again, since what was dirty is on disk now.
//
// Errors (btrfs_abort_transaction): a failure after a handle changed a tree (drop_extents, extent /
// csum / ref insertion, inode update, hole items) aborts the transaction through the handle, so
// the half-done change is never committed and the filesystem turns read-only; failures before the
// first change (reading the inode, reserving or writing data, filling delalloc) just return. A
// sector of a checksummed extent without a checksum reads as EIO (the kernel's "csum hole").
//
// Memory (issue 8: resident memory stays under cache_mb + 64 MiB whatever the workload): delalloc
// is the page cache of a FUSE daemon, so it is bounded the way the kernel bounds dirty pages
// (mm/page-writeback.c balance_dirty_pages, dirty_background_ratio / dirty_ratio), with limits
// scaled to the tree cache budget instead of RAM (dirty_limits()). A writer whose own inode holds
// more than the background threshold writes it out before returning (a streaming writer makes
// extents of about that size); a writer that finds the global total above the limit, once it has
// dropped its inode lock, writes back the largest dirty inodes until the total is under the
// background threshold, waiting (never failing) while the inodes it needs are busy
// (balance_dirty_pages). A flush copies data through at most kFlushIoChunk bytes at a time,
// whatever the extent size. So delalloc never exceeds the limit by more than the writes in flight.
//
// Invariants: a sector is either in delalloc or defined by the extents; delalloc sectors lie
// below round_up(i_size); INODE_ITEM nbytes = sum over the extents (file_extent.h).
// Locking: every method REQUIRES the caller holds the inode's InodeLocks lock (exclusive to modify,
// shared for read / seek_data_hole / pending_bytes may hold either or none) and no TransHandle;
// flush_all / flush_some take the locks themselves and so REQUIRE the caller holds none. They never
// wait for a lock some thread holds unless told to (unmount): a ticket waiter may hold one, and the
// reclaim thread and the commits it triggers must not wait for it. mu_ guards only the map of
// per-inode buffers; a buffer's content is guarded by its inode's lock, and a buffer is erased only
// under that lock held exclusively.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>
#include <memory>
#include <mutex>
#include <span>

#include "alloc/block_rsv.h"
#include "fs/compress_policy.h"
#include "fs/delalloc.h"
#include "fs/file_extent.h"
#include "fs/fs_info.h"
#include "fs/inode.h"
#include "fs/transaction.h"
#include "io/status.h"

namespace ubtrfs::fs {

// Sector arithmetic of the file data paths (file_data, file_clone, file_compress, file_fallocate,
// file_nocow) and the log tree.
inline constexpr uint64_t round_down(uint64_t x, uint64_t a) { return x - x % a; }
inline constexpr uint64_t round_up(uint64_t x, uint64_t a) { return round_down(x + a - 1, a); }
// Largest file size btrfs accepts (MAX_LFS_FILESIZE on 64-bit).
inline constexpr uint64_t kMaxFileSize = static_cast<uint64_t>(INT64_MAX);

// btrfs max_inline default (BTRFS_DEFAULT_MAX_INLINE).
inline constexpr uint64_t kMaxInline = 2048;
// Dirty-data limits derived from the tree cache budget (the kernel's dirty_ratio = 20 and
// dirty_background_ratio = 10 of memory, here 1/8 and 1/16 of the cache budget), clamped so that
// a tiny cache still makes extents of a useful size and a large one leaves the daemon's 64 MiB of
// headroom mostly free.
inline constexpr uint64_t kDirtyLimitMin = 8ull << 20;
inline constexpr uint64_t kDirtyLimitMax = 32ull << 20;
inline constexpr uint64_t kDirtyLimitCacheDivisor = 8;
struct DirtyLimits {
  uint64_t background = 0;  // an inode above this is written out by its own writer
  uint64_t limit = 0;       // above this in total, writers write back and wait (balance_dirty_pages)
};
DirtyLimits dirty_limits(uint64_t cache_budget_bytes);
// A flush moves data to disk (and through the checksummer) through buffers of at most this size.
inline constexpr uint64_t kFlushIoChunk = 1ull << 20;
// Truncation and eviction drop at most this many extent items per handle, reserving kTruncateItems
// each (btrfs_truncate reserves 2 items plus a temp reserve and loops).
inline constexpr size_t kTruncateBatch = 32;
inline constexpr unsigned kTruncateItems = 4;

// The extent items of [start, end) of `id` changed in transaction `transid`: tells the tree log
// (fs/tree_log.h), if the filesystem has one, so the inode's next log covers the range. Every
// handle that changes a file's extents (flush, truncate, grow, punch, fallocate, NOCOW) calls it.
void note_extent_change(FsInfo& fs, InodeId id, uint64_t transid, uint64_t start, uint64_t end);

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
  // Delalloc bytes not on disk yet that nbytes does not count yet (st_blocks): not those written
  // into preallocated space in place.
  uint64_t pending_bytes(InodeId id);
  // Every dirty inode to disk (takes each inode's lock). `wait_for_locks`: wait for busy inodes
  // (unmount, where no operation runs); otherwise an inode whose lock stays busy for a moment is
  // left for later. REQUIRES: no inode lock, no handle.
  [[nodiscard]] Status flush_all(bool wait_for_locks);
  // The reclaim thread's delalloc flush: flushes inodes, largest first, until they gave back at
  // least `meta_target` bytes (released or granted to tickets meanwhile) or nothing is left; busy
  // inodes are passed over, then tried with kFlushLockPatience if the others were not enough.
  // Returns the bytes given back. REQUIRES: no inode lock, no handle.
  // `after_each`: run after every inode flushed (the reclaim thread runs the delayed refs the
  // flush funded there), counted in what the flush gave back.
  [[nodiscard]] Result<uint64_t> flush_some(uint64_t meta_target, const std::function<Status()>& after_each = {});
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
  // Space a write of `len` bytes may need at most, reserved before the inode lock is taken
  // (btrfs_buffered_write reserves before it locks pages: writeback of this very inode can then
  // run while the writer waits for space). Whatever the write does not take is given back when
  // this goes away.
  class WriteReservation {
   public:
    explicit WriteReservation(FsInfo& fs);
    ~WriteReservation();
    WriteReservation(const WriteReservation&) = delete;
    WriteReservation& operator=(const WriteReservation&) = delete;
    uint64_t data = 0;  // DATA may_use bytes
    alloc::BlockRsv meta;  // METADATA: the delalloc reserve's growth and the inode update
    // Set by a caller that can drop the inode lock and wait: write() then never waits for space
    // holding the lock; when `meta` or `data` falls short of the exact need and the space cannot
    // be had without flushing, it changes nothing (but may have written its own delalloc out),
    // sets `meta_shortfall` / `data_shortfall` to the missing bytes and fails with EAGAIN. The
    // caller reserves them with no lock held and calls write() again.
    bool wait_unlocked = false;
    uint64_t meta_shortfall = 0;
    uint64_t data_shortfall = 0;
    // A flushing wait for data without the lock ended in ENOSPC (set by reserve_write and by the
    // caller): write() then takes only what is free, or writes short, and waits no more.
    bool data_exhausted = false;

   private:
    FsInfo& fs_;
  };
  // Reserves for a write of `len` bytes at `off`: its DATA (flushing and waiting as needed) and,
  // only when it is there without flushing, the most METADATA it can need. Holds no lock: REQUIRES
  // the caller holds no inode lock and no handle. ENOSPC is not an error here: `out` stays short
  // and write() reserves exactly what it needs under the lock (WriteReservation::wait_unlocked).
  // Why metadata is not waited for here: the most a 4 KiB write can need (a new run with its
  // checksum leaf, their delayed refs, the inode update: 2.25 MiB with 16 KiB nodes) is what a
  // write needs only when it starts a new run; an append to a dirty run needs nothing. Waiting for
  // the worst case made every write of 30+ concurrent writers queue a ticket on a small filesystem
  // (scripts/bench-many-writers.sh), with the space held by in-flight worst cases, not by data.
  // Errors: EINTR (interrupted wait), EROFS.
  [[nodiscard]] Status reserve_write(WriteReservation& out, uint64_t off, uint64_t len);
  // REQUIRES: exclusive lock. Errors: EFBIG past the maximum file size, EROFS, EPERM for an
  // immutable file or a write below EOF into an append-only one (fs/inode_flags.h: the kernel never
  // sees these flags on a FUSE inode), tree errors.
  // `pre`: a reservation taken by reserve_write before the lock, drawn from first.
  // `sync_inode`: set when the inode has BTRFS_INODE_SYNC (chattr +S): the caller must fsync.
  // `keep_times`: leave mtime/ctime alone — the kernel's writeback cache owns them and sends them
  // with SETATTR; its page-cache writes arrive later than the write() calls they carry.
  [[nodiscard]] Result<size_t> write(InodeId id, uint64_t off, std::span<const uint8_t> data,
                                     WriteReservation* pre = nullptr, bool* sync_inode = nullptr,
                                     bool keep_times = false);
  // mode 0 / KEEP_SIZE: PREALLOC extents over holes; PUNCH_HOLE|KEEP_SIZE: drop and zero.
  // REQUIRES: exclusive lock. Errors: EOPNOTSUPP for other modes, ENOSPC.
  [[nodiscard]] Status fallocate(InodeId id, int mode, uint64_t off, uint64_t len);
  // SEEK_DATA / SEEK_HOLE. Unwritten prealloc counts as a hole (btrfs find_desired_extent since
  // 6.1). Errors: ENXIO at or past EOF / no data after off. REQUIRES: shared lock.
  [[nodiscard]] Result<uint64_t> seek_data_hole(InodeId id, uint64_t off, int whence);
  // Reflink for copy_file_range (file_clone.cpp; btrfs_clone_files / btrfs_clone): makes
  // [dst_off, +n) of `dst` refer to the data extents of [src_off, +n) of `src` and returns n, the
  // bytes shared: `len` clamped to src's EOF and rounded down to the sector size, or up when the
  // range ends at src's EOF and reaches dst's EOF (the kernel's remap rule). 0 when nothing can be
  // shared (inline data, NODATASUM differing): the caller copies instead. A failure after some
  // pieces were shared returns what was shared. REQUIRES: both inodes' locks held exclusively,
  // src_off and dst_off sector-aligned, the ranges disjoint when src == dst. Errors: EINVAL (not
  // regular files), ENOSPC (metadata for the first piece), EROFS, tree errors (aborted).
  [[nodiscard]] Result<uint64_t> clone_range(InodeId src, uint64_t src_off, InodeId dst, uint64_t dst_off,
                                             uint64_t len);

  // The mount's compress / compress-force option (fs/compress_policy.h; fs/file_compress.cpp).
  // REQUIRES: called at mount, before any write.
  void set_compress_options(const CompressOptions& o) { compress_ = o; }
  // With the FUSE writeback cache the kernel owns regular files' mtime and ctime: it stamps them
  // itself (file_update_time), shows only its own, and sends them with SETATTR when it writes the
  // inode back — possibly before the request whose own stamp would follow (seen under ASan: a
  // fallocate's times 5 ms after the kernel's, on disk after the kernel had flushed its own). The
  // data operations (write, punch, preallocate, clone, size change) then leave the times alone.
  void set_kernel_owns_file_times(bool on) { kernel_owns_times_.store(on); }
  bool stamps_file_times() const { return !kernel_owns_times_.load(std::memory_order_relaxed); }
  const CompressOptions& compress_options() const { return compress_; }

  uint64_t total_delalloc() const { return total_bytes_.load(std::memory_order_relaxed); }
  // Metadata bytes the dirty inodes' delalloc reserves hold (btrfs inode->block_rsv): given back as
  // their data is written out. statfs leaves them out of "used" on mixed block groups.
  uint64_t delalloc_metadata_reserved();
  // Inodes holding delalloc state (dirty sectors, or a reserve not yet given back).
  size_t delalloc_inodes();
  DirtyLimits limits() const;
  // btrfs_balance_dirty_pages / balance_dirty_pages: called by a writer after write() with its
  // inode lock dropped. While delalloc is above limits().limit, writes back the largest dirty
  // inodes (skipping busy ones) down to limits().background, sleeping briefly when nothing could
  // be written. Never fails the write it follows: a flush error has already aborted the transaction
  // (the filesystem is read-only) and is returned for logging only. REQUIRES: no inode lock, no
  // handle.
  [[nodiscard]] Status balance_dirty_pages();

 private:
  struct Dirty {
    Dirty(uint32_t sectorsize, SectorPool* pool, alloc::SpaceInfo* meta)
        : data(sectorsize, pool), rsv(alloc::RsvType::kDelalloc, meta) {}
    InodeDelalloc data;                // GUARDED_BY(inode lock)
    std::atomic<uint64_t> bytes{0};    // mirror of data.bytes(), readable without the lock
    // The dirty bytes that will add to nbytes when flushed, readable without the lock (btrfs
    // new_delalloc_bytes, st_blocks): data.bytes() less the nocow sectors, whose PREALLOC extent
    // nbytes counts already.
    std::atomic<uint64_t> new_bytes{0};
    alloc::BlockRsv rsv;               // btrfs inode->block_rsv: the delalloc metadata reserve
    uint64_t data_reserved = 0;        // GUARDED_BY(inode lock): DATA may_use held for dirty sectors
    bool nodatasum = false;            // GUARDED_BY(inode lock): no checksum leaves to reserve
    // GUARDED_BY(inode lock): the largest extent the flush makes of these sectors, which sizes the
    // outstanding-extent count of the reserve: kMaxUncompressed when they may be compressed.
    uint64_t max_extent = alloc::kMaxDataExtent;
    // GUARDED_BY(inode lock): dirty sectors over exclusive PREALLOC extents, written in place
    // (file_nocow.cpp); they hold no data reservation.
    std::set<uint64_t> nocow;
    // GUARDED_BY(inode lock): an operation holding a reference across a flush of its own inode
    // (write) keeps the buffer from being erased when it empties.
    unsigned users = 0;
  };
  // Data reference changes go to the extent allocator (delayed refs).
  class AllocatorRefs final : public DataRefSink {
   public:
    explicit AllocatorRefs(FsInfo& fs) : fs_(fs) {}
    Status add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root, uint64_t ino, uint64_t offset,
                        int delta, bool new_alloc) override {
      return fs_.allocator().add_data_ref(h, bytenr, len, root, ino, offset, delta, new_alloc);
    }

   private:
    FsInfo& fs_;
  };

  Result<TreeRoot*> root_of(InodeId id);
  Dirty* find_dirty(InodeId id);
  Dirty& dirty_of(InodeId id);
  // dirty_of, with what the inode item decides about its future extents applied: no checksums
  // (NODATASUM) and the extent cap (kMaxUncompressed when the sectors may be compressed). For an
  // operation about to dirty sectors. REQUIRES: the inode's lock held exclusively.
  Dirty& dirty_for_change(InodeId id, const InodeItem& ii);
  void account(InodeId id, Dirty& d);  // refreshes byte counters; erases an empty buffer
  // After any change of d: releases DATA may_use beyond the dirty sectors (dropped unwritten),
  // shrinks the delalloc reserve to its target, refreshes counters (account). REQUIRES: exclusive.
  void settle(InodeId id, Dirty& d);
  // The delalloc reserve's target for `extents` outstanding extents and `bytes` dirty bytes.
  uint64_t rsv_target(uint64_t extents, uint64_t bytes, bool nodatasum) const;
  uint64_t rsv_target(const Dirty& d) const;
  // Reserves `bytes` of DATA for sectors about to become dirty (btrfs_check_data_free_space) and
  // credits them to d. Errors: ENOSPC, EINTR.
  [[nodiscard]] Status reserve_data(Dirty& d, uint64_t bytes, alloc::FlushMode mode);
  // Flushes one inode if its lock can be had without waiting long. Returns whether it was flushed.
  [[nodiscard]] Result<bool> try_flush(InodeId id, bool wait_for_lock,
                                       std::chrono::milliseconds patience = kFlushLockPatience);
  // Flushes `ids` in their order, the idle ones first (no wait for a lock) and the busy ones after,
  // each tried for kFlushLockPatience, until `enough()`. `flush` is try_flush(id, false, patience)
  // or a wrapper of it; it returns whether the inode was flushed.
  using FlushOne = std::function<Result<bool>(InodeId, std::chrono::milliseconds)>;
  [[nodiscard]] Status flush_idle_first(const std::vector<InodeId>& ids, const FlushOne& flush,
                                        const std::function<bool()>& enough = {});
  // How long a flusher that must not wait for a busy inode tries its lock (it is often held only
  // for the length of one write).
  static constexpr std::chrono::milliseconds kFlushLockPatience{20};
  // Inodes with delalloc, largest first.
  std::vector<InodeId> largest_dirty();
  // ---- writes into preallocated space (file_nocow.cpp) ----
  // Sector ranges of [off, off + len) over PREALLOC extents this inode alone references.
  [[nodiscard]] Result<std::vector<std::pair<uint64_t, uint64_t>>> nocow_ranges(InodeId id, TreeRoot& root,
                                                                               const InodeItem& ii, uint64_t off,
                                                                               uint64_t len);
  [[nodiscard]] Result<bool> extent_exclusive(const FileExtent& e, uint64_t root_id, uint64_t ino);
  // Writes dirty nocow sectors [start, +len) into their PREALLOC extents and converts those items.
  [[nodiscard]] Status flush_nocow_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len,
                                       bool nodatasum);

  // Current content of [off, off + out.size()) from extents + delalloc, not clamped to i_size.
  [[nodiscard]] Status read_raw(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off, std::span<uint8_t> out);
  // Extents only (what delalloc would be filled from).
  [[nodiscard]] Status read_extents(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off,
                                    std::span<uint8_t> out);
  // Reads a disk range and verifies its data checksums (all mirrors tried). REQUIRES: aligned.
  [[nodiscard]] Status read_verified(InodeId id, uint64_t file_off, uint64_t logical, std::span<uint8_t> out,
                                     bool verify);
  [[nodiscard]] Status write_disk(uint64_t logical, std::span<const uint8_t> data);
  // write_disk through the write-behind queue: returns once queued. REQUIRES: fs_.write_behind().
  [[nodiscard]] Status write_disk_behind(uint64_t logical, std::vector<uint8_t>&& data);
  // Makes the sector holding `off` a delalloc sector filled from the extents, zeroed past i_size.
  [[nodiscard]] Status load_sector(InodeId id, TreeRoot& root, const InodeItem& ii, Dirty& d, uint64_t off);
  [[nodiscard]] Result<bool> sector_has_data(InodeId id, TreeRoot& root, uint64_t sector_off);
  [[nodiscard]] Result<bool> has_inline_extent(TreeRoot& root, uint64_t ino);
  [[nodiscard]] Status flush_locked(InodeId id);
  [[nodiscard]] Status flush_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size);
  [[nodiscard]] Status flush_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len, bool nodatasum);
  // ---- compression on write (file_compress.cpp; btrfs compress_file_range) ----
  // What the inode's flags, its btrfs.compression property and the mount option decide.
  [[nodiscard]] Result<InodeCompression> compression_of(TreeRoot& root, uint64_t ino, const InodeItem& ii);
  // The whole file (size <= sectorsize, one dirty sector at 0, no other extent) as a compressed
  // inline extent when the heuristic and the compressor agree. Returns whether it made one; when
  // compression did not pay, `comp` is switched off (and NOCOMPRESS set where the kernel sets it).
  [[nodiscard]] Result<bool> flush_compressed_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size,
                                                     InodeCompression& comp);
  // A cow run in pieces of at most kMaxUncompressed: compressed extents where compression pays,
  // plain ones (flush_run) elsewhere.
  [[nodiscard]] Status flush_compressed_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len,
                                            uint64_t size, InodeCompression& comp);
  // Returns false (nothing changed) when no contiguous extent of the compressed size is free.
  [[nodiscard]] Result<bool> write_compressed_extent(InodeId id, TreeRoot& root, Dirty& d, uint64_t file_off,
                                                     uint64_t len, uint8_t type, std::span<const uint8_t> compressed);
  // Compression did not pay: BTRFS_INODE_NOCOMPRESS unless compress-force or a property says
  // otherwise (compress_file_range's mark_incompressible); `comp` is switched off either way.
  [[nodiscard]] Status mark_incompressible(InodeId id, TreeRoot& root, Dirty& d, InodeCompression& comp);
  // btrfs_set_fs_incompat(COMPRESS_LZO / COMPRESS_ZSTD) when the first extent of that type is
  // written. REQUIRES: a handle (the committer waits for it, so no commit reads the superblock).
  void note_compression_feature(uint8_t type);
  // Without NO_HOLES: explicit hole items for every gap of [0, round_up(size)).
  [[nodiscard]] Status fill_holes(TransHandle& th, TreeRoot& root, uint64_t ino, uint64_t size);
  [[nodiscard]] Status punch_hole(InodeId id, uint64_t off, uint64_t len);
  // Drops every extent of the inode at or past `from`, from the end backwards in batches, one
  // handle each (reserved with `mode`); `first` also runs in the first handle, before the inode
  // item (whose nbytes is kept right) is written.
  [[nodiscard]] Status drop_tail_batched(InodeId id, TreeRoot& root, uint64_t from, alloc::FlushMode mode,
                                         const std::function<Status(TransHandle&, InodeItem&)>& first);
  [[nodiscard]] Status preallocate(InodeId id, uint64_t off, uint64_t len, bool keep_size);

  FsInfo& fs_;
  const InodeNumbers& numbers_;
  InodeLocks& locks_;
  std::unique_ptr<AllocatorRefs> refs_;
  // Every inode's sector buffers (delalloc.h); keeps at most the dirty limit's worth free. Declared
  // before dirty_, which gives its buffers back to it when destroyed.
  SectorPool pages_;
  std::mutex mu_;
  std::map<InodeId, std::unique_ptr<Dirty>> dirty_;  // GUARDED_BY(mu_) (the map, not the buffers)
  std::atomic<uint64_t> total_bytes_{0};
  CompressOptions compress_;  // set once at mount
  std::atomic<bool> kernel_owns_times_{false};
};

}  // namespace ubtrfs::fs
