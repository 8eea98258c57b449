// Chunk allocation from unallocated device space (btrfs volumes.c: find_free_dev_extent,
// btrfs_create_chunk's sizing policy), for a single device.
//
// Owns: DeviceSpace, the allocated physical ranges of the device (its DEV_EXTENTs), and
// plan_chunk(), which chooses the size and the stripes of a new chunk. It does not write anything:
// the transaction that creates the chunk inserts CHUNK_ITEM, DEV_EXTENTs, the DEV_ITEM update and
// the BLOCK_GROUP_ITEM, and updates the superblock's sys_chunk_array for SYSTEM chunks.
// Rules: the first 1 MiB is never allocated (kReserved1MForSuper); dev extents never overlap;
// chunk logical addresses only grow (new chunks start at the end of the highest one, FORMAT.md §5.3).
// Sizing (KERNEL.md §2 "Chunk sizes"): the chunk is capped by its type's maximum (DATA 1 GiB per
// stripe, 10 GiB per chunk; METADATA 256 MiB, 1 GiB above 50 GiB of device; SYSTEM 32 MiB) and by
// 10 % of the device rounded up to 16 MiB, and shrinks to the largest hole that is left (64 KiB
// granularity). DUP places both stripes on the device, in one hole or two.
// Thread safety: none; the chunk allocator's caller holds the chunk mutex.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "io/status.h"
#include "tree/chunk_map.h"

namespace ubtrfs::alloc {

class DeviceSpace {
 public:
  explicit DeviceSpace(uint64_t total_bytes) : total_bytes_(total_bytes) {}

  // Records an allocated physical range (a DEV_EXTENT). Errors: EUCLEAN on overlap or beyond the end.
  [[nodiscard]] Status add_extent(uint64_t physical, uint64_t len);
  // Forgets a range add_extent recorded (a planned chunk that is abandoned: its DEV_EXTENT is never
  // written, so DEV_ITEM.bytes_used must not count it). Errors: EUCLEAN if not recorded exactly.
  [[nodiscard]] Status remove_extent(uint64_t physical, uint64_t len);
  // Lowest hole of at least `len` bytes (64 KiB aligned), above the reserved first MiB.
  std::optional<uint64_t> find_hole(uint64_t len) const;
  // Largest hole (its start and length), if any.
  std::optional<std::pair<uint64_t, uint64_t>> largest_hole() const;

  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t allocated_bytes() const { return allocated_; }  // = DEV_ITEM.bytes_used
  uint64_t unallocated_bytes() const;                      // total minus allocated minus the first MiB
  const std::map<uint64_t, uint64_t>& extents() const { return extents_; }

 private:
  uint64_t total_bytes_;
  uint64_t allocated_ = 0;
  std::map<uint64_t, uint64_t> extents_;  // physical start -> length
};

// Copies of each byte a profile stores (btrfs_bg_type_to_factor): DUP, RAID1, RAID10 2; RAID1C3 3;
// RAID1C4 4; SINGLE, RAID0, RAID5/6 1.
int profile_factor(uint64_t profile_bits);

// Size cap for a new chunk of `type` (DATA/METADATA/SYSTEM bits) on a device of `total_bytes`.
uint64_t chunk_size_limit(uint64_t type, uint64_t total_bytes);

// Chooses stripes for a new chunk at `logical` of `type` (type bits | optional DUP), records them in
// `space`, and returns the mapping. `wanted` 0 means "the policy's size". Errors: ENOSPC when no hole
// of at least 1 MiB per stripe is left (the caller turns that into space_info->full).
[[nodiscard]] Result<ChunkMapping> plan_chunk(DeviceSpace& space, uint64_t logical, uint64_t type, uint64_t wanted = 0);

}  // namespace ubtrfs::alloc
