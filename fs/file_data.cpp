// FileData: delalloc, flushing, reading, truncation (see file_data.h for the design essay).
// fallocate, hole punching and SEEK_DATA/SEEK_HOLE live at the end of this file.
#include "fs/file_data.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/compression.h"
#include "fs/csum_tree.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

uint64_t round_down(uint64_t x, uint64_t a) { return x - x % a; }
uint64_t round_up(uint64_t x, uint64_t a) { return round_down(x + a - 1, a); }

// Largest file size btrfs accepts (MAX_LFS_FILESIZE on 64-bit).
constexpr uint64_t kMaxFileSize = static_cast<uint64_t>(INT64_MAX);

// Like UBTRFS_TRY, for failures after the handle `th` has changed a tree: the half-done change
// must never reach disk, so the transaction is aborted (btrfs_abort_transaction: the filesystem
// turns read-only) before the error propagates. Failures before the first change use UBTRFS_TRY.
#define TRY_OR_ABORT(th, expr)                                   \
  ({                                                             \
    auto&& try_abort_r_ = (expr);                                \
    if (!try_abort_r_) return (th).abort(try_abort_r_.error());  \
    std::move(try_abort_r_).value();                             \
  })
#define TRY_STATUS_OR_ABORT(th, expr)                            \
  do {                                                           \
    auto&& try_abort_s_ = (expr);                                \
    if (!try_abort_s_) return (th).abort(try_abort_s_.error());  \
  } while (0)

std::string hex_csum(std::span<const uint8_t> c) {
  std::string s = "0x";
  // btrfs prints the csum as the little-endian value for crc32c; print the bytes in order instead
  // (unambiguous for every csum type).
  for (uint8_t b : c) s += fmt::format("{:02x}", b);
  return s;
}

}  // namespace

// Data reference changes go to the extent allocator (delayed refs).
class FileData::AllocatorRefs final : public DataRefSink {
 public:
  explicit AllocatorRefs(FsInfo& fs) : fs_(fs) {}
  Status add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root, uint64_t ino, uint64_t offset,
                      int delta, bool new_alloc) override {
    return fs_.allocator().add_data_ref(h, bytenr, len, root, ino, offset, delta, new_alloc);
  }

 private:
  FsInfo& fs_;
};

FileData::FileData(FsInfo& fs, const InodeNumbers& numbers, InodeLocks& locks)
    : fs_(fs), numbers_(numbers), locks_(locks), refs_(std::make_unique<AllocatorRefs>(fs)) {}

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
  if (!slot) slot = std::make_unique<Dirty>(fs_.params().sectorsize);
  return *slot;
}

void FileData::account(InodeId id, Dirty& d) {
  const uint64_t now = d.data.bytes();
  const uint64_t before = d.bytes.exchange(now);
  if (now >= before)
    total_bytes_.fetch_add(now - before);
  else
    total_bytes_.fetch_sub(before - now);
  if (now == 0) {
    std::lock_guard g(mu_);
    dirty_.erase(id);  // REQUIRES the exclusive inode lock: nobody else holds a pointer to it
  }
}

uint64_t FileData::pending_bytes(InodeId id) {
  std::lock_guard g(mu_);
  auto it = dirty_.find(id);
  return it == dirty_.end() ? 0 : it->second->bytes.load();
}

// ---- reading --------------------------------------------------------------------------------------

Status FileData::write_disk(uint64_t logical, std::span<const uint8_t> data) {
  auto phys = UBTRFS_TRY(fs_.chunk_map().map(logical, data.size()));
  for (uint64_t p : phys) UBTRFS_TRY_STATUS(fs_.device().write(p, data));
  return {};
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
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
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

Result<size_t> FileData::write(InodeId id, uint64_t off, std::span<const uint8_t> data) {
  if (data.empty()) return 0;
  if (off > kMaxFileSize || data.size() > kMaxFileSize - off)
    return fail(EFBIG, "root {} ino {}: write at {} of {} bytes past the maximum file size", id.subvol, id.objectid,
                off, data.size());
  if (fs_.read_only()) return fail(EROFS, "{}: read-only filesystem", fs_.path());
  const uint32_t ss = fs_.params().sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
  const uint64_t old_size = ii.size;
  Dirty& d = dirty_of(id);
  Status st = [&]() -> Status {
    // An inline extent is never extended or split in place: its bytes move to delalloc and the
    // flusher rewrites the file (btrfs converts inline extents the same way on write).
    if (old_size > 0 && old_size < ss && !d.data.has_sector(0) && UBTRFS_TRY(has_inline_extent(*root, id.objectid)))
      UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, 0));
    // Writing past EOF: the old last sector's tail must read as zeros (btrfs_cont_expand ->
    // btrfs_truncate_block); sectors we write are zero past EOF already, kernel ones may not be.
    if (off > old_size && old_size % ss && round_down(off, ss) != round_down(old_size, ss) &&
        UBTRFS_TRY(sector_has_data(id, *root, round_down(old_size, ss))))
      UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, old_size));
    return d.data.write(off, data, [&](uint64_t s, std::span<uint8_t> sector) -> Status {
      UBTRFS_TRY_STATUS(read_extents(id, *root, ii, s, sector));
      if (s + sector.size() > old_size) {
        const uint64_t keep = old_size > s ? old_size - s : 0;
        std::fill(sector.begin() + static_cast<std::ptrdiff_t>(keep), sector.end(), 0);
      }
      return {};
    });
  }();
  account(id, d);
  UBTRFS_TRY_STATUS(st);

  {
    TransHandle th = UBTRFS_TRY(fs_.transactions().start(1));
    InodeItem cur = UBTRFS_TRY(read_inode(*root, id.objectid));
    cur.size = std::max<uint64_t>(cur.size, off + data.size());
    const Timespec now = now_btrfs();
    cur.mtime = now;
    cur.ctime = now;
    TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, cur));
  }
  if (total_delalloc() > kDelallocFlushBytes) {
    // Memory bound: write this inode out now (we hold its lock and no handle) and ask for a commit
    // so other inodes' delalloc is written too.
    fs_.transactions().request_commit();
    UBTRFS_TRY_STATUS(flush_locked(id));
  }
  return data.size();
}

// ---- flushing (btrfs cow_file_range / cow_file_range_inline) --------------------------------------

Status FileData::flush_all() {
  std::vector<InodeId> ids;
  {
    std::lock_guard g(mu_);
    for (auto& [id, d] : dirty_) ids.push_back(id);
  }
  for (InodeId id : ids) {
    InodeLocks::Guard g = locks_.lock({id});
    UBTRFS_TRY_STATUS(flush_locked(id));
  }
  return {};
}

Status FileData::flush_inode(InodeId id) { return flush_locked(id); }

Status FileData::delete_csums(TreeHandle& h, uint64_t bytenr, uint64_t len) {
  return fs::delete_csums(h, *fs_.csum_root().tree, fs_.params(), bytenr, len);
}

Status FileData::flush_locked(InodeId id) {
  Dirty* d = find_dirty(id);
  if (!d || d->data.empty()) return {};
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
  const uint64_t size = ii.size;
  const uint32_t ss = fs_.params().sectorsize;
  // Sectors past EOF cannot be dirty (truncate drops them); drop defensively.
  d->data.truncate(size);
  auto runs = d->data.runs();
  Status st;
  if (runs.size() == 1 && runs[0].start == 0 && runs[0].len == ss && size > 0 && size <= kMaxInline) {
    auto later = find_file_extents(*root, fs_.params(), id.objectid, ss, UINT64_MAX);
    if (!later) {
      st = fail(later.error());
    } else if (later->empty()) {
      st = flush_inline(id, *root, *d, size);
      account(id, *d);
      return st;
    }
  }
  if (st) {
    const bool nodatasum = ii.flags.get() & kInodeNodatasum;
    for (const auto& run : runs) {
      st = flush_run(id, *root, *d, run.start, run.len, nodatasum);
      if (!st) break;
    }
  }
  if (st && !fs_.params().no_holes()) {
    auto th = fs_.transactions().start(4);
    if (!th)
      st = fail(th.error());
    else if (auto fh = fill_holes(*th, *root, id.objectid, size); !fh)
      st = th->abort(fh.error());
  }
  account(id, *d);
  return st;
}

Status FileData::flush_inline(InodeId id, TreeRoot& root, Dirty& d, uint64_t size) {
  std::vector<uint8_t> bytes = d.data.copy(0, fs_.params().sectorsize);
  bytes.resize(size);
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(4));
  const uint64_t dropped =
      TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs_.params(), *refs_, id.objectid, 0, fs_.params().sectorsize));
  TRY_STATUS_OR_ABORT(th, insert_inline_extent(th.tree(), root, id.objectid, th.transid(), bytes));
  InodeItem cur = TRY_OR_ABORT(th, read_inode(root, id.objectid));
  cur.nbytes = cur.nbytes.get() - dropped + size;
  TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, cur));
  d.data.drop(0, fs_.params().sectorsize);
  return {};
}

Status FileData::flush_run(InodeId id, TreeRoot& root, Dirty& d, uint64_t start, uint64_t len, bool nodatasum) {
  const FsParams& fs = fs_.params();
  uint64_t cur = start;
  const uint64_t end = start + len;
  while (cur < end) {
    const uint64_t want = std::min<uint64_t>(end - cur, alloc::kMaxDataExtent);
    TransHandle th = UBTRFS_TRY(fs_.transactions().start(8));
    auto ext = UBTRFS_TRY(fs_.allocator().reserve_data(th.tree(), want, fs.sectorsize));
    const std::vector<uint8_t> bytes = d.data.copy(cur, ext.len);
    if (auto w = write_disk(ext.bytenr, bytes); !w) {
      fs_.allocator().release_data(ext.bytenr, ext.len);
      return fail(w.error().err, "root {} ino {}: writing {} bytes of file offset {} at bytenr {}: {}", id.subvol,
                  id.objectid, ext.len, cur, ext.bytenr, w.error().message);
    }
    // From here on trees change: any failure leaves a half-written extent and aborts.
    const uint64_t dropped =
        TRY_OR_ABORT(th, drop_extents(th.tree(), root, fs, *refs_, id.objectid, cur, cur + ext.len));
    TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), root, id.objectid, cur,
                                               make_file_extent(th.transid(), kFileExtentReg, ext.bytenr, ext.len, 0,
                                                                ext.len, ext.len)));
    TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), ext.bytenr, ext.len, root.objectid(), id.objectid,
                                                         cur, +1, true));
    if (!nodatasum)
      TRY_STATUS_OR_ABORT(th, insert_csums(th.tree(), *fs_.csum_root().tree, fs, ext.bytenr,
                                           compute_data_csums(fs, bytes)));
    InodeItem ii = TRY_OR_ABORT(th, read_inode(root, id.objectid));
    ii.nbytes = ii.nbytes.get() - dropped + ext.len;
    TRY_STATUS_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
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

Status FileData::set_size(InodeId id, uint64_t new_size) {
  if (new_size > kMaxFileSize) return fail(EFBIG, "root {} ino {}: size {} too large", id.subvol, id.objectid, new_size);
  const FsParams& fs = fs_.params();
  const uint32_t ss = fs.sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
  const uint64_t old_size = ii.size;
  Dirty& d = dirty_of(id);
  Status st = [&]() -> Status {
    if (new_size < old_size) {
      // The sector that will hold the new EOF keeps its head and loses its tail (btrfs_truncate_block).
      if (new_size % ss && UBTRFS_TRY(sector_has_data(id, *root, round_down(new_size, ss))))
        UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, new_size));
    } else if (new_size > old_size && old_size % ss) {
      // Growing: the old last sector's bytes past the old EOF must read as zeros; an inline
      // extent becomes a regular one when the file no longer fits (load it into delalloc).
      if (UBTRFS_TRY(sector_has_data(id, *root, round_down(old_size, ss))))
        UBTRFS_TRY_STATUS(load_sector(id, *root, ii, d, old_size));
    }
    d.data.truncate(new_size);
    return {};
  }();
  account(id, d);
  UBTRFS_TRY_STATUS(st);

  TransHandle th = UBTRFS_TRY(fs_.transactions().start(8));
  // Read before the first change (drop_extents leaves the INODE_ITEM alone): a read error here
  // has changed nothing and needs no abort.
  InodeItem cur = UBTRFS_TRY(read_inode(*root, id.objectid));
  uint64_t dropped = 0;
  if (new_size < old_size)
    dropped =
        TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs, *refs_, id.objectid, round_up(new_size, ss), UINT64_MAX));
  cur.size = new_size;
  cur.nbytes = cur.nbytes.get() - dropped;
  const Timespec now = now_btrfs();
  cur.mtime = now;
  cur.ctime = now;
  TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, cur));
  if (!fs.no_holes()) TRY_STATUS_OR_ABORT(th, fill_holes(th, *root, id.objectid, new_size));
  return {};
}

Status FileData::evict(InodeId id) {
  if (Dirty* d = find_dirty(id)) {
    d->data.truncate(0);
    account(id, *d);
  }
  if (fs_.read_only()) return {};
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(8));
  TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs_.params(), *refs_, id.objectid, 0, UINT64_MAX));
  return {};
}

// ---- fallocate (btrfs_fallocate, btrfs_punch_hole) ------------------------------------------------

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
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
  const uint64_t size_al = round_up(ii.size, ss);
  if (off >= size_al) return {};
  const uint64_t end = std::min(off + len, size_al);
  const uint64_t s_al = round_up(off, ss), e_al = round_down(end, ss);
  Dirty& d = dirty_of(id);
  Status st = [&]() -> Status {
    // Partial sectors at the edges are zeroed through delalloc (btrfs_zero_range/truncate_block).
    auto zero_partial = [&](uint64_t from, uint64_t to) -> Status {
      if (from >= to) return {};
      if (!UBTRFS_TRY(sector_has_data(id, *root, round_down(from, ss)))) return {};
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
  account(id, d);
  UBTRFS_TRY_STATUS(st);
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(8));
  InodeItem cur = UBTRFS_TRY(read_inode(*root, id.objectid));  // before the first change: no abort
  uint64_t dropped = 0;
  if (s_al < e_al) dropped = TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs, *refs_, id.objectid, s_al, e_al));
  cur.nbytes = cur.nbytes.get() - dropped;
  const Timespec now = now_btrfs();
  cur.mtime = now;
  cur.ctime = now;
  TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, cur));
  if (!fs.no_holes()) TRY_STATUS_OR_ABORT(th, fill_holes(th, *root, id.objectid, cur.size));
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
  for (auto [gs, ge] : gaps) {
    uint64_t cur = gs;
    while (cur < ge) {
      TransHandle th = UBTRFS_TRY(fs_.transactions().start(8));
      auto ext = UBTRFS_TRY(
          fs_.allocator().reserve_data(th.tree(), std::min<uint64_t>(ge - cur, alloc::kMaxDataExtent), ss));
      const uint64_t dropped =
          TRY_OR_ABORT(th, drop_extents(th.tree(), *root, fs, *refs_, id.objectid, cur, cur + ext.len));
      TRY_STATUS_OR_ABORT(th, insert_file_extent(th.tree(), *root, id.objectid, cur,
                                                 make_file_extent(th.transid(), kFileExtentPrealloc, ext.bytenr,
                                                                  ext.len, 0, ext.len, ext.len)));
      TRY_STATUS_OR_ABORT(th, fs_.allocator().add_data_ref(th.tree(), ext.bytenr, ext.len, root->objectid(),
                                                           id.objectid, cur, +1, true));
      InodeItem ii = TRY_OR_ABORT(th, read_inode(*root, id.objectid));
      ii.nbytes = ii.nbytes.get() - dropped + ext.len;
      ii.flags = ii.flags.get() | kInodePrealloc;
      TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
      cur += ext.len;
    }
  }
  TransHandle th = UBTRFS_TRY(fs_.transactions().start(2));
  InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
  const Timespec now = now_btrfs();
  ii.ctime = now;
  if (!keep_size && off + len > ii.size) {
    ii.size = off + len;
    ii.mtime = now;
  }
  TRY_STATUS_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
  if (!fs.no_holes()) TRY_STATUS_OR_ABORT(th, fill_holes(th, *root, id.objectid, ii.size));
  return {};
}

// ---- SEEK_DATA / SEEK_HOLE (btrfs find_desired_extent) --------------------------------------------

Result<uint64_t> FileData::seek_data_hole(InodeId id, uint64_t off, int whence) {
  if (whence != SEEK_DATA && whence != SEEK_HOLE) return fail(EINVAL, "lseek whence {} not supported", whence);
  const uint32_t ss = fs_.params().sectorsize;
  TreeRoot* root = UBTRFS_TRY(root_of(id));
  const InodeItem ii = UBTRFS_TRY(read_inode(*root, id.objectid));
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
