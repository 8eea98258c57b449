// Checksums used by the btrfs format: block/superblock csums and the name hashes.
//
// Block checksum (super, tree blocks, data sectors): computed over the bytes after the 32-byte csum
// field (or the whole sector for data), stored left-aligned in 32 bytes, rest zero (FORMAT.md §1.1).
//   crc32c   = standard CRC-32C (init ~0, final xor ~0), stored LE u32   — libisal crc32_iscsi
//   xxhash64 = XXH64(seed 0), stored LE u64                              — libxxhash
//   sha256   = SHA-256, 32 bytes                                         — libsodium
//   blake2   = BLAKE2b with a 32-byte digest, unkeyed                    — libsodium generichash
// Name hashes are the raw CRC-32C register (no final inversion) with a given seed (FORMAT.md §4.1).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace ubtrfs::io {

enum class CsumType : uint16_t { kCrc32c = 0, kXxhash64 = 1, kSha256 = 2, kBlake2 = 3 };

constexpr size_t kCsumFieldSize = 32;
using CsumBytes = std::array<uint8_t, kCsumFieldSize>;

// Bytes of the digest actually used (4, 8, 32, 32); 0 for an unknown type value.
size_t csum_size(uint16_t type);
// Human name as btrfs-progs prints it: "crc32c", "xxhash64", "sha256", "blake2"; "unknown" otherwise.
std::string_view csum_name(uint16_t type);
// True when this build can compute the type.
bool csum_supported(uint16_t type);

// REQUIRES: csum_supported(type). Zero-padded to 32 bytes.
CsumBytes compute_csum(CsumType type, std::span<const uint8_t> data);

// Raw CRC-32C register update as the kernel's crc32c(seed, buf, len) returns it (no inversions).
uint32_t crc32c_raw(uint32_t seed, std::span<const uint8_t> data);

// btrfs_name_hash: DIR_ITEM / XATTR_ITEM key offset.
inline uint64_t name_hash(std::string_view name) {
  return crc32c_raw(~1u, {reinterpret_cast<const uint8_t*>(name.data()), name.size()});
}
// btrfs_extref_hash: INODE_EXTREF key offset.
inline uint64_t extref_hash(uint64_t parent_ino, std::string_view name) {
  return crc32c_raw(static_cast<uint32_t>(parent_ino), {reinterpret_cast<const uint8_t*>(name.data()), name.size()});
}
// hash_extent_data_ref: EXTENT_DATA_REF key offset and inline-ref ordering (FORMAT.md §3.9).
uint64_t extent_data_ref_hash(uint64_t root, uint64_t objectid, uint64_t offset);

}  // namespace ubtrfs::io
