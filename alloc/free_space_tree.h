// The free space tree (btrfs free-space-tree.c; FORMAT.md §3.12): per block group a
// FREE_SPACE_INFO item (key (bg start, 198, bg length)) followed by either FREE_SPACE_EXTENT items
// (key (start, 199, len)) or FREE_SPACE_BITMAP items (key (start, 200, len), one bit per sector),
// as FREE_SPACE_INFO.flags says.
//
// Owns: reading a group's free ranges from the tree (either format) and keeping the tree exact as
// extents are allocated and freed on disk (the committer calls remove_range when an extent item is
// inserted, add_range when one is deleted), adding and removing whole groups.
// Invariants kept: extent entries are maximal (never adjacent nor overlapping), inside the group;
// FREE_SPACE_INFO.extent_count equals the number of free extents (runs) in the group.
// Format policy: ubtrfs writes the extent format. A group found in bitmap format is converted to
// extents the first time ubtrfs modifies it (the kernel accepts either and converts by its own
// thresholds).
// Thread safety: called by the committer only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::alloc {

class FreeSpaceTree {
 public:
  FreeSpaceTree(TreeRoot& root, const FsParams& fs) : root_(root), fs_(fs) {}

  // The free runs of the group [bg_start, bg_start+bg_len) as recorded (start -> len, maximal).
  // Errors: ENOENT if the group has no FREE_SPACE_INFO; EUCLEAN on malformed items (key and reason).
  [[nodiscard]] Result<std::map<uint64_t, uint64_t>> load_group(uint64_t bg_start, uint64_t bg_len);

  // A new block group: FREE_SPACE_INFO plus one extent covering the whole group.
  [[nodiscard]] Status add_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len);
  // A group whose free runs are known (the free space tree built for an image without one,
  // btrfs populate_free_space_tree): FREE_SPACE_INFO plus one extent per run. `runs` are maximal
  // and inside the group; superblock stripes count as free, as the kernel records them.
  [[nodiscard]] Status add_group_with_runs(TreeHandle& h, uint64_t bg_start, uint64_t bg_len,
                                           const std::map<uint64_t, uint64_t>& runs);
  // Removes every item of the group (block group deletion).
  [[nodiscard]] Status remove_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len);

  // [start, start+len) became allocated on disk: it must currently be entirely free. Errors: EUCLEAN.
  [[nodiscard]] Status remove_range(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start, uint64_t len);
  // [start, start+len) became free on disk: must currently be entirely allocated. Errors: EUCLEAN.
  [[nodiscard]] Status add_range(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start, uint64_t len);

  // Bits per FREE_SPACE_BITMAP item the kernel writes (BTRFS_FREE_SPACE_BITMAP_BITS: 256 bytes x 8);
  // a bitmap item covers at most this many sectors, the group's last one may be shorter.
  static constexpr uint64_t kBitmapBits = 2048;

 private:
  struct GroupInfo {
    uint32_t extent_count = 0;
    uint32_t flags = 0;
  };

  // The group's FREE_SPACE_INFO. Errors: ENOENT if absent, EUCLEAN if malformed.
  [[nodiscard]] Result<GroupInfo> read_info(uint64_t bg_start, uint64_t bg_len);
  // Overwrites the group's FREE_SPACE_INFO body in place (COW search). REQUIRES: the info exists.
  [[nodiscard]] Status write_info(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, GroupInfo info);
  // Read-only neighbours of a key: the first item key >= k, the last item key < k (nullopt: none).
  [[nodiscard]] Result<std::optional<Key>> first_key_at_or_after(const Key& k);
  [[nodiscard]] Result<std::optional<Key>> last_key_before(const Key& k);
  // Deletes every item with lo <= key < hi, a leaf's worth per COW search.
  [[nodiscard]] Status delete_keys(TreeHandle& h, const Key& lo, const Key& hi);
  [[nodiscard]] Status insert_extent(TreeHandle& h, uint64_t start, uint64_t len);
  // Replaces everything after the group's FREE_SPACE_INFO with one FREE_SPACE_EXTENT per run and
  // rewrites the info (extent format, exact count): the bitmap -> extent conversion.
  [[nodiscard]] Status rewrite_as_extents(TreeHandle& h, uint64_t bg_start, uint64_t bg_len,
                                          const std::map<uint64_t, uint64_t>& runs);
  // add_range/remove_range for a bitmap-format group: load, edit in memory (checked), convert.
  [[nodiscard]] Status modify_bitmap_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start,
                                           uint64_t len, bool make_free);
  TreeRoot& root_;
  const FsParams& fs_;
};

}  // namespace ubtrfs::alloc
