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
  // system, SINGLE for data and mixed groups when there is no group of the type yet (the mkfs
  // defaults; mkfs.btrfs --mixed on one device makes SINGLE groups).
  for (auto* bg : fs_.block_groups().all())
    if ((bg->flags() & kTypeMask) == type) return bg->flags() & ~kTypeMask;
  return (type & kBlockGroupData) ? 0 : kBlockGroupDup;
}

Status ChunkCreator::create_chunk(uint64_t type, uint64_t min_bytes) {
  std::lock_guard g(mu_);
  alloc::SpaceInfos& sp = fs_.spaces();
  alloc::DeviceSpace& dev = fs_.device_space();
  // With mixed block groups (INCOMPAT_MIXED_GROUPS) every data or metadata chunk is a DATA|METADATA
  // chunk (btrfs_get_alloc_profile asks for both bits when the space_info is shared).
  if (type != kBlockGroupSystem && sp.mixed()) type = kBlockGroupData | kBlockGroupMetadata;
  const uint64_t flags = type | profile_for(type);
  const char* tname = type == (kBlockGroupData | kBlockGroupMetadata) ? "mixed"
                      : type == kBlockGroupData                        ? "data"
                      : type == kBlockGroupSystem                      ? "system"
                                                                       : "metadata";
  const uint64_t logical = fs_.chunk_map().logical_end();
  const uint64_t limit = alloc::chunk_size_limit(type, dev.total_bytes());
  uint64_t wanted = min_bytes > limit ? min_bytes : 0;
  Result<ChunkMapping> planned = fail(ENOSPC, "not planned");
  {
    // A data chunk must leave the unallocated bytes that back metadata's overcommit (space_info.h,
    // "Beyond the kernel"): decided and allocated under the metadata and system space_infos' locks,
    // so no overcommit decision sees the old unallocated figure after this chunk took it.
    std::unique_lock<std::mutex> meta_lk, sys_lk;
    uint64_t backing = 0;
    if (type == kBlockGroupData && !sp.metadata().is_data()) {
      meta_lk = sp.metadata().lock_for_chunk_decision();
      sys_lk = sp.system().lock_for_chunk_decision();
      backing = sp.metadata().overcommitted_locked() * static_cast<uint64_t>(sp.factor(kBlockGroupMetadata)) +
                sp.system().overcommitted_locked() * static_cast<uint64_t>(sp.factor(kBlockGroupSystem));
    }
    const uint64_t unalloc = dev.unallocated_bytes();
    if (backing > 0) {
      if (unalloc <= backing) {
        sp.count_enospc(alloc::EnospcReason::kDataChunkBacking);
        return fail(ENOSPC,
                    "no data chunk: the {} unallocated bytes back {} bytes of reserved metadata (overcommit)",
                    unalloc, backing);
      }
      const uint64_t cap = unalloc - backing;
      const uint64_t want = wanted ? wanted : limit;
      if (want > cap) wanted = cap;
    }
    planned = alloc::plan_chunk(dev, logical, flags, wanted);
    sp.set_free_chunk_space(dev.unallocated_bytes());
  }
  if (!planned) {
    // Nothing left on the device for this type: space_info->full, the flushers stop trying.
    sp.for_flags(type).set_full(true);
    sp.count_enospc(alloc::EnospcReason::kChunk);
    return fail(ENOSPC, "no unallocated space for a new {} chunk ({} bytes unallocated)", tname,
                dev.unallocated_bytes());
  }
  ChunkMapping m = *planned;
  // An abandoned plan gives its device space back: its DEV_EXTENTs are never written, so the
  // DEV_ITEM's bytes_used must not count them.
  auto abandon = [&](Error e) -> Status {
    for (const auto& st : m.stripes) (void)dev.remove_extent(st.physical, m.length);
    sp.set_free_chunk_space(dev.unallocated_bytes());
    return fail(std::move(e));
  };
  if (m.length < min_bytes)
    return abandon(Error{ENOSPC, fmt::format("largest new {} chunk is {} bytes, {} needed", tname, m.length, min_bytes)});
  const DevItem& di = fs_.super().dev_item;
  for (auto& st : m.stripes) {
    st.devid = di.devid.get();
    std::memcpy(st.dev_uuid.data(), di.uuid, 16);
  }
  if (auto st = fs_.chunk_map().add(m); !st) return abandon(st.error());
  auto bg = std::make_unique<alloc::BlockGroup>(m, 0);
  UBTRFS_TRY_STATUS(bg->add_free(m.logical, m.length));
  // Attached before it becomes visible, so no allocation from it escapes the space_info's counters;
  // tickets are granted once the allocator can find it.
  fs_.attach_block_group(*bg);
  UBTRFS_TRY_STATUS(fs_.block_groups().add(std::move(bg)));
  sp.for_flags(type).grant_tickets();
  pending_.push_back(m);
  pending_dev_bytes_ += m.length * m.stripes.size();
  // The chunk tree items the commit will insert (btrfs check_system_chunk): best effort, the
  // fallback chain covers a miss.
  (void)sp.chunk_rsv().add(sp.insert_size(1) + sp.metadata_size(1), alloc::FlushMode::kNoFlush);
  spdlog::info("{}: new chunk at {} length {} flags 0x{:x}", fs_.path(), m.logical, m.length, m.type);
  return {};
}

uint64_t ChunkCreator::dev_bytes_used() const {
  std::lock_guard g(mu_);
  return fs_.device_space().allocated_bytes() - pending_dev_bytes_;
}

bool ChunkCreator::has_pending() const {
  std::lock_guard g(mu_);
  return !pending_.empty();
}

std::set<uint64_t> ChunkCreator::pending_starts() const {
  std::lock_guard g(mu_);
  std::set<uint64_t> out;
  for (const auto& m : pending_) out.insert(m.logical);
  return out;
}

Status ChunkCreator::insert_pending_items(TreeHandle& h, std::set<uint64_t>& new_groups) {
  std::vector<ChunkMapping> todo;
  uint64_t dev_used;  // with todo's DEV_EXTENTs, without those of chunks planned from now on
  {
    std::lock_guard g(mu_);
    todo.swap(pending_);
    pending_dev_bytes_ = 0;
    dev_used = fs_.device_space().allocated_bytes();
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
    d.bytes_used = dev_used;
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
