// FileData: fallocate (preallocation, zero range), hole punching and SEEK_DATA/SEEK_HOLE (btrfs
// file.c btrfs_fallocate, btrfs_punch_hole, btrfs_zero_range, find_desired_extent); see
// file_data.h for the design essay and the reservation rules.
//
// Preallocation reserves the DATA space of every gap before it allocates anything (btrfs_fallocate
// reserves the whole range first), so it either gets all of it or fails with ENOSPC having changed
// nothing; each PREALLOC extent is charged to that reservation. Punching reserves data only for the
// partial sectors at its edges, which it rewrites with zeros.
#include "fs/file_data.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>

#include "fs/transaction.h"

namespace ubtrfs::fs {
Status FileData::fallocate(InodeId id, int mode, uint64_t off, uint64_t len) {
  if (len == 0) return fail(EINVAL, "fallocate of 0 bytes");
  if (off > kMaxFileSize || len > kMaxFileSize - off)
    return fail(EFBIG, "root {} ino {}: fallocate [{}, +{}) past the maximum file size", id.subvol, id.objectid, off,
                len);
  if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) return punch_hole(id, off, len);
  if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE) return preallocate(id, off, len, mode == FALLOC_FL_KEEP_SIZE);
  if ((mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE) {
    // btrfs_zero_range: the range reads as zeros and keeps its space: partial sectors zeroed, whole
    // ones dropped (the punch), then PREALLOC extents over the resulting holes; the size grows
    // unless KEEP_SIZE.
    UBTRFS_TRY_STATUS(punch_hole(id, off, len));
    return preallocate(id, off, len, mode & FALLOC_FL_KEEP_SIZE);
  }
  return fail(EOPNOTSUPP, "root {} ino {}: fallocate mode {:#x} not supported", id.subvol, id.objectid, mode);
}

Status FileData::punch_hole(InodeId id, uint64_t off, uint64_t len) {
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const uint64_t size_al = round_up(ii.size, ss);
  if (off >= size_al) return {};
  const uint64_t end = std::min(off + len, size_al);
  const uint64_t s_al = round_up(off, ss), e_al = round_down(end, ss);
  Dirty& d = dirty_of(id);
  d.nodatasum = ii.flags.get() & kInodeNodatasum;
  Status st = [&]() -> Status {
    // Partial sectors at the edges are zeroed through delalloc (btrfs_zero_range/truncate_block),
    // each with a sector of data space (ENOSPC on a full device, as in the kernel).
    auto zero_partial = [&](uint64_t from, uint64_t to) -> Status {
      if (from >= to) return {};
      if (!UBTRFS_TRY(sector_has_data(id, *root, round_down(from, ss)))) return {};
      if (!d.data.has_sector(from)) {
        UBTRFS_TRY_STATUS(reserve_data(d, ss, alloc::FlushMode::kFlushData));
        UBTRFS_TRY_STATUS(d.rsv.refill(rsv_target(d.data.run_count() + 1, d.data.bytes() + ss, d.nodatasum),
                                       alloc::FlushMode::kFlushAll));
      }
      UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, from));
      d.data.zero_range(from, to);
      return {};
    };
    if (s_al > e_al) return zero_partial(off, end);  // inside one sector
    UBTRFS_TRY_STATUS(zero_partial(off, s_al));
    UBTRFS_TRY_STATUS(zero_partial(e_al, end));
    d.data.zero_range(s_al, e_al);
    return {};
  }();
  settle(id, d);
  UBTRFS_TRY_STATUS(st);
  // btrfs_punch_hole -> btrfs_replace_file_extents: 2 items with NO_HOLES (extent removal, inode
  // update), 3 without (the hole item).
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(fs.no_holes() ? 2 : 3));
  InodeItem cur = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));  // before the first change: no abort
  uint64_t dropped = 0;
  if (s_al < e_al) dropped = UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs, *refs_, id.objectid, s_al, e_al));
  note_extent_change(fs_, id, th.transid(), s_al, e_al);
  cur.nbytes = cur.nbytes.get() - dropped;
  if (stamps_file_times()) {
    const Timespec now = now_btrfs();
    cur.mtime = now;
    cur.ctime = now;
  }
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, cur));
  if (!fs.no_holes()) UBTRFS_TRY_STATUS_OR_ABORT(th, fill_holes(th, *root, id.objectid, cur.size));
  return {};
}

Status FileData::preallocate(InodeId id, uint64_t off, uint64_t len, bool keep_size) {
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  // Dirty data in the range is data, not a hole: write it first (btrfs waits for ordered extents).
  UBTRFS_TRY_STATUS(flush_locked(id));
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const uint64_t start = round_down(off, ss), end = round_up(off + len, ss);
  auto exts = UBTRFS_TRY(find_file_extents(*root, fs, id.objectid, start, end));
  // Gaps (and explicit hole items) get PREALLOC extents; existing data and prealloc stay.
  std::vector<std::pair<uint64_t, uint64_t>> gaps;
  uint64_t cursor = start;
  for (const auto& e : exts) {
    if (e.is_hole()) continue;
    if (e.file_offset > cursor) gaps.emplace_back(cursor, std::min(e.file_offset, end));
    cursor = std::max(cursor, e.end(ss));
  }
  if (cursor < end) gaps.emplace_back(cursor, end);
  // All the data space first (btrfs_fallocate reserves the range before allocating): ENOSPC here
  // changes nothing. What the allocations below do not take is given back on every exit.
  uint64_t unallocated = 0;
  for (auto [gs, ge] : gaps) unallocated += ge - gs;
  alloc::SpaceInfo& data_space = fs_.spaces().data();
  UBTRFS_TRY_STATUS(data_space.reserve_bytes(unallocated, alloc::FlushMode::kFlushData));
  struct Giveback {
    alloc::SpaceInfo& si;
    uint64_t& left;
    ~Giveback() { si.release_bytes(left); }
  } giveback{data_space, unallocated};
  for (auto [gs, ge] : gaps) {
    uint64_t cur = gs;
    while (cur < ge) {
      // btrfs_prealloc_file_range: 3 items per extent (the file extent, the inode, the hole it
      // replaces).
      TransHandle th = UBTRFS_TRY(fs_.transactions().start(3));
      auto ext = UBTRFS_TRY(fs_.allocator().reserve_data(
          th.tree(), std::min<uint64_t>(ge - cur, alloc::kMaxDataExtent), ss, 0, true));
      unallocated -= std::min(unallocated, ext.len);
      const uint64_t dropped =
          UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs, *refs_, id.objectid, cur, cur + ext.len));
      note_extent_change(fs_, id, th.transid(), cur, cur + ext.len);
      UBTRFS_TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), *root, id.objectid, cur,
                                                 make_file_extent(th.transid(), kFileExtentPrealloc, ext.bytenr,
                                                                  ext.len, 0, ext.len, ext.len)));
      UBTRFS_TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), ext.bytenr, ext.len, root->objectid(),
                                                           id.objectid, cur, +1, true));
      InodeItem ii = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, *root, id.objectid));
      ii.nbytes = ii.nbytes.get() - dropped + ext.len;
      ii.flags = ii.flags.get() | kInodePrealloc;
      UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
      cur += ext.len;
    }
  }
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(2));
  InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const Timespec now = now_btrfs();
  if (stamps_file_times()) ii.ctime = now;
  if (!keep_size && off + len > ii.size) {
    ii.size = off + len;
    if (stamps_file_times()) ii.mtime = now;
  }
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
  if (!fs.no_holes()) UBTRFS_TRY_STATUS_OR_ABORT(th, fill_holes(th, *root, id.objectid, ii.size));
  return {};
}

// ---- SEEK_DATA / SEEK_HOLE (btrfs find_desired_extent) --------------------------------------------

Result<uint64_t> FileData::seek_data_hole(InodeId id, uint64_t off, int whence) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return fail(EINVAL, "lseek whence {} not supported", whence);
  const uint32_t ss = fs_.params().sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const uint64_t size = ii.size;
  if (off >= size) return fail(ENXIO, "root {} ino {}: seek offset {} at or past EOF {}", id.subvol, id.objectid, off, size);
  // Data intervals from `off` on: written extents (not holes, not unwritten prealloc) and delalloc.
  std::vector<std::pair<uint64_t, uint64_t>> data;
  auto exts = UBTRFS_TRY(find_file_extents(*root, fs_.params(), id.objectid, off, size));
  for (const auto& e : exts)
    if (!e.is_hole() && !e.is_prealloc()) data.emplace_back(e.file_offset, e.end(ss));
  if (Dirty* d = find_dirty(id))
    for (const auto& r : d->data.runs())
      if (r.start + r.len > off) data.emplace_back(r.start, r.start + r.len);
  std::sort(data.begin(), data.end());
  if (whence == SEEK_DATA) {
    for (auto [s, e] : data)
      if (e > off) return std::max(s, off);
    return fail(ENXIO, "root {} ino {}: no data after offset {}", id.subvol, id.objectid, off);
  }
  uint64_t pos = off;
  for (auto [s, e] : data) {
    if (s > pos) break;
    pos = std::max(pos, e);
  }
  return std::min(pos, size);
}

}  // namespace ubtrfs::fs
