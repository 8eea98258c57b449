// LeafBuilder and the item encoders; see leaf_builder.h.
#include "tools/mkfs/leaf_builder.h"

#include <algorithm>
#include <cstring>

#include "tree/block_io.h"

namespace ubtrfs::mkfs {

size_t LeafBuilder::used_bytes() const {
  size_t n = 0;
  for (const auto& it : items_) n += sizeof(Item) + it.body.size();
  return n;
}

Result<Bytes> LeafBuilder::build(const FsParams& fs, uint64_t generation) const {
  const size_t capacity = leaf_data_size(fs.nodesize);
  if (used_bytes() > capacity)
    return fail(EFBIG, "tree {} needs {} bytes of items but a {}-byte leaf holds {}", static_cast<int64_t>(owner_),
                used_bytes(), fs.nodesize, capacity);
  std::vector<const PendingItem*> sorted;
  for (const auto& it : items_) sorted.push_back(&it);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->key < b->key; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1]->key == sorted[i]->key)
      return fail(EEXIST, "tree {} has duplicate key [{} {} {}]", static_cast<int64_t>(owner_),
                  sorted[i]->key.objectid, sorted[i]->key.type, sorted[i]->key.offset);

  Bytes block(fs.nodesize, 0);
  Header h{};
  std::memcpy(h.fsid, fs.fsid.data(), 16);
  h.bytenr = bytenr_;
  h.flags = kHeaderFlagWritten | (kMixedBackrefRev << kBackrefRevShift);
  std::memcpy(h.chunk_tree_uuid, fs.chunk_tree_uuid.data(), 16);
  h.generation = generation;
  h.owner = owner_;
  h.nritems = static_cast<uint32_t>(sorted.size());
  h.level = 0;
  store(block.data(), h);

  uint32_t data_end = static_cast<uint32_t>(capacity);  // offsets relative to the end of the header
  for (size_t i = 0; i < sorted.size(); ++i) {
    const auto& it = *sorted[i];
    data_end -= static_cast<uint32_t>(it.body.size());
    Item item{};
    item.key.set(it.key);
    item.offset = data_end;
    item.size = static_cast<uint32_t>(it.body.size());
    store(block.data() + sizeof(Header) + i * sizeof(Item), item);
    if (!it.body.empty()) std::memcpy(block.data() + sizeof(Header) + data_end, it.body.data(), it.body.size());
  }
  csum_tree_block(fs, block);
  return block;
}

Bytes inode_ref(uint64_t index, std::string_view name) {
  Bytes b(sizeof(InodeRef) + name.size());
  InodeRef r{};
  r.index = index;
  r.name_len = static_cast<uint16_t>(name.size());
  store(b.data(), r);
  std::memcpy(b.data() + sizeof(InodeRef), name.data(), name.size());
  return b;
}

Bytes dir_item(const Key& location, uint64_t transid, std::string_view name, uint8_t type) {
  Bytes b(sizeof(DirItem) + name.size());
  DirItem d{};
  d.location.set(location);
  d.transid = transid;
  d.data_len = 0;
  d.name_len = static_cast<uint16_t>(name.size());
  d.type = type;
  store(b.data(), d);
  std::memcpy(b.data() + sizeof(DirItem), name.data(), name.size());
  return b;
}

Bytes chunk_item(uint64_t length, uint64_t type, uint32_t sectorsize, std::span<const uint64_t> physical,
                 std::span<const uint8_t, 16> dev_uuid) {
  Bytes b(chunk_item_size(physical.size()));
  ChunkItem c{};
  c.length = length;
  c.owner = kExtentTreeObjectid;
  c.stripe_len = kStripeLen;
  c.type = type;
  c.io_align = static_cast<uint32_t>(kStripeLen);
  c.io_width = static_cast<uint32_t>(kStripeLen);
  c.sector_size = sectorsize;
  c.num_stripes = static_cast<uint16_t>(physical.size());
  c.sub_stripes = 1;
  store(b.data(), c);
  for (size_t i = 0; i < physical.size(); ++i) {
    Stripe s{};
    s.devid = 1;
    s.offset = physical[i];
    std::memcpy(s.dev_uuid, dev_uuid.data(), 16);
    store(b.data() + sizeof(ChunkItem) + i * sizeof(Stripe), s);
  }
  return b;
}

Bytes metadata_item(uint64_t generation, uint64_t owner) {
  Bytes b(sizeof(ExtentItem) + sizeof(ExtentInlineRef));
  ExtentItem e{};
  e.refs = 1;
  e.generation = generation;
  e.flags = kExtentFlagTreeBlock;
  store(b.data(), e);
  ExtentInlineRef r{};
  r.type = kTreeBlockRefKey;
  r.offset = owner;
  store(b.data() + sizeof(ExtentItem), r);
  return b;
}

}  // namespace ubtrfs::mkfs
