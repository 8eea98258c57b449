// Mounting as a user who is not root: what the daemon checks before it opens anything, so each
// refusal is one line naming the image and the cause instead of libfuse's and fusermount3's
// messages followed by "the FUSE mount was refused".
//
// How a user's mount works: libfuse's fuse_session_mount() sees that mount(2) is not permitted
// and runs the setuid helper fusermount3, which mounts with the options it allows (fsname,
// subtype, default_permissions, ro/rw, nosuid/nodev forced) and hands back the /dev/fuse file
// descriptor; `fusermount3 -u MNT` unmounts. What only root (or root's configuration) grants:
//   - /dev/fuse readable and writable by the user (Debian's default mode 0666): libfuse opens it
//     before calling fusermount3;
//   - allow_other: fusermount3 refuses it unless /etc/fuse.conf has a line `user_allow_other`;
//   - the image or block device: the user must be able to read it (and write it unless -o ro);
//     a block device usually needs the group disk;
//   - the mount point: fusermount3 requires the user to own it or be able to write it.
// Invariants: the checks read only; they run for every uid but the ones root passes anyway
// (/dev/fuse, fuse.conf) are skipped for root.
#pragma once

#include <string>
#include <string_view>

#include "io/status.h"

namespace ubtrfs::daemon {

struct UserMountCheck {
  std::string source;      // canonical image path
  std::string mountpoint;  // canonical mount point
  bool read_only = false;  // -o ro
  bool allow_other = false;
  unsigned uid = 0;        // the effective uid of the daemon
  std::string fuse_device = "/dev/fuse";
  std::string fuse_conf = "/etc/fuse.conf";
};

// Errors (EACCES or EPERM) with one line: "cannot mount IMAGE: CAUSE; REMEDY".
[[nodiscard]] Status check_user_mount(const UserMountCheck& check);

// True if the fuse.conf text has a `user_allow_other` line (fusermount3 ignores leading blanks
// and takes comments from '#').
bool fuse_conf_allows_other(std::string_view text);

}  // namespace ubtrfs::daemon
