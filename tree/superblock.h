// Superblock: reading, validation (btrfs_validate_super), feature gating, checksumming and writing
// of every mirror (FORMAT.md §1).
//
// Invariants: a superblock is written only with its own physical offset in `bytenr` and a fresh
// checksum; mirrors are written only if they fit on the device. Validation never trusts a field
// before checking it, and its messages name the field and its value.
#pragma once

#include <cstdint>
#include <string>

#include "io/block_device.h"
#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs {

// Incompat/compat_ro bits this build can read (mount read-only / inspect) and can write.
inline constexpr uint64_t kIncompatSupportedRead =
    kIncompatMixedBackref | kIncompatDefaultSubvol | kIncompatMixedGroups | kIncompatCompressLzo |
    kIncompatCompressZstd | kIncompatBigMetadata | kIncompatExtendedIref | kIncompatSkinnyMetadata | kIncompatNoHoles |
    kIncompatMetadataUuid;
inline constexpr uint64_t kCompatRoSupported =
    kCompatRoFreeSpaceTree | kCompatRoFreeSpaceTreeValid | kCompatRoBlockGroupTree;

void csum_superblock(Superblock& sb);
bool verify_superblock_csum(const Superblock& sb);

// Reads copy `mirror` (0..2). Errors: EINVAL if the device is too small to hold it (message says
// so), EIO on read failure. No validation: call validate_superblock.
[[nodiscard]] Result<Superblock> read_superblock_raw(io::BlockDevice& dev, int mirror);

// Full validation of a superblock read from physical offset `bytenr` of a device of `dev_size`
// bytes: magic, checksum type and value, bytenr, sizes, levels, alignment, sys_chunk_array bounds,
// flags. Errors: EINVAL "not a btrfs filesystem" (bad magic), EUCLEAN with field and value otherwise.
[[nodiscard]] Status validate_superblock(const Superblock& sb, uint64_t bytenr, uint64_t dev_size);

// Reads and validates the primary superblock. Falls back to no mirror: a bad primary is an error,
// as for the kernel without rescue options.
[[nodiscard]] Result<Superblock> read_superblock(io::BlockDevice& dev);

// Feature gate for opening: unknown incompat bits (or known but unsupported ones) -> EOPNOTSUPP
// naming the bits; for write access also unsupported compat_ro bits. Message lists the hex bits
// and their names.
[[nodiscard]] Status check_features(const Superblock& sb, bool for_write);

// Writes `sb` to every mirror that fits on the device, each with its own bytenr and checksum,
// then flushes. REQUIRES: sb is otherwise complete.
[[nodiscard]] Status write_superblocks(io::BlockDevice& dev, const Superblock& sb);

// Names of the set bits, e.g. "MIXED_BACKREF|SKINNY_METADATA" ("" if none).
std::string incompat_flag_names(uint64_t flags);
std::string compat_ro_flag_names(uint64_t flags);

}  // namespace ubtrfs
