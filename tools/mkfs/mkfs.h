// The mkfs library: computes the layout of a new single-device btrfs filesystem, builds its initial
// trees and writes them (btrfs-progs mkfs/common.c `make_btrfs` plays the same role there).
//
// What it owns
//   - compute_layout(): where the three initial chunks go (FORMAT.md §5.2), which logical ranges the
//     superblock mirrors take out of them (FORMAT.md §5.5), and where each initial tree block sits.
//   - make_btrfs(): builds every initial tree as one leaf directly (as btrfs-progs' mkfs does for its
//     first trees), checks each leaf with the tree checker, and writes them in crash-safe order.
//
// Layout (physical offsets; the first 1 MiB is never used by chunks, FORMAT.md §1.1):
//   [1 MiB ...)  SYSTEM chunk, 8 MiB per copy (DUP: two copies back to back, else one)
//                METADATA chunk, size by the kernel/progs policy (metadata_chunk_size), same profile
//                DATA chunk, 8 MiB, always SINGLE
// With mixed block groups (--mixed, INCOMPAT_MIXED_GROUPS; nodesize must equal sectorsize, as the
// kernel requires, since tree blocks and data extents share the same sectors):
//   [1 MiB ...)  SYSTEM chunk, 4 MiB per copy
//                DATA|METADATA chunk, 10% of the device clamped to [1 MiB, 8 MiB] per copy (the sizes
//                mkfs.btrfs --mixed gives), same profile as SYSTEM: SINGLE unless -m dup
// Every chunk's logical start equals the physical offset of its first copy, so logical ranges never
// overlap (physical ones don't). The FS holds 9 tree blocks: the chunk tree in SYSTEM, the root,
// extent, dev, fs, csum, uuid, free-space and data-reloc trees in METADATA, each at the lowest
// nodesize-aligned slot of its chunk whose logical range (and hence every copy) avoids the 64 KiB
// stripes that hold superblock mirrors.
//
// Crash-safe write order (make_btrfs), so that an interrupted mkfs never leaves something that looks
// like a valid filesystem: (1) wipe every superblock copy that fits on the device, the first 1 MiB and
// every foreign signature the caller found, flush; (2) write every copy of every tree block, flush;
// (3) write the superblocks (primary first), flush. Until step 3 starts there is no valid super on
// the device; from the first super written on, everything it references is already durable.
//
// Invariants of the result: BG used == bytes of tree blocks in it (mirror stripes excluded, they hold
// none); super bytes_used == sum of BG used; DEV_ITEM bytes_used == sum of DEV_EXTENT lengths; the
// free space tree has exactly one FREE_SPACE_INFO per block group and maximal free extents (mirror
// stripes are listed as free, as the kernel itself does; the allocator excludes them in memory).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "io/checksum.h"
#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::mkfs {

inline constexpr uint64_t kMiB = 1024 * 1024;
inline constexpr uint64_t kGiB = 1024 * kMiB;
inline constexpr uint64_t kSystemChunkSize = 8 * kMiB;  // per copy
inline constexpr uint64_t kDataChunkSize = 8 * kMiB;
inline constexpr uint64_t kMinMetadataChunkSize = 32 * kMiB;
inline constexpr uint64_t kMaxMetadataChunkSize = 256 * kMiB;
inline constexpr uint64_t kMaxMetadataChunkSizeLarge = 1 * kGiB;  // devices above 50 GiB
inline constexpr uint64_t kLargeDeviceThreshold = 50 * kGiB;
inline constexpr uint64_t kInitialGeneration = 1;
// Mixed block groups (mkfs.btrfs --mixed's sizes).
inline constexpr uint64_t kMixedSystemChunkSize = 4 * kMiB;  // per copy
inline constexpr uint64_t kMinMixedChunkSize = 1 * kMiB;     // per copy
inline constexpr uint64_t kMaxMixedChunkSize = 8 * kMiB;     // per copy
// The smallest filesystem mkfs makes (mkfs.btrfs refuses anything below 16 MiB, mixed or not).
inline constexpr uint64_t kMinFsSize = 16 * kMiB;

enum class Profile { kSingle, kDup };

using UuidBytes = std::array<uint8_t, 16>;

struct MkfsConfig {
  uint64_t fs_size = 0;  // bytes of the device to use; 0 = the whole device. Rounded down to sectorsize.
  uint32_t nodesize = 16384;
  uint32_t sectorsize = 4096;
  io::CsumType csum_type = io::CsumType::kXxhash64;
  Profile metadata_profile = Profile::kDup;  // SYSTEM follows METADATA, as in mkfs.btrfs
  // One DATA|METADATA chunk instead of a METADATA and a DATA one (INCOMPAT_MIXED_GROUPS); its
  // profile is metadata_profile. REQUIRES nodesize == sectorsize (compute_layout refuses otherwise).
  bool mixed = false;
  // Block group items in their own tree (compat_ro BLOCK_GROUP_TREE, Linux 6.1+: a mount reads one
  // small tree instead of searching the extent tree for every group).
  bool block_group_tree = false;
  std::string label;
  // Unset UUIDs are generated randomly (libuuid); tests set them for reproducible images.
  std::optional<UuidBytes> fsid;
  std::optional<UuidBytes> dev_uuid;
  std::optional<UuidBytes> chunk_tree_uuid;
  std::optional<UuidBytes> fs_tree_uuid;
  std::optional<uint64_t> now_sec;  // timestamps; default: the current time
  // Physical byte ranges of foreign signatures (libblkid) to zero in the wipe step.
  std::vector<std::pair<uint64_t, uint64_t>> extra_wipe;  // (offset, length)
};

struct Range {
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t end() const { return start + length; }
  bool overlaps(const Range& o) const { return start < o.end() && o.start < end(); }
  bool operator==(const Range&) const = default;
};

struct ChunkPlan {
  uint64_t logical = 0;
  uint64_t length = 0;
  uint64_t type = 0;               // block group flags, e.g. METADATA|DUP
  std::vector<uint64_t> physical;  // one offset per copy
  std::vector<Range> excluded;     // logical ranges holding superblock mirrors (never allocated)
};

struct Layout {
  uint64_t total_bytes = 0;  // filesystem size (super total_bytes, DEV_ITEM total_bytes)
  uint32_t nodesize = 0;
  uint32_t sectorsize = 0;
  Profile metadata_profile = Profile::kDup;
  bool mixed = false;
  bool block_group_tree = false;
  ChunkPlan system;
  ChunkPlan metadata;  // with mixed block groups: the DATA|METADATA chunk
  ChunkPlan data;      // unused (length 0) with mixed block groups
  std::map<uint64_t, uint64_t> tree_bytenr;  // tree objectid (owner) -> logical address of its leaf

  std::vector<const ChunkPlan*> chunks() const {  // by logical
    if (mixed) return {&system, &metadata};
    return {&system, &metadata, &data};
  }
  uint64_t dev_bytes_used() const;  // sum of all copies of all chunks
  uint64_t bytes_used() const { return tree_bytenr.size() * nodesize; }
};

// The trees mkfs creates, in the order their leaves are placed inside the METADATA chunk (the chunk
// tree goes to SYSTEM).
inline constexpr uint64_t kMetadataTrees[] = {kRootTreeObjectid,      kExtentTreeObjectid, kDevTreeObjectid,
                                              kFsTreeObjectid,        kCsumTreeObjectid,   kUuidTreeObjectid,
                                              kFreeSpaceTreeObjectid, kDataRelocTreeObjectid};

// Metadata chunk length (per copy) for a filesystem of `total_bytes`: 10% of the device, halved for
// DUP, clamped to [32 MiB, 256 MiB] (1 GiB above 50 GiB), rounded down to 64 KiB.
uint64_t metadata_chunk_size(uint64_t total_bytes, Profile profile);

// Smallest filesystem size (bytes) for which compute_layout succeeds with this profile, with
// separate or mixed block groups.
uint64_t minimum_fs_size(Profile profile, bool mixed = false);

// Logical ranges of `chunk` (64 KiB each, BTRFS_STRIPE_LEN) whose copies hold a superblock mirror
// (64 KiB, 64 MiB, 256 GiB), as the kernel's exclude_super_stripes computes them.
std::vector<Range> super_mirror_exclusions(const ChunkPlan& chunk);

// First `count` nodesize-aligned slots of `chunk` avoiding chunk.excluded. Errors: ENOSPC.
[[nodiscard]] Result<std::vector<uint64_t>> place_tree_blocks(const ChunkPlan& chunk, size_t count, uint32_t nodesize);

// The small-device rule: a filesystem of `fs_bytes` too small for separate data and metadata block
// groups but large enough for mixed ones gets mixed ones (nodesize = sectorsize; SINGLE unless
// the user chose the profile), as mkfs.btrfs up to 4.2 did. nullopt: `config` stays (already
// mixed, large enough, too small for both, or a nodesize other than the sectorsize was asked for).
std::optional<MkfsConfig> small_device_config(const MkfsConfig& config, uint64_t fs_bytes, bool nodesize_given,
                                              bool profile_given);

// Validates sizes and computes the layout. Errors: EINVAL (bad nodesize/sectorsize; mixed block
// groups with nodesize != sectorsize), ENOSPC "too small" naming the minimum size.
[[nodiscard]] Result<Layout> compute_layout(const MkfsConfig& config, uint64_t device_size);

struct MkfsResult {
  Layout layout;
  Superblock super{};                                  // as written (bytenr/csum of the primary)
  std::map<uint64_t, std::vector<uint8_t>> leaves;     // tree objectid -> leaf as written
  UuidBytes fsid{};
  UuidBytes dev_uuid{};
  UuidBytes chunk_tree_uuid{};
  UuidBytes fs_tree_uuid{};
  size_t writes = 0;  // device write calls issued (for the interrupted-mkfs test)
};

// Creates the filesystem on `dev` (see the file comment for the order). Writes superblock mirrors
// only inside the filesystem size. Errors from the device are returned unchanged; EUCLEAN if a leaf
// we built fails the tree checker (a bug); EFBIG if an initial tree would not fit in one leaf.
[[nodiscard]] Result<MkfsResult> make_btrfs(io::BlockDevice& dev, const MkfsConfig& config);

// "1.00GiB"-style size as btrfs-progs prints it.
std::string pretty_size(uint64_t bytes);
// Parses "128M", "1G", "16g", "4096", "64KiB" (binary units K/M/G/T/P/E). Errors: EINVAL.
[[nodiscard]] Result<uint64_t> parse_size(const std::string& text);

}  // namespace ubtrfs::mkfs
