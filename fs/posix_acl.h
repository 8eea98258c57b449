// POSIX ACL inheritance at creation (btrfs acl.c btrfs_init_acl / the VFS posix_acl_create).
//
// ACLs are stored as the xattrs system.posix_acl_access / system.posix_acl_default in their xattr
// form (le32 version 2, then {le16 tag, le16 perm, le32 id} entries); the kernel enforces them (the
// daemon mounts with FUSE_POSIX_ACL). What the kernel leaves to a FUSE filesystem is creation: a
// new inode in a directory with a default ACL gets that ACL as its access ACL, masked by the create
// mode (posix_acl_create_masq: the mode's owner/group-class/other bits cap USER_OBJ, MASK (or
// GROUP_OBJ) and OTHER, and the mode becomes what the ACL then allows); a new directory also
// inherits the default ACL itself; the umask is not applied then. Without a default ACL the umask
// applies as usual. Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace ubtrfs::fs {

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";
inline constexpr const char* kAclDefaultXattr = "system.posix_acl_default";

struct AclCreateResult {
  uint32_t mode = 0;                            // the new inode's mode (type bits kept)
  std::optional<std::vector<uint8_t>> access;   // access ACL to store (nullopt: the mode says it all)
  std::optional<std::vector<uint8_t>> default_acl;  // default ACL to store (directories)
};

// `mode`: the create mode before any umask; `parent_default`: the parent's default ACL xattr, if
// any. nullopt when the parent's default ACL is malformed (the caller then treats it as absent).
std::optional<AclCreateResult> acl_for_new_inode(uint32_t mode, std::span<const uint8_t> parent_default);

}  // namespace ubtrfs::fs
