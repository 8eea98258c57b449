// Tree block I/O: checksumming, reading a tree block by logical address with mirror fallback, and
// writing every copy (FORMAT.md §2, §5.1, §7.5).
//
// A read tries each copy in stripe order (mirror 1 first, as the kernel does); a copy that fails
// the checksum or the tree checker is reported at warn level and the next one is tried; the read
// fails only if every copy is bad, with the first copy's reason. A write goes to all copies: a DUP
// chunk whose second copy is stale passes `btrfs check`, so forgetting it would go unnoticed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"
#include "tree/chunk_map.h"
#include "tree/fs_params.h"
#include "tree/tree_checker.h"

namespace ubtrfs {

// Computes the block checksum over bytes [32, size) and stores it at offset 0 (zero-padded).
void csum_tree_block(const FsParams& fs, std::span<uint8_t> block);
// True if the stored checksum matches. `found`/`wanted` (optional) receive the values for messages.
bool verify_tree_block_csum(const FsParams& fs, std::span<const uint8_t> block);

// Reads nodesize bytes at expect.bytenr, verifies checksum and runs check_tree_block.
// Errors: EIO (device), EUCLEAN (every copy corrupt; message names bytenr and reason).
[[nodiscard]] Result<std::vector<uint8_t>> read_tree_block(io::BlockDevice& dev, const ChunkMap& map,
                                                           const FsParams& fs, const TreeBlockExpect& expect);

// Writes `block` (already checksummed) to every copy of its logical address `bytenr`.
[[nodiscard]] Status write_tree_block(io::BlockDevice& dev, const ChunkMap& map, uint64_t bytenr,
                                      std::span<const uint8_t> block);

// Reads `len` bytes of logical address space from the first copy (data extents, no checksum).
[[nodiscard]] Status read_logical(io::BlockDevice& dev, const ChunkMap& map, uint64_t logical, std::span<uint8_t> out,
                                  int mirror = 0);

}  // namespace ubtrfs
