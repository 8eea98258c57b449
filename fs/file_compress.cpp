// Compression on write: the part of FileData's flush that turns dirty sectors into compressed
// extents (btrfs inode.c compress_file_range / submit_one_async_extent, cow_file_range_inline with a
// compressed payload; FORMAT.md §3.7).
//
// Which inodes: inode_compression (fs/compress_policy.h) decides per flush from the inode flags,
// the btrfs.compression property and the mount option. How, per cow run of dirty sectors:
// - pieces of at most kMaxUncompressed (128 KiB) of file data, each its own extent;
// - a piece of one sector is written plain unless it is the whole file (the kernel's rule: a
//   sector cannot shrink by a sector);
// - unless compress-force, the heuristic judges the piece first; a "no" writes it plain and changes
//   nothing else;
// - the compressed bytes must be smaller than the input and, rounded up to the sector size, save at
//   least one sector; otherwise the piece is written plain and the inode gets NOCOMPRESS (not with
//   compress-force or a property), so later writes stop trying — mark_incompressible;
// - the extent: REG, compression = the type, disk_num_bytes = compressed size rounded up to the
//   sector (the tail zero), num_bytes = ram_bytes = the piece, offset 0; the data checksums cover
//   the on-disk (compressed) sectors, which is what btrfs verifies before decompressing;
// - a file of at most one sector whose compressed form fits max_inline becomes a compressed inline
//   extent (ram_bytes the file size), as can_cow_file_range_inline allows.
// Space: the sectors hold their uncompressed size of DATA may_use from write(); the allocation
// takes the compressed size out of it and the rest is released at once (btrfs frees the
// difference when the async extent is submitted). The first lzo or zstd extent sets that type's
// incompat bit in the superblock, as btrfs_set_fs_incompat does.
// Locking: as flush_run — the inode lock exclusively, no handle held by the caller.
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/compression.h"
#include "fs/csum_tree.h"
#include "fs/file_data.h"
#include "fs/inode_flags.h"
#include "fs/xattr.h"

namespace ubtrfs::fs {

Result<InodeCompression> FileData::compression_of(TreeRoot& root, uint64_t ino, const InodeItem& ii) {
  const uint64_t flags = ii.flags.get();
  const bool maybe = !(flags & (kInodeNodatacow | kInodeNodatasum)) &&
                     (compress_.force || !(flags & kInodeNocompress));
  if (!maybe) return InodeCompression{};
  auto prop = UBTRFS_TRY(get_xattr(root, ino, kCompressionProp));
  std::optional<std::string> value;
  if (prop) value = std::string(prop->begin(), prop->end());
  return inode_compression(compress_, flags, value ? std::optional<std::string_view>(*value) : std::nullopt);
}

void FileData::note_compression_feature(uint8_t type) {
  const uint64_t bit = type == kCompressLzo ? kIncompatCompressLzo : type == kCompressZstd ? kIncompatCompressZstd : 0;
  if (!bit) return;
  std::lock_guard g(fs_.super_mu());
  Superblock& sb = fs_.super();
  if (sb.incompat_flags.get() & bit) return;
  sb.incompat_flags = sb.incompat_flags.get() | bit;
  spdlog::info("{}: setting incompat feature flag for COMPRESS_{} ({:#x})", fs_.path(),
               type == kCompressLzo ? "LZO" : "ZSTD", bit);
}

Status FileData::mark_incompressible(InodeId id, TreeRoot& root, Dirty& d, InodeCompression& comp) {
  const bool mark = !comp.force && !comp.has_prop;
  comp = InodeCompression{};
  if (!mark) return {};
  TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
  InodeItem ii = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
  if (ii.flags.get() & kInodeNocompress) return {};
  ii.flags = ii.flags.get() | kInodeNocompress;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
  return {};
}

Result<bool> FileData::flush_compressed_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size,
                                               InodeCompression& comp) {
  const FsParams& fs = fs_.params();
  std::vector<uint8_t> bytes = d.data.copy(0, fs.sectorsize);
  bytes.resize(size);
  if (!comp.force && !compress_heuristic(bytes)) return false;
  auto out = compress_extent(comp.type, bytes, fs.sectorsize, comp.level);
  if (!out) return fail(out.error());
  // The codecs refuse output not smaller than the input (-E2BIG); an inline extent must also fit
  // max_inline. Otherwise a one-sector file cannot save a sector: incompressible.
  if (out->size() >= size || out->size() > kMaxInline) {
    UBTRFS_TRY_STATUS(mark_incompressible(id, root, d, comp));
    return false;
  }
  TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
  const uint64_t dropped =
      UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, 0, fs.sectorsize));
  UBTRFS_TRY_STATUS_OR_ABORT(
      th, insert_inline_extent(th.tree(), root, id.objectid, th.transid(), *out, comp.type, size));
  note_extent_change(fs_, id, th.transid(), 0, fs.sectorsize);
  note_compression_feature(comp.type);
  InodeItem cur = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
  cur.nbytes = cur.nbytes.get() - dropped + size;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, cur));
  th.end();
  d.data.drop(0, fs.sectorsize);  // no extent: settle() gives its data reservation back
  return true;
}

Result<bool> FileData::write_compressed_extent(InodeId id, TreeRoot& root, Dirty& d, uint64_t file_off, uint64_t len,
                                               uint8_t type, std::span<const uint8_t> compressed) {
  const FsParams& fs = fs_.params();
  const uint64_t disk_len = round_up(compressed.size(), fs.sectorsize);
  std::vector<uint8_t> disk(disk_len, 0);
  std::memcpy(disk.data(), compressed.data(), compressed.size());
  TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
  // One contiguous extent of the compressed size (min_len = len: a compressed extent cannot be
  // split across allocations), paid from the sectors' data reservation.
  auto reserved = fs_.allocator().reserve_data(th.tree(), disk_len, disk_len, 0, true);
  // Free data space too fragmented for it: the piece is written plain, in whatever pieces the
  // allocator finds (its reservation covers that), as the kernel falls back to cow_file_range.
  if (!reserved && reserved.error().err == ENOSPC) return false;
  const auto ext = UBTRFS_TRY(std::move(reserved));
  if (auto w = write_disk(ext.bytenr, disk); !w) {
    fs_.allocator().release_data(ext.bytenr, ext.len, true);
    return fail(w.error().err, "root {} ino {}: writing {} compressed bytes of file offset {} at bytenr {}: {}",
                id.subvol, id.objectid, disk_len, file_off, ext.bytenr, w.error().message);
  }
  // The sectors held `len` bytes of may_use: the allocation took disk_len of them; the rest is
  // what compression saved and goes back now.
  const uint64_t taken = std::min(d.data_reserved, disk_len);
  d.data_reserved -= taken;
  const uint64_t saved = std::min(d.data_reserved, len - disk_len);
  fs_.spaces().data().release_bytes(saved);
  d.data_reserved -= saved;
  const std::vector<uint8_t> csums = compute_data_csums(fs, disk);
  // From here on trees change: any failure leaves a half-written extent and aborts.
  const uint64_t dropped =
      UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, file_off, file_off + len));
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), root, id.objectid, file_off,
                                                    make_file_extent(th.transid(), kFileExtentReg, ext.bytenr, disk_len,
                                                                     0, len, len, type)));
  note_extent_change(fs_, id, th.transid(), file_off, file_off + len);
  UBTRFS_TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), ext.bytenr, disk_len, root.objectid(),
                                                              id.objectid, file_off, +1, true));
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_csums(th.tree(), *fs_.csum_root().tree, fs, ext.bytenr, csums));
  note_compression_feature(type);
  InodeItem ii = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
  ii.nbytes = ii.nbytes.get() - dropped + len;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
  th.end();
  d.data.drop(file_off, len);
  return true;
}

Status FileData::flush_compressed_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len,
                                      uint64_t size, InodeCompression& comp) {
  const uint32_t ss = fs_.params().sectorsize;
  const uint64_t end = start + len;
  // Pieces that stay plain are gathered and written as one extent run (flush_run) before the next
  // compressed piece, as the kernel writes an async chunk it does not compress with cow_file_range.
  uint64_t plain_from = start;
  auto flush_plain = [&](uint64_t upto) -> Status {
    if (plain_from < upto) UBTRFS_TRY_STATUS(flush_run(id, root, d, plain_from, upto - plain_from, false));
    plain_from = upto;
    return {};
  };
  for (uint64_t cur = start; cur < end && comp.type != kCompressNone;) {
    const uint64_t n = std::min<uint64_t>(end - cur, kMaxUncompressed);
    const uint64_t piece = cur;
    cur += n;
    if (n <= ss && (piece > 0 || piece + n < size)) continue;  // one sector: nothing to save
    std::vector<uint8_t> data = d.data.copy(piece, n);
    if (!comp.force && !compress_heuristic(data)) continue;
    auto out = compress_extent(comp.type, data, ss, comp.level);
    if (!out) return fail(out.error());
    if (out->size() >= n || round_up(out->size(), ss) + ss > n) {
      UBTRFS_TRY_STATUS(mark_incompressible(id, root, d, comp));
      continue;
    }
    UBTRFS_TRY_STATUS(flush_plain(piece));
    if (UBTRFS_TRY(write_compressed_extent(id, root, d, piece, n, comp.type, *out))) plain_from = cur;
  }
  return flush_plain(end);
}

}  // namespace ubtrfs::fs
