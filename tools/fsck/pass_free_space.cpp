// Pass 6: the free space tree against the extent tree (FORMAT.md §3.12, §6.1.4, §10.1).
//
// Rules, per block group:
//  - exactly one FREE_SPACE_INFO (BG start, 198, BG length); FREE_SPACE_EXTENT/BITMAP items lie
//    inside the info that precedes them and match its mode (flag USING_BITMAPS);
//  - the free ranges (extents, or bitmap bits LSB-first with 1 = free, runs merged across bitmap
//    items) are exactly the complement of the extent items in the block group. The superblock
//    mirror stripes (§5.5) may be listed either way (btrfs check 6.2 accepts both), so they are
//    left out of the comparison on both sides;
//  - extent-mode runs are maximal: adjacent extents are "unmerged";
//  - extent_count == the number of free runs.
// FREE_SPACE_INFO without a block group is an error — except the entries mkfs.btrfs 6.2 leaves for
// its deleted temporary chunks at 1 MiB and 5 MiB (§5.2), reported as the warning class
// free-space-stale ("stale free space entries (known mkfs.btrfs 6.2 bug)"), since every image made
// by that mkfs has them and btrfs check 6.2 accepts them.
#include <algorithm>

#include "tools/fsck/context.h"

namespace ubtrfs::fsck {

namespace {

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;  // sorted, disjoint [start, end)

constexpr uint64_t kMkfsTempChunks[] = {1048576, 5242880};
constexpr size_t kMaxRangesReported = 4;

Ranges subtract(const Ranges& a, const Ranges& b) {
  Ranges out;
  size_t j = 0;
  for (auto [s, e] : a) {
    while (j < b.size() && b[j].second <= s) ++j;
    uint64_t cur = s;
    for (size_t k = j; k < b.size() && b[k].first < e; ++k) {
      if (b[k].first > cur) out.emplace_back(cur, b[k].first);
      cur = std::max(cur, b[k].second);
    }
    if (cur < e) out.emplace_back(cur, e);
  }
  return out;
}

std::string ranges_text(const Ranges& r) {
  std::string s;
  for (size_t i = 0; i < r.size() && i < kMaxRangesReported; ++i)
    s += fmt::format("{}{}-{}", i ? ", " : "", r[i].first, r[i].second);
  if (r.size() > kMaxRangesReported) s += fmt::format(" and {} more", r.size() - kMaxRangesReported);
  return s;
}

struct InfoState {
  Key key;
  FreeSpaceInfo info{};
  Ranges runs;  // raw runs as recorded (extent items, or decoded bitmap runs)
  uint64_t counted = 0;
  bool stale = false;
  bool has_bg = false;
};

}  // namespace

void check_free_space(Context& ctx) {
  Report& rep = ctx.report();
  const FsParams& fs = ctx.params;
  const TreeInfo* fst = ctx.tree(kFreeSpaceTreeObjectid);
  if (!fst) {
    rep.error("free-space", Where{kFreeSpaceTreeObjectid, {}, {}, {}},
              "compat_ro FREE_SPACE_TREE is set but the root tree has no free space tree (tree 10)");
    return;
  }
  std::vector<InfoState> infos;
  InfoState* cur = nullptr;
  auto bitmap_add_run = [](InfoState& s, uint64_t start, uint64_t end) {
    if (!s.runs.empty() && s.runs.back().second == start)
      s.runs.back().second = end;
    else
      s.runs.emplace_back(start, end);
  };
  for (const auto& it : ctx.items(*fst)) {
    const Key& k = it.key;
    if (k.type == kFreeSpaceInfoKey) {
      InfoState s;
      s.key = k;
      if (it.body.size() >= sizeof(FreeSpaceInfo)) s.info = load<FreeSpaceInfo>(it.body.data());
      auto bg = ctx.block_groups.find(k.objectid);
      s.has_bg = bg != ctx.block_groups.end() && bg->second.length == k.offset;
      if (!s.has_bg) {
        const bool temp =
            std::find(std::begin(kMkfsTempChunks), std::end(kMkfsTempChunks), k.objectid) != std::end(kMkfsTempChunks);
        const bool overlaps_chunk = ctx.map.find(k.objectid).has_value();
        s.stale = temp && !overlaps_chunk;
        if (s.stale)
          rep.warning("free-space-stale", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                      fmt::format("stale free space entries (known mkfs.btrfs 6.2 bug): free space info {} has no "
                                  "block group",
                                  key_text(k)));
        else
          rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                    fmt::format("free space info {} in leaf {} has no block group", key_text(k), it.leaf));
      }
      infos.push_back(std::move(s));
      cur = &infos.back();
      continue;
    }
    if (k.type != kFreeSpaceExtentKey && k.type != kFreeSpaceBitmapKey) continue;
    if (!cur || k.objectid < cur->key.objectid || k.objectid + k.offset > cur->key.objectid + cur->key.offset) {
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                fmt::format("free space item {} lies outside the free space info before it", key_text(k)));
      continue;
    }
    const bool bitmaps = cur->info.flags.get() & kFreeSpaceUsingBitmaps;
    if (bitmaps != (k.type == kFreeSpaceBitmapKey)) {
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                fmt::format("free space item {} does not match the mode of info {} (flags 0x{:x})", key_text(k),
                            key_text(cur->key), cur->info.flags.get()));
      continue;
    }
    if (k.type == kFreeSpaceExtentKey) {
      if (!cur->runs.empty() && cur->runs.back().second > k.objectid)
        rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                  fmt::format("free space extent {} overlaps the previous one", key_text(k)));
      else if (!cur->runs.empty() && cur->runs.back().second == k.objectid && !cur->stale)
        rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                  fmt::format("free space extent {}-{} is unmerged with previous {}-{}", k.objectid,
                              k.objectid + k.offset, cur->runs.back().first, cur->runs.back().second));
      cur->runs.emplace_back(k.objectid, k.objectid + k.offset);
      ++cur->counted;
      continue;
    }
    // Bitmap: one bit per sector, LSB first, 1 = free.
    const uint64_t bits = k.offset / fs.sectorsize;
    if (k.offset % fs.sectorsize || it.body.size() < (bits + 7) / 8) {
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, it.leaf, k, {}},
                fmt::format("free space bitmap {} has size {} for {} sectors", key_text(k), it.body.size(), bits));
      continue;
    }
    for (uint64_t i = 0; i < bits;) {
      if (!(it.body[i / 8] & (1u << (i % 8)))) {
        ++i;
        continue;
      }
      uint64_t j = i;
      while (j < bits && (it.body[j / 8] & (1u << (j % 8)))) ++j;
      bitmap_add_run(*cur, k.objectid + i * fs.sectorsize, k.objectid + j * fs.sectorsize);
      i = j;
    }
  }

  const bool compare = !ctx.damaged(kExtentTreeObjectid) && !fst->damaged;
  if (!compare)
    rep.warning("free-space", Where{kFreeSpaceTreeObjectid, {}, {}, {}},
                "extent tree or free space tree damaged: free space contents not compared");
  const auto supers = super_stripe_ranges(ctx);
  std::set<uint64_t> seen;
  for (auto& s : infos) {
    if (!s.has_bg) continue;
    seen.insert(s.key.objectid);
    if (s.info.flags.get() & kFreeSpaceUsingBitmaps) s.counted = s.runs.size();
    if (s.counted != s.info.extent_count.get())
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, s.key.objectid, s.key, {}},
                fmt::format("free space info {} recorded {} extents, counted {}", key_text(s.key),
                            s.info.extent_count.get(), s.counted));
    if (!compare) continue;
    const uint64_t bg_start = s.key.objectid;
    const uint64_t bg_end = bg_start + s.key.offset;
    Ranges allocated;
    for (auto x = ctx.extents.lower_bound(bg_start); x != ctx.extents.end() && x->first < bg_end; ++x)
      allocated.emplace_back(x->first, std::min(bg_end, x->first + x->second.length));
    const Ranges expected = subtract(subtract({{bg_start, bg_end}}, allocated), supers);
    Ranges recorded = s.runs;
    std::sort(recorded.begin(), recorded.end());
    recorded = subtract(recorded, supers);
    const Ranges missing = subtract(expected, recorded);
    const Ranges extra = subtract(recorded, expected);
    if (!missing.empty())
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, bg_start, s.key, {}},
                fmt::format("block group {} free space tree lacks free ranges {} (cache appears valid but isn't {})",
                            bg_start, ranges_text(missing), bg_start));
    if (!extra.empty())
      rep.error("free-space", Where{kFreeSpaceTreeObjectid, bg_start, s.key, {}},
                fmt::format("block group {} free space tree lists allocated ranges {} as free", bg_start,
                            ranges_text(extra)));
  }
  if (!fst->damaged)
    for (const auto& [start, bg] : ctx.block_groups)
      if (!seen.count(start))
        rep.error("free-space", Where{kFreeSpaceTreeObjectid, start, Key{start, kFreeSpaceInfoKey, bg.length}, {}},
                  fmt::format("block group [{} {}] has no free space info", start, bg.length));
}

}  // namespace ubtrfs::fsck
