// A descriptor the caller of an ioctl passed by number (BTRFS_IOC_SNAP_CREATE_V2's `fd`: the
// snapshot's source), resolved in the daemon, and whether it lies on this mount.
//
// FUSE copies only the ioctl's argument bytes, so the number means nothing in the daemon: the
// daemon takes a duplicate of the caller's descriptor with pidfd_open + pidfd_getfd (Linux 5.6),
// which the kernel allows when the daemon may ptrace the caller (same uid, or CAP_SYS_PTRACE;
// Yama's ptrace_scope 1 allows only descendants and root). An inode is on this mount when its
// device is the mount's (the kernel's check: the source's superblock is the destination's), read
// once from /proc/self/mountinfo after the mount.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "io/status.h"

namespace ubtrfs::daemon {

struct CallerFile {
  dev_t dev = 0;
  uint64_t ino = 0;  // st_ino: on this mount, the FUSE inode number
};

// Device and inode number of descriptor `fd` of process `pid`, without a request to this mount
// (the kernel's cached attributes; a handler that waited for its own mount could deadlock it). Errors: EBADF (no such descriptor), ESRCH (the
// process is gone), EPERM (the daemon may not take it).
[[nodiscard]] Result<CallerFile> stat_caller_fd(int32_t pid, int64_t fd);

// The device number of the mount at `mountpoint` (the last mount there), 0 if not found.
dev_t mounted_device(const std::string& mountpoint);

}  // namespace ubtrfs::daemon
