// Tree printer: the text form of tree blocks and items (the userspace counterpart of print-tree.c).
//
// Serves the inspector (`ubtrfs-inspect dump-tree`), test failure messages and debugging. The key and
// item lines follow `btrfs inspect-internal dump-tree` (btrfs-progs 6.2) so the two outputs can be
// compared line by line:
//     leaf 30851072 items 17 free space 11597 generation 8 owner ROOT_TREE
//     \titem 0 key (EXTENT_TREE ROOT_ITEM 0) itemoff 15844 itemsize 439
//     \t\t<decoded body lines>
//     node 30867456 level 1 items 2 free space 491 generation 9 owner FS_TREE
//     \tkey (256 INODE_ITEM 0) block 30851072 gen 9
// Objectids and key types print with the same symbolic names and special cases as progs
// (DEV_ITEMS, FIRST_CHUNK_TREE only for CHUNK_ITEM, DEV_STATS only for PERSISTENT_ITEM, uuid keys in
// hex, qgroup ids as level/id, -1 offsets as "-1"). Body lines are close to progs but not byte-exact.
//
// Invariant: printing never fails and never reads outside the given span. A body too short for its
// type, and any unknown item type, is printed as raw hex bytes rather than rejected, so the printer
// can be used on blocks the tree checker refused (after a structural check of the item table).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "tree/format.h"
#include "tree/fs_params.h"

namespace ubtrfs {

// Symbolic objectid as progs prints it in a key with the given type ("FS_TREE", "DEV_ITEMS", "256").
std::string objectid_str(uint64_t objectid, uint8_t type);
// Key type name ("INODE_ITEM", "UNKNOWN.7", "UNTYPED" for the v1 free space cache header).
std::string key_type_str(uint64_t objectid, uint8_t type);
// "key (256 INODE_ITEM 0)".
std::string key_str(const Key& key);
// "(256 1 0)": the numeric key of error messages.
std::string key_tuple_str(const Key& key);
// Lowercase 8-4-4-4-12 form of a 16-byte UUID.
std::string uuid_str(const uint8_t* uuid);
// Block group / chunk type flags as progs 6.2 prints them: "DATA|single", "METADATA|DUP", "SYSTEM|DUP".
std::string bg_flags_str(uint64_t flags);

// Appends the body lines of one item (each starting with two tabs). Never fails.
void print_item_body(std::string& out, const FsParams& fs, const Key& key, std::span<const uint8_t> body);
// Appends a CHUNK_ITEM body (also used for the superblock's sys_chunk_array).
void print_chunk_item(std::string& out, std::span<const uint8_t> body);
// Appends a whole block: header lines, then every item with its body (leaf) or every key pointer
// (node). Item headers that point outside the block are reported on their line and skipped.
void print_tree_block(std::string& out, const FsParams& fs, std::span<const uint8_t> block);

}  // namespace ubtrfs
