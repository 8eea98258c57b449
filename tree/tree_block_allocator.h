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
// Thread safety: both may be called concurrently from any thread holding tree locks; they must not
// take tree locks themselves.
#pragma once

#include <cstdint>

#include "io/status.h"

namespace ubtrfs {

struct TreeHandle;

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
};

}  // namespace ubtrfs
