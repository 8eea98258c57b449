// Filesystem: the file-contents operations (btrfs file.c through the VFS). Each method turns the
// FUSE inode number into an InodeId, takes the inode's lock (shared to read, exclusive to modify;
// copy_file_range copies unaligned parts taking the two inodes' locks one at a time, and shares
// aligned ranges (FileData::clone_range) holding both, taken in InodeId order) and calls FileData.
// write() throttles its caller on the dirty-data limit once the lock is dropped (file_data.h).
// fsync writes the inode's delalloc and logs the inode (fs/tree_log.h) under its lock; when the log
// cannot serve it, it drops the lock and commits (a commit must never be started with an inode lock
// held: its delalloc flusher takes inode locks).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/inode_flags.h"
#include "fs/transaction.h"
#include "fs/tree_log.h"

namespace ubtrfs::fs {

namespace {
// copy_file_range copies what it cannot share through a buffer of this size.
constexpr size_t kCopyChunk = 1u << 20;
// One copy_file_range answers at most this much: the FUSE reply's count (fuse_write_out.size) is
// 32 bits. Older kernels forward any length and would read a larger answer truncated; newer ones
// cap the request below 4 GiB themselves. A short answer is correct: the caller loops.
constexpr size_t kMaxCopyLen = 0xFFFFF000u;
// A write whose metadata is short waits for it with its inode lock dropped at most this many times
// before it waits holding the lock (other writers of the same file keep changing what it needs).
constexpr int kWriteAttemptsUnlocked = 4;
}  // namespace

Result<size_t> Filesystem::read(uint64_t ino, uint64_t offset, std::span<uint8_t> out, bool update_atime) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("read"));
  if (unmounted_) return fail(EIO, "read of inode {} after unmount", ino);
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  InodeLocks::Guard g = locks_.lock_shared(id);
  auto r = data_->read(id, offset, out);
  if (r && update_atime) touch_atime(id, false);  // file_accessed() after generic_file_read_iter
  return r;
}

Result<size_t> Filesystem::write(uint64_t ino, uint64_t offset, std::span<const uint8_t> data, uint64_t* pool,
                                 bool keep_times) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("write"));
  if (unmounted_ || read_only()) return fail(EROFS, "write to inode {}: read-only filesystem", ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "write"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  // Space first, with no lock held: waiting for it may need this inode's own delalloc written out
  // (the reclaim thread only try-locks inodes). The reservation's unused part goes back on return.
  FileData::WriteReservation pre(*fs_);
  UBTRFS_TRY_STATUS(data_->reserve_write(pre, offset, data.size()));
  // No space for the data: the pool's held bytes are already DATA may_use, so they move into this
  // write's reservation as they are; the unused part moves back below.
  uint64_t drawn = 0;
  if (pool && *pool && pre.data < data.size()) {
    const uint32_t ss = fs_->params().sectorsize;
    const uint64_t first = offset / ss * ss, last = (offset + data.size() + ss - 1) / ss * ss;
    const uint64_t need = last - first + ss;
    drawn = std::min(*pool, need > pre.data ? need - pre.data : 0);
    *pool -= drawn;
    pre.data += drawn;
  }
  auto give_back = [&] {
    if (!drawn) return;
    const uint64_t back = std::min(drawn, pre.data);
    pre.data -= back;
    *pool += back;
  };
  size_t written;
  bool sync = false;
  // Space the write turns out to need is waited for with the lock dropped, and the write tried
  // again (its need may have changed meanwhile); the last attempt waits for metadata under the
  // lock, after writing its own inode out, as it always can (FileData::write), and for data only
  // if no wait has failed yet (else it writes what is free: a short write or ENOSPC).
  for (int attempt = 0;; ++attempt) {
    pre.wait_unlocked = attempt < kWriteAttemptsUnlocked;
    Result<size_t> w = [&] {
      InodeLocks::Guard g = locks_.lock({id});
      // FileData::write refuses immutable / append-only files (the kernel never sees these flags
      // on a FUSE inode, so the write reaches us even on a descriptor opened before the flag was set).
      return data_->write(id, offset, data, &pre, &sync, keep_times);
    }();
    if (!w && (pre.meta_shortfall || pre.data_shortfall)) {
      if (const uint64_t short_by = std::exchange(pre.data_shortfall, 0)) {
        if (auto st = fs_->spaces().data().reserve_bytes(short_by, alloc::FlushMode::kFlushData); st) {
          pre.data += short_by;
        } else if (st.error().err != ENOSPC) {
          give_back();
          return fail(st.error());
        } else {
          pre.data_exhausted = true;  // the last attempt writes what is free, if anything
          attempt = kWriteAttemptsUnlocked - 1;
        }
      }
      if (const uint64_t short_by = std::exchange(pre.meta_shortfall, 0)) {
        if (auto st = pre.meta.add(short_by, alloc::FlushMode::kFlushAll); !st) {
          if (st.error().err != ENOSPC) {
            give_back();
            return fail(st.error());
          }
          attempt = kWriteAttemptsUnlocked - 1;  // really short: the locked attempt decides
        }
      }
      continue;
    }
    give_back();
    if (!w) return fail(w.error());
    written = *w;
    break;
  }
  // chattr +S (BTRFS_INODE_SYNC, the kernel's IS_SYNC): every write behaves as an O_SYNC one
  // (generic_write_sync -> fsync of the file), so it is durable when it returns.
  if (sync) UBTRFS_TRY_STATUS(fsync(ino, false));
  // Dirty-data throttling with no lock held (balance_dirty_pages after generic_perform_write):
  // above the global limit this writer writes other inodes back and waits. The write itself has
  // succeeded; a flush failure has aborted the transaction and only needs saying.
  if (auto st = data_->balance_dirty_pages(); !st)
    spdlog::warn("write to inode {}: dirty data writeback failed: {}", ino, st.error().message);
  return written;
}

void Filesystem::set_kernel_owns_file_times(bool on) { data_->set_kernel_owns_file_times(on); }

Result<uint64_t> Filesystem::hold_data(uint64_t bytes) {
  if (bytes == 0 || read_only()) return uint64_t{0};
  alloc::SpaceInfo& data = fs_->spaces().data();
  // All or, when the device cannot give that much, as much as fits now.
  if (auto st = data.reserve_bytes(bytes, alloc::FlushMode::kFlushData); st) return bytes;
  else if (st.error().err != ENOSPC) return fail(st.error());
  const uint64_t some = std::min(bytes, data_headroom()) & ~uint64_t{fs_->params().sectorsize - 1};
  if (some && data.reserve_bytes(some, alloc::FlushMode::kNoFlush)) return some;
  return uint64_t{0};
}

void Filesystem::release_data(uint64_t bytes) {
  if (bytes) fs_->spaces().data().release_bytes(bytes);
}

uint64_t Filesystem::data_headroom() {
  alloc::SpaceInfos& sp = fs_->spaces();
  const alloc::SpaceCounters d = sp.data().counters();
  const uint64_t held = d.used + d.reserved + d.may_use + d.readonly + d.pinned;
  const uint64_t in_chunks = d.total > held ? d.total - held : 0;
  uint64_t unalloc = sp.free_chunk_space() / static_cast<uint64_t>(sp.factor(kBlockGroupData));
  unalloc -= unalloc % kStripeLen;
  return in_chunks + unalloc;
}

// close(2) of one descriptor: data stays in delalloc until the next commit or fsync (btrfs only
// flushes on close after a truncate-to-zero; the commit interval bounds the loss instead).
Status Filesystem::flush(uint64_t ino) {
  UBTRFS_TRY(numbers_.from_fuse(ino));
  return {};
}

Status Filesystem::release(uint64_t ino) {
  UBTRFS_TRY(numbers_.from_fuse(ino));
  return {};
}

Status Filesystem::fsync(uint64_t ino, bool /*datasync: the same (btrfs logs the inode item either way)*/) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("fsync"));
  if (unmounted_) return fail(EIO, "fsync of inode {} after unmount", ino);
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  if (read_only()) return {};
  {
    InodeLocks::Guard g = locks_.lock({id});
    UBTRFS_TRY_STATUS(data_->flush_inode(id));
    // The fast path (btrfs_sync_file -> btrfs_log_dentry_safe + btrfs_sync_log), with the inode's
    // lock held so its items cannot change while they are copied. When the log cannot express the
    // inode's state it says why and nothing was promised: the full commit below makes it durable.
    if (log_ && !log_->sync_inode(id)) return {};
  }
  return fs_->transactions().commit(CommitCause::kFsync);
}

Status Filesystem::fsyncdir(uint64_t ino, bool /*datasync*/) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("fsyncdir"));
  if (unmounted_) return fail(EIO, "fsyncdir of inode {} after unmount", ino);
  UBTRFS_TRY(numbers_.from_fuse(ino));
  if (read_only()) return {};
  return fs_->transactions().commit(CommitCause::kFsync);
}

Status Filesystem::fallocate(uint64_t ino, int mode, uint64_t offset, uint64_t len) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("fallocate"));
  if (unmounted_ || read_only()) return fail(EROFS, "fallocate on inode {}: read-only filesystem", ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "fallocate"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  InodeLocks::Guard g = locks_.lock({id});
  auto* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *rec->tree, id.objectid));
  UBTRFS_TRY_STATUS(check_may_fallocate(ii, id.objectid, mode));
  return data_->fallocate(id, mode, offset, len);
}

Result<uint64_t> Filesystem::lseek(uint64_t ino, uint64_t offset, int whence) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("lseek"));
  if (unmounted_) return fail(EIO, "lseek on inode {} after unmount", ino);
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  InodeLocks::Guard g = locks_.lock_shared(id);
  return data_->seek_data_hole(id, offset, whence);
}

Result<size_t> Filesystem::copy_through_buffer(InodeId in, uint64_t off_in, InodeId out, uint64_t off_out,
                                               size_t len) {
  std::vector<uint8_t> buf(std::min(len, kCopyChunk));
  size_t done = 0;
  while (done < len) {
    const size_t want = std::min(len - done, buf.size());
    size_t got;
    {
      InodeLocks::Guard g = locks_.lock_shared(in);
      got = UBTRFS_TRY(data_->read(in, off_in + done, std::span<uint8_t>(buf.data(), want)));
    }
    if (got == 0) break;
    {
      InodeLocks::Guard g = locks_.lock({out});
      UBTRFS_TRY(data_->write(out, off_out + done, std::span<const uint8_t>(buf.data(), got)));
    }
    if (auto st = data_->balance_dirty_pages(); !st)
      spdlog::warn("copy_file_range to inode {}: dirty data writeback failed: {}", out.objectid, st.error().message);
    done += got;
    if (got < want) break;
  }
  return done;
}

Result<size_t> Filesystem::copy_file_range(uint64_t ino_in, uint64_t off_in, uint64_t ino_out, uint64_t off_out,
                                           size_t len, unsigned flags) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("copy_file_range"));
  if (flags != 0) return fail(EINVAL, "copy_file_range flags {:#x} not supported", flags);
  if (unmounted_ || read_only()) return fail(EROFS, "copy_file_range to inode {}: read-only filesystem", ino_out);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino_out, "copy_file_range"));
  const InodeId in = UBTRFS_TRY(numbers_.from_fuse(ino_in));
  const InodeId out = UBTRFS_TRY(numbers_.from_fuse(ino_out));
  // Same file, overlapping ranges: EINVAL as generic_copy_file_checks.
  if (in == out && off_in < off_out + len && off_out < off_in + len)
    return fail(EINVAL, "copy_file_range within inode {}: ranges [{}, +{}) and [{}, +{}) overlap", ino_in, off_in, len,
                off_out, len);
  len = std::min(len, kMaxCopyLen);
  // Sectors at the same position within a sector in both files can share extents (reflink, as
  // btrfs serves copy_file_range through its remap_file_range); the unaligned head and tail, or
  // everything when the two offsets are not aligned alike, are copied.
  const uint32_t ss = fs_->params().sectorsize;
  const size_t head = (ss - off_in % ss) % ss;
  if (off_in % ss != off_out % ss || len <= head) return copy_through_buffer(in, off_in, out, off_out, len);
  size_t done = 0;
  if (head) {
    done = UBTRFS_TRY(copy_through_buffer(in, off_in, out, off_out, head));
    if (done < head) return done;
  }
  uint64_t shared;
  {
    InodeLocks::Guard g = locks_.lock({in, out});
    // The destination's immutable / append-only flags, as for the copied edges: the kernel never
    // sees them on a FUSE inode.
    auto* rec = UBTRFS_TRY(fs_->fs_root(out.subvol));
    const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *rec->tree, out.objectid));
    if (auto st = check_may_write(ii, out.objectid, off_out + done); !st) {
      if (done) return done;
      return fail(st.error());
    }
    auto r = data_->clone_range(in, off_in + done, out, off_out + done, len - done);
    if (!r) {
      if (done) return done;
      return fail(r.error());
    }
    shared = *r;
  }
  done += shared;
  if (done < len) {
    auto rest = copy_through_buffer(in, off_in + done, out, off_out + done, len - done);
    if (!rest) {
      if (done) return done;
      return fail(rest.error());
    }
    done += *rest;
  }
  return done;
}

}  // namespace ubtrfs::fs
