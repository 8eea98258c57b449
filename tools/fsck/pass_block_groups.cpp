// Pass 5: block groups and the super's bytes_used (FORMAT.md §3.11, §6.1.3).
//
// Rules:
//  - one BLOCK_GROUP_ITEM per chunk, with the chunk's start, length and type flags, chunk_objectid
//    256; no block group without a chunk;
//  - BG used == the sum of the extents inside it: EXTENT_ITEM lengths for data, nodesize per
//    METADATA_ITEM (the superblock mirror stripes are never allocated, so they are never counted);
//    btrfs check: "block group [S L] used X but extent items used Y";
//  - every extent item lies inside one block group;
//  - super bytes_used == the sum of all extents ("super bytes used X mismatches actual used Y").
// When the extent tree is damaged the sums would be wrong for lack of items, so they are skipped.
#include "tools/fsck/context.h"

namespace ubtrfs::fsck {

void check_block_groups(Context& ctx) {
  Report& rep = ctx.report();
  if (!ctx.extent_tree_available) return;  // reported by the extent pass
  const bool sums = !ctx.damaged(kExtentTreeObjectid);
  if (!sums)
    rep.warning("block-group", Where{kExtentTreeObjectid, {}, {}, {}},
                "extent tree damaged: block group used and super bytes_used not checked");

  for (const auto& c : ctx.map.all()) {
    auto bg = ctx.block_groups.find(c.logical);
    const Key ck{kFirstChunkTreeObjectid, kChunkItemKey, c.logical};
    if (bg == ctx.block_groups.end()) {
      if (sums)
        rep.error("chunk", Where{kChunkTreeObjectid, c.logical, ck, {}},
                  fmt::format("chunk {} length {} has no block group item", key_text(ck), c.length));
      continue;
    }
    const Key bk{c.logical, kBlockGroupItemKey, bg->second.length};
    if (bg->second.length != c.length || bg->second.flags != c.type)
      rep.error("block-group", Where{kExtentTreeObjectid, c.logical, bk, {}},
                fmt::format("block group {} (flags 0x{:x}) does not match chunk {} length {} type 0x{:x}", key_text(bk),
                            bg->second.flags, key_text(ck), c.length, c.type));
    if (bg->second.chunk_objectid != kFirstChunkTreeObjectid)
      rep.error(
          "block-group", Where{kExtentTreeObjectid, c.logical, bk, {}},
          fmt::format("block group {} chunk_objectid {} (expected 256)", key_text(bk), bg->second.chunk_objectid));
  }
  for (const auto& [start, bg] : ctx.block_groups)
    if (!ctx.map.find(start) || ctx.map.find(start)->logical != start) {
      const Key bk{start, kBlockGroupItemKey, bg.length};
      rep.error("block-group", Where{kExtentTreeObjectid, start, bk, {}},
                fmt::format("block group {} has no chunk", key_text(bk)));
    }
  if (!sums) return;

  std::map<uint64_t, uint64_t> used;  // bg start -> bytes
  uint64_t total = 0;
  for (const auto& [start, x] : ctx.extents) {
    const uint64_t len = x.length;
    total += len;
    auto bg = ctx.block_groups.upper_bound(start);
    if (bg == ctx.block_groups.begin() || std::prev(bg)->second.start + std::prev(bg)->second.length < start + len) {
      rep.error("block-group", Where{kExtentTreeObjectid, start, x.key, {}},
                fmt::format("extent item {} [{} {}] does not lie inside one block group", key_text(x.key), start, len));
      continue;
    }
    used[std::prev(bg)->first] += len;
  }
  for (const auto& [start, bg] : ctx.block_groups) {
    const uint64_t have = used[start];
    if (have != bg.used)
      rep.error("block-group", Where{kExtentTreeObjectid, start, Key{start, kBlockGroupItemKey, bg.length}, {}},
                fmt::format("block group [{} {}] used {} but extent items used {}", start, bg.length, bg.used, have));
  }
  if (ctx.super.bytes_used.get() != total)
    rep.error("super-bytes-used", Where{{}, ctx.super_bytenr, {}, {}},
              fmt::format("super bytes used {} mismatches actual used {}", ctx.super.bytes_used.get(), total));
}

}  // namespace ubtrfs::fsck
