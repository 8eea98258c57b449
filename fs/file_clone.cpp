// FileData: sharing data extents between files (btrfs reflink.c `btrfs_clone_files`, `btrfs_clone`,
// `btrfs_replace_file_extents`), the reflink that serves copy_file_range.
//
// What a clone does: the source's delalloc is written first (its extents must exist: btrfs starts
// and waits for the range's ordered extents), then, for each piece of the source range — one file
// extent item, or a gap — one handle drops the destination's extents over the matching range (the
// drop path queues their reference drops and trims or splits items crossing the edges), inserts a
// copy of the source item with `offset` and `num_bytes` narrowed to the piece, and queues one
// EXTENT_DATA_REF (dest root, dest inode, dest position - extent offset) on the same disk extent.
// The extent tree keeps a count per such key (inline, or keyed items when the extent item is full:
// alloc/extent_tree.h), so any number of files can share an extent; the space returns when the
// last reference goes (the commit's delayed-ref run frees it and deletes its checksums).
//
// Rules mirrored from the kernel:
// - only sector-aligned ranges are shared; the source's last sector may be shared when the range
//   ends at the source's EOF and reaches the destination's EOF (generic_remap_checks), since the
//   bytes past EOF in that sector read as zeros and nothing exposes them;
// - the cloned item keeps the source's generation (is_new_extent is false for clones), its type
//   (PREALLOC stays PREALLOC: an unwritten extent stays unwritten in both files) and its
//   compression (a compressed extent is shared whole, with the piece chosen by offset/num_bytes);
// - holes stay holes (the destination's extents are dropped and nothing is inserted);
// - inline extents are not shared: the caller copies those bytes (btrfs clones inline data into
//   an inline extent only in narrow cases, and copies otherwise);
// - a NODATASUM file and a checksummed one never share (btrfs_remap_file_range_prep refuses to
//   make a file partly checksummed): the caller copies;
// - checksums are keyed by disk bytenr, so a shared extent needs no new ones.
// Shared extents are never written in place afterwards: file_nocow.cpp's exclusivity check sees
// the other references and the write is COWed.
//
// Reservations: each piece's handle reserves its items before it changes anything (the items it
// deletes or trims, the new item, the inode, a hole item without NO_HOLES), so ENOSPC comes before
// any change of that piece; a later piece failing leaves the earlier ones shared and the inode
// consistent (size and nbytes are updated in every handle), and the short count is returned, as a
// short copy_file_range. No data space is needed.
#include <sys/stat.h>

#include <algorithm>
#include <optional>

#include <spdlog/spdlog.h>

#include "fs/file_data.h"
#include "fs/transaction.h"

namespace ubtrfs::fs {
namespace {

// A piece of the source range: one file extent item (narrowed to the range) or a gap / hole item.
struct ClonePiece {
  uint64_t start = 0, end = 0;     // source file range
  std::optional<FileExtent> ext;   // nullopt: a hole
};

}  // namespace

Result<uint64_t> FileData::clone_range(InodeId src, uint64_t src_off, InodeId dst, uint64_t dst_off, uint64_t len) {
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  if (len == 0) return 0;
  if (src_off % ss || dst_off % ss)
    return fail(EINVAL, "clone of root {} ino {} at {} to root {} ino {} at {}: offsets not sector-aligned",
                src.subvol, src.objectid, src_off, dst.subvol, dst.objectid, dst_off);
  if (fs_.read_only()) return fail(EROFS, "{}: read-only filesystem", fs_.path());
  TreeRoot* sroot = UBTRFS_TRY(root_of(src));
  TreeRoot* droot = UBTRFS_TRY(root_of(dst));
  const InodeItem si = UBTRFS_TRY(read_inode(fs_, *sroot, src.objectid));
  const InodeItem di = UBTRFS_TRY(read_inode(fs_, *droot, dst.objectid));
  if (!S_ISREG(si.mode.get()) || !S_ISREG(di.mode.get()))
    return fail(EINVAL, "clone from root {} ino {} to root {} ino {}: not regular files", src.subvol, src.objectid,
                dst.subvol, dst.objectid);
  if ((si.flags.get() & kInodeNodatasum) != (di.flags.get() & kInodeNodatasum)) return 0;
  const uint64_t src_size = si.size;
  if (src_off >= src_size) return 0;
  len = std::min(len, src_size - src_off);
  uint64_t share = round_down(len, ss);
  if (len % ss && src_off + len == src_size && dst_off + len >= di.size.get()) share = round_up(len, ss);
  if (share == 0) return 0;
  if (src == dst && src_off < dst_off + share && dst_off < src_off + share)
    return fail(EINVAL, "clone within root {} ino {}: ranges [{}, +{}) and [{}, +{}) overlap", src.subvol,
                src.objectid, src_off, share, dst_off, share);

  // Inline data is copied, not shared: an inline extent, or a file small enough that its flush
  // below may write one (both only at offset 0). Decided before anything changes.
  if (src_off < ss && (src_size <= kMaxInline || UBTRFS_TRY(has_inline_extent(*sroot, src.objectid)))) return 0;
  // Landing past the destination's EOF: its old last sector must read as zeros past the old EOF
  // first (btrfs_cont_expand), which the size change does.
  if (dst_off > di.size.get()) UBTRFS_TRY_STATUS(set_size(dst, dst_off));
  // The source's data must be in extents, and the destination's delalloc must not outlive the
  // clone over it (its flush would overwrite the shared range).
  UBTRFS_TRY_STATUS(flush_locked(src));
  if (dst != src) UBTRFS_TRY_STATUS(flush_locked(dst));

  const uint64_t src_end = src_off + share;
  auto exts = UBTRFS_TRY(find_file_extents(*sroot, fs, src.objectid, src_off, src_end));
  std::vector<ClonePiece> pieces;
  uint64_t cursor = src_off;
  for (const FileExtent& e : exts) {
    if (e.is_inline()) return 0;  // copied by the caller (only the kernel's odd layouts get here)
    const uint64_t s = std::max(e.file_offset, src_off), t = std::min(e.end(ss), src_end);
    if (s >= t) continue;
    if (s > cursor) pieces.push_back({cursor, s, std::nullopt});
    pieces.push_back({s, t, e.is_hole() ? std::nullopt : std::optional<FileExtent>(e)});
    cursor = t;
  }
  if (cursor < src_end) pieces.push_back({cursor, src_end, std::nullopt});

  auto clone_piece = [&](const ClonePiece& p) -> Status {
    const uint64_t ds = dst_off + (p.start - src_off), dt = dst_off + (p.end - src_off);
    // btrfs_replace_file_extents reserves per extent: the destination items it deletes or trims
    // (one more for a split), the new item, the inode, and a hole item without NO_HOLES.
    auto old = UBTRFS_TRY(find_file_extents(*droot, fs, dst.objectid, ds, dt));
    const unsigned items = static_cast<unsigned>(3 + old.size() + (fs.no_holes() ? 0 : 1));
    TransHandle th = UBTRFS_TRY(fs_.transactions().start(items));
    InodeItem cur = UBTRFS_TRY(read_inode(fs_, *droot, dst.objectid));  // before the first change: no abort
    const uint64_t dropped =
        UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), *droot, fs, *refs_, dst.objectid, ds, dt));
    uint64_t added = 0;
    if (p.ext) {
      const FileExtent& e = *p.ext;
      const uint64_t ext_offset = e.offset + (p.start - e.file_offset);
      FileExtentItem item =
          make_file_extent(e.generation, e.type, e.disk_bytenr, e.disk_num_bytes, ext_offset, dt - ds, e.ram_bytes);
      item.compression = e.compression;
      UBTRFS_TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), *droot, dst.objectid, ds, item));
      // The data ref's offset is the file position the extent would start at (u64, wrapping as the
      // kernel's does when the piece starts deep inside the extent).
      UBTRFS_TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), e.disk_bytenr, e.disk_num_bytes,
                                                           droot->objectid(), dst.objectid, ds - ext_offset, +1,
                                                           false));
      added = dt - ds;
      // An unwritten extent that may become this file's alone (the source deleted) can later be
      // written in place: btrfs tries nocow only for inodes flagged PREALLOC.
      if (e.is_prealloc()) cur.flags = cur.flags.get() | kInodePrealloc;
    }
    note_extent_change(fs_, dst, th.transid(), ds, dt);
    cur.nbytes = cur.nbytes.get() - std::min<uint64_t>(dropped, cur.nbytes.get()) + added;
    cur.size = std::max<uint64_t>(cur.size.get(), dst_off + std::min(p.end - src_off, len));
    if (stamps_file_times()) {
      const Timespec now = now_btrfs();
      cur.mtime = now;
      cur.ctime = now;
    }
    UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, *droot, dst.objectid, cur));
    if (!fs.no_holes()) UBTRFS_TRY_STATUS_OR_ABORT(th, fill_holes(th, *droot, dst.objectid, cur.size));
    return {};
  };

  uint64_t done = 0;
  for (const ClonePiece& p : pieces) {
    if (auto st = clone_piece(p); !st) {
      if (done == 0) return fail(st.error());
      spdlog::warn("clone of root {} ino {} to root {} ino {} stopped after {} bytes: {}", src.subvol, src.objectid,
                   dst.subvol, dst.objectid, done, st.error().message);
      break;
    }
    done = p.end - src_off;
  }
  return std::min(done, len);
}

}  // namespace ubtrfs::fs
