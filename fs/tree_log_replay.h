// Log tree replay at mount (btrfs tree-log.c: btrfs_recover_log_trees and its walk stages;
// FORMAT.md §7.6; issue 9).
//
// An fsync writes an inode's changes to a per-subvolume log tree and a superblock whose log_root
// points at the log root tree, without committing the transaction. After a crash the superblock
// still describes the last commit (generation G) and the log (blocks of generation G + 1, owner
// TREE_LOG -6) holds what was fsynced since. A read-write mount copies the log's items back into the
// subvolume trees, exactly as the kernel's replay leaves them, and commits with log_root = 0.
//
// Order (each step only after the previous one succeeded):
//  1. load: read and check every block of the log root tree and of each log tree (checksum, tree
//     checker, parent generation), decode every item replay will use; a bad block or item fails
//     the mount with its bytenr and key, before anything is written.
//  2. exclude (btrfs_pin_extent_for_log_replay, btrfs_exclude_logged_extents): every log block and
//     every data extent the log references that the extent tree does not have is free space in
//     the committed state; each is reserved exactly (BlockGroup::reserve_exact) so no allocation
//     of the replay can land on it.
//  3. replay, per log tree, in one transaction (tree_log_replay_items.cpp, _names.cpp): inodes
//     (REPLAY_INODES: directory deletes of DIR_LOG_INDEX ranges, xattr deletes, INODE_ITEM
//     overwrite, extents past i_size dropped), directory index entries (REPLAY_DIR_INDEX), then
//     xattrs, names (INODE_REF/EXTREF) and file extents (REPLAY_ALL), the log's checksums, and the
//     fixups: link counts (0 links: orphan item, evicted by the mount's orphan cleanup), directory
//     sizes, nbytes.
//  4. commit: unused excluded data extents go back to free space, log blocks are pinned (free
//     after this commit), the superblock written has log_root = 0.
// Crash safety: nothing the committed superblock references is overwritten before step 4's
// superblock (COW), and the log's blocks stay reserved until then, so a crash at any point leaves
// an image that replays again. The whole replay is one transaction handle and the in-memory
// superblock drops log_root before that handle ends, so no commit (the reclaim thread may start
// one) ever writes a superblock that pairs the log with a half-replayed subvolume, nor one that
// keeps the log after a complete replay.
#pragma once

#include <cstdint>
#include <vector>

#include "io/status.h"
#include "tree/buffer_cache.h"
#include "tree/format.h"

namespace ubtrfs::fs {

class FsInfo;

// One item of a log tree, copied out of its leaf.
struct LogItem {
  Key key{};
  std::vector<uint8_t> body;
  uint64_t block = 0;  // the leaf it came from (messages)
};

// The items of one per-subvolume log tree, in key order.
struct LogTreeImage {
  uint64_t subvol = 0;
  std::vector<LogItem> items;
};

// Everything read from the log at mount (step 1).
struct LoadedLog {
  std::vector<LogTreeImage> trees;
  std::vector<uint64_t> blocks;                            // every log block (nodesize each)
  std::vector<EbRef> buffers;                              // dropped from the cache after the replay
  std::vector<std::pair<uint64_t, uint64_t>> new_extents;  // data extents (bytenr, len) without an extent item
};

struct LogReplayStats {
  uint64_t log_trees = 0, log_blocks = 0, items = 0;
  uint64_t inodes = 0, names_added = 0, names_removed = 0, extents = 0, new_data_extents = 0, csum_items = 0;
};

// Step 1. Reads only. Errors: EUCLEAN naming the block (bytenr) or item ([objectid type offset]),
// EIO.
[[nodiscard]] Result<LoadedLog> load_log_trees(FsInfo& fs);

// Step 2: reserves every log block and new data extent of `log` in its block group. Errors:
// EUCLEAN when one is not free space (the log overlaps allocated space: a corrupt image); what was
// already reserved is released again, so a failure changes nothing.
[[nodiscard]] Status exclude_log_extents(FsInfo& fs, const LoadedLog& log);

// Steps 1–4. REQUIRES: fs opened read-write with log_replay_pending(); nothing else writes yet (no
// FUSE requests, commit thread not started); the fs layer's commit hooks registered. On success the
// image is committed without a log. On failure the transaction is aborted (nothing more written:
// the image keeps its log) and the error says where.
[[nodiscard]] Result<LogReplayStats> replay_log_trees(FsInfo& fs);

}  // namespace ubtrfs::fs
