// Building the free space tree of an image that has none (btrfs_create_free_space_tree).
//
// Images made before btrfs-progs 5.15 (Debian 11's 5.10, for one) keep their free space in the
// v1 space cache: files in the root tree that the kernel rewrites at each commit. ubtrfs keeps
// free space only in the free space tree (compat_ro FREE_SPACE_TREE), so it does what the kernel
// has done by default at a read-write mount since Linux 5.15 (space_cache=v2): it builds the tree.
//  - at open (read-write), each block group's free space is computed from the extent tree: the
//    gaps between its EXTENT_ITEMs and METADATA_ITEMs (the kernel's caching from the extent tree,
//    load_extent_tree_free); the block group item's used bytes must agree, or the open is refused;
//  - in a commit of its own at mount, after log replay and orphan cleanup (Filesystem::mount; the
//    commit calls build_free_space_tree with its handle, the gate closed), the tree is created
//    (tree 10, its ROOT_ITEM) and filled with each group's FREE_SPACE_INFO and extents from the
//    extent tree as it is at that moment (populate_free_space_tree: superblock stripes count as
//    free there); delayed refs of the transaction still queued run after it in the same commit and
//    update it as for any other extent; then compat_ro FREE_SPACE_TREE | FREE_SPACE_TREE_VALID is
//    set, and the superblock written by this commit is the first that names the tree. Built at mount, as the kernel does, and not in whatever commit
//    comes first: a failure (a full device, a corrupt extent tree) refuses the mount and writes
//    nothing, instead of aborting a commit that holds acknowledged writes. A read-only mount
//    leaves the image as it was.
//  - the v1 cache files are left where they are: every commit moves the generation away from the
//    superblock's cache_generation, which makes the kernel ignore them, and the kernel removes them
//    at its next read-write mount (btrfs_set_free_space_cache_v1_active(false)).
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "io/status.h"
#include "tree/fs_params.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FsInfo;

// The allocated ranges (EXTENT_ITEM / METADATA_ITEM) of the extent tree, by block group start
// (`groups`: start -> length, every group of the filesystem), sorted. Errors: EUCLEAN (an extent
// outside every group or across two, naming its key), EIO.
using AllocatedByGroup = std::map<uint64_t, std::vector<std::pair<uint64_t, uint64_t>>>;
[[nodiscard]] Result<AllocatedByGroup> allocated_extents_by_group(TreeRoot& extent_tree, const FsParams& fs,
                                                                  const std::map<uint64_t, uint64_t>& groups);

// Creates and fills the free space tree; see above. REQUIRES: the commit's handle, no free space
// tree yet.
[[nodiscard]] Status build_free_space_tree(FsInfo& fs, TreeHandle& h);

}  // namespace ubtrfs::fs
