// POSIX access ACLs at the FUSE boundary. With FUSE_CAP_POSIX_ACL the kernel enforces ACLs but,
// unlike for kernel filesystems (btrfs_set_acl -> posix_acl_update_mode), leaves keeping the file
// mode in sync with a new access ACL to the daemon: the group-class bits of the mode must become
// the ACL's mask (or GROUP_OBJ) permissions, or the kernel skips the ACL check altogether
// (acl_permission_check looks at the ACL only when the group bits are non-zero); and an ACL
// equivalent to the mode is not stored, only the mode is. This parses the xattr form
// (system.posix_acl_access: le32 version 2, then {le16 tag, le16 perm, le32 id} entries).
// Pure functions, thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace ubtrfs::daemon {

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";

struct AclModeUpdate {
  uint32_t mode_bits;  // new rwx bits (0777 part) for the inode
  bool equivalent;     // the ACL says nothing beyond the mode: store no xattr
};

// nullopt: not a well-formed access ACL (the caller lets the filesystem store/refuse it as is).
std::optional<AclModeUpdate> acl_mode_update(std::span<const uint8_t> xattr);

}  // namespace ubtrfs::daemon
