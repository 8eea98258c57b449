// ChunkCreator: the two phases of chunk creation; see chunk_creator.h.
#include "fs/chunk_creator.h"

#include <spdlog/spdlog.h>

#include "alloc/chunk_alloc.h"
#include "alloc/free_space_tree.h"
#include "fs/fs_info.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {
constexpr uint64_t kTypeMask = kBlockGroupData | kBlockGroupSystem | kBlockGroupMetadata;

std::vector<uint8_t> chunk_item_body(const ChunkMapping& m, uint32_t sectorsize) {
  std::vector<uint8_t> b(chunk_item_size(m.stripes.size()));
  ChunkItem c{};
  c.length = m.length;
  c.owner = kExtentTreeObjectid;
  c.stripe_len = kStripeLen;
  c.type = m.type;
  c.io_align = static_cast<uint32_t>(kStripeLen);
  c.io_width = static_cast<uint32_t>(kStripeLen);
  c.sector_size = sectorsize;
  c.num_stripes = static_cast<uint16_t>(m.stripes.size());
  c.sub_stripes = 1;
  store(b.data(), c);
  for (size_t i = 0; i < m.stripes.size(); ++i) {
    Stripe s{};
    s.devid = m.stripes[i].devid;
    s.offset = m.stripes[i].physical;
    std::memcpy(s.dev_uuid, m.stripes[i].dev_uuid.data(), 16);
    store(b.data() + sizeof(ChunkItem) + i * sizeof(Stripe), s);
  }
  return b;
}

template <class T>
std::span<const uint8_t> bytes_of(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}
}  // namespace

uint64_t ChunkCreator::profile_for(uint64_t type) const {
  // The profile the filesystem already uses for this type (mkfs chose it); DUP for metadata and
  // system, SINGLE for data when there is no group of the type yet (the mkfs defaults).
  for (auto* bg : fs_.block_groups().all())
    if ((bg->flags() & kTypeMask) == type) return bg->flags() & ~kTypeMask;
  return type == kBlockGroupData ? 0 : kBlockGroupDup;
}

Status ChunkCreator::create_chunk(uint64_t type, uint64_t min_bytes) {
  std::lock_guard g(mu_);
  const uint64_t flags = type | profile_for(type);
  const uint64_t logical = fs_.chunk_map().logical_end();
  const uint64_t limit = alloc::chunk_size_limit(type, fs_.device_space().total_bytes());
  auto planned = alloc::plan_chunk(fs_.device_space(), logical, flags, min_bytes > limit ? min_bytes : 0);
  if (!planned)
    return fail(ENOSPC, "no unallocated space for a new {} chunk ({} bytes unallocated)",
                type == kBlockGroupData ? "data" : type == kBlockGroupSystem ? "system" : "metadata",
                fs_.device_space().unallocated_bytes());
  ChunkMapping m = *planned;
  if (m.length < min_bytes)
    return fail(ENOSPC, "largest new chunk is {} bytes, {} needed", m.length, min_bytes);
  const DevItem& di = fs_.super().dev_item;
  for (auto& s : m.stripes) {
    s.devid = di.devid.get();
    std::memcpy(s.dev_uuid.data(), di.uuid, 16);
  }
  UBTRFS_TRY_STATUS(fs_.chunk_map().add(m));
  auto bg = std::make_unique<alloc::BlockGroup>(m, 0);
  UBTRFS_TRY_STATUS(bg->add_free(m.logical, m.length));
  UBTRFS_TRY_STATUS(fs_.block_groups().add(std::move(bg)));
  pending_.push_back(m);
  spdlog::info("{}: new chunk at {} length {} flags 0x{:x}", fs_.path(), m.logical, m.length, m.type);
  return {};
}

bool ChunkCreator::has_pending() const {
  std::lock_guard g(mu_);
  return !pending_.empty();
}

Status ChunkCreator::insert_pending_items(TreeHandle& h, std::set<uint64_t>& new_groups) {
  std::vector<ChunkMapping> todo;
  {
    std::lock_guard g(mu_);
    todo.swap(pending_);
  }
  Superblock& sb = fs_.super();
  std::lock_guard super_lock(fs_.super_mu());
  const DevItem& di = sb.dev_item;
  for (const auto& m : todo) {
    const auto body = chunk_item_body(m, fs_.params().sectorsize);
    UBTRFS_TRY_STATUS(insert_item(h, fs_.chunk_tree(), Key{kFirstChunkTreeObjectid, kChunkItemKey, m.logical}, body));
    for (const auto& s : m.stripes) {
      DevExtent de{};
      de.chunk_tree = kChunkTreeObjectid;
      de.chunk_objectid = kFirstChunkTreeObjectid;
      de.chunk_offset = m.logical;
      de.length = m.length;
      std::memcpy(de.chunk_tree_uuid, fs_.params().chunk_tree_uuid.data(), 16);
      UBTRFS_TRY_STATUS(insert_item(h, *fs_.dev_root().tree, Key{s.devid, kDevExtentKey, s.physical}, bytes_of(de)));
    }
    BlockGroupItem bgi{};
    bgi.used = 0;
    bgi.chunk_objectid = kFirstChunkTreeObjectid;
    bgi.flags = m.type;
    UBTRFS_TRY_STATUS(insert_item(h, *fs_.block_group_items_root().tree, Key{m.logical, kBlockGroupItemKey, m.length},
                                  bytes_of(bgi)));
    if (auto* fst = fs_.free_space_root()) {
      alloc::FreeSpaceTree t(*fst->tree, fs_.params());
      UBTRFS_TRY_STATUS(t.add_group(h, m.logical, m.length));
    }
    if (m.type & kBlockGroupSystem) {
      // SYSTEM chunks must be readable before the chunk tree: the superblock carries them.
      const uint32_t used = sb.sys_chunk_array_size.get();
      if (used + sizeof(DiskKey) + body.size() > kSystemChunkArraySize)
        return fail(ENOSPC, "superblock sys_chunk_array is full ({} bytes): cannot add system chunk {}", used,
                    m.logical);
      DiskKey k{};
      k.set(Key{kFirstChunkTreeObjectid, kChunkItemKey, m.logical});
      store(sb.sys_chunk_array + used, k);
      std::memcpy(sb.sys_chunk_array + used + sizeof(DiskKey), body.data(), body.size());
      sb.sys_chunk_array_size = static_cast<uint32_t>(used + sizeof(DiskKey) + body.size());
    }
    new_groups.insert(m.logical);
  }
  if (!todo.empty()) {
    // DEV_ITEM bytes_used, in the chunk tree and in the superblock's copy.
    DevItem d = di;
    d.bytes_used = fs_.device_space().allocated_bytes();
    sb.dev_item.bytes_used = d.bytes_used.get();
    Path path;
    auto ret = search_slot(&h, fs_.chunk_tree(), Key{kDevItemsObjectid, kDevItemKey, di.devid.get()}, path, 0, true);
    if (!ret) return fail(ret.error());
    if (*ret != 0) return fail(EUCLEAN, "chunk tree has no DEV_ITEM for device {}", di.devid.get());
    auto data = path.leaf().item_data(path.slot());
    if (data.size() != sizeof(DevItem)) return fail(EUCLEAN, "DEV_ITEM has size {}", data.size());
    auto cur = load<DevItem>(data.data());
    cur.bytes_used = d.bytes_used.get();
    store(data.data(), cur);
    fs_.cache().mark_dirty(path.nodes[0]);
  }
  return {};
}

}  // namespace ubtrfs::fs
