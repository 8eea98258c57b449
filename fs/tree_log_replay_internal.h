// LogReplayer: the replay of one per-subvolume log tree into its subvolume (step 3 of
// fs/tree_log_replay.h), shared by tree_log_replay_items.cpp (inodes, xattrs, extents, checksums,
// nbytes) and tree_log_replay_names.cpp (names, directory deletes, link counts, directory sizes).
// Not part of the fs layer's interface.
//
// Invariants while it runs: every change goes through the one transaction handle it was given;
// the fixup sets only grow; a data extent in `unclaimed` is reserved (excluded) and has no reference
// yet — its first reference is queued as the allocation (new_alloc) and takes it out of the set.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fs/dir_item.h"
#include "fs/tree_log_replay.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FsInfo;

class LogReplayer {
 public:
  LogReplayer(FsInfo& fs, TreeHandle& h, TreeRoot& root, const LogTreeImage& log,
              std::set<std::pair<uint64_t, uint64_t>>& unclaimed, LogReplayStats& stats)
      : fs_(fs), h_(h), root_(root), log_(log), unclaimed_(unclaimed), stats_(stats) {}

  // All stages over this log tree, then the fixups.
  [[nodiscard]] Status run();

 private:
  // ---- tree_log_replay_items.cpp -----------------------------------------------------------------
  [[nodiscard]] Status replay_inode(const LogItem& it);
  [[nodiscard]] Status replay_xattr_deletes(uint64_t ino);
  [[nodiscard]] Status replay_extent(const LogItem& it);
  [[nodiscard]] Status replay_csums();
  [[nodiscard]] Status fixup_nbytes();
  // ---- tree_log_replay_names.cpp -----------------------------------------------------------------
  [[nodiscard]] Status replay_dir_deletes(uint64_t dir);
  [[nodiscard]] Status replay_dir_index(const LogItem& it);
  [[nodiscard]] Status add_inode_refs(uint64_t ino);
  [[nodiscard]] Status fixup_link_counts();
  [[nodiscard]] Status fixup_dir_sizes();
  // Removes the name `name` (index `index`) of `child` from `dir`: DIR_ITEM, DIR_INDEX, INODE_REF.
  [[nodiscard]] Status unlink_name(uint64_t dir, std::string_view name, uint64_t index, uint64_t child);
  // Adds the name: DIR_ITEM, DIR_INDEX and INODE_REF (btrfs_add_link).
  [[nodiscard]] Status add_link(uint64_t dir, std::string_view name, uint64_t child, uint64_t index);
  // The names the log gives `ino` (INODE_REF and INODE_EXTREF items), by parent.
  [[nodiscard]] Result<std::map<uint64_t, std::vector<std::pair<uint64_t, std::string>>>> log_refs(uint64_t ino) const;

  // ---- helpers (tree_log_replay_items.cpp) --------------------------------------------------------
  const LogItem* log_find(const Key& key) const;
  // The log's items with objectid `objectid` and type `type`.
  std::vector<const LogItem*> log_items(uint64_t objectid, uint8_t type) const;
  bool inode_exists(uint64_t ino);
  // Every item (key, body) of `objectid` with type `type` in the subvolume tree.
  [[nodiscard]] Result<std::vector<std::pair<Key, std::vector<uint8_t>>>> tree_items(uint64_t objectid, uint8_t type);
  [[nodiscard]] Status item_error(const LogItem& it, std::string_view what) const;

  FsInfo& fs_;
  TreeHandle& h_;
  TreeRoot& root_;
  const LogTreeImage& log_;
  std::set<std::pair<uint64_t, uint64_t>>& unclaimed_;
  LogReplayStats& stats_;
  std::set<uint64_t> link_fixups_;   // inodes whose link count is recomputed at the end
  std::set<uint64_t> dir_fixups_;    // directories whose i_size is recomputed at the end
  std::set<uint64_t> nbytes_fixups_; // inodes whose nbytes is recomputed at the end
  std::set<uint64_t> refs_done_;     // inodes whose names were replayed
};

}  // namespace ubtrfs::fs
