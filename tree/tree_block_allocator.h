// The tree-block allocator interface: what tree/ needs from alloc/ (ARCHITECTURE.md "Dependency
// rule"). tree/ declares it, alloc/ implements it (extent-tree.c `btrfs_alloc_tree_block` /
// `btrfs_free_tree_block`), tests implement a small one over a MemoryDevice.
//
// Contract (KERNEL.md §7.1):
// - alloc_tree_block returns a nodesize-aligned logical address inside a METADATA (SYSTEM for the
//   chunk tree) chunk, not crossing a 64 KiB stripe boundary, not in use and not pinned; the bytes
//   are charged to the handle's block reserve (later issue).
// - free_tree_block: a block that was WRITTEN, or that belongs to an older transaction, stays pinned
//   until the transaction commits (the committed tree, or a crash replay, may still read it); a block
//   born in the handle's transaction and never written is reusable at once.
// - update_ref_for_cow (btrfs ctree.c `update_ref_for_cow`): called by the COW of a block that may
//   be shared with a snapshot (a subvolume tree's non-root block of a generation at or below the
//   root's last_snapshot, or any block while the root is FORCE_COW), before the old block is dropped.
//   It moves the references the old block holds on its children to where the kernel's rules put
//   them (FULL_BACKREF on the old block, or keyed refs for the copy) and says whether the old block
//   loses its last reference. If not, the COW only drops the root's reference on it
//   (drop_tree_block_ref) and must not free or reuse its bytes.
// Thread safety: all may be called concurrently from any thread holding tree locks; they must not
// take tree locks themselves.
#pragma once

#include <cstdint>

#include "io/status.h"

namespace ubtrfs {

struct TreeHandle;
class TreeRoot;
class ExtentBuffer;

class TreeBlockAllocator {
 public:
  virtual ~TreeBlockAllocator() = default;

  // REQUIRES: 0 <= level < kMaxLevel. `hint`: the old block's address when COWing (allocation near
  // it), 0 otherwise. Errors: ENOSPC.
  [[nodiscard]] virtual Result<uint64_t> alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level,
                                                          uint64_t hint) = 0;
  // `generation` and `written` are the freed block's header generation and WRITTEN flag.
  virtual void free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                               bool written) = 0;
  // REQUIRES: `buf` (the block being COWed in `root`) and `cow` (its copy, already filled) are
  // write-locked by the caller. Returns true when `buf` has no other reference than root's (the
  // caller then frees it with free_tree_block). An allocator without shared blocks (tests, the
  // log tree) never sees a shareable root's old block: the default says "last reference".
  // Errors: EUCLEAN (the extent tree disagrees), EIO/ENOMEM.
  [[nodiscard]] virtual Result<bool> update_ref_for_cow(TreeHandle& h, TreeRoot& root, const ExtentBuffer& buf,
                                                        const ExtentBuffer& cow) {
    (void)h, (void)root, (void)buf, (void)cow;
    return true;
  }
  // Drops `root_objectid`'s keyed reference on a block other trees still reference (its bytes stay).
  virtual void drop_tree_block_ref(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, int level) {
    (void)h, (void)root_objectid, (void)bytenr, (void)level;
  }
};

}  // namespace ubtrfs
