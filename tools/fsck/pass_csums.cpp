// Pass 9: data checksums (FORMAT.md §3.8, §6.1.7).
//
// Rules:
//  - every REG extent (disk_bytenr != 0) of an inode without NODATASUM is fully covered by
//    EXTENT_CSUM items: the on-disk bytes it uses — [disk_bytenr + offset, + num_bytes) for plain
//    extents, the whole [disk_bytenr, + disk_num_bytes) for compressed ones, since checksums cover
//    the compressed bytes ("some csum missing" / lowmem "csum missing");
//  - an extent of a NODATASUM inode has no checksums ("odd csum item");
//  - checksums exist only inside data extent items ("there are no extents for csum range") and
//    EXTENT_CSUM items do not overlap one another;
//  - with --check-data-csum, every checksummed sector is read (each copy, for DUP data) and its
//    checksum recomputed ("data-csum": btrfs check --check-data-csum's "csum ... expected csum").
// PREALLOC extents are not required to have checksums (unwritten space has none).
#include <algorithm>
#include <cstring>

#include "io/checksum.h"
#include "tools/fsck/fs_tree_index.h"
#include "tree/block_io.h"

namespace ubtrfs::fsck {

namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

constexpr int kMaxDataCsumReports = 50;

struct CsumItem {
  Key key;
  uint64_t start = 0;
  uint64_t end = 0;
  std::span<const uint8_t> body;
};

// Bytes of [s, e) covered by the sorted, merged ranges.
uint64_t covered(const Ranges& r, uint64_t s, uint64_t e) {
  uint64_t total = 0;
  auto it = std::upper_bound(r.begin(), r.end(), std::make_pair(s, ~uint64_t{0}));
  if (it != r.begin()) --it;
  for (; it != r.end() && it->first < e; ++it) {
    const uint64_t a = std::max(s, it->first);
    const uint64_t b = std::min(e, it->second);
    if (a < b) total += b - a;
  }
  return total;
}

void verify_data(Context& ctx, const std::vector<CsumItem>& items) {
  Report& rep = ctx.report();
  const FsParams& fs = ctx.params;
  const size_t cs = fs.csum_size();
  std::vector<uint8_t> sector(fs.sectorsize);
  int reported = 0;
  uint64_t bad = 0;
  for (const auto& ci : items) {
    for (uint64_t i = 0; (i + 1) * cs <= ci.body.size(); ++i) {
      const uint64_t logical = ci.start + i * fs.sectorsize;
      auto copies = ctx.map.map(logical, fs.sectorsize);
      if (!copies) {
        rep.error("csum-orphan", Where{kCsumTreeObjectid, logical, ci.key, {}},
                  fmt::format("csum item {} covers logical {} which no chunk maps", key_text(ci.key), logical));
        break;
      }
      for (size_t m = 0; m < copies->size(); ++m) {
        if (auto st = read_logical(ctx.dev(), ctx.map, logical, sector, static_cast<int>(m)); !st) {
          rep.error("data-csum", Where{kCsumTreeObjectid, logical, ci.key, {}},
                    fmt::format("cannot read data at logical {} mirror {}: {}", logical, m + 1, st.error().message));
          continue;
        }
        const auto c = io::compute_csum(fs.csum_type, sector);
        if (std::memcmp(c.data(), ci.body.data() + i * cs, cs) == 0) continue;
        ++bad;
        if (reported++ < kMaxDataCsumReports) {
          std::string want, have;
          for (size_t b = 0; b < cs; ++b) {
            want += fmt::format("{:02x}", ci.body[i * cs + b]);
            have += fmt::format("{:02x}", c[b]);
          }
          rep.error("data-csum", Where{kCsumTreeObjectid, logical, ci.key, {}},
                    fmt::format("data csum mismatch at logical {} mirror {}: csum 0x{} expected csum 0x{} (item {})",
                                logical, m + 1, have, want, key_text(ci.key)));
        }
      }
    }
  }
  if (reported > kMaxDataCsumReports)
    rep.error("data-csum", Where{kCsumTreeObjectid, {}, {}, {}},
              fmt::format("{} data csum mismatches in total ({} not listed)", bad, reported - kMaxDataCsumReports));
}

}  // namespace

void check_csums(Context& ctx) {
  Report& rep = ctx.report();
  const FsParams& fs = ctx.params;
  const TreeInfo* ct = ctx.tree(kCsumTreeObjectid);
  if (!ct) {
    rep.error("csum-missing", Where{kCsumTreeObjectid, {}, {}, {}}, "the root tree has no csum tree (tree 7)");
    return;
  }
  std::vector<CsumItem> items;
  for (const auto& it : ctx.items(*ct)) {
    if (it.key.objectid != kExtentCsumObjectid || it.key.type != kExtentCsumKey) continue;
    const uint64_t n = it.body.size() / fs.csum_size();
    items.push_back(CsumItem{it.key, it.key.offset, it.key.offset + n * fs.sectorsize, it.body});
  }
  Ranges csums;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0 && items[i].start < items[i - 1].end)
      rep.error("csum-orphan", Where{kCsumTreeObjectid, items[i].start, items[i].key, {}},
                fmt::format("csum item {} overlaps csum item {} ending at {}", key_text(items[i].key),
                            key_text(items[i - 1].key), items[i - 1].end));
    if (!csums.empty() && csums.back().second >= items[i].start)
      csums.back().second = std::max(csums.back().second, items[i].end);
    else
      csums.emplace_back(items[i].start, items[i].end);
  }

  // Csums outside every data extent.
  if (!ctx.damaged(kExtentTreeObjectid)) {
    Ranges data;
    for (const auto& [start, x] : ctx.extents)
      if (!x.tree_block) data.emplace_back(start, start + x.length);
    for (const auto& [s, e] : csums) {
      const uint64_t have = covered(data, s, e);
      if (have == e - s) continue;
      // Name the first uncovered piece.
      uint64_t p = s;
      while (p < e && covered(data, p, p + fs.sectorsize) == fs.sectorsize) p += fs.sectorsize;
      uint64_t q = p;
      while (q < e && covered(data, q, q + fs.sectorsize) == 0) q += fs.sectorsize;
      rep.error("csum-orphan", Where{kCsumTreeObjectid, p, Key{kExtentCsumObjectid, kExtentCsumKey, s}, {}},
                fmt::format("there are no extents for csum range {}-{} ({} bytes of csum range {}-{} lie outside data "
                            "extents)",
                            p, q, (e - s) - have, s, e));
    }
  }

  const bool csum_complete = !ct->damaged;
  if (!csum_complete)
    rep.warning("csum-missing", Where{kCsumTreeObjectid, {}, {}, {}},
                "csum tree damaged: missing checksums are not reported");
  for (const auto& t : ctx.trees) {
    if (t.is_log || !Context::is_fs_tree(t.id) || t.damaged) continue;
    const FsTreeIndex idx = index_fs_tree(ctx, t);
    for (const auto& [ino, r] : idx.inodes) {
      if (!r.item) continue;
      const bool nodatasum = r.item->flags.get() & kInodeNodatasum;
      for (const auto& f : r.extents) {
        if (f.type != kFileExtentReg || f.disk_bytenr == 0) continue;
        const uint64_t s = f.compression ? f.disk_bytenr : f.disk_bytenr + f.offset;
        const uint64_t e = s + (f.compression ? f.disk_num_bytes : f.num_bytes);
        const uint64_t have = covered(csums, s, e);
        if (!nodatasum && have != e - s && csum_complete)
          rep.error("csum-missing", Where{t.id, s, f.key, ino},
                    fmt::format("root {} inode {} extent {} data [{} {}] csum missing, have: {}, expected: {} (some "
                                "csum missing)",
                                t.id, ino, key_text(f.key), s, e - s, have, e - s));
        if (nodatasum && have != 0)
          rep.error("csum-odd", Where{t.id, s, f.key, ino},
                    fmt::format("root {} inode {} is NODATASUM but extent {} data [{} {}] has {} bytes of csums (odd "
                                "csum item)",
                                t.id, ino, key_text(f.key), s, e - s, have));
      }
    }
  }
  if (ctx.opts().check_data_csum) verify_data(ctx, items);
}

}  // namespace ubtrfs::fsck
