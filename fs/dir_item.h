// Directory entries and inode back references: DIR_ITEM (84), DIR_INDEX (96), INODE_REF (12),
// INODE_EXTREF (13) (btrfs dir-item.c, inode-item.c; FORMAT.md §3.4, §3.5, §4).
//
// One name N of inode I in directory D is four things (FORMAT.md §4.2): an entry in the DIR_ITEM
// (D, 84, name_hash(N)) — several names with the same hash share one item, entries back to back —
// a DIR_INDEX (D, 96, index) with exactly one entry, and an entry {index, N} in the INODE_REF
// (I, 12, D) item (all names of I in D share it), or, once that item would not fit in a leaf, an
// entry {D, index, N} in INODE_EXTREF (I, 13, extref_hash(D, N)) (hash collisions share the item).
//
// Every modification rewrites the whole body of the one item it touches (write_item_body: insert,
// grow with extend_item, shrink with truncate_item, or delete), which keeps the on-disk rules
// simple to see: bodies are parsed, edited as vectors, written back.
//
// Thread safety: none of its own. Callers serialise changes to items of one objectid (the fs layer
// holds the inode lock of the directory / inode whose items change); reads take no inode lock and
// see each item atomically (leaf locks).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/status.h"
#include "tree/format.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

// One entry of a DIR_ITEM / DIR_INDEX / XATTR_ITEM body (`struct btrfs_dir_item` + name + data).
struct DirEntryRecord {
  std::string name;
  Key location{};              // (ino, INODE_ITEM, 0), (subvol, ROOT_ITEM, 0|-1), or zero for xattrs
  uint8_t type = kFtUnknown;   // FileType
  uint64_t transid = 0;
  std::vector<uint8_t> data;   // xattr value (empty for directory entries)
};

// Every entry of a body. Errors: EUCLEAN (truncated entry, name too long, bad type; names `key`).
[[nodiscard]] Result<std::vector<DirEntryRecord>> parse_dir_entries(std::span<const uint8_t> body, const Key& key);
// Appends the on-disk form of `e` to `body`.
void append_dir_entry(std::vector<uint8_t>& body, const DirEntryRecord& e);

// Sets the whole body of the item `key`: inserts it, resizes it in place (extend/truncate) or deletes
// it when `body` is empty (an absent item with an empty body is a no-op). Errors: EOVERFLOW (body
// larger than max_item_size), tree errors.
[[nodiscard]] Status write_item_body(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> body);
// Deletes every item whose objectid is `objectid` and type in [min_type, max_type].
[[nodiscard]] Status delete_items_of(TreeHandle& h, TreeRoot& root, uint64_t objectid, uint8_t min_type = 0,
                                     uint8_t max_type = 0xFF);

// btrfs_inode_type: the FileType stored in dir entries for an inode mode; mode type bits for one.
uint8_t file_type_of_mode(uint32_t mode);
uint32_t mode_of_file_type(uint8_t type);

// ---- DIR_ITEM + DIR_INDEX ------------------------------------------------------------------------

// Where DIR_INDEX changes go instead of the tree (the delayed directory index items of
// fs/delayed_inode.h, btrfs_insert_delayed_dir_index / btrfs_delete_delayed_dir_index); without one
// they go straight to the tree.
class DirIndexQueue {
 public:
  virtual ~DirIndexQueue() = default;
  // Queues DIR_INDEX (dir, index) with `body` (one entry).
  [[nodiscard]] virtual Status insert(uint64_t dir, uint64_t index, std::vector<uint8_t> body) = 0;
  // Queues the removal of DIR_INDEX (dir, index), which must hold `name` (as queued, or in the tree).
  // Errors: ENOENT, EUCLEAN (it holds another name).
  [[nodiscard]] virtual Status remove(uint64_t dir, uint64_t index, std::string_view name) = 0;
};

// btrfs_insert_dir_item: adds `name` to the DIR_ITEM of its hash (appending on a collision) and a
// DIR_INDEX (dir, index). Does not touch the directory's INODE_ITEM. Errors: EEXIST (name present),
// EOVERFLOW (the DIR_ITEM of colliding names cannot grow), tree errors.
[[nodiscard]] Status insert_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name,
                                      const Key& location, uint8_t type, uint64_t index,
                                      DirIndexQueue* queue = nullptr);
// btrfs_lookup_dir_item: the entry of `name` in `dir`, or nullopt.
// btrfs_check_dir_item_collision: before a transaction starts, whether `name` can be added to
// `dir`: EEXIST if it is there, EOVERFLOW if the DIR_ITEM its hash shares with other names would
// outgrow a leaf item. Read-only.
[[nodiscard]] Status check_dir_item_room(TreeRoot& root, uint64_t dir, std::string_view name);
[[nodiscard]] Result<std::optional<DirEntryRecord>> lookup_dir_entry(TreeRoot& root, uint64_t dir,
                                                                     std::string_view name);
// Removes `name` from its DIR_ITEM (the item goes when it was the last name) and deletes the
// DIR_INDEX (dir, index). Errors: ENOENT (either missing; message names dir and name), tree errors.
[[nodiscard]] Status delete_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name,
                                      uint64_t index, DirIndexQueue* queue = nullptr);
// Checks that DIR_INDEX (dir, index) in the tree holds `name`. Errors: ENOENT, EUCLEAN.
[[nodiscard]] Status check_dir_index(TreeRoot& root, uint64_t dir, uint64_t index, std::string_view name);
// Rewrites the location/type of an existing name in place (both DIR_ITEM and DIR_INDEX entries).
[[nodiscard]] Status retarget_dir_entry(TreeHandle& h, TreeRoot& root, uint64_t dir, std::string_view name,
                                        uint64_t index, const Key& location, uint8_t type, uint64_t transid);
// The highest DIR_INDEX key offset of `dir` (0 if it has none).
[[nodiscard]] Result<uint64_t> highest_dir_index(TreeRoot& root, uint64_t dir);
// Up to `max` DIR_INDEX entries of `dir` with index >= `start`, in index order, read under leaf locks
// that are all released on return (callers may then do other tree reads per entry).
struct IndexedEntry {
  uint64_t index = 0;
  DirEntryRecord entry;
};
[[nodiscard]] Result<std::vector<IndexedEntry>> read_dir_index(TreeRoot& root, uint64_t dir, uint64_t start,
                                                               size_t max);

// ---- INODE_REF / INODE_EXTREF ------------------------------------------------------------------

struct InodeRefRecord {
  uint64_t parent = 0;
  uint64_t index = 0;
  std::string name;
  bool extref = false;
};

// btrfs_insert_inode_ref: adds {index, name} to the INODE_REF (ino, parent); when that item would
// outgrow a leaf item, to INODE_EXTREF (ino, extref_hash(parent, name)) if `extended_iref`.
// Errors: EEXIST (same parent and name), EMLINK (INODE_REF full and no extended iref), EOVERFLOW.
[[nodiscard]] Status insert_inode_ref(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t parent,
                                      std::string_view name, uint64_t index, bool extended_iref);
// The index of name `name` of `ino` in `parent` (INODE_REF first, then INODE_EXTREF), or nullopt.
[[nodiscard]] Result<std::optional<uint64_t>> find_inode_ref(TreeRoot& root, uint64_t ino, uint64_t parent,
                                                             std::string_view name);
// btrfs_del_inode_ref: removes that name and returns its index. Errors: ENOENT, tree errors.
[[nodiscard]] Result<uint64_t> delete_inode_ref(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t parent,
                                                std::string_view name);
// Every name of `ino` (INODE_REF entries, then INODE_EXTREF entries).
[[nodiscard]] Result<std::vector<InodeRefRecord>> list_inode_refs(TreeRoot& root, uint64_t ino);

}  // namespace ubtrfs::fs
