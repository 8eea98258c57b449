// FsTreeIndex: the inode-level view of one subvolume tree that the inode and directory passes share
// (FORMAT.md §3.3-3.7, §4). Built from the recorded leaf items of a tree in one scan: per inode its
// INODE_ITEM, its names (INODE_REF / INODE_EXTREF entries), the bytes its extents reference, and
// for directories the entries they hold (DIR_ITEM and DIR_INDEX, one record per entry).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tools/fsck/context.h"

namespace ubtrfs::fsck {

struct NameRef {
  uint64_t parent = 0;
  uint64_t index = 0;
  std::string name;
  bool extref = false;
  Key key;
};

struct DirEntry {
  uint64_t dir = 0;
  Key key;  // (dir, DIR_ITEM, hash) or (dir, DIR_INDEX, index)
  std::string name;
  Key location;
  uint8_t type = 0;
};

struct FileExtentRef {
  Key key;
  uint8_t type = 0;
  uint8_t compression = 0;
  uint64_t disk_bytenr = 0;
  uint64_t disk_num_bytes = 0;
  uint64_t offset = 0;
  uint64_t num_bytes = 0;
  uint64_t ram_bytes = 0;
};

struct InodeRecord {
  std::optional<InodeItem> item;
  std::vector<NameRef> names;
  std::vector<FileExtentRef> extents;
  uint64_t dir_name_bytes = 0;   // sum of name_len over DIR_ITEM and DIR_INDEX entries of this dir
  std::set<uint8_t> item_types;  // key types seen for this objectid (for messages)
  Key first_key;                 // first item of this objectid
};

struct FsTreeIndex {
  uint64_t tree = 0;
  std::map<uint64_t, InodeRecord> inodes;
  std::vector<DirEntry> dir_items;
  std::vector<DirEntry> dir_indexes;
  std::set<uint64_t> orphans;  // ORPHAN_ITEM offsets
};

FsTreeIndex index_fs_tree(const Context& ctx, const TreeInfo& t);

// S_IFMT of a mode mapped to the dir entry type (FT_*), kFtUnknown if invalid.
uint8_t file_type_of_mode(uint32_t mode);
bool is_dir_mode(uint32_t mode);
std::string type_names(const std::set<uint8_t>& types);

}  // namespace ubtrfs::fsck
