// ChunkMap: logical -> physical address translation for a single-device filesystem
// (btrfs volumes.c's chunk map; FORMAT.md §5).
//
// Owns: one ChunkMapping per chunk, keyed by logical start. Filled at mount from the superblock's
// sys_chunk_array (SYSTEM chunks, enough to read the chunk tree) and then from every CHUNK_ITEM of the
// chunk tree; alloc/ adds chunks it creates. Chunks never overlap in logical space (add() refuses).
// Only SINGLE and DUP profiles are mapped: each stripe holds a full copy (DUP writes go to both,
// reads may use either). Thread safety: internally synchronized (shared_mutex); lookups return copies.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <shared_mutex>
#include <span>
#include <vector>

#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs {

struct ChunkStripe {
  uint64_t devid = 1;
  uint64_t physical = 0;
  std::array<uint8_t, 16> dev_uuid{};
};

struct ChunkMapping {
  uint64_t logical = 0;
  uint64_t length = 0;
  uint64_t type = 0;  // block group flags: DATA/SYSTEM/METADATA | DUP
  std::vector<ChunkStripe> stripes;

  bool contains(uint64_t l) const { return l >= logical && l - logical < length; }
};

class ChunkMap {
 public:
  // Errors: EEXIST-style EUCLEAN on overlap, EOPNOTSUPP on a profile other than SINGLE/DUP.
  [[nodiscard]] Status add(ChunkMapping m);
  // Parses a CHUNK_ITEM body (key offset = logical start) and adds it. Errors: EUCLEAN with reason.
  [[nodiscard]] Status add_chunk_item(uint64_t logical, std::span<const uint8_t> item);
  // Loads every chunk of the superblock's sys_chunk_array. Errors: EUCLEAN naming the bad entry.
  [[nodiscard]] Status load_sys_chunk_array(const Superblock& sb);

  std::optional<ChunkMapping> find(uint64_t logical) const;
  // Physical offset of [logical, logical+len) in every copy (1 for SINGLE, 2 for DUP).
  // Errors: ENOENT-style EUCLEAN if unmapped or crossing the end of its chunk.
  [[nodiscard]] Result<std::vector<uint64_t>> map(uint64_t logical, uint64_t len) const;

  std::vector<ChunkMapping> all() const;
  // Logical address just past the highest chunk (where the kernel places a new chunk).
  uint64_t logical_end() const;

 private:
  mutable std::shared_mutex mu_;
  std::map<uint64_t, ChunkMapping> chunks_;  // by logical start
};

// Validates one chunk item body as the kernel's btrfs_check_chunk_valid does (length, stripe_len,
// num_stripes vs item size, type bits, sector size). `where` is used in the message.
[[nodiscard]] Status check_chunk_item(uint64_t logical, std::span<const uint8_t> item, uint32_t sectorsize);

}  // namespace ubtrfs
