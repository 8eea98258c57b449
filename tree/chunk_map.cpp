// ChunkMap implementation; see chunk_map.h for the ownership and invariants.
#include "tree/chunk_map.h"

#include <bit>
#include <mutex>

namespace ubtrfs {

Status check_chunk_item(uint64_t logical, std::span<const uint8_t> item, uint32_t sectorsize) {
  if (item.size() < sizeof(ChunkItem))
    return fail(EUCLEAN, "invalid chunk item at logical {}: item size {} too small", logical, item.size());
  auto c = load<ChunkItem>(item.data());
  uint16_t n = c.num_stripes;
  if (n == 0) return fail(EUCLEAN, "invalid chunk item at logical {}: num_stripes 0", logical);
  if (item.size() != chunk_item_size(n))
    return fail(EUCLEAN, "invalid chunk item at logical {}: item size {} does not match {} stripes", logical,
                item.size(), n);
  if (c.length.get() == 0 || c.length.get() % sectorsize)
    return fail(EUCLEAN, "invalid chunk item at logical {}: length {} not aligned to sectorsize", logical,
                c.length.get());
  if (logical % sectorsize)
    return fail(EUCLEAN, "invalid chunk item at logical {}: start not aligned to sectorsize", logical);
  if (c.stripe_len.get() != kStripeLen)
    return fail(EUCLEAN, "invalid chunk item at logical {}: stripe_len {} (must be 65536)", logical,
                c.stripe_len.get());
  if (c.sector_size.get() != sectorsize)
    return fail(EUCLEAN, "invalid chunk item at logical {}: sector_size {} != fs sectorsize {}", logical,
                c.sector_size.get(), sectorsize);
  uint64_t type = c.type;
  uint64_t t = type & kBlockGroupTypeMask;
  if (t == 0) return fail(EUCLEAN, "invalid chunk item at logical {}: no type bit in flags 0x{:x}", logical, type);
  if ((t & kBlockGroupSystem) && t != kBlockGroupSystem)
    return fail(EUCLEAN, "invalid chunk item at logical {}: system chunk mixed with other types 0x{:x}", logical,
                type);
  if (std::popcount(type & kBlockGroupProfileMask) > 1)
    return fail(EUCLEAN, "invalid chunk item at logical {}: more than one profile bit in 0x{:x}", logical, type);
  if (type & ~(kBlockGroupTypeMask | kBlockGroupProfileMask))
    return fail(EUCLEAN, "invalid chunk item at logical {}: unknown flag bits in 0x{:x}", logical, type);
  return {};
}

Status ChunkMap::add(ChunkMapping m) {
  uint64_t profile = m.type & kBlockGroupProfileMask;
  if (profile != 0 && profile != kBlockGroupDup)
    return fail(EOPNOTSUPP, "chunk at logical {} uses profile 0x{:x}: only single and dup are supported",
                m.logical, profile);
  if (m.stripes.empty() || (profile == kBlockGroupDup) != (m.stripes.size() == 2))
    return fail(EUCLEAN, "chunk at logical {}: {} stripes do not match profile 0x{:x}", m.logical, m.stripes.size(),
                profile);
  for (const auto& s : m.stripes)
    if (s.devid != 1)
      return fail(EOPNOTSUPP, "chunk at logical {} has a stripe on device {}: multi-device filesystems are not supported",
                  m.logical, s.devid);
  std::unique_lock lock(mu_);
  auto next = chunks_.lower_bound(m.logical);
  if (next != chunks_.end() && next->first < m.logical + m.length) {
    if (next->first == m.logical && next->second.length == m.length) return {};  // same chunk (sys array + tree)
    return fail(EUCLEAN, "chunk at logical {} length {} overlaps chunk at {}", m.logical, m.length, next->first);
  }
  if (next != chunks_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.length > m.logical)
      return fail(EUCLEAN, "chunk at logical {} overlaps chunk at {}", m.logical, prev->first);
  }
  chunks_.emplace(m.logical, std::move(m));
  return {};
}

Status ChunkMap::add_chunk_item(uint64_t logical, std::span<const uint8_t> item) {
  auto c = load<ChunkItem>(item.data());
  ChunkMapping m;
  m.logical = logical;
  m.length = c.length;
  m.type = c.type;
  for (uint16_t i = 0; i < c.num_stripes.get(); ++i) {
    auto s = load<Stripe>(item.data() + sizeof(ChunkItem) + i * sizeof(Stripe));
    ChunkStripe cs;
    cs.devid = s.devid;
    cs.physical = s.offset;
    std::memcpy(cs.dev_uuid.data(), s.dev_uuid, 16);
    m.stripes.push_back(cs);
  }
  return add(std::move(m));
}

Status ChunkMap::load_sys_chunk_array(const Superblock& sb) {
  uint32_t size = sb.sys_chunk_array_size;
  if (size > kSystemChunkArraySize)
    return fail(EUCLEAN, "superblock sys_chunk_array_size {} exceeds {}", size, kSystemChunkArraySize);
  uint32_t sectorsize = sb.sectorsize;
  uint32_t pos = 0;
  int count = 0;
  while (pos < size) {
    if (size - pos < sizeof(DiskKey) + sizeof(ChunkItem))
      return fail(EUCLEAN, "sys_chunk_array truncated at byte {} of {}", pos, size);
    auto key = load<DiskKey>(sb.sys_chunk_array + pos).cpu();
    pos += sizeof(DiskKey);
    if (key.type != kChunkItemKey)
      return fail(EUCLEAN, "sys_chunk_array entry at byte {} has key type {} (expected CHUNK_ITEM 228)", pos - 17,
                  key.type);
    auto c = load<ChunkItem>(sb.sys_chunk_array + pos);
    size_t isz = chunk_item_size(c.num_stripes);
    if (c.num_stripes.get() == 0 || pos + isz > size)
      return fail(EUCLEAN, "sys_chunk_array entry for logical {} runs past the array end", key.offset);
    std::span<const uint8_t> body(sb.sys_chunk_array + pos, isz);
    UBTRFS_TRY_STATUS(check_chunk_item(key.offset, body, sectorsize));
    if (!(c.type.get() & kBlockGroupSystem))
      return fail(EUCLEAN, "invalid chunk type 0x{:x} in sys_chunk_array at logical {}", c.type.get(), key.offset);
    UBTRFS_TRY_STATUS(add_chunk_item(key.offset, body));
    pos += isz;
    ++count;
  }
  if (count == 0) return fail(EUCLEAN, "superblock sys_chunk_array holds no system chunk");
  return {};
}

std::optional<ChunkMapping> ChunkMap::find(uint64_t logical) const {
  std::shared_lock lock(mu_);
  auto it = chunks_.upper_bound(logical);
  if (it == chunks_.begin()) return std::nullopt;
  --it;
  if (!it->second.contains(logical)) return std::nullopt;
  return it->second;
}

Result<std::vector<uint64_t>> ChunkMap::map(uint64_t logical, uint64_t len) const {
  std::shared_lock lock(mu_);
  auto it = chunks_.upper_bound(logical);
  if (it == chunks_.begin() || !std::prev(it)->second.contains(logical))
    return fail(EUCLEAN, "logical {} is not mapped by any chunk", logical);
  const auto& m = std::prev(it)->second;
  if (len > m.length - (logical - m.logical))
    return fail(EUCLEAN, "logical range {}+{} crosses the end of chunk {}", logical, len, m.logical);
  std::vector<uint64_t> out;
  out.reserve(m.stripes.size());
  for (const auto& s : m.stripes) out.push_back(s.physical + (logical - m.logical));
  return out;
}

std::vector<ChunkMapping> ChunkMap::all() const {
  std::shared_lock lock(mu_);
  std::vector<ChunkMapping> out;
  for (const auto& [k, v] : chunks_) out.push_back(v);
  return out;
}

uint64_t ChunkMap::logical_end() const {
  std::shared_lock lock(mu_);
  if (chunks_.empty()) return 0;
  const auto& last = chunks_.rbegin()->second;
  return last.logical + last.length;
}

}  // namespace ubtrfs
