// Layout of a new filesystem: chunk sizes and placement, superblock-mirror exclusion, tree block
// placement; see mkfs.h for the picture and the invariants.
//
// The sizes follow mkfs.btrfs 6.2 and the kernel chunk allocator (FORMAT.md §5.2): SYSTEM and DATA
// start with 8 MiB, METADATA with 10% of the device split over its copies, clamped to
// [32 MiB, 256 MiB] (1 GiB above 50 GiB) and rounded down to BTRFS_STRIPE_LEN. Unlike mkfs.btrfs we
// never create temporary chunks, so nothing is left behind in the free space tree (FORMAT.md §10.1)
// and the minimum size is the plain sum of the chunks plus the reserved first MiB.
#include <algorithm>
#include <bit>
#include <cctype>

#include "tools/mkfs/mkfs.h"

namespace ubtrfs::mkfs {

uint64_t Layout::dev_bytes_used() const {
  uint64_t sum = 0;
  for (const ChunkPlan* c : chunks()) sum += c->length * c->physical.size();
  return sum;
}

uint64_t metadata_chunk_size(uint64_t total_bytes, Profile profile) {
  const uint64_t max = total_bytes > kLargeDeviceThreshold ? kMaxMetadataChunkSizeLarge : kMaxMetadataChunkSize;
  uint64_t size = total_bytes / 10;
  if (profile == Profile::kDup) size /= 2;
  size = std::clamp(size, kMinMetadataChunkSize, max);
  return size / kStripeLen * kStripeLen;
}

static uint64_t copies(Profile p) { return p == Profile::kDup ? 2 : 1; }

uint64_t minimum_fs_size(Profile profile, bool mixed) {
  // Mixed: the system chunk and a mixed chunk of at least 1 MiB per copy, and never below 16 MiB.
  if (mixed)
    return std::max(kMinFsSize, kReserved1MForSuper + (kMixedSystemChunkSize + kMinMixedChunkSize) * copies(profile));
  // The metadata chunk only grows beyond its minimum once 5% (10% single) of the device exceeds 32 MiB,
  // and then the device is far larger than the sum below, so the minimum is reached at the clamp.
  return kReserved1MForSuper + kSystemChunkSize * copies(profile) + kMinMetadataChunkSize * copies(profile) +
         kDataChunkSize;
}

// Per-copy length of the initial DATA|METADATA chunk: 10% of the device clamped to [1 MiB, 8 MiB],
// no more than what is left after the system chunk, rounded down to BTRFS_STRIPE_LEN.
static uint64_t mixed_chunk_size(uint64_t total_bytes, uint64_t cursor, uint64_t ncopies) {
  uint64_t size = std::clamp(total_bytes / 10, kMinMixedChunkSize, kMaxMixedChunkSize);
  size = std::min(size, (total_bytes - cursor) / ncopies);
  return size / kStripeLen * kStripeLen;
}

std::optional<MkfsConfig> small_device_config(const MkfsConfig& config, uint64_t fs_bytes, bool nodesize_given,
                                              bool profile_given) {
  if (config.mixed || fs_bytes >= minimum_fs_size(config.metadata_profile)) return std::nullopt;
  if (nodesize_given && config.nodesize != config.sectorsize) return std::nullopt;
  MkfsConfig mixed = config;
  mixed.mixed = true;
  mixed.nodesize = config.sectorsize;
  if (!profile_given) mixed.metadata_profile = Profile::kSingle;
  if (fs_bytes < minimum_fs_size(mixed.metadata_profile, true)) return std::nullopt;
  return mixed;
}

std::vector<Range> super_mirror_exclusions(const ChunkPlan& chunk) {
  std::vector<Range> out;
  for (int mirror = 0; mirror < kSuperMirrorMax; ++mirror) {
    const uint64_t off = super_offset(mirror);
    for (uint64_t phys : chunk.physical) {
      if (off < phys || off - phys >= chunk.length) continue;
      // btrfs_rmap_block: the stripe-length unit of this copy that holds the mirror.
      const uint64_t rel = (off - phys) / kStripeLen * kStripeLen;
      Range r{chunk.logical + rel, std::min(kStripeLen, chunk.length - rel)};
      if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
    }
  }
  std::sort(out.begin(), out.end(), [](const Range& a, const Range& b) { return a.start < b.start; });
  return out;
}

Result<std::vector<uint64_t>> place_tree_blocks(const ChunkPlan& chunk, size_t count, uint32_t nodesize) {
  std::vector<uint64_t> out;
  for (uint64_t off = 0; off + nodesize <= chunk.length && out.size() < count; off += nodesize) {
    const Range slot{chunk.logical + off, nodesize};
    const bool clash =
        std::any_of(chunk.excluded.begin(), chunk.excluded.end(), [&](const Range& r) { return r.overlaps(slot); });
    if (!clash) out.push_back(slot.start);
  }
  if (out.size() < count)
    return fail(ENOSPC, "chunk at logical {} of {} bytes has room for only {} of {} tree blocks", chunk.logical,
                chunk.length, out.size(), count);
  return out;
}

Result<Layout> compute_layout(const MkfsConfig& config, uint64_t device_size) {
  if (config.sectorsize != 4096)
    return fail(EINVAL, "sectorsize {} is not supported: only 4096 is", config.sectorsize);
  if (!std::has_single_bit(config.nodesize) || config.nodesize < config.sectorsize || config.nodesize > 65536)
    return fail(EINVAL, "invalid nodesize {}: must be a power of two between sectorsize {} and 65536",
                config.nodesize, config.sectorsize);
  uint64_t size = config.fs_size ? config.fs_size : device_size;
  if (size > device_size)
    return fail(EINVAL, "filesystem size {} ({}) is larger than the device ({})", size, pretty_size(size),
                pretty_size(device_size));
  if (config.mixed && config.nodesize != config.sectorsize)
    return fail(EINVAL, "mixed block groups need nodesize equal to sectorsize ({}), not {}", config.sectorsize,
                config.nodesize);
  size = size / config.sectorsize * config.sectorsize;
  const uint64_t min = minimum_fs_size(config.metadata_profile, config.mixed);
  if (size < min)
    return fail(ENOSPC, "device too small: {} ({} bytes), the layout needs at least {} ({} bytes)", pretty_size(size),
                size, pretty_size(min), min);

  Layout l;
  l.total_bytes = size;
  l.nodesize = config.nodesize;
  l.sectorsize = config.sectorsize;
  l.metadata_profile = config.metadata_profile;
  l.mixed = config.mixed;
  const uint64_t profile_flag = config.metadata_profile == Profile::kDup ? kBlockGroupDup : 0;
  const uint64_t ncopies = copies(config.metadata_profile);

  uint64_t cursor = kReserved1MForSuper;
  auto place = [&](ChunkPlan& c, uint64_t length, uint64_t type, uint64_t n) {
    c.length = length;
    c.type = type;
    c.logical = cursor;
    for (uint64_t i = 0; i < n; ++i) {
      c.physical.push_back(cursor);
      cursor += length;
    }
    c.excluded = super_mirror_exclusions(c);
  };
  if (config.mixed) {
    place(l.system, kMixedSystemChunkSize, kBlockGroupSystem | profile_flag, ncopies);
    place(l.metadata, mixed_chunk_size(size, cursor, ncopies), kBlockGroupData | kBlockGroupMetadata | profile_flag,
          ncopies);
  } else {
    place(l.system, kSystemChunkSize, kBlockGroupSystem | profile_flag, ncopies);
    place(l.metadata, metadata_chunk_size(size, config.metadata_profile), kBlockGroupMetadata | profile_flag,
          ncopies);
    place(l.data, kDataChunkSize, kBlockGroupData, 1);
  }
  if (cursor > size)  // cannot happen above the minimum; kept as a guard for policy changes
    return fail(ENOSPC, "device too small: the chunks need {} bytes, the filesystem has {}", cursor, size);

  auto sys = UBTRFS_TRY(place_tree_blocks(l.system, 1, l.nodesize));
  l.tree_bytenr[kChunkTreeObjectid] = sys[0];
  // The block group tree's leaf, when asked for, after the others.
  l.block_group_tree = config.block_group_tree;
  const size_t nmeta = std::size(kMetadataTrees) + (l.block_group_tree ? 1 : 0);
  auto meta = UBTRFS_TRY(place_tree_blocks(l.metadata, nmeta, l.nodesize));
  for (size_t i = 0; i < std::size(kMetadataTrees); ++i) l.tree_bytenr[kMetadataTrees[i]] = meta[i];
  if (l.block_group_tree) l.tree_bytenr[kBlockGroupTreeObjectid] = meta[std::size(kMetadataTrees)];
  return l;
}

std::string pretty_size(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{}.00B", bytes);
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  return fmt::format("{:.2f}{}", v, kUnits[u]);  // 53673984 -> "51.19MiB", as btrfs-progs prints it
}

Result<uint64_t> parse_size(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) ++pos;
  if (pos == 0 || pos > 19) return fail(EINVAL, "invalid size '{}'", text);
  uint64_t value = std::stoull(text.substr(0, pos));
  std::string suffix = text.substr(pos);
  for (auto& ch : suffix) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (suffix.ends_with("ib")) suffix.resize(suffix.size() - 2);
  else if (suffix.size() == 2 && suffix.back() == 'b') suffix.pop_back();
  int shift = 0;
  if (suffix.empty() || suffix == "b") shift = 0;
  else if (suffix == "k") shift = 10;
  else if (suffix == "m") shift = 20;
  else if (suffix == "g") shift = 30;
  else if (suffix == "t") shift = 40;
  else if (suffix == "p") shift = 50;
  else if (suffix == "e") shift = 60;
  else return fail(EINVAL, "invalid size '{}': unknown unit '{}'", text, text.substr(pos));
  if (shift && value > (~0ull >> shift)) return fail(EINVAL, "invalid size '{}': too large", text);
  return value << shift;
}

}  // namespace ubtrfs::mkfs
