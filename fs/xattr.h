// Extended attributes: XATTR_ITEM (24) items (btrfs xattr.c, dir-item.c; FORMAT.md §3.5, §4.8).
//
// An xattr "ns.name" of inode I is an entry {zero location, type XATTR (8), data_len = value
// length, name, value} in the item (I, 24, name_hash(full name)); names with the same hash share one
// item, entries back to back (like DIR_ITEM). Limits as the kernel's: name <= 255 bytes
// (XATTR_NAME_MAX: ERANGE), value <= 65536 (XATTR_SIZE_MAX: E2BIG), name + value <=
// BTRFS_MAX_XATTR_SIZE = max item size - 30 (ENOSPC, btrfs_setxattr), and the shared item of
// colliding names must fit in one leaf item (ENOSPC as the kernel's -EOVERFLOW path).
// Namespaces accepted (btrfs_xattr_handlers): user., trusted., security., btrfs.,
// system.posix_acl_access, system.posix_acl_default; anything else EOPNOTSUPP.
//
// Thread safety: callers hold the inode's lock exclusively to modify (see dir_item.h).
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

inline constexpr size_t kXattrNameMax = 255;    // XATTR_NAME_MAX
inline constexpr size_t kXattrSizeMax = 65536;  // XATTR_SIZE_MAX
inline constexpr int kXattrCreate = 1;          // XATTR_CREATE
inline constexpr int kXattrReplace = 2;         // XATTR_REPLACE

// BTRFS_MAX_XATTR_SIZE: name + value bytes one entry may carry (16228 for 16 KiB nodes).
constexpr uint32_t max_xattr_size(uint32_t nodesize) { return max_item_size(nodesize) - sizeof(DirItem); }

// Errors: ERANGE (longer than 255 or empty), EOPNOTSUPP (unknown namespace), EINVAL (empty name
// after the prefix).
[[nodiscard]] Status check_xattr_name(std::string_view name);

// btrfs_setxattr. flags: 0, kXattrCreate, kXattrReplace. Errors: EEXIST (create, exists), ENODATA
// (replace, missing), E2BIG (value > XATTR_SIZE_MAX), ENOSPC (too large for a leaf item), the
// name errors of check_xattr_name, tree errors.
[[nodiscard]] Status set_xattr(TreeHandle& h, TreeRoot& root, uint64_t ino, std::string_view name,
                               std::span<const uint8_t> value, int flags);
// The value, or nullopt when the inode has no such xattr.
[[nodiscard]] Result<std::optional<std::vector<uint8_t>>> get_xattr(TreeRoot& root, uint64_t ino,
                                                                    std::string_view name);
// Every xattr name of the inode (key order, then item order).
[[nodiscard]] Result<std::vector<std::string>> list_xattrs(TreeRoot& root, uint64_t ino);
// Errors: ENODATA (no such xattr), tree errors.
[[nodiscard]] Status remove_xattr(TreeHandle& h, TreeRoot& root, uint64_t ino, std::string_view name);

}  // namespace ubtrfs::fs
