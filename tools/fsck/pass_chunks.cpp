// Pass 3: chunk tree and dev tree (FORMAT.md §3.10, §1.3, §6.1.3).
//
// Rules:
//  - every CHUNK_ITEM is valid (check_chunk_item: length, stripe_len, sector size, type bits);
//  - every stripe of every chunk has a DEV_EXTENT at (devid, DEV_EXTENT, physical) whose
//    chunk_offset is the chunk's logical start and whose length is the stripe length (the chunk
//    length for SINGLE and DUP); every DEV_EXTENT belongs to such a stripe;
//  - DEV_EXTENTs do not overlap, stay inside the device's total_bytes and out of the first MiB;
//  - DEV_ITEM bytes_used == sum of that device's DEV_EXTENT lengths (btrfs check: "Dev extent's
//    total-byte(X) is not equal to byte-used(Y)"), and the superblock's dev_item matches it;
//  - sys_chunk_array holds exactly the SYSTEM chunks of the chunk tree, byte for byte (§1.3).
#include <cstring>
#include <map>

#include "tools/fsck/context.h"
#include "tree/chunk_map.h"

namespace ubtrfs::fsck {

namespace {

struct ChunkRec {
  Key key;
  std::vector<uint8_t> body;
  ChunkItem item{};
};

struct DevExtentRec {
  Key key;
  DevExtent ext{};
  bool matched = false;
};

void check_sys_chunk_array(Context& ctx, const std::map<uint64_t, ChunkRec>& chunks) {
  Report& rep = ctx.report();
  const Superblock& sb = ctx.super;
  const uint32_t size = std::min<uint32_t>(sb.sys_chunk_array_size, kSystemChunkArraySize);
  std::map<uint64_t, std::vector<uint8_t>> array;
  uint32_t pos = 0;
  while (pos + sizeof(DiskKey) + sizeof(ChunkItem) <= size) {
    const Key k = load<DiskKey>(sb.sys_chunk_array + pos).cpu();
    pos += sizeof(DiskKey);
    const auto c = load<ChunkItem>(sb.sys_chunk_array + pos);
    const size_t len = chunk_item_size(c.num_stripes);
    if (k.type != kChunkItemKey || c.num_stripes.get() == 0 || pos + len > size) {
      rep.error(
          "sys-chunk-array", Where{{}, ctx.super_bytenr, k, {}},
          fmt::format("sys_chunk_array entry {} at array offset {} is malformed", key_text(k), pos - sizeof(DiskKey)));
      return;
    }
    array[k.offset] = std::vector<uint8_t>(sb.sys_chunk_array + pos, sb.sys_chunk_array + pos + len);
    pos += static_cast<uint32_t>(len);
  }
  if (pos != size)
    rep.error("sys-chunk-array", Where{{}, ctx.super_bytenr, {}, {}},
              fmt::format("sys_chunk_array_size {} does not end on an entry boundary ({})", size, pos));
  if (!ctx.chunk_tree_ok) return;  // the comparison needs the whole chunk tree
  for (const auto& [logical, c] : chunks) {
    if (!(c.item.type.get() & kBlockGroupSystem)) continue;
    auto a = array.find(logical);
    if (a == array.end())
      rep.error("sys-chunk-array", Where{kChunkTreeObjectid, logical, c.key, {}},
                fmt::format("system chunk {} is missing from the superblock sys_chunk_array", key_text(c.key)));
    else if (a->second != c.body)
      rep.error("sys-chunk-array", Where{kChunkTreeObjectid, logical, c.key, {}},
                fmt::format("system chunk {} differs between the chunk tree and sys_chunk_array", key_text(c.key)));
  }
  for (const auto& [logical, bytes] : array) {
    auto c = chunks.find(logical);
    const Key k{kFirstChunkTreeObjectid, kChunkItemKey, logical};
    if (c == chunks.end())
      rep.error("sys-chunk-array", Where{{}, logical, k, {}},
                fmt::format("sys_chunk_array entry {} has no chunk item in the chunk tree", key_text(k)));
    else if (!(c->second.item.type.get() & kBlockGroupSystem))
      rep.error("sys-chunk-array", Where{{}, logical, k, {}},
                fmt::format("sys_chunk_array entry {} is not a SYSTEM chunk (type 0x{:x})", key_text(k),
                            c->second.item.type.get()));
  }
}

}  // namespace

void check_chunks(Context& ctx) {
  Report& rep = ctx.report();
  std::map<uint64_t, ChunkRec> chunks;
  std::map<uint64_t, std::pair<Key, DevItem>> dev_items;  // by devid
  for (const auto& it : ctx.items(kChunkTreeObjectid)) {
    if (it.key.type == kChunkItemKey) {
      if (auto st = check_chunk_item(it.key.offset, it.body, ctx.params.sectorsize); !st) {
        rep.error("chunk", Where{kChunkTreeObjectid, it.leaf, it.key, {}},
                  fmt::format("chunk item {} in leaf {}: {}", key_text(it.key), it.leaf, st.error().message));
        continue;
      }
      ChunkRec c;
      c.key = it.key;
      c.body.assign(it.body.begin(), it.body.end());
      c.item = load<ChunkItem>(it.body.data());
      chunks[it.key.offset] = std::move(c);
    } else if (it.key.type == kDevItemKey && it.body.size() >= sizeof(DevItem)) {
      dev_items[it.key.offset] = {it.key, load<DevItem>(it.body.data())};
    }
  }
  check_sys_chunk_array(ctx, chunks);

  const TreeInfo* dev_tree = ctx.tree(kDevTreeObjectid);
  if (!dev_tree) {
    rep.error("dev-extent", Where{kDevTreeObjectid, {}, {}, {}}, "the root tree has no dev tree (tree 4)");
    return;
  }
  std::map<std::pair<uint64_t, uint64_t>, DevExtentRec> dev_extents;  // (devid, physical)
  for (const auto& it : ctx.items(*dev_tree)) {
    if (it.key.type != kDevExtentKey || it.body.size() < sizeof(DevExtent)) continue;
    dev_extents[{it.key.objectid, it.key.offset}] = DevExtentRec{it.key, load<DevExtent>(it.body.data()), false};
  }
  const bool complete = ctx.chunk_tree_ok && !dev_tree->damaged;
  if (!complete)
    rep.warning("dev-extent", Where{kDevTreeObjectid, {}, {}, {}},
                "chunk or dev tree damaged: stripe/dev extent matching and dev bytes_used not checked");

  if (complete) {
    for (const auto& [logical, c] : chunks) {
      const uint16_t n = c.item.num_stripes;
      for (uint16_t i = 0; i < n; ++i) {
        const auto s = load<Stripe>(c.body.data() + sizeof(ChunkItem) + i * sizeof(Stripe));
        auto de = dev_extents.find({s.devid.get(), s.offset.get()});
        const Key want{s.devid, kDevExtentKey, s.offset};
        if (de == dev_extents.end()) {
          rep.error("dev-extent", Where{kDevTreeObjectid, logical, want, {}},
                    fmt::format("chunk {} stripe {} (devid {} physical {}) has no dev extent {}", key_text(c.key), i,
                                s.devid.get(), s.offset.get(), key_text(want)));
          continue;
        }
        de->second.matched = true;
        if (de->second.ext.chunk_offset.get() != logical || de->second.ext.length.get() != c.item.length.get())
          rep.error("dev-extent", Where{kDevTreeObjectid, logical, want, {}},
                    fmt::format("dev extent {} says chunk {} length {}, but chunk {} stripe {} has length {}",
                                key_text(want), de->second.ext.chunk_offset.get(), de->second.ext.length.get(),
                                key_text(c.key), i, c.item.length.get()));
      }
    }
    for (const auto& [pos, de] : dev_extents)
      if (!de.matched)
        rep.error("dev-extent", Where{kDevTreeObjectid, de.ext.chunk_offset, de.key, {}},
                  fmt::format("dev extent {} (chunk {}) belongs to no chunk stripe", key_text(de.key),
                              de.ext.chunk_offset.get()));
  }

  // Overlaps and bounds, then the per-device sums.
  std::map<uint64_t, uint64_t> used;  // devid -> sum of lengths
  const DevExtentRec* prev = nullptr;
  for (const auto& [pos, de] : dev_extents) {
    const uint64_t len = de.ext.length;
    used[pos.first] += len;
    if (pos.second < kReserved1MForSuper)
      rep.error("dev-extent", Where{kDevTreeObjectid, {}, de.key, {}},
                fmt::format("dev extent {} lies in the first MiB reserved for the superblock", key_text(de.key)));
    if (prev && prev->key.objectid == pos.first && prev->key.offset + prev->ext.length.get() > pos.second)
      rep.error("dev-extent", Where{kDevTreeObjectid, {}, de.key, {}},
                fmt::format("dev extent {} overlaps dev extent {} of length {}", key_text(de.key), key_text(prev->key),
                            prev->ext.length.get()));
    auto di = dev_items.find(pos.first);
    if (di != dev_items.end() && pos.second + len > di->second.second.total_bytes.get())
      rep.error("dev-extent", Where{kDevTreeObjectid, {}, de.key, {}},
                fmt::format("dev extent {} length {} ends beyond the device total_bytes {}", key_text(de.key), len,
                            di->second.second.total_bytes.get()));
    prev = &de;
  }
  if (!ctx.chunk_tree_ok) return;
  if (dev_items.empty()) rep.error("dev-item", Where{kChunkTreeObjectid, {}, {}, {}}, "the chunk tree has no DEV_ITEM");
  for (const auto& [devid, kd] : dev_items) {
    const auto& [key, di] = kd;
    if (complete && di.bytes_used.get() != used[devid])
      rep.error("dev-item", Where{kChunkTreeObjectid, {}, key, {}},
                fmt::format("dev item {} bytes_used {} differs from the sum of its dev extent lengths {}",
                            key_text(key), di.bytes_used.get(), used[devid]));
    const DevItem& sdi = ctx.super.dev_item;
    if (sdi.devid.get() == devid &&
        (sdi.bytes_used.get() != di.bytes_used.get() || sdi.total_bytes.get() != di.total_bytes.get() ||
         std::memcmp(sdi.uuid, di.uuid, 16) != 0))
      rep.error("dev-item", Where{{}, ctx.super_bytenr, key, {}},
                fmt::format("superblock dev_item differs from dev item {} (bytes_used {} vs {}, total_bytes {} vs {})",
                            key_text(key), sdi.bytes_used.get(), di.bytes_used.get(), sdi.total_bytes.get(),
                            di.total_bytes.get()));
  }
}

}  // namespace ubtrfs::fsck
