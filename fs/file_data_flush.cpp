// FileData: flushing delalloc into extents (btrfs inode.c cow_file_range / cow_file_range_inline)
// and the writeback that bounds it (balance_dirty_pages); see file_data.h for the design essay. A
// flush takes each run of dirty sectors of an inode and writes it as one inline extent or as data
// extents with their items, references and checksums; compressed runs go through
// file_compress.cpp, nocow runs through file_nocow.cpp.
//
// Invariants: a flush charges its tree blocks to the inode's delalloc reserve (a join handle
// pointed at it), so it never waits on a ticket; a failure after a tree change aborts the
// transaction. flush_all, flush_some and balance_dirty_pages take the inode locks themselves
// (REQUIRES: none held, no handle) and never wait for a busy one unless told to; flush_inode
// REQUIRES the inode's lock held exclusively.
#include "fs/file_data.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "fs/compression.h"
#include "fs/csum_tree.h"
#include "fs/inode_flags.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

Result<bool> FileData::try_flush(InodeId id, bool wait_for_lock, std::chrono::milliseconds patience) {
  std::optional<InodeLocks::Guard> g;
  if (wait_for_lock)
    g = locks_.lock({id});
  else
    g = locks_.try_lock(id, patience);
  if (!g) return false;
  UBTRFS_TRY_STATUS(flush_locked(id));
  return true;
}

Status FileData::flush_all(bool wait_for_locks) {
  std::vector<InodeId> ids;
  {
    std::lock_guard g(mu_);
    for (auto& [id, d] : dirty_) ids.push_back(id);
  }
  if (wait_for_locks) {
    for (InodeId id : ids) UBTRFS_TRY(try_flush(id, true));
    return {};
  }
  return flush_idle_first(ids, [this](InodeId id, std::chrono::milliseconds patience) {
    return try_flush(id, false, patience);
  });
}

Status FileData::flush_idle_first(const std::vector<InodeId>& ids, const FlushOne& flush,
                                  const std::function<bool()>& enough) {
  // A writer holds its inode's lock for one write at a time; trying each busy inode for
  // kFlushLockPatience in turn made a flush of 40 inodes being written take most of a second.
  std::vector<InodeId> busy;
  for (InodeId id : ids) {
    if (enough && enough()) return {};
    if (!UBTRFS_TRY(flush(id, std::chrono::milliseconds(0)))) busy.push_back(id);
  }
  for (InodeId id : busy) {
    if (enough && enough()) return {};
    UBTRFS_TRY(flush(id, kFlushLockPatience));
  }
  return {};
}

std::vector<InodeId> FileData::largest_dirty() {
  std::vector<std::pair<uint64_t, InodeId>> order;
  {
    std::lock_guard g(mu_);
    for (auto& [id, d] : dirty_) order.emplace_back(d->bytes.load(), id);
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<InodeId> ids;
  ids.reserve(order.size());
  for (const auto& [bytes, id] : order) ids.push_back(id);
  return ids;
}

DirtyLimits FileData::limits() const { return dirty_limits(fs_.cache().budget()); }

Status FileData::balance_dirty_pages() {
  const DirtyLimits lim = limits();
  auto pause = std::chrono::milliseconds(1);
  while (total_delalloc() > lim.limit) {
    if (fs_.read_only()) return {};
    const uint64_t before = total_delalloc();
    // Writeback down to the background threshold, largest inode first (the kernel's flusher writes
    // whole inodes; the largest frees the most memory per flush).
    for (InodeId id : largest_dirty()) {
      if (total_delalloc() <= lim.background) break;
      UBTRFS_TRY(try_flush(id, false));
    }
    // Every inode we needed was busy (its writer is flushing it, or an operation holds its lock):
    // wait for them as balance_dirty_pages sleeps in io_schedule_timeout, never fail the writer.
    if (total_delalloc() >= before) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }
  }
  return {};
}

Result<uint64_t> FileData::flush_some(uint64_t meta_target, const std::function<Status()>& after_each) {
  // Largest delalloc first: it holds the most reservation (btrfs writes back in inode order; any
  // order serves the ticket, the biggest frees the most per flush).
  // What a flush gave back is the drop in may_use plus what went straight to waiting tickets
  // (a release grants them at once, so may_use alone barely moves while tickets wait: counting
  // it alone made every ticket flush every dirty inode, each with a few KiB of data).
  // Inodes being written right now are passed over first, then tried with some patience if the
  // idle ones did not give back enough (flush_idle_first).
  alloc::SpaceInfo& meta = fs_.spaces().metadata();
  uint64_t released = 0;
  auto flush_counted = [&](InodeId id, std::chrono::milliseconds patience) -> Result<bool> {
    const uint64_t before = meta.counters().may_use, granted_before = meta.granted_bytes();
    const bool flushed = UBTRFS_TRY(try_flush(id, false, patience));
    if (flushed && after_each) UBTRFS_TRY_STATUS(after_each());
    const uint64_t after = meta.counters().may_use, granted = meta.granted_bytes() - granted_before;
    if (before + granted > after) released += before + granted - after;
    return flushed;
  };
  UBTRFS_TRY_STATUS(flush_idle_first(largest_dirty(), flush_counted, [&] { return released >= meta_target; }));
  return released;
}

Status FileData::flush_inode(InodeId id) { return flush_locked(id); }

Status FileData::delete_csums(TreeHandle& h, uint64_t bytenr, uint64_t len) {
  return fs::delete_csums(h, *fs_.csum_root().tree, fs_.params(), bytenr, len);
}

Status FileData::flush_locked(InodeId id) {
  Dirty* d = find_dirty(id);
  if (!d || d->data.empty()) return {};
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const uint64_t size = ii.size;
  const uint32_t ss = fs_.params().sectorsize;
  // Sectors past EOF cannot be dirty (truncate drops them); drop defensively.
  d->data.truncate(size);
  auto runs = d->data.runs();
  Status st;
  // Compression (file_compress.cpp): decided once per flush; it switches itself off for the rest of
  // the flush when a piece does not compress.
  InodeCompression comp;
  if (auto c = compression_of(*root, id.objectid, ii); !c)
    st = fail(c.error());
  else
    comp = *c;
  // A compressed inline extent may hold a whole sector of file data, a plain one kMaxInline bytes.
  const uint64_t inline_max = comp.type != kCompressNone ? ss : kMaxInline;
  if (st && runs.size() == 1 && runs[0].start == 0 && runs[0].len == ss && size > 0 && size <= inline_max) {
    auto later = find_file_extents(*root, fs_.params(), id.objectid, ss, UINT64_MAX);
    if (!later) {
      st = fail(later.error());
    } else if (later->empty()) {
      bool made = false;
      if (comp.type != kCompressNone) {
        auto r = flush_compressed_inline(id, *root, *d, size, comp);
        if (!r) st = fail(r.error());
        made = r && *r;
      }
      if (st && !made && size <= kMaxInline) {
        st = flush_inline(id, *root, *d, size);
        made = true;
      }
      if (made || !st) {
        settle(id, *d);
        return st;
      }
    }
  }
  if (st) {
    const bool nodatasum = ii.flags.get() & kInodeNodatasum;
    // Each run splits where sectors change between written-in-place (nocow) and copied (cow).
    for (const auto& run : runs) {
      uint64_t seg = run.start;
      while (st && seg < run.start + run.len) {
        const bool nc = d->nocow.count(seg) != 0;
        uint64_t e = seg + ss;
        while (e < run.start + run.len && (d->nocow.count(e) != 0) == nc) e += ss;
        st = nc                           ? flush_nocow_run(id, *root, *d, seg, e - seg, nodatasum)
             : comp.type != kCompressNone ? flush_compressed_run(id, *root, *d, seg, e - seg, size, comp)
                                          : flush_run(id, *root, *d, seg, e - seg, nodatasum);
        seg = e;
      }
      if (!st) break;
    }
  }
  if (st && !fs_.params().no_holes()) {
    auto th = fs_.transactions().join(&d->rsv);
    if (!th)
      st = fail(th.error());
    else if (auto fh = fill_holes(*th, *root, id.objectid, size); !fh)
      st = th->abort(fh.error());
  }
  settle(id, *d);
  return st;
}

Status FileData::flush_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size) {
  std::vector<uint8_t> bytes = d.data.copy(0, fs_.params().sectorsize);
  bytes.resize(size);
  // Charged to the inode's delalloc reserve (btrfs_finish_ordered_io runs with trans->block_rsv =
  // &inode->block_rsv): the flush never waits on a ticket.
  TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
  const uint64_t dropped =
      UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs_.params(), *refs_, id.objectid, 0, fs_.params().sectorsize));
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_inline_extent(th.tree(), root, id.objectid, th.transid(), bytes));
  note_extent_change(fs_, id, th.transid(), 0, fs_.params().sectorsize);
  InodeItem cur = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
  cur.nbytes = cur.nbytes.get() - dropped + size;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, cur));
  d.data.drop(0, fs_.params().sectorsize);  // no extent: settle() gives its data reservation back
  return {};
}

Status FileData::flush_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len, bool nodatasum) {
  const FsParams& fs = fs_.params();
  uint64_t cur = start;
  const uint64_t end = start + len;
  while (cur < end) {
    const uint64_t want = std::min<uint64_t>(end - cur, alloc::kMaxDataExtent);
    TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
    // The sectors' data reservation pays for the extent (may_use -> reserved), so it fits in the
    // data chunks; fragmentation may make it shorter.
    auto ext = UBTRFS_TRY(fs_.allocator().reserve_data(th.tree(), want, fs.sectorsize, 0, true));
    d.data_reserved -= std::min(d.data_reserved, ext.len);
    // The extent goes to disk and through the checksummer kFlushIoChunk bytes at a time: an
    // extent of up to BTRFS_MAX_EXTENT_SIZE never needs a copy of itself in memory.
    // With the write-behind queue (io/write_behind.h) each filled buffer is handed to its worker
    // and this thread goes on with the next one and the tree updates (btrfs: the bio is submitted
    // and the ordered extent completes later); the commit's device flush waits for it.
    std::vector<uint8_t> csums;
    {
      // Extents below a stream's size (an fsync of a small file) are written here: handing 4 KiB
      // to the worker and waiting for it in the fsync's flush cost more than the write (bench
      // fsync.files: 747 and 668 files/s through the queue against 891 and 980 without it).
      io::WriteBehindDevice* behind =
          ext.len >= io::WriteBehindDevice::kStreamMinBytes ? fs_.write_behind() : nullptr;
      std::vector<uint8_t> buf;
      for (uint64_t done = 0; done < ext.len;) {
        const uint64_t n = std::min<uint64_t>(ext.len - done, kFlushIoChunk);
        if (behind) buf = behind->take_buffer();
        buf.resize(n);
        d.data.overlay(cur + done, buf);
        if (!nodatasum) {
          const std::vector<uint8_t> part = compute_data_csums(fs, buf);
          csums.insert(csums.end(), part.begin(), part.end());
        }
        if (auto w = behind ? write_disk_behind(ext.bytenr + done, std::move(buf)) : write_disk(ext.bytenr + done, buf);
            !w) {
          fs_.allocator().release_data(ext.bytenr, ext.len, true);
          d.data_reserved += ext.len;
          return fail(w.error().err, "root {} ino {}: writing {} bytes of file offset {} at bytenr {}: {}",
                      id.subvol, id.objectid, n, cur + done, ext.bytenr + done, w.error().message);
        }
        done += n;
      }
    }
    // From here on trees change: any failure leaves a half-written extent and aborts.
    const uint64_t dropped =
        UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, cur, cur + ext.len));
    UBTRFS_TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), root, id.objectid, cur,
                                               make_file_extent(th.transid(), kFileExtentReg, ext.bytenr, ext.len, 0,
                                                                ext.len, ext.len)));
    note_extent_change(fs_, id, th.transid(), cur, cur + ext.len);
    UBTRFS_TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), ext.bytenr, ext.len, root.objectid(), id.objectid,
                                                         cur, +1, true));
    if (!nodatasum)
      UBTRFS_TRY_STATUS_OR_ABORT(th, insert_csums(th.tree(), *fs_.csum_root().tree, fs, ext.bytenr,
                                           csums));
    InodeItem ii = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
    ii.nbytes = ii.nbytes.get() - dropped + ext.len;
    UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
    th.end();
    d.data.drop(cur, ext.len);
    cur += ext.len;
  }
  return {};
}

Status FileData::fill_holes(TransHandle& th, TreeRoot& root, uint64_t ino, uint64_t size) {
  const FsParams& fs = fs_.params();
  const uint64_t end = round_up(size, fs.sectorsize);
  auto exts = UBTRFS_TRY(find_file_extents(root, fs, ino, 0, end));
  uint64_t cursor = 0;
  auto hole = [&](uint64_t from, uint64_t to) -> Status {
    if (from >= to) return {};
    return insert_file_extent(th.tree(), root, ino, from,
                              make_file_extent(th.transid(), kFileExtentReg, 0, 0, 0, to - from, to - from));
  };
  for (const auto& e : exts) {
    UBTRFS_TRY_STATUS(hole(cursor, e.file_offset));
    cursor = std::max(cursor, e.end(fs.sectorsize));
  }
  return hole(cursor, end);
}

}  // namespace ubtrfs::fs
