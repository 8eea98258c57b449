// Eviction of unlinked inodes (btrfs_evict_inode with btrfs_truncate_inode_items, and
// btrfs_orphan_cleanup's deletion of stale orphan items), for one inode or a batch.
//
// An inode is evicted when its link count and its FUSE lookup count are both 0: its file data goes
// first (FileData::evict, in its own bounded handles), then every item of the inode and its
// ORPHAN_ITEM (-5, 48, ino). A batch sorts its inodes, so the items of consecutive inodes, which
// share leaves, go in one leaf operation (btrfs_del_items over a run of slots), and their orphan
// items, adjacent at the end of the tree, likewise.
//
// Reservations (btrfs evict_refill_and_join): a handle of kEvictHandleUnits (FLUSH_EVICT: a
// priority reservation that may commit and steal from the global reserve) does up to that many
// leaf operations, then ends and the next handle reserves again — never in the middle of one
// inode's items, so a failed reservation leaves every inode whole (evicted, or untouched with its
// orphan item for a later try).
//
// Invariants: the inode items go before the orphan items (a crash or a failed reservation between
// them leaves only stale orphan items, which orphan cleanup deletes; never an unlinked inode without
// its orphan item); an inode's delayed item is dropped in the handle that deletes its items
// (DelayedInodes::forget: nothing pending may recreate it); a step that fails after a handle's
// first change aborts the transaction.
#pragma once

#include <cstdint>
#include <vector>

#include "fs/inode.h"
#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

struct NamespaceState;

// Leaf operations per eviction handle (each reserves one unit).
inline constexpr unsigned kEvictHandleUnits = 8;

struct EvictOutcome {
  size_t evicted = 0;        // inodes whose items went
  size_t stale_orphans = 0;  // orphan items deleted for inodes that were gone or linked again
};

// Evicts every inode of `objectids` (in subvolume `subvol`, tree `root`) whose lookup count is 0
// and link count is 0; deletes the orphan item (if any) of those that are gone or linked again
// (btrfs_orphan_cleanup's stale items); skips inodes the kernel references. A file whose data
// cannot be dropped is left whole (logged), the others still go.
// REQUIRES: every inode's lock held exclusively; no handle open; read-write.
// Errors: tree errors, ENOSPC (no reservation even with FLUSH_EVICT: the inodes not reached keep
// their orphan items), EROFS.
[[nodiscard]] Result<EvictOutcome> evict_inodes(NamespaceState& ns, TreeRoot& root, uint64_t subvol,
                                                std::vector<uint64_t> objectids);

}  // namespace ubtrfs::fs
