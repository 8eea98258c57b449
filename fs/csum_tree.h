// Data checksums in the csum tree (btrfs file-item.c: `btrfs_lookup_csums_list`,
// `btrfs_csum_file_blocks`, `btrfs_del_csums`; FORMAT.md §3.8).
//
// Owns the EXTENT_CSUM item layout: key (EXTENT_CSUM_OBJECTID -10, 128, logical start), body = one
// csum_size digest per sector of the on-disk data starting at that logical address.
// Invariants kept by every function that returns success:
// - items never overlap; every item start is sector-aligned and its body a multiple of csum_size;
// - no item holds more than max_csums_per_item() digests (the kernel's MAX_CSUM_ITEMS), so an
//   item always fits in a leaf together with another item header.
// insert_csums merges a new range into the item that ends exactly where it starts (as the kernel
// does); delete_csums truncates, splits and deletes the items a range touches.
// Thread safety: the tree locks itself; callers serialize modifications of one logical range (a
// data extent belongs to one flusher until its ref is recorded; deletion runs in the delayed-ref
// runner, concurrently with flushers, and only for freed extents, whose sectors stay pinned until
// the commit). An item's neighbours may change under any other writer, so every step decides on an
// item under the same leaf lock that changes it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "io/status.h"
#include "tree/fs_params.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

// Digests that fit in one EXTENT_CSUM item (btrfs MAX_CSUM_ITEMS): (leaf data - 2 item headers)
// / csum_size - 1.
uint32_t max_csums_per_item(const FsParams& fs);

// Checksums of the sectors [bytenr, bytenr + len). csums holds csum_size bytes per sector (zeros
// where absent); present[i] says whether sector i had a checksum.
struct CsumRange {
  std::vector<uint8_t> csums;
  std::vector<bool> present;
};

// REQUIRES: bytenr and len sector-aligned. Reads without a handle. Errors: EUCLEAN (an item whose
// size is not a multiple of csum_size, naming its key), tree read errors.
[[nodiscard]] Result<CsumRange> lookup_csums(TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr, uint64_t len);

// Records the checksums of the sectors starting at bytenr (csums.size() / csum_size of them).
// REQUIRES: bytenr sector-aligned, no checksum recorded yet for any of those sectors.
// Errors: EEXIST (overlap with an existing item, naming it), tree errors.
[[nodiscard]] Status insert_csums(TreeHandle& h, TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr,
                                  std::span<const uint8_t> csums);

// Removes every checksum of [bytenr, bytenr + len) (btrfs_del_csums): whole items are deleted,
// partially covered ones truncated or split. REQUIRES: bytenr, len sector-aligned.
[[nodiscard]] Status delete_csums(TreeHandle& h, TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr,
                                  uint64_t len);

// Test seam: called by insert_csums at the start of each step, with the logical address the step
// starts at, before it searches the tree; no tree lock is held.
// Lets a test replay another thread's change at that point. Set only while no insert runs.
void set_insert_csums_step_hook_for_test(std::function<void(uint64_t cur)> hook);

// Computes the per-sector checksums of `data` (whole sectors) with the filesystem's csum type.
std::vector<uint8_t> compute_data_csums(const FsParams& fs, std::span<const uint8_t> data);

}  // namespace ubtrfs::fs
