// Compression policy: which data the write path compresses, with what, and the options that say so
// (btrfs super.c `compress` / `compress-force` mount options, inode.c `inode_need_compress`,
// compression.c `btrfs_compress_heuristic`; FORMAT.md §3.7, KERNEL.md §10).
//
// Owns:
// - CompressOptions, the parsed mount option: `compress` (zlib at its default level),
//   `compress=zlib[:1-9]|lzo|zstd[:1-15]|no|none`, and `compress-force=...` (the same values, plus
//   forcing). As the kernel's btrfs_compress_str2level: level 0 or an unparsable level is the
//   type's default (zlib 3, zstd 3), a level above the maximum is clamped to it; lzo has no level.
//   `compress=no` turns both compress and compress-force off. Later options override earlier ones.
// - The per-inode decision (inode_compression): NODATACOW or NODATASUM never compress (the
//   checksums would not cover the compressed bytes); compress-force compresses everything else,
//   skipping the heuristic and ignoring NOCOMPRESS; otherwise NOCOMPRESS wins, and the mount option,
//   the COMPRESS inode flag or the btrfs.compression property make the range a candidate that
//   the heuristic then judges. The type is the property's, else the mount's, else zlib.
// - compress_heuristic: our own version of the kernel's idea — sample the range, accept repeated
//   data, few distinct byte values, a small "core" of frequent values or low Shannon entropy;
//   refuse a wide core or high entropy (random or already compressed data).
// Invariants: pure functions, no I/O; the same input always gives the same answer.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::fs {

// BTRFS_MAX_UNCOMPRESSED: a compressed extent holds at most 128 KiB of file data.
inline constexpr uint64_t kMaxUncompressed = 128ull << 10;
// Default and maximum levels (BTRFS_ZLIB_DEFAULT_LEVEL, zstd's BTRFS_ZSTD_DEFAULT_LEVEL and
// ZSTD_BTRFS_MAX_LEVEL).
inline constexpr int kZlibDefaultLevel = 3;
inline constexpr int kZlibMaxLevel = 9;
inline constexpr int kZstdDefaultLevel = 3;
inline constexpr int kZstdMaxLevel = 15;

struct CompressOptions {
  uint8_t type = kCompressNone;  // kCompressNone: the mount option is off
  int level = 0;                 // 0 for lzo and for none
  bool force = false;            // compress-force
  bool operator==(const CompressOptions&) const = default;
};

// The type's default level when `level` is 0, else `level` clamped to the type's maximum.
int compress_level_for(uint8_t type, int level);
// "zlib" / "lzo" / "zstd"; "" for none.
std::string_view compress_type_name(uint8_t type);
// The type a btrfs.compression property value names (props.c prop_compression_validate: a prefix
// "zlib", "lzo", "zstd"); nullopt for "", "no", "none" or anything else.
std::optional<uint8_t> compress_type_from_prop(std::string_view value);

// Parses the value of the `compress` (force=false) or `compress-force` (force=true) option;
// `value` is nullopt for the bare option. Errors: EINVAL naming the value.
[[nodiscard]] Result<CompressOptions> parse_compress_option(std::optional<std::string_view> value, bool force);
// How /proc/mounts shows it (btrfs_show_options): "compress=zstd:3", "compress-force=lzo"; "" when off.
std::string compress_option_string(const CompressOptions& o);

// The btrfs.compression property set through setxattr/removexattr (props.c: validate, ignore,
// apply): `value` nullopt for a removal. Returns the inode's new flags, or nullopt when the kernel
// ignores the property for this inode (not a regular file or directory: nothing is stored).
// "zlib*", "lzo*", "zstd*" set COMPRESS and clear NOCOMPRESS; "no" / "none" set NOCOMPRESS and
// clear COMPRESS; an empty value or a removal clears both. Errors: EINVAL for another value, or
// for any value on a NODATACOW / NODATASUM inode (btrfs_inode_can_compress).
[[nodiscard]] Result<std::optional<uint64_t>> apply_compression_prop(uint64_t inode_flags, uint32_t mode,
                                                                     std::optional<std::string_view> value);

// What inode_compression decides for one inode.
struct InodeCompression {
  uint8_t type = kCompressNone;  // kCompressNone: never compress this inode's data now
  int level = 0;
  bool force = false;            // compress-force: skip the heuristic, never mark NOCOMPRESS
  bool has_prop = false;         // a btrfs.compression property: never mark NOCOMPRESS either
};
// btrfs inode_need_compress minus the heuristic: `inode_flags` from INODE_ITEM.flags, `prop` the
// btrfs.compression property's value when the inode has one.
InodeCompression inode_compression(const CompressOptions& mount, uint64_t inode_flags,
                                   std::optional<std::string_view> prop);

// True when `data` (the range about to be compressed, at most a few hundred KiB) looks worth
// compressing. Cheap: looks at no more than kHeuristicSampleMax bytes.
bool compress_heuristic(std::span<const uint8_t> data);
inline constexpr size_t kHeuristicSampleMax = 8192;

}  // namespace ubtrfs::fs
