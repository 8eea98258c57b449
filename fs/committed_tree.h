// CommittedTrees: a read-only view of the trees as the last commit left them on disk (btrfs
// "commit roots": fs_info->commit_root_sem, btrfs_search_slot with p->search_commit_root), read
// straight from the device, never through the buffer cache.
//
// Why: scrub (fs/scrub.h) checks what is on disk, and only committed blocks and extents are
// guaranteed to be there; the live trees also hold extents of the running transaction whose
// bytes are not written yet. A view is taken from FsInfo::committed_super() and stays valid while
// no commit can complete — the caller holds a transaction handle (a joined one is enough), so a
// committer waits before it unpins anything: every block and extent the view reaches is either
// still referenced or pinned, hence unchanged on disk (nothing is COWed or reused in place; see
// fs/scrub.cpp for the exceptions and why they do not matter).
// Every block read passes read_tree_block (checksum, mirror fallback, tree checker) with the
// expectations of the pointer followed, against the committed generation.
// Thread safety: const after construction; reads may run concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "io/status.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/fs_reader.h"

namespace ubtrfs::fs {

class FsInfo;

class CommittedTrees {
 public:
  // The view of the last commit. REQUIRES (for the view to stay meaningful): the caller keeps a
  // commit from completing (holds a handle) or the filesystem is read-only.
  explicit CommittedTrees(FsInfo& fs);

  uint64_t generation() const { return generation_; }
  const FsParams& params() const { return params_; }
  RootLocation root_tree() const { return root_tree_; }

  // The committed root of tree `tree_id` (its first ROOT_ITEM). Errors: ENOENT, tree read errors.
  [[nodiscard]] Result<RootLocation> find_root(uint64_t tree_id) const;

  // Visits the items of `root` with key >= `start`, in key order, until `visit` returns false.
  using Visitor = std::function<bool(const Key& key, std::span<const uint8_t> body)>;
  [[nodiscard]] Status for_each_from(const RootLocation& root, const Key& start, const Visitor& visit) const;

  // Reads one tree block by logical address with the given expectations (mirror fallback).
  [[nodiscard]] Result<std::vector<uint8_t>> read_block(const TreeBlockExpect& expect) const;

 private:
  // Returns false when the visitor stopped the walk.
  [[nodiscard]] Result<bool> walk(const RootLocation& root, const TreeBlockExpect& expect, const Key& start,
                                  const Visitor& visit) const;

  FsInfo& fs_;
  FsParams params_;  // super_generation = the committed generation (the tree checker's bound)
  uint64_t generation_ = 0;
  RootLocation root_tree_;
};

}  // namespace ubtrfs::fs
