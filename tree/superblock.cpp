// Superblock reading, validation, feature gating and writing; see superblock.h.
//
// Validation follows the kernel's btrfs_validate_super (FORMAT.md §1.7) and runs before any other
// field is used: a superblock that fails it is never written back, so bad input leaves the image
// untouched.
#include "tree/superblock.h"

#include <bit>
#include <cstring>

#include <spdlog/spdlog.h>

#include "io/checksum.h"

namespace ubtrfs {

namespace {

struct FlagName {
  uint64_t bit;
  const char* name;
};

constexpr FlagName kIncompatNames[] = {
    {kIncompatMixedBackref, "MIXED_BACKREF"},     {kIncompatDefaultSubvol, "DEFAULT_SUBVOL"},
    {kIncompatMixedGroups, "MIXED_GROUPS"},       {kIncompatCompressLzo, "COMPRESS_LZO"},
    {kIncompatCompressZstd, "COMPRESS_ZSTD"},     {kIncompatBigMetadata, "BIG_METADATA"},
    {kIncompatExtendedIref, "EXTENDED_IREF"},     {kIncompatRaid56, "RAID56"},
    {kIncompatSkinnyMetadata, "SKINNY_METADATA"}, {kIncompatNoHoles, "NO_HOLES"},
    {kIncompatMetadataUuid, "METADATA_UUID"},     {kIncompatRaid1c34, "RAID1C34"},
    {kIncompatZoned, "ZONED"},                    {kIncompatExtentTreeV2, "EXTENT_TREE_V2"},
    {kIncompatRaidStripeTree, "RAID_STRIPE_TREE"}, {kIncompatSimpleQuota, "SIMPLE_QUOTA"},
    {kIncompatRemapTree, "REMAP_TREE"},
};

constexpr FlagName kCompatRoNames[] = {
    {kCompatRoFreeSpaceTree, "FREE_SPACE_TREE"},
    {kCompatRoFreeSpaceTreeValid, "FREE_SPACE_TREE_VALID"},
    {kCompatRoVerity, "VERITY"},
    {kCompatRoBlockGroupTree, "BLOCK_GROUP_TREE"},
};

template <size_t N>
std::string flag_names(uint64_t flags, const FlagName (&table)[N]) {
  std::string out;
  uint64_t known = 0;
  for (const auto& f : table) {
    known |= f.bit;
    if (flags & f.bit) {
      if (!out.empty()) out += '|';
      out += f.name;
    }
  }
  for (int b = 0; b < 64; ++b) {
    uint64_t bit = 1ull << b;
    if ((flags & bit) && !(known & bit)) {
      if (!out.empty()) out += '|';
      out += fmt::format("unknown(0x{:x})", bit);
    }
  }
  return out;
}

// Super flags the kernel accepts (BTRFS_SUPER_FLAG_SUPP).
constexpr uint64_t kSuperFlagsSupported = kHeaderFlagWritten | kHeaderFlagReloc | kSuperFlagError |
                                          kSuperFlagSeeding | kSuperFlagMetadump | kSuperFlagMetadumpV2 |
                                          kSuperFlagChangingFsid | kSuperFlagChangingFsidV2;

bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }

}  // namespace

std::string incompat_flag_names(uint64_t flags) { return flag_names(flags, kIncompatNames); }
std::string compat_ro_flag_names(uint64_t flags) { return flag_names(flags, kCompatRoNames); }

void csum_superblock(Superblock& sb) {
  auto* raw = reinterpret_cast<uint8_t*>(&sb);
  auto c = io::compute_csum(static_cast<io::CsumType>(sb.csum_type.get()),
                            std::span<const uint8_t>(raw + io::kCsumFieldSize, kSuperInfoSize - io::kCsumFieldSize));
  std::memcpy(sb.csum, c.data(), io::kCsumFieldSize);
}

bool verify_superblock_csum(const Superblock& sb) {
  uint16_t t = sb.csum_type;
  if (!io::csum_supported(t)) return false;
  const auto* raw = reinterpret_cast<const uint8_t*>(&sb);
  auto c = io::compute_csum(static_cast<io::CsumType>(t),
                            std::span<const uint8_t>(raw + io::kCsumFieldSize, kSuperInfoSize - io::kCsumFieldSize));
  return std::memcmp(sb.csum, c.data(), io::csum_size(t)) == 0;
}

Result<Superblock> read_superblock_raw(io::BlockDevice& dev, int mirror) {
  uint64_t off = super_offset(mirror);
  if (dev.size() < off + kSuperInfoSize)
    return fail(EINVAL, "{}: device of {} bytes is too small to hold superblock copy {} at offset {}", dev.name(),
                dev.size(), mirror, off);
  Superblock sb;
  UBTRFS_TRY_STATUS(dev.read(off, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&sb), sizeof(sb))));
  return sb;
}

Status validate_superblock(const Superblock& sb, uint64_t bytenr, uint64_t dev_size) {
  if (sb.magic.get() == kSuperMagicUnfinished)
    return fail(EINVAL, "superblock at offset {} belongs to an unfinished mkfs (magic !BHRfS_M)", bytenr);
  if (sb.magic.get() != kSuperMagic)
    return fail(EINVAL, "not a btrfs filesystem: no btrfs magic in the superblock at offset {}", bytenr);
  uint16_t ct = sb.csum_type;
  if (io::csum_size(ct) == 0) return fail(EUCLEAN, "superblock at offset {} has unknown checksum type {}", bytenr, ct);
  if (!io::csum_supported(ct))
    return fail(EOPNOTSUPP, "checksum type {} ({}) is not supported", ct, io::csum_name(ct));
  if (!verify_superblock_csum(sb))
    return fail(EUCLEAN, "superblock checksum mismatch at offset {} ({} checksum)", bytenr, io::csum_name(ct));
  if (sb.bytenr.get() != bytenr)
    return fail(EUCLEAN, "super offset mismatch: superblock at offset {} says bytenr {}", bytenr, sb.bytenr.get());
  if (sb.flags.get() & ~kSuperFlagsSupported)
    return fail(EUCLEAN, "unsupported super flags 0x{:x}", sb.flags.get() & ~kSuperFlagsSupported);
  if (sb.root_level >= kMaxLevel) return fail(EUCLEAN, "invalid tree root level {}", sb.root_level);
  if (sb.chunk_root_level >= kMaxLevel) return fail(EUCLEAN, "invalid chunk root level {}", sb.chunk_root_level);
  if (sb.log_root_level >= kMaxLevel) return fail(EUCLEAN, "invalid log root level {}", sb.log_root_level);
  uint32_t ss = sb.sectorsize, ns = sb.nodesize;
  if (!is_pow2(ss) || ss < 4096 || ss > 65536) return fail(EUCLEAN, "invalid sectorsize {}", ss);
  if (!is_pow2(ns) || ns < ss || ns > 65536) return fail(EUCLEAN, "invalid nodesize {}", ns);
  if (sb.leafsize.get() != ns) return fail(EUCLEAN, "invalid leafsize {}, should be {}", sb.leafsize.get(), ns);
  if (!is_pow2(sb.stripesize)) return fail(EUCLEAN, "invalid stripesize {}", sb.stripesize.get());
  if (sb.root.get() == 0 || sb.root.get() % ss) return fail(EUCLEAN, "invalid tree root bytenr {}", sb.root.get());
  if (sb.chunk_root.get() == 0 || sb.chunk_root.get() % ss)
    return fail(EUCLEAN, "invalid chunk root bytenr {}", sb.chunk_root.get());
  if (sb.log_root.get() % ss) return fail(EUCLEAN, "invalid log root bytenr {}", sb.log_root.get());
  const uint8_t* meta_fsid = (sb.incompat_flags.get() & kIncompatMetadataUuid) ? sb.metadata_uuid : sb.fsid;
  if (std::memcmp(sb.dev_item.fsid, meta_fsid, 16) != 0)
    return fail(EUCLEAN, "dev_item uuid does not match the filesystem uuid");
  if (sb.num_devices.get() == 0) return fail(EUCLEAN, "number of devices is 0");
  if (sb.bytes_used.get() < 6ull * ns)
    return fail(EUCLEAN, "bytes_used is too small {}, must be at least {}", sb.bytes_used.get(), 6ull * ns);
  uint32_t sys = sb.sys_chunk_array_size;
  if (sys > kSystemChunkArraySize)
    return fail(EUCLEAN, "system chunk array too big {} > {}", sys, kSystemChunkArraySize);
  if (sys < sizeof(DiskKey) + sizeof(ChunkItem) + sizeof(Stripe))
    return fail(EUCLEAN, "system chunk array too small {} < {}", sys,
                sizeof(DiskKey) + sizeof(ChunkItem) + sizeof(Stripe));
  if (sb.root_dir_objectid.get() != kRootTreeDirObjectid)
    return fail(EUCLEAN, "invalid root_dir_objectid {}", sb.root_dir_objectid.get());
  // total_bytes covers every device of the filesystem; what must fit on this one is its own
  // DEV_ITEM's size (btrfs_verify_dev_items: "device total_bytes should be at most ...").
  if (sb.num_devices.get() == 1 && sb.total_bytes.get() > dev_size)
    return fail(EUCLEAN, "truncated image or device: filesystem size {} exceeds device size {}", sb.total_bytes.get(),
                dev_size);
  if (sb.dev_item.total_bytes.get() > dev_size)
    return fail(EUCLEAN, "truncated image or device: device item size {} exceeds device size {}",
                sb.dev_item.total_bytes.get(), dev_size);
  if (sb.generation.get() < sb.chunk_root_generation.get())
    spdlog::warn("suspicious: generation < chunk_root_generation: {} < {}", sb.generation.get(),
                 sb.chunk_root_generation.get());
  return {};
}

Result<Superblock> read_superblock(io::BlockDevice& dev) {
  if (dev.size() < kSuperInfoOffset + kSuperInfoSize)
    return fail(EINVAL, "{}: not a btrfs filesystem: {} bytes is too small to hold a superblock", dev.name(),
                dev.size());
  Superblock sb = UBTRFS_TRY(read_superblock_raw(dev, 0));
  auto ok = validate_superblock(sb, kSuperInfoOffset, dev.size());
  if (!ok) return fail(ok.error().err, "{}: {}", dev.name(), ok.error().message);
  return sb;
}

Status check_features(const Superblock& sb, bool for_write) {
  uint64_t incompat = sb.incompat_flags;
  uint64_t unknown = incompat & ~kIncompatKnown;
  if (unknown)
    return fail(EOPNOTSUPP, "cannot open: unknown incompat features 0x{:x} ({})", unknown, incompat_flag_names(unknown));
  uint64_t unsupported = incompat & ~kIncompatSupportedRead;
  if (unsupported)
    return fail(EOPNOTSUPP, "cannot open: unsupported incompat features 0x{:x} ({})", unsupported,
                incompat_flag_names(unsupported));
  // Mixed block groups hold tree blocks and data extents side by side in the same sectors, so the
  // kernel (open_ctree) refuses them unless a tree block is one sector.
  if ((incompat & kIncompatMixedGroups) && sb.nodesize.get() != sb.sectorsize.get())
    return fail(EUCLEAN, "cannot open: mixed block groups with nodesize {} != sectorsize {}", sb.nodesize.get(),
                sb.sectorsize.get());
  if (sb.num_devices.get() != 1)
    return fail(EOPNOTSUPP, "cannot open: filesystem has {} devices, only single-device filesystems are supported",
                sb.num_devices.get());
  if (for_write) {
    uint64_t ro = sb.compat_ro_flags.get() & ~kCompatRoSupported;
    if (ro)
      return fail(EROFS, "cannot open read-write because of unsupported compat_ro features 0x{:x} ({})", ro,
                  compat_ro_flag_names(ro));
  }
  return {};
}

Status write_superblocks(io::BlockDevice& dev, const Superblock& sb_in) {
  int written = 0;
  for (int mirror = 0; mirror < kSuperMirrorMax; ++mirror) {
    uint64_t off = super_offset(mirror);
    if (off + kSuperInfoSize > sb_in.total_bytes.get() || off + kSuperInfoSize > dev.size()) break;
    Superblock sb = sb_in;
    sb.bytenr = off;
    csum_superblock(sb);
    UBTRFS_TRY_STATUS(dev.write(off, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&sb), sizeof(sb))));
    ++written;
  }
  if (written == 0) return fail(EINVAL, "{}: device too small for a superblock", dev.name());
  return dev.flush();
}

}  // namespace ubtrfs
