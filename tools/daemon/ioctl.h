// The ioctls the daemon serves, the counterpart of the kernel's fs/btrfs/ioctl.c: one table of
// {command, name, handler}; fuse_ops.cpp's ioctl op only calls dispatch_ioctl() and replies.
//
// FUSE passes only "restricted" ioctls to a filesystem: the kernel has already copied
// _IOC_SIZE(cmd) bytes in (when the command writes) and lets the reply carry at most as many out
// (when it reads). A handler gets both sizes and returns the ioctl's result and the bytes to
// copy back. Commands that are not in the table fail with ENOTTY, as the kernel answers an
// unknown ioctl, on any inode. Today the table holds the control channel's read
// (tools/common/control_protocol.h) and its shutdown with flags, the label (FS_IOC_GETFSLABEL /
// FS_IOC_SETFSLABEL, the same numbers as BTRFS_IOC_GET_FSLABEL / SET_FSLABEL) and the shutdown
// (FS_IOC_GOINGDOWN = XFS_IOC_GOINGDOWN = BTRFS_IOC_SHUTDOWN), FITRIM (fstrim), the inode flags
// (FS_IOC_GETFLAGS / SETFLAGS / FSGETXATTR / FSSETXATTR, on the inode asked), and btrfs's own
// (magic 0x94): BTRFS_IOC_SCRUB / SCRUB_CANCEL / SCRUB_PROGRESS (fs/scrub.h), FS_INFO, DEV_INFO,
// SUBVOL_CREATE(_V2), SNAP_CREATE(_V2), SNAP_DESTROY(_V2), SUBVOL_GETFLAGS / SETFLAGS, DEFAULT_SUBVOL, GET_SUBVOL_INFO,
// INO_LOOKUP, TREE_SEARCH (fs/subvolume.cpp, fs/tree_search.cpp), SYNC / START_SYNC / WAIT_SYNC. Privileged commands (CAP_SYS_ADMIN in the kernel) require caller uid 0.
// Thread safety: handlers run concurrently on the FUSE worker threads; the table is immutable.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "io/status.h"
#include "tools/daemon/fuse_ops.h"

namespace ubtrfs::daemon {

struct IoctlRequest {
  uint64_t ino = 0;
  uint32_t cmd = 0;
  unsigned flags = 0;                // FUSE_IOCTL_* (FUSE_IOCTL_DIR: on a directory)
  std::span<const uint8_t> in;       // _IOC_SIZE(cmd) bytes for a command that writes, else empty
  size_t out_size = 0;               // room for the reply: _IOC_SIZE(cmd) for a command that reads
  uint32_t uid = 0;                  // the caller (fuse_req_ctx): uid 0 stands for CAP_SYS_ADMIN
  uint32_t gid = 0;
  int32_t pid = 0;
};

struct IoctlReply {
  int result = 0;                    // the ioctl(2) return value
  std::vector<uint8_t> out;          // at most out_size bytes copied back to the caller
};

// Errors: ENOTTY for a command no handler serves; the handler's errno otherwise.
[[nodiscard]] Result<IoctlReply> dispatch_ioctl(DaemonContext& ctx, const IoctlRequest& req);

// The name of a command in the table ("UBTRFS_IOC_CONTROL_READ"), or nullptr.
const char* ioctl_name(uint32_t cmd);

}  // namespace ubtrfs::daemon
