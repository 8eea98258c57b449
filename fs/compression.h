// Compressed extents: decoding the zlib, lzo and zstd formats the kernel writes (FORMAT.md §3.7).
//
// Owns: turning the on-disk bytes of one compressed extent (a regular extent's disk_num_bytes at
// disk_bytenr, or an inline extent's stored bytes) into its ram_bytes of file data. Formats:
//   zlib — one zlib stream (RFC 1950 header) of the whole extent;
//   zstd — one zstd frame;
//   lzo  — btrfs framing around LZO1X: LE32 total length (header included), then segments of
//          LE32 length + LZO1X payload, each decoding to at most one sector; a segment header
//          never crosses a sector boundary (up to 3 zero bytes pad the end of a sector).
// Invariants: never reads outside `in`, never writes more than ram_bytes; output shorter than
// ram_bytes (a stream that ends early) is zero-filled, as the kernel does when it copies
// decompressed data into pages. Corrupt input is an EIO error with the reason, never a crash.
// Thread safety: stateless; every call uses its own codec context.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

// REQUIRES: compression is one of kCompressZlib/Lzo/Zstd; ram_bytes <= 128 MiB.
// Errors: EIO "<codec> decompression failed: <reason>"; EOPNOTSUPP for an unknown compression value.
[[nodiscard]] Result<std::vector<uint8_t>> decompress_extent(uint8_t compression, std::span<const uint8_t> in,
                                                             size_t ram_bytes, uint32_t sectorsize);

// Encoders, used by the write path (fs/file_compress.cpp) and tests. Each produces exactly the
// on-disk format above. lzo segments one sector of input at a time. `level`: zlib 1-9, zstd 1-15,
// 0 for the type's default (fs/compress_policy.h); lzo has none.
[[nodiscard]] Result<std::vector<uint8_t>> compress_extent(uint8_t compression, std::span<const uint8_t> in,
                                                           uint32_t sectorsize, int level = 0);

}  // namespace ubtrfs::fs
