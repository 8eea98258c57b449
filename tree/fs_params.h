// FsParams: the handful of per-filesystem constants every tree-layer component needs (sizes, csum
// type, fsid, feature bits), taken from a validated superblock. Immutable after mount.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "io/checksum.h"
#include "tree/format.h"

namespace ubtrfs {

struct FsParams {
  uint32_t nodesize = 16384;
  uint32_t sectorsize = 4096;
  io::CsumType csum_type = io::CsumType::kCrc32c;
  std::array<uint8_t, 16> fsid{};           // what tree block headers must carry (metadata uuid)
  std::array<uint8_t, 16> chunk_tree_uuid{};
  uint64_t incompat_flags = 0;
  uint64_t compat_ro_flags = 0;
  uint64_t super_generation = 0;            // last committed generation (tree checker: gen <= this+1)

  size_t csum_size() const { return io::csum_size(static_cast<uint16_t>(csum_type)); }
  bool skinny_metadata() const { return incompat_flags & kIncompatSkinnyMetadata; }
  bool no_holes() const { return incompat_flags & kIncompatNoHoles; }

  static FsParams from_super(const Superblock& sb) {
    FsParams p;
    p.nodesize = sb.nodesize;
    p.sectorsize = sb.sectorsize;
    p.csum_type = static_cast<io::CsumType>(sb.csum_type.get());
    const bool metadata_uuid = sb.incompat_flags.get() & kIncompatMetadataUuid;
    std::memcpy(p.fsid.data(), metadata_uuid ? sb.metadata_uuid : sb.fsid, 16);
    p.incompat_flags = sb.incompat_flags;
    p.compat_ro_flags = sb.compat_ro_flags;
    p.super_generation = sb.generation;
    return p;
  }
};

}  // namespace ubtrfs
