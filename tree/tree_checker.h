// Tree checker: validation of every tree block at the read boundary (btrfs tree-checker.c).
//
// Disk data is never trusted: a block is checked before any code looks inside it, and corruption is
// reported as EUCLEAN with a message naming the block (bytenr in decimal), the slot, the key as
// [objectid type offset], and the reason — never an assert or a crash. The same checks run before
// a block is written (write-time check), so we never put a malformed block on disk.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "io/status.h"
#include "tree/format.h"
#include "tree/fs_params.h"

namespace ubtrfs {

// What the reader expects of the block, from the pointer it followed (parent key-ptr, root item,
// superblock). Unset fields are not checked.
struct TreeBlockExpect {
  uint64_t bytenr = 0;                  // logical address it was read from (always checked)
  std::optional<uint8_t> level;
  std::optional<uint64_t> generation;   // parent transid
  std::optional<uint64_t> owner;        // checked for non-subvolume trees only
  std::optional<Key> first_key;
};

// Checksum, header (bytenr, fsid, level, nritems, backref revision, generation), then the leaf or node
// structure and every item's body. Errors: EUCLEAN, message "bad tree block <bytenr>: <reason>" or
// "corrupt leaf: root=<owner> block=<bytenr> slot=<n> ..." in btrfs wording.
[[nodiscard]] Status check_tree_block(const FsParams& fs, std::span<const uint8_t> block, const TreeBlockExpect& expect);

// Structural checks only (no checksum, no expectation): used before writing a block.
[[nodiscard]] Status check_leaf(const FsParams& fs, std::span<const uint8_t> block);
[[nodiscard]] Status check_node(const FsParams& fs, std::span<const uint8_t> block);

}  // namespace ubtrfs
