// The FUSE low-level operation table of the ubtrfs daemon: each op translates one request into a
// call of the fs::Filesystem facade (fs/filesystem.h) and replies exactly once — the errno of the
// facade's Error on failure (ENOSYS is never replied, since the kernel would then stop sending
// that op for the rest of the mount: it becomes EOPNOTSUPP).
//
// Caching contract with the kernel: entry and attribute timeouts are 1 s (kEntryTimeout,
// kAttrTimeout). Every change goes through this mount, so longer would be safe for this mount's
// own view; 1 s bounds how long a stale attribute could be served if that ever stops being true
// (e.g. stats written by the commit thread) while keeping lookups cheap. ENOENT lookups are
// answered as negative entries (ino 0) cached for the same 1 s. No writeback cache: the kernel
// sends every write, so the filesystem sees writes in order and fsync semantics stay btrfs'.
// Lookup counts: replies that create a kernel reference (lookup, create, mknod, mkdir, symlink,
// link, readdirplus entries other than "." and "..") are the ones the facade counts; when such a
// reply cannot be delivered, the daemon forgets the reference itself.
// ioctl: any inode, files and directories (FUSE_CAP_IOCTL_DIR); the commands are ioctl.h's table,
// every other command is ENOTTY.
// Thread safety: ops run concurrently on the loop's worker threads; the table is immutable and
// the facade is thread-safe.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "fs/filesystem.h"
#include "tools/common/control_protocol.h"

namespace ubtrfs::daemon {

inline constexpr double kEntryTimeout = 1.0;
inline constexpr double kAttrTimeout = 1.0;
inline constexpr unsigned kMaxWrite = 1u << 20;

// The userdata of the session.
struct DaemonContext {
  fs::Filesystem* fs = nullptr;
  bool read_only = false;
  control::SnapshotStore control;  // the control channel's snapshots (ioctl.h)
  // The session, for notifications (set before the loop starts; null in tests without one).
  fuse_session* session = nullptr;
};

const fuse_lowlevel_ops& ubtrfs_fuse_ops();

}  // namespace ubtrfs::daemon
