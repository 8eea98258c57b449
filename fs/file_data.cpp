// FileData: delalloc, flushing, reading, truncation (see file_data.h for the design essay).
// fallocate, hole punching and SEEK_DATA/SEEK_HOLE live at the end of this file.
#include "fs/file_data.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "fs/compression.h"
#include "fs/delayed_inode.h"
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
    if (st.error().err == ENOSPC) return {};  // write() reserves exactly, flushing its own inode
    return st;
  }
  out.data += data;
  if (auto st = out.meta.add(meta, alloc::FlushMode::kFlushAll); !st) {
    if (st.error().err == ENOSPC) return {};
    return st;
  }
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

// ---- writing --------------------------------------------------------------------------------------

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
  Dirty& d = dirty_of(id);
  d.nodatasum = ii.flags.get() & kInodeNodatasum;
  // Sectors that may be compressed become extents of at most kMaxUncompressed (the property alone,
  // without the COMPRESS flag, is not looked up here: chattr +c and the kernel set both).
  d.max_extent = inode_compression(compress_, ii.flags.get(), std::nullopt).type != kCompressNone
                     ? kMaxUncompressed
                     : alloc::kMaxDataExtent;
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
    const bool load_inline = old_size > 0 && old_size < ss && !d.data.has_sector(0) &&
                             UBTRFS_TRY(has_inline_extent(*root, id.objectid));
    const bool load_eof = off > old_size && old_size % ss && round_down(off, ss) != round_down(old_size, ss) &&
                          !d.data.has_sector(old_size) &&
                          UBTRFS_TRY(sector_has_data(id, *root, round_down(old_size, ss)));
    return std::pair{load_inline, load_eof};
  };
  auto planned = plan();
  if (!planned) {
    settle(id, d);
    return fail(planned.error());
  }
  const auto [load_inline, load_eof] = *planned;
  // Sectors over exclusive PREALLOC extents are written in place and need no data space
  // (file_nocow.cpp). A partially covered sector is filled from the file first, which reads
  // zeros from the unwritten extent: right either way.
  auto nocow = nocow_ranges(id, *root, ii, off, data.size());
  if (!nocow) {
    settle(id, d);
    return fail(nocow.error());
  }
  auto is_nocow = [&](uint64_t s) {
    for (auto [a, b] : *nocow)
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
  uint64_t need = need_for(data.size());
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
  auto reserve = [&](uint64_t bytes, alloc::FlushMode mode) -> Status {
    if (pre && pre->data) {  // the reservation taken before the lock first
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
  bool flushed_own = false;
  auto flush_own = [&]() -> Status {
    if (flushed_own) return {};
    flushed_own = true;
    return flush_locked(id);
  };
  Status data_rsv = reserve(need, alloc::FlushMode::kNoFlush);
  if (!data_rsv && data_rsv.error().err == ENOSPC) {
    if (auto st = flush_own(); !st) {
      settle(id, d);
      return fail(st.error());
    }
    data_rsv = reserve(need, alloc::FlushMode::kFlushData);
  }
  if (auto st = data_rsv; !st) {
    if (st.error().err != ENOSPC) {
      settle(id, d);
      return fail(st.error());
    }
    // A short write of what fits (btrfs_buffered_write copies page batch by page batch and returns
    // what it managed): the longest prefix whose new sectors the free data space covers.
    const uint64_t avail = round_down(fs_.spaces().data().free_now(), ss);
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
  // The delalloc metadata reserve for the state after the write (at most one more run), then the
  // inode update's handle: both before anything changes, so an ENOSPC changes nothing.
  {
    auto target = [&] {
      const uint64_t bytes_after = d.data.bytes() + need;
      return rsv_target(d.data.run_count() + 1 + bytes_after / d.max_extent, bytes_after, d.nodatasum);
    };
    if (pre) {
      const uint64_t want = target(), have = d.rsv.reserved();
      const uint64_t take = want > have ? std::min(want - have, pre->meta.reserved()) : 0;
      if (take) UBTRFS_TRY_STATUS(alloc::BlockRsv::migrate(pre->meta, d.rsv, take, true));
    }
    Status meta = d.rsv.refill(target(), alloc::FlushMode::kNoFlush);
    if (!meta && meta.error().err == ENOSPC) {
      if (auto st = flush_own(); !st) {
        settle(id, d);
        return fail(st.error());
      }
      meta = d.rsv.refill(target(), alloc::FlushMode::kFlushAll);
    }
    if (auto st = meta; !st) {
      settle(id, d);
      return fail(st.error().err, "root {} ino {}: delalloc metadata for a write at {}: {}", id.subvol, id.objectid,
                  off, st.error().message);
    }
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

// ---- flushing (btrfs cow_file_range / cow_file_range_inline) --------------------------------------

Result<bool> FileData::try_flush(InodeId id, bool wait_for_lock) {
  std::optional<InodeLocks::Guard> g;
  if (wait_for_lock)
    g = locks_.lock({id});
  else
    g = locks_.try_lock(id, std::chrono::milliseconds(20));
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
  for (InodeId id : ids) UBTRFS_TRY(try_flush(id, wait_for_locks));
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

Result<uint64_t> FileData::flush_some(uint64_t meta_target) {
  // Largest delalloc first: it holds the most reservation (btrfs writes back in inode order; any
  // order serves the ticket, the biggest frees the most per flush).
  alloc::SpaceInfos& sp = fs_.spaces();
  uint64_t released = 0;
  for (InodeId id : largest_dirty()) {
    if (released >= meta_target) break;
    const uint64_t before = sp.metadata().counters().may_use;
    UBTRFS_TRY(try_flush(id, false));
    const uint64_t after = sp.metadata().counters().may_use;
    if (before > after) released += before - after;
  }
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
  Dirty& d = dirty_of(id);
  d.nodatasum = ii.flags.get() & kInodeNodatasum;
  // Sectors that may be compressed become extents of at most kMaxUncompressed (the property alone,
  // without the COMPRESS flag, is not looked up here: chattr +c and the kernel set both).
  d.max_extent = inode_compression(compress_, ii.flags.get(), std::nullopt).type != kCompressNone
                     ? kMaxUncompressed
                     : alloc::kMaxDataExtent;
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
