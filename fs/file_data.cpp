// FileData: delalloc, flushing, reading, truncation (see file_data.h for the design essay).
// This file: the per-inode buffers and their accounting, the reservations, reading, size changes
// and eviction. Writing into the delalloc buffers is in file_data_write.cpp, flushing them into
// extents in file_data_flush.cpp (with file_compress.cpp and file_nocow.cpp), fallocate, hole
// punching and SEEK_DATA/SEEK_HOLE in file_fallocate.cpp, cloning in file_clone.cpp.
#include "fs/file_data.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/compression.h"
#include "fs/csum_tree.h"
#include "fs/inode_flags.h"
#include "fs/transaction.h"
#include "fs/tree_log.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

void note_extent_change(FsInfo& fs, InodeId id, uint64_t transid, uint64_t start, uint64_t end) {
  if (TreeLog* log = fs.tree_log()) log->note_change(id, transid, start, end);
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {
namespace {

std::string hex_csum(std::span<const uint8_t> c) {
  std::string s = "0x";
  // btrfs prints the csum as the little-endian value for crc32c; print the bytes in order instead
  // (unambiguous for every csum type).
  for (uint8_t b : c) s += fmt::format("{:02x}", b);
  return s;
}

}  // namespace

DirtyLimits dirty_limits(uint64_t cache_budget_bytes) {
  const uint64_t limit = std::clamp(cache_budget_bytes / kDirtyLimitCacheDivisor, kDirtyLimitMin, kDirtyLimitMax);
  return DirtyLimits{.background = limit / 2, .limit = limit};
}

FileData::FileData(FsInfo& fs, const InodeNumbers& numbers, InodeLocks& locks)
    : fs_(fs),
      numbers_(numbers),
      locks_(locks),
      refs_(std::make_unique<AllocatorRefs>(fs)),
      pages_(fs.params().sectorsize, dirty_limits(fs.cache().budget()).limit) {}

FileData::~FileData() = default;

Result<TreeRoot*> FileData::root_of(InodeId id) {
  RootRecord* rec = UBTRFS_TRY(fs_.fs_root(id.subvol));
  return rec->tree.get();
}

FileData::Dirty* FileData::find_dirty(InodeId id) {
  std::lock_guard g(mu_);
  auto it = dirty_.find(id);
  return it == dirty_.end() ? nullptr : it->second.get();
}

FileData::Dirty& FileData::dirty_of(InodeId id) {
  std::lock_guard g(mu_);
  auto& slot = dirty_[id];
  if (!slot) slot = std::make_unique<Dirty>(fs_.params().sectorsize, &pages_, &fs_.spaces().metadata());
  return *slot;
}

FileData::Dirty& FileData::dirty_for_change(InodeId id, const InodeItem& ii) {
  Dirty& d = dirty_of(id);
  d.nodatasum = ii.flags.get() & kInodeNodatasum;
  // Sectors that may be compressed become extents of at most kMaxUncompressed (the property alone,
  // without the COMPRESS flag, is not looked up here: chattr +c and the kernel set both).
  d.max_extent = inode_compression(compress_, ii.flags.get(), std::nullopt).type != kCompressNone
                     ? kMaxUncompressed
                     : alloc::kMaxDataExtent;
  return d;
}

void FileData::account(InodeId id, Dirty& d) {
  const uint64_t now = d.data.bytes();
  const uint64_t before = d.bytes.exchange(now);
  const uint64_t in_place = d.nocow.size() * fs_.params().sectorsize;
  d.new_bytes = now > in_place ? now - in_place : 0;
  if (now >= before)
    total_bytes_.fetch_add(now - before);
  else
    total_bytes_.fetch_sub(before - now);
  if (now == 0 && d.users == 0 && d.data_reserved == 0 && d.rsv.size() == 0 && d.rsv.reserved() == 0) {
    std::lock_guard g(mu_);
    dirty_.erase(id);  // REQUIRES the exclusive inode lock: nobody else holds a pointer to it
  }
}

// ---- reservations -----------------------------------------------------------------------------------

uint64_t FileData::rsv_target(uint64_t extents, uint64_t bytes, bool nodatasum) const {
  if (bytes == 0) return 0;
  const alloc::SpaceInfos& sp = fs_.spaces();
  const FsParams& fs = fs_.params();
  // btrfs_csum_bytes_to_leaves: checksums of `bytes` spread over leaves of maximal csum items.
  uint64_t csum_leaves = 0;
  if (!nodatasum) {
    const uint64_t per_leaf = std::max<uint64_t>(1, max_item_size(fs.nodesize) / fs.csum_size());
    const uint64_t csums = bytes / fs.sectorsize;
    csum_leaves = (csums + per_leaf - 1) / per_leaf;
  }
  // btrfs_calculate_inode_block_rsv_size, with the newest kernel's delayed-ref part.
  return sp.insert_size(extents + csum_leaves) + sp.metadata_size(1) + sp.delayed_ref_bytes(extents);
}

uint64_t FileData::delalloc_metadata_reserved() {
  std::lock_guard g(mu_);
  uint64_t sum = 0;
  for (const auto& [id, d] : dirty_) sum += d->rsv.reserved();
  return sum;
}

size_t FileData::delalloc_inodes() {
  std::lock_guard g(mu_);
  return dirty_.size();
}

uint64_t FileData::rsv_target(const Dirty& d) const {
  const uint64_t bytes = d.data.bytes();
  return rsv_target(d.data.run_count() + bytes / d.max_extent, bytes, d.nodatasum);
}

void FileData::settle(InodeId id, Dirty& d) {
  alloc::SpaceInfos& sp = fs_.spaces();
  // Nocow marks of sectors no longer dirty go; nocow sectors hold no data reservation.
  std::erase_if(d.nocow, [&](uint64_t s) { return !d.data.has_sector(s); });
  // Sectors dropped without being written give their data reservation back.
  const uint64_t hold = d.data.bytes() - d.nocow.size() * fs_.params().sectorsize;
  if (d.data_reserved > hold) {
    sp.data().release_bytes(d.data_reserved - hold);
    d.data_reserved = hold;
  }
  // The delalloc reserve follows the outstanding extents (btrfs_delalloc_release_extents).
  const uint64_t target = rsv_target(d), size = d.rsv.size();
  if (target < size) sp.release_block_rsv(d.rsv, size - target);
  account(id, d);
}

Status FileData::reserve_data(Dirty& d, uint64_t bytes, alloc::FlushMode mode) {
  if (bytes == 0) return {};
  UBTRFS_TRY_STATUS(fs_.spaces().data().reserve_bytes(bytes, mode));
  d.data_reserved += bytes;
  return {};
}

FileData::WriteReservation::WriteReservation(FsInfo& fs)
    : meta(alloc::RsvType::kTemp, &fs.spaces().metadata()), fs_(fs) {}

FileData::WriteReservation::~WriteReservation() {
  if (data) fs_.spaces().data().release_bytes(data);
  fs_.spaces().release_block_rsv(meta, UINT64_MAX);
}

Status FileData::reserve_write(WriteReservation& out, uint64_t off, uint64_t len) {
  if (len == 0 || fs_.read_only()) return {};
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  const uint64_t first = round_down(off, ss), last = round_up(off + len, ss);
  // At most every sector the write touches becomes newly dirty (the rare inline / EOF sector
  // loads come on top, reserved under the lock).
  const uint64_t data = last - first;
  // The delalloc reserve grows by at most one run plus the write's own max-size extents and
  // checksum leaves (rsv_target's terms, each rounded up), plus metadata_size(1) when the inode
  // had no dirty bytes before; the inode update takes metadata_size(1).
  alloc::SpaceInfos& sp = fs_.spaces();
  const uint64_t extents = 1 + (len + alloc::kMaxDataExtent - 1) / alloc::kMaxDataExtent;
  const uint64_t per_leaf = std::max<uint64_t>(1, max_item_size(fs.nodesize) / fs.csum_size());
  const uint64_t csum_leaves = (data / ss + per_leaf - 1) / per_leaf + 1;
  const uint64_t meta =
      sp.insert_size(extents + csum_leaves) + sp.delayed_ref_bytes(extents) + 2 * sp.metadata_size(1);
  if (auto st = sp.data().reserve_bytes(data, alloc::FlushMode::kFlushData); !st) {
    if (st.error().err == ENOSPC) {  // write() reserves exactly, flushing its own inode
      out.data_exhausted = true;
      return {};
    }
    return st;
  }
  out.data += data;
  if (auto st = out.meta.add(meta, alloc::FlushMode::kNoFlush); !st && st.error().err != ENOSPC) return st;
  return {};
}

uint64_t FileData::pending_bytes(InodeId id) {
  std::lock_guard g(mu_);
  auto it = dirty_.find(id);
  return it == dirty_.end() ? 0 : it->second->new_bytes.load();
}

// ---- reading --------------------------------------------------------------------------------------

Status FileData::write_disk(uint64_t logical, std::span<const uint8_t> data) {
  auto phys = UBTRFS_TRY(fs_.chunk_map().map(logical, data.size()));
  for (uint64_t p : phys) UBTRFS_TRY_STATUS(fs_.device().write(p, data));
  return {};
}

Status FileData::write_disk_behind(uint64_t logical, std::vector<uint8_t>&& data) {
  auto phys = UBTRFS_TRY(fs_.chunk_map().map(logical, data.size()));
  return fs_.write_behind()->write_behind(phys, std::move(data));
}

Status FileData::read_verified(InodeId id, uint64_t file_off, uint64_t logical, std::span<uint8_t> out, bool verify) {
  const FsParams& fs = fs_.params();
  auto phys = UBTRFS_TRY(fs_.chunk_map().map(logical, out.size()));
  CsumRange sums;
  if (verify) sums = UBTRFS_TRY(lookup_csums(*fs_.csum_root().tree, fs, logical, out.size()));
  const size_t cs = fs.csum_size();
  // A sector of a checksummed extent without a checksum is a "csum hole": the kernel warns and
  // verifies it against an all-zero digest (btrfs_lookup_bio_sums fills the hole with zeros), so
  // the read fails with EIO like any mismatch. `sums.csums` already holds zeros there.
  for (size_t i = 0; i < sums.present.size(); ++i)
    if (!sums.present[i])
      spdlog::warn("csum hole found for disk bytenr range [{}, {}) (root {} ino {} off {})",
                   logical + i * fs.sectorsize, logical + (i + 1) * fs.sectorsize, id.subvol, id.objectid,
                   file_off + i * fs.sectorsize);
  std::string last_error;
  for (size_t mirror = 0; mirror < phys.size(); ++mirror) {
    auto rd = fs_.device().read(phys[mirror], out);
    if (!rd) {
      last_error = rd.error().message;
      continue;
    }
    if (!verify) return {};
    bool ok = true;
    for (size_t i = 0; i < sums.present.size() && ok; ++i) {
      const io::CsumBytes c = io::compute_csum(fs.csum_type, out.subspan(i * fs.sectorsize, fs.sectorsize));
      std::span<const uint8_t> want{sums.csums.data() + i * cs, cs};
      if (!std::equal(want.begin(), want.end(), c.begin())) {
        ok = false;
        last_error = fmt::format("csum failed root {} ino {} off {} logical {} mirror {} csum {} expected csum {}",
                                 id.subvol, id.objectid, file_off + i * fs.sectorsize, logical + i * fs.sectorsize,
                                 mirror + 1, hex_csum({c.data(), cs}), hex_csum(want));
        spdlog::error("{}", last_error);
      }
    }
    if (ok) return {};
  }
  return fail(EIO, "{}", last_error);
}

Status FileData::read_extents(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off, std::span<uint8_t> out) {
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  std::fill(out.begin(), out.end(), 0);
  const uint64_t end = off + out.size();
  const bool verify = !(ii.flags.get() & kInodeNodatasum);
  auto exts = UBTRFS_TRY(find_file_extents(root, fs, id.objectid, off, end));
  for (const FileExtent& e : exts) {
    if (e.is_hole() || e.is_prealloc()) continue;  // reads as zeros
    if (e.is_inline()) {
      std::vector<uint8_t> plain;
      if (e.compression != kCompressNone)
        plain = UBTRFS_TRY(decompress_extent(e.compression, e.inline_data, e.ram_bytes, ss));
      else
        plain = e.inline_data;
      const uint64_t to = std::min<uint64_t>(end, plain.size());
      for (uint64_t x = off; x < to; ++x) out[x - off] = plain[x];
      continue;
    }
    const uint64_t from = std::max(off, e.file_offset), to = std::min(end, e.end(ss));
    if (from >= to) continue;
    if (e.compression != kCompressNone) {
      // The checksums cover the compressed bytes: read and verify the whole disk extent first.
      std::vector<uint8_t> disk(e.disk_num_bytes);
      UBTRFS_TRY_STATUS(read_verified(id, e.file_offset, e.disk_bytenr, disk, verify));
      auto plain = decompress_extent(e.compression, disk, e.ram_bytes, ss);
      if (!plain)
        return fail(EIO, "root {} ino {} extent at file offset {} bytenr {}: {}", id.subvol, id.objectid, e.file_offset,
                    e.disk_bytenr, plain.error().message);
      const uint64_t src = e.offset + (from - e.file_offset);
      if (src + (to - from) > plain->size())
        return fail(EIO, "root {} ino {} extent at file offset {}: decompressed {} bytes, need {}", id.subvol,
                    id.objectid, e.file_offset, plain->size(), src + (to - from));
      std::memcpy(out.data() + (from - off), plain->data() + src, to - from);
      continue;
    }
    const uint64_t lfrom = e.disk_bytenr + e.offset + (from - e.file_offset);
    const uint64_t a = round_down(lfrom, ss), b = round_up(lfrom + (to - from), ss);
    std::vector<uint8_t> buf(b - a);
    UBTRFS_TRY_STATUS(read_verified(id, round_down(from, ss), a, buf, verify));
    std::memcpy(out.data() + (from - off), buf.data() + (lfrom - a), to - from);
  }
  return {};
}

Status FileData::read_raw(InodeId id, TreeRoot& root, const InodeItem& ii, uint64_t off, std::span<uint8_t> out) {
  UBTRFS_TRY_STATUS(read_extents(id, root, ii, off, out));
  if (Dirty* d = find_dirty(id)) d->data.overlay(off, out);
  return {};
}

Result<size_t> FileData::read(InodeId id, uint64_t off, std::span<uint8_t> out) {
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const uint64_t size = ii.size;
  if (off >= size || out.empty()) return 0;
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), size - off));
  UBTRFS_TRY_STATUS(read_raw(id, *root, ii, off, out.first(n)));
  return n;
}

// ---- size changes ---------------------------------------------------------------------------------

Status FileData::drop_tail_batched(InodeId id, TreeRoot& root, uint64_t from, alloc::FlushMode mode,
                                   const std::function<Status(TransHandle&, InodeItem&)>& first) {
  // btrfs_truncate's loop: the extents go from the end backwards, a bounded batch per handle, so a
  // file with any number of extents is truncated with bounded reservations (each handle reserves
  // for its batch; FLUSH_ALL_STEAL lets a full filesystem finish it from the global reserve). Each
  // handle keeps nbytes exact; `first` runs in the first handle (the size and time update).
  const FsParams& fs = fs_.params();
  auto exts = UBTRFS_TRY(find_file_extents(root, fs, id.objectid, from, UINT64_MAX));
  if (exts.empty() && !first) return {};  // nothing to drop (an empty file being evicted)
  std::vector<uint64_t> cuts;  // batch start offsets, from the end
  for (size_t n = exts.size(); n > 0;) {
    const size_t take = std::min<size_t>(n, kTruncateBatch);
    n -= take;
    cuts.push_back(n == 0 ? from : std::max(from, exts[n].file_offset));
  }
  if (cuts.empty()) cuts.push_back(from);
  bool did_first = false;
  for (uint64_t cut : cuts) {
    TransHandle th = UBTRFS_TRY(fs_.transactions().start(kTruncateItems, mode));
    // Read before the first change: a read error here has changed nothing and needs no abort.
    InodeItem cur = UBTRFS_TRY(read_inode(fs_, root, id.objectid));
    const uint64_t dropped = UBTRFS_TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, cut, UINT64_MAX));
    note_extent_change(fs_, id, th.transid(), cut, UINT64_MAX);
    cur.nbytes = cur.nbytes.get() - std::min<uint64_t>(dropped, cur.nbytes.get());
    if (!did_first && first) UBTRFS_TRY_STATUS_OR_ABORT(th, first(th, cur));
    did_first = true;
    UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, cur));
  }
  return {};
}

Status FileData::set_size(InodeId id, uint64_t new_size) {
  if (new_size > kMaxFileSize) return fail(EFBIG, "root {} ino {}: size {} too large", id.subvol, id.objectid, new_size);
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  const uint64_t old_size = ii.size;
  Dirty& d = dirty_for_change(id, ii);
  Status st = [&]() -> Status {
    if (new_size < old_size) {
      // The sector that will hold the new EOF keeps its head and loses its tail (btrfs_truncate_block).
      // Rewriting it needs a sector of data space; on a full device the tail is left as it is: it is
      // past EOF, reads never see it, and every way of growing the file again zeroes it first
      // (write past EOF and truncate up load that sector and zero past the old size, here and in
      // the kernel), so truncating down never fails for want of space.
      if (new_size % ss && !d.data.has_sector(new_size) &&
          UBTRFS_TRY(sector_has_data(id, *root, round_down(new_size, ss)))) {
        if (reserve_data(d, ss, alloc::FlushMode::kFlushData)) {
          if (auto r = d.rsv.refill(rsv_target(d.data.run_count() + 1, d.data.bytes() + ss, d.nodatasum),
                                    alloc::FlushMode::kFlushAll);
              r)
            UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, new_size));
        }
      }
    } else if (new_size > old_size && old_size % ss && !d.data.has_sector(old_size)) {
      // Growing: the old last sector's bytes past the old EOF must read as zeros; an inline
      // extent becomes a regular one when the file no longer fits (load it into delalloc).
      if (UBTRFS_TRY(sector_has_data(id, *root, round_down(old_size, ss)))) {
        UBTRFS_TRY_STATUS(reserve_data(d, ss, alloc::FlushMode::kFlushData));
        UBTRFS_TRY_STATUS(d.rsv.refill(rsv_target(d.data.run_count() + 1, d.data.bytes() + ss, d.nodatasum),
                                       alloc::FlushMode::kFlushAll));
        UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, old_size));
      }
    }
    d.data.truncate(new_size);
    return {};
  }();
  settle(id, d);
  UBTRFS_TRY_STATUS(st);

  auto update = [&](TransHandle& th, InodeItem& cur) -> Status {
    cur.size = new_size;
    // btrfs_setsize: the times change only with the size (truncate(2) to the current size keeps
    // them; ftruncate and O_TRUNC ask for them explicitly, which setattr applies). With the FUSE
    // writeback cache the kernel keeps its own times and never sees ours, so a change here that
    // the kernel does not make reached the disk unseen (the stress oracle's time mismatches).
    if (new_size != old_size && stamps_file_times()) {
      const Timespec now = now_btrfs();
      cur.mtime = now;
      cur.ctime = now;
    }
    if (!fs.no_holes()) UBTRFS_TRY_STATUS(fill_holes(th, *root, id.objectid, new_size));
    return {};
  };
  if (new_size < old_size)
    return drop_tail_batched(id, *root, round_up(new_size, ss), alloc::FlushMode::kFlushAllSteal, update);
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(2));
  InodeItem cur = UBTRFS_TRY(read_inode(fs_, *root, id.objectid));
  // The grown part reads as a hole: a log of the inode must say so (explicit hole items).
  note_extent_change(fs_, id, th.transid(), old_size, new_size);
  UBTRFS_TRY_STATUS_OR_ABORT(th, update(th, cur));
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, cur));
  return {};
}

Status FileData::evict(InodeId id) {
  if (Dirty* d = find_dirty(id)) {
    d->data.truncate(0);
    settle(id, *d);
  }
  if (fs_.read_only()) return {};
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  // btrfs_evict_inode: FLUSH_EVICT (priority: it may commit and steal from the global reserve).
  return drop_tail_batched(id, *root, 0, alloc::FlushMode::kFlushEvict, nullptr);
}

}  // namespace ubtrfs::fs
