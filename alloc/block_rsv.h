// Block reserves: earmarked parts of a space_info's may_use (btrfs block-rsv.c "HOW DO BLOCK RESERVES
// WORK"; KERNEL.md §1, §5), and the reservation sizes every caller uses.
//
// A BlockRsv has a target `size` and the bytes it `reserved` (always counted in its space_info's
// may_use). Operations: add (reserve from the space_info, size and reserved grow), refill (top
// reserved up to a value), migrate (use from one, add to another), use (take bytes to allocate a tree
// block), release (size shrinks; reserved above size flows on — a DELAYED_OPS reserve gives it to
// the global reserve, any other to the delayed-refs reserve if that is short and shares the
// space_info, the rest back to the space_info, which refills the global reserve and grants tickets).
// Invariants: reserved <= may_use of its space_info, always; full == (reserved >= size); a failfast
// (TEMP) reserve never falls back: an allocation past it fails with ENOSPC so an unbounded
// operation can end its handle and re-reserve (truncate, evict).
//
// Sizes (KERNEL.md §1, kept exactly so ENOSPC behaviour compares with the kernel's):
// insert_size(n) = nodesize x 8 x 2 x n (every level COWed and split), metadata_size(n) =
// nodesize x 8 x n (COW only), delayed_ref_bytes(n) = insert_size(n), doubled with the free space
// tree.
//
// Locking: each reserve has its own mutex, a leaf below SpaceInfo::mu_; no method holds it while
// calling into a SpaceInfo.
#pragma once

#include <cstdint>
#include <mutex>

#include "alloc/space_info.h"
#include "io/status.h"

namespace ubtrfs::alloc {

// BTRFS_MAX_LEVEL, the depth every reservation assumes.
inline constexpr uint64_t kReserveMaxLevel = 8;

inline uint64_t calc_insert_metadata_size(uint64_t nodesize, uint64_t items) {
  return nodesize * kReserveMaxLevel * 2 * items;
}
inline uint64_t calc_metadata_size(uint64_t nodesize, uint64_t items) { return nodesize * kReserveMaxLevel * items; }
inline uint64_t calc_delayed_ref_bytes(uint64_t nodesize, uint64_t items, bool free_space_tree) {
  const uint64_t b = calc_insert_metadata_size(nodesize, items);
  return free_space_tree ? 2 * b : b;
}
// BTRFS_UNLINK_METADATA_UNITS: orphan item, dir item, dir index, inode ref, inode, parent inode.
inline constexpr unsigned kUnlinkMetadataUnits = 6;

// btrfs_rsv_type.
enum class RsvType : uint8_t { kGlobal, kDelalloc, kTrans, kChunk, kDelayedOps, kDelayedRefs, kEmpty, kTemp };
inline constexpr int kRsvTypeCount = 8;
const char* rsv_type_name(RsvType t);

class BlockRsv {
 public:
  BlockRsv(RsvType type, SpaceInfo* space_info) : type_(type), space_info_(space_info) {}
  BlockRsv(const BlockRsv&) = delete;
  BlockRsv& operator=(const BlockRsv&) = delete;
  // A reserve going away must hold nothing (release(size) first).
  ~BlockRsv();

  RsvType type() const { return type_; }
  SpaceInfo* space_info() const { return space_info_; }
  bool failfast() const { return failfast_; }
  void set_failfast(bool v) { failfast_ = v; }

  uint64_t size() const;
  uint64_t reserved() const;
  bool full() const;

  // btrfs_block_rsv_add: reserves `bytes` from the space_info (per `mode`), then size and reserved
  // grow by it. Errors: those of SpaceInfo::reserve_bytes; nothing changes on failure.
  [[nodiscard]] Status add(uint64_t bytes, FlushMode mode);
  // btrfs_block_rsv_refill: if reserved < min_reserved, reserves the difference (size grows to at
  // least min_reserved).
  [[nodiscard]] Status refill(uint64_t min_reserved, FlushMode mode);
  // btrfs_block_rsv_use_bytes: reserved -= bytes if it holds that much. Errors: ENOSPC.
  [[nodiscard]] Status use_bytes(uint64_t bytes);
  // btrfs_block_rsv_add_bytes: `bytes` already counted in may_use join this reserve; size grows too
  // if update_size.
  void add_bytes(uint64_t bytes, bool update_size);
  // size += bytes without reserving (btrfs_update_delayed_refs_rsv: the target grows by what the
  // queued references will cost; what is missing is made up by later releases or the global reserve).
  void grow_size(uint64_t bytes);
  // btrfs_block_rsv_release: size -= min(bytes, size); reserved beyond size goes to `target` (the
  // global or delayed-refs reserve; null for none) up to its size, the rest back to the space_info.
  // `bytes` = UINT64_MAX releases everything. Returns the bytes given back to the space_info.
  uint64_t release(uint64_t bytes, BlockRsv* target);
  // Takes up to `bytes` from reserved without touching size (stealing for a ticket). Returns what
  // was taken. REQUIRES: the caller accounts the bytes (they stay in may_use).
  uint64_t take_reserved(uint64_t bytes, uint64_t keep_at_least);
  // Sets the target size and tops reserved up to it from may_use unconditionally, or releases the
  // excess (btrfs_update_global_block_rsv). Global reserve only.
  void set_size_and_fill(uint64_t size);

  // btrfs_block_rsv_migrate: src.use_bytes(bytes) then dst.add_bytes(bytes, update_size).
  [[nodiscard]] static Status migrate(BlockRsv& src, BlockRsv& dst, uint64_t bytes, bool update_size);

 private:
  friend class SpaceInfo;  // return of free space to the global reserve (under the space_info lock)
  // Adds up to `bytes` to reserved without exceeding size; returns what was taken. REQUIRES: the
  // bytes are already in may_use.
  uint64_t absorb(uint64_t bytes);

  const RsvType type_;
  SpaceInfo* const space_info_;
  bool failfast_ = false;
  mutable std::mutex mu_;
  uint64_t size_ = 0;      // GUARDED_BY(mu_)
  uint64_t reserved_ = 0;  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs::alloc
