// FileData::write: the buffered write (btrfs file.c btrfs_buffered_write): reserve, copy the bytes
// into the inode's delalloc buffer, update the INODE_ITEM (see file_data.h for the design essay and
// the reservation rules). The helpers that decide which sectors must be loaded first (a partial
// sector over existing data, an inline extent) are here too.
//
// Invariants: the DATA and metadata space a write needs is reserved before any sector changes (a
// failure changes nothing; a write that only partly fits is a short write); sectors marked nocow
// (file_nocow.cpp) hold no DATA reservation. REQUIRES: the inode's lock held exclusively, no handle;
// holding it, a write may flush its own inode, never wait for another's.
#include "fs/file_data.h"

#include <algorithm>

#include "fs/delayed_inode.h"
#include "fs/inode_flags.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

Status FileData::load_sector(InodeId id, TreeRoot& root, const InodeItem& ii, Dirty& d, uint64_t off) {
  const uint64_t size = ii.size;
  return d.data.load_sector(off, [&](uint64_t s, std::span<uint8_t> sector) -> Status {
    UBTRFS_TRY_STATUS(read_extents(id, root, ii, s, sector));
    if (s + sector.size() > size) {
      const uint64_t keep = size > s ? size - s : 0;
      std::fill(sector.begin() + static_cast<std::ptrdiff_t>(keep), sector.end(), 0);
    }
    return {};
  });
}

Result<bool> FileData::has_inline_extent(TreeRoot& root, uint64_t ino) {
  auto exts = UBTRFS_TRY(find_file_extents(root, fs_.params(), ino, 0, 1));
  return !exts.empty() && exts.front().is_inline();
}

Result<bool> FileData::sector_has_data(InodeId id, TreeRoot& root, uint64_t sector_off) {
  if (Dirty* d = find_dirty(id); d && d->data.has_sector(sector_off)) return true;
  auto exts = UBTRFS_TRY(find_file_extents(root, fs_.params(), id.objectid, sector_off,
                                           sector_off + fs_.params().sectorsize));
  for (const auto& e : exts)
    if (!e.is_hole() && !e.is_prealloc()) return true;
  return false;
}

Result<size_t> FileData::write(InodeId id, uint64_t off, std::span<const uint8_t> data, WriteReservation* pre,
                               bool* sync_inode,
                               bool keep_times) {
  if (data.empty()) return 0;
  if (off > kMaxFileSize || data.size() > kMaxFileSize - off)
    return fail(EFBIG, "root {} ino {}: write at {} of {} bytes past the maximum file size", id.subvol, id.objectid,
                off, data.size());
  if (fs_.read_only()) return fail(EROFS, "{}: read-only filesystem", fs_.path());
  // A write takes no handle (its inode update is a delayed item), so it asks about an abort itself
  // (EIO when the abort came from a shutdown: fs/shutdown.cpp).
  UBTRFS_TRY_STATUS(fs_.check_shutdown("write"));
  if (fs_.transactions().aborted())
    return fail(EROFS, "{}: filesystem is read-only after an aborted transaction: {}", fs_.path(),
                fs_.transactions().abort_reason());
  const uint32_t ss = fs_.params().sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  // Immutable and append-only: checked here, on the item this write reads anyway, so that no path
  // into the file (write, copy_file_range's copied edges) reads it a second time for them.
  UBTRFS_TRY_STATUS(check_may_write(ii, id.objectid, off));
  if (sync_inode) *sync_inode = ii.flags.get() & kInodeSync;
  const uint64_t old_size = ii.size;
  Dirty& d = dirty_for_change(id, ii);
  // d stays valid through a flush of this inode below; the last settle may erase it.
  d.users++;
  struct Unpin {
    FileData* self;
    InodeId id;
    Dirty& d;
    ~Unpin() {
      d.users--;
      self->account(id, d);
    }
  } unpin{this, id, d};

  // Sectors the write makes present besides those it covers: an inline extent is never extended
  // or split in place, its bytes move to delalloc and the flusher rewrites the file (btrfs converts
  // inline extents the same way); writing past EOF, the old last sector's tail must read as zeros
  // (btrfs_cont_expand -> btrfs_truncate_block): sectors we write are zero past EOF already, kernel
  // ones may not be.
  auto plan = [&]() -> Result<std::pair<bool, bool>> {
    const bool inline_sector = old_size > 0 && old_size < ss && !d.data.has_sector(0) &&
                               UBTRFS_TRY(has_inline_extent(*root, id.objectid));
    const bool eof_sector = off > old_size && old_size % ss && round_down(off, ss) != round_down(old_size, ss) &&
                            !d.data.has_sector(old_size) &&
                            UBTRFS_TRY(sector_has_data(id, *root, round_down(old_size, ss)));
    return std::pair{inline_sector, eof_sector};
  };
  bool load_inline = false, load_eof = false;
  // Sectors over exclusive PREALLOC extents are written in place and need no data space
  // (file_nocow.cpp). A partially covered sector is filled from the file first, which reads
  // zeros from the unwritten extent: right either way.
  std::vector<std::pair<uint64_t, uint64_t>> nocow;
  auto is_nocow = [&](uint64_t s) {
    for (auto [a, b] : nocow)
      if (s >= a && s < b) return true;
    return false;
  };
  // Data the write needs: every sector it makes present (btrfs_check_data_free_space).
  auto need_for = [&](uint64_t len) {
    uint64_t n = 0;
    for (uint64_t s = round_down(off, ss); s < off + len; s += ss)
      if (!d.data.has_sector(s) && !is_nocow(s)) n += ss;
    if (load_inline && off >= ss) n += ss;
    if (load_eof) n += ss;
    return n;
  };
  // What the write does depends on what is dirty and what is on disk, and flushing this inode
  // below changes both (its dirty sectors become extents, a small file's first sector an inline
  // extent): the plan is made again after it.
  auto make_plan = [&]() -> Status {
    auto planned = UBTRFS_TRY(plan());
    load_inline = planned.first;
    load_eof = planned.second;
    nocow = UBTRFS_TRY(nocow_ranges(id, *root, ii, off, data.size()));
    return {};
  };
  // Flushers never wait for an inode lock, and we hold this one: before waiting for space, write
  // out this inode's own delalloc, the one thing only we can flush (it gives back its metadata
  // reserve, and its overwritten extents become pinned space the next commit frees).
  // The write's data reservation stays its own until the sectors exist (a flush of this inode in
  // between settles d, which gives back whatever d holds beyond its dirty sectors).
  alloc::SpaceInfo& data_space = fs_.spaces().data();
  uint64_t held = 0;
  struct Held {
    alloc::SpaceInfo& si;
    uint64_t& bytes;
    ~Held() { si.release_bytes(bytes); }
  } held_guard{data_space, held};
  // Makes `held` at least `bytes`, from the reservation taken before the lock first.
  auto reserve = [&](uint64_t bytes, alloc::FlushMode mode) -> Status {
    if (held >= bytes) return {};
    bytes -= held;
    if (pre && pre->data) {
      const uint64_t take = std::min(bytes, pre->data);
      pre->data -= take;
      held += take;
      bytes -= take;
    }
    if (bytes == 0) return {};
    UBTRFS_TRY_STATUS(data_space.reserve_bytes(bytes, mode));
    held += bytes;
    return {};
  };
  bool flushed_own = false, own_flush_wrote = false;
  auto flush_own = [&]() -> Status {
    flushed_own = true;
    own_flush_wrote = d.data.bytes() > 0;
    return flush_locked(id);
  };
  // Gives up for now (EAGAIN) so that the caller waits for `bytes` with the lock dropped: the data
  // held goes back to the caller's reservation; nothing else changed but, perhaps, our own delalloc
  // written out.
  auto wait_unlocked_for = [&](const char* what, uint64_t bytes) -> Result<size_t> {
    pre->data += held;
    held = 0;
    settle(id, d);
    return fail(EAGAIN, "root {} ino {}: a write at {} waits for {} bytes of {} space", id.subvol, id.objectid, off,
                bytes, what);
  };
  uint64_t need = 0;
  // At most twice: planned again after our own flush (below, for data or for metadata).
  for (;;) {
    if (auto st = make_plan(); !st) {
      settle(id, d);
      return fail(st.error());
    }
    need = need_for(data.size());
    Status data_rsv = reserve(need, alloc::FlushMode::kNoFlush);
    if (!data_rsv && data_rsv.error().err == ENOSPC) {
      if (!flushed_own) {
        if (auto st = flush_own(); !st) {
          settle(id, d);
          return fail(st.error());
        }
        continue;
      }
      if (pre && pre->wait_unlocked && !(pre->data_exhausted && !own_flush_wrote)) {
        // Not without flushing: the caller waits for the rest with the lock dropped (the flusher
        // can then write every inode, and the commit frees what our own flush overwrote) and
        // comes back; a waiter holding its lock made every flush of all inodes wait for it (with
        // many writers on a full device, seconds per ticket). Skipped when a wait without the
        // lock has already failed and our flush wrote nothing: a second one would end the same way.
        pre->data_shortfall = need - held;
        return wait_unlocked_for("data", pre->data_shortfall);
      }
      // A caller that cannot drop the lock (copy_file_range's copies) waits holding it, unless a
      // wait has failed already.
      if (!(pre && (pre->wait_unlocked || pre->data_exhausted)))
        data_rsv = reserve(need, alloc::FlushMode::kFlushData);
    }
    if (auto st = data_rsv; !st) {
      if (st.error().err != ENOSPC) {
        settle(id, d);
        return fail(st.error());
      }
      // A short write of what fits (btrfs_buffered_write copies page batch by page batch and returns
      // what it managed): the longest prefix whose new sectors the free data space covers.
      const uint64_t avail = held + round_down(fs_.spaces().data().free_now(), ss);
      size_t fit = 0;
      const uint64_t end = off + data.size();
      for (uint64_t s = round_down(off, ss); s < end; s += ss) {
        const uint64_t upto = std::min<uint64_t>(s + ss, end) - off;
        if (need_for(upto) > avail) break;
        fit = upto;
      }
      if (fit == 0 || !reserve(need_for(fit), alloc::FlushMode::kNoFlush)) {
        settle(id, d);
        return fail(ENOSPC, "root {} ino {}: no data space for {} bytes at offset {}: {}", id.subvol, id.objectid,
                    data.size(), off, st.error().message);
      }
      data = data.first(fit);
      need = need_for(fit);
    }
    // The delalloc metadata reserve for the state after the write (with the runs it may add), then the
    // inode update's handle: both before anything changes, so an ENOSPC changes nothing.
    {
      // Runs the write may add: none when its sectors touch or adjoin a dirty run (an append to a
      // run, an overwrite of dirty sectors: the common streaming write then needs no metadata at
      // all), else one; a loaded inline or EOF sector may start one more.
      const uint64_t first = round_down(off, ss), end = round_up(off + data.size(), ss);
      const std::optional<uint64_t> near = d.data.next_present(first >= ss ? first - ss : 0);
      const uint64_t new_runs = (near && *near <= end ? 0 : 1) + (load_inline ? 1 : 0) + (load_eof ? 1 : 0);
      auto target = [&] {
        const uint64_t bytes_after = d.data.bytes() + need;
        return rsv_target(d.data.run_count() + new_runs + bytes_after / d.max_extent, bytes_after, d.nodatasum);
      };
      if (pre) {
        const uint64_t want = target(), have = d.rsv.reserved();
        if (pre->wait_unlocked) {
          // The exact need: the reserve's growth and, unless it is held already, the inode update's
          // (without delayed inodes the update takes a handle of its own below). Whether it is held
          // is asked only when the reservation taken before the lock does not cover both anyway.
          const uint64_t update = fs_.spaces().metadata_size(1);
          uint64_t need_meta = want > have ? want - have : 0;
          if (pre->meta.reserved() < need_meta + update) {
            DelayedInodes* di = fs_.delayed_inodes();
            if (di && !di->update_reserved(id)) need_meta += update;
          }
          const uint64_t short_by = need_meta > pre->meta.reserved() ? need_meta - pre->meta.reserved() : 0;
          if (short_by && !pre->meta.add(short_by, alloc::FlushMode::kNoFlush)) {
            // Not without flushing: the caller waits for it with the lock dropped (the flusher may
            // then write this very inode out) and comes back. Nothing has changed.
            pre->meta_shortfall = short_by;
            return wait_unlocked_for("metadata", short_by);
          }
        }
        const uint64_t take = want > have ? std::min(want - have, pre->meta.reserved()) : 0;
        if (take) {
          if (auto st = alloc::BlockRsv::migrate(pre->meta, d.rsv, take, true); !st) {
            settle(id, d);
            return fail(st.error());
          }
        }
      }
      Status meta = d.rsv.refill(target(), alloc::FlushMode::kNoFlush);
      if (!meta && meta.error().err == ENOSPC && !flushed_own) {
        if (auto st = flush_own(); !st) {
          settle(id, d);
          return fail(st.error());
        }
        continue;
      }
      if (!meta && meta.error().err == ENOSPC) meta = d.rsv.refill(target(), alloc::FlushMode::kFlushAll);
      if (auto st = meta; !st) {
        settle(id, d);
        return fail(st.error().err, "root {} ino {}: delalloc metadata for a write at {}: {}", id.subvol, id.objectid,
                    off, st.error().message);
      }
    }
    break;
  }
  // The inode update: a delayed item (no tree work per write; btrfs_delayed_update_inode) whose
  // reservation is taken now, or without delayed inodes a handle.
  DelayedInodes* delayed = fs_.delayed_inodes();
  std::optional<TransHandle> th;
  if (delayed) {
    if (auto st = delayed->reserve_update(id, alloc::FlushMode::kFlushAll, pre ? &pre->meta : nullptr); !st) {
      settle(id, d);
      return fail(st.error());
    }
  } else {
    auto h = fs_.transactions().start(1);
    if (!h) {
      settle(id, d);
      return fail(h.error());
    }
    th = std::move(*h);
  }
  // From here on nothing flushes this inode: the reservation becomes the sectors'.
  d.data_reserved += held;
  held = 0;
  Status st = [&]() -> Status {
    if (load_inline) UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, 0));
    if (load_eof) UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, old_size));
    for (uint64_t s = round_down(off, ss); s < off + data.size(); s += ss)
      if (!d.data.has_sector(s) && is_nocow(s)) d.nocow.insert(s);
    return d.data.write(off, data, [&](uint64_t s, std::span<uint8_t> sector) -> Status {
      UBTRFS_TRY_STATUS(read_extents(id, *root, ii, s, sector));
      if (s + sector.size() > old_size) {
        const uint64_t keep = old_size > s ? old_size - s : 0;
        std::fill(sector.begin() + static_cast<std::ptrdiff_t>(keep), sector.end(), 0);
      }
      return {};
    });
  }();
  settle(id, d);
  if (!st) return fail(st.error());

  {
    InodeItem cur = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
    cur.size = std::max<uint64_t>(cur.size, off + data.size());
    if (!keep_times && stamps_file_times()) {
      const Timespec now = now_btrfs();
      cur.mtime = now;
      cur.ctime = now;
    }
    if (delayed) {
      UBTRFS_TRY_STATUS(delayed->update_inode(nullptr, id, cur, alloc::FlushMode::kFlushAll));
    } else {
      UBTRFS_TRY_STATUS_OR_ABORT(*th, update_inode(*th, *root, id.objectid, cur));
      th->end();
    }
  }
  // Memory bound, the per-inode half (the writeback a streaming writer triggers in the kernel once
  // its pages pass the background threshold): we hold the lock and no handle, so write this inode
  // out now. The global half is balance_dirty_pages, which the caller runs without the lock.
  if (d.bytes.load(std::memory_order_relaxed) > limits().background) UBTRFS_TRY_STATUS(flush_locked(id));
  return data.size();
}

}  // namespace ubtrfs::fs
