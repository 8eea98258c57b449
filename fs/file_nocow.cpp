// FileData: writing into preallocated extents in place (btrfs run_delalloc_nocow +
// btrfs_mark_extent_written; can_nocow_file_extent's exclusivity rules), and into the written
// extents of a NODATACOW inode (chattr +C).
//
// A sector written over an unwritten PREALLOC extent that only this inode references needs no new
// data space: the flusher writes it where the extent already is and converts that part of the
// PREALLOC item into a REG item (the extent's reference count grows by the extra pieces, as
// btrfs_mark_extent_written does). So a write into preallocated space never needs data space and
// succeeds on a full device, and fallocate's promise holds.
//
// Which sectors qualify is decided at write() time, when they become dirty (Dirty::nocow), and the
// decision stays true until they are flushed: only the flusher converts PREALLOC ranges, and the
// operations that drop extents under dirty sectors (truncate, punch, zero range, evict) drop those
// sectors too. An extent is exclusive when (kernel's rules) no snapshot may share the leaf that
// points to it (its generation is newer than the root's last_snapshot), every back-reference —
// inline, keyed and queued as a delayed ref — is an EXTENT_DATA_REF of this root, inode and offset
// key (file position - extent offset), and none is a shared (full back-ref) one. So an extent a
// clone (file_clone.cpp) shares with another file, or with this file at another position, is
// never written in place: the write is COWed.
//
// NODATACOW inodes (chattr +C, fs/inode_flags.h): a sector written over an uncompressed REG
// extent the inode alone references is overwritten where it lies, and no item changes (btrfs's
// nocow ordered extents insert no file extent). Only for NODATASUM inodes (every NODATACOW regular
// file btrfs makes is one): an extent with checksums would keep stale ones (the kernel then COWs,
// csum_exist_in_range).
#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "alloc/extent_tree.h"
#include "fs/csum_tree.h"
#include "fs/file_data.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
Result<bool> FileData::extent_exclusive(const FileExtent& e, uint64_t root_id, uint64_t ino) {
  RootRecord* rec = UBTRFS_TRY(fs_.fs_root(root_id));
  // A snapshot taken after the extent was written shares the leaf that points to it.
  if (e.generation <= rec->item.last_snapshot.get()) return false;
  // This item's reference key: (root, inode, file position - extent offset). The pieces a split
  // leaves of one item (bookends, PREALLOC parts written in place) keep that key, so its count may
  // be above one; any other key — another inode, or this inode at another position (a clone
  // within the file) — means the extent is shared (btrfs check_committed_ref / check_delayed_ref
  // compare root, objectid and offset).
  const uint64_t ref_offset = e.file_offset - e.offset;
  auto ours = [&](const alloc::ExtentBackref& r) {
    return r.type == kExtentDataRefKey && r.root == root_id && r.objectid == ino && r.data_offset == ref_offset;
  };
  // References queued in this transaction.
  if (auto head = fs_.delayed_refs().peek(e.disk_bytenr)) {
    for (const auto& [ref, delta] : head->refs)
      if (delta > 0 && !(ref.root == root_id && ref.objectid == ino && ref.offset == ref_offset)) return false;
  }
  TreeRoot& extents = *fs_.extent_root().tree;
  Path path;
  const Key key{e.disk_bytenr, kExtentItemKey, e.disk_num_bytes};
  const int ret = UBTRFS_TRY(search_slot(nullptr, extents, key, path, 0, false));
  if (ret != 0) {
    // No extent item yet: allocated in this transaction; its head holds all its references.
    auto head = fs_.delayed_refs().peek(e.disk_bytenr);
    return head && head->must_insert;
  }
  const auto body = UBTRFS_TRY(alloc::parse_extent_item(key, path.leaf().item_data(path.slot())));
  for (const auto& r : body.inline_refs)
    if (!ours(r)) return false;
  // Keyed back-references follow the extent item: (bytenr, 176..184, *).
  for (;;) {
    auto more = UBTRFS_TRY(next_item(extents, path));
    if (!more) break;
    const Key k = path.leaf().item_key(path.slot());
    if (k.objectid != e.disk_bytenr || k.type > kSharedDataRefKey) break;
    if (k.type < kTreeBlockRefKey) continue;
    const auto r = UBTRFS_TRY(alloc::parse_keyed_backref(k, path.leaf().item_data(path.slot())));
    if (!ours(r)) return false;
  }
  return true;
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> FileData::nocow_ranges(InodeId id, TreeRoot& root,
                                                                           const InodeItem& ii, uint64_t off,
                                                                           uint64_t len) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  // btrfs only tries nocow for NODATACOW inodes and inodes that ever had a prealloc extent
  // (BTRFS_INODE_PREALLOC).
  if (!(ii.flags.get() & (kInodePrealloc | kInodeNodatacow)) || len == 0) return out;
  const bool overwrite_written = (ii.flags.get() & (kInodeNodatacow | kInodeNodatasum)) ==
                                 (kInodeNodatacow | kInodeNodatasum);
  const uint32_t ss = fs_.params().sectorsize;
  const uint64_t start = round_down(off, ss), end = round_up(off + len, ss);
  auto exts = UBTRFS_TRY(find_file_extents(root, fs_.params(), id.objectid, start, end));
  for (const auto& e : exts) {
    const bool written = overwrite_written && e.type == kFileExtentReg && !e.is_hole();
    if (!(e.is_prealloc() || written) || e.compression != kCompressNone) continue;
    if (!UBTRFS_TRY(extent_exclusive(e, id.subvol, id.objectid))) continue;
    const uint64_t s = std::max(start, e.file_offset), t = std::min(end, e.end(ss));
    if (s < t) out.emplace_back(s, t);
  }
  return out;
}

Status FileData::flush_nocow_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len,
                                 bool nodatasum) {
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  uint64_t cur = start;
  const uint64_t end = start + len;
  while (cur < end) {
    auto exts = UBTRFS_TRY(find_file_extents(root, fs, id.objectid, cur, cur + ss));
    const FileExtent* e = nullptr;
    for (const auto& x : exts)
      if ((x.is_prealloc() || (nodatasum && x.type == kFileExtentReg && !x.is_hole())) && x.file_offset <= cur &&
          x.end(ss) > cur)
        e = &x;
    if (!e)
      return fail(EUCLEAN, "root {} ino {}: sector at file offset {} was dirtied as a write in place "
                           "but no PREALLOC or nocow extent covers it at flush time",
                  id.subvol, id.objectid, cur);
    const uint64_t piece = std::min(end, e->end(ss)) - cur;
    const uint64_t logical = e->disk_bytenr + e->offset + (cur - e->file_offset);
    const std::vector<uint8_t> bytes = d.data.copy(cur, piece);
    if (auto w = write_disk(logical, bytes); !w)
      return fail(w.error().err, "root {} ino {}: writing {} bytes of file offset {} in place at bytenr {}: {}",
                  id.subvol, id.objectid, piece, cur, logical, w.error().message);
    if (!e->is_prealloc()) {
      // A written extent of a NODATACOW inode: the data is where the item says; nothing to change.
      d.data.drop(cur, piece);
      for (uint64_t s = cur; s < cur + piece; s += ss) d.nocow.erase(s);
      cur += piece;
      continue;
    }
    // btrfs_mark_extent_written: [cur, +piece) of the PREALLOC item becomes REG over the same disk
    // extent; drop_extents keeps the PREALLOC bookends (one more reference each) and drops the
    // middle piece's reference, which the REG item takes back (same ref key: the two cancel).
    // The REG item's +1 is queued BEFORE the drop's -1, as the kernel orders it: a delayed-ref
    // runner (the flusher's, in a join handle beside this one) may take the head between the two,
    // and a head holding only the -1 of an extent's last reference would free the extent (or
    // cancel it, if born in this transaction) under the item about to point at it — the abort
    // "data extent X has no extent item for a change of EXTENT_DATA_REF" (xfstests generic/091).
    TransHandle th = UBTRFS_TRY(fs_.transactions().join(&d.rsv));
    const FileExtent pre = *e;
    const uint64_t ext_offset = pre.offset + (cur - pre.file_offset);
    UBTRFS_TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), pre.disk_bytenr, pre.disk_num_bytes,
                                                         root.objectid(), id.objectid, cur - ext_offset, +1, false));
    const uint64_t dropped =
        UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, cur, cur + piece));
    note_extent_change(fs_, id, th.transid(), cur, cur + piece);
    UBTRFS_TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), root, id.objectid, cur,
                                               make_file_extent(th.transid(), kFileExtentReg, pre.disk_bytenr,
                                                                pre.disk_num_bytes, ext_offset, piece, pre.ram_bytes)));
    if (!nodatasum)
      UBTRFS_TRY_STATUS_OR_ABORT(th, insert_csums(th.tree(), *fs_.csum_root().tree, fs, logical,
                                           compute_data_csums(fs, bytes)));
    InodeItem ii = UBTRFS_TRY_OR_ABORT(th, read_inode(fs_, root, id.objectid));
    ii.nbytes = ii.nbytes.get() - dropped + piece;
    UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
    th.end();
    d.data.drop(cur, piece);
    for (uint64_t s = cur; s < cur + piece; s += ss) d.nocow.erase(s);
    cur += piece;
  }
  return {};
}

}  // namespace ubtrfs::fs
