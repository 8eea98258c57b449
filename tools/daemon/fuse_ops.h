// The FUSE low-level operation table of the ubtrfs daemon: each op translates one request into a
// call of the fs::Filesystem facade (fs/filesystem.h) and replies exactly once — the errno of the
// facade's Error on failure (ENOSYS is never replied, since the kernel would then stop sending
// that op for the rest of the mount: it becomes EOPNOTSUPP).
//
// Caching contract with the kernel: entries (negative ones too) and attributes are cached for
// DaemonContext::entry_timeout / attr_timeout, a day by default (-o entry_timeout=, attr_timeout=).
// That is safe because every change passes through this mount (the image is locked) and the
// kernel updates or invalidates its own copies on every change it sends; where the daemon changes
// something on its own (inode flags by ioctl), it invalidates the kernel's copy explicitly.
// Long timeouts are what makes metadata fast: a create is a GETATTR of the directory, a LOOKUP and
// a CREATE; a cached stat is no round trip at all. There is no flush op: the kernel then stops
// sending FLUSH (one round trip per close) and still writes back and reports write errors itself.
// Writeback cache (-o writeback_cache=on): the kernel keeps written pages and sends them later,
// merged (fi->writepage); size and times are the kernel's while it has dirty pages, and it sends
// them with SETATTR. PageCacheGuard keeps write()'s ENOSPC at write() time. Off: every write()
// arrives as it is made.
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
#include "tools/daemon/page_cache_guard.h"

namespace ubtrfs::daemon {

class FuseUring;  // fuse_uring.h
class NameInvalidator;  // name_invalidation.h

inline constexpr unsigned kMaxWrite = 1u << 20;

// The userdata of the session.
struct DaemonContext {
  fs::Filesystem* fs = nullptr;
  bool read_only = false;
  control::SnapshotStore control;  // the control channel's snapshots (ioctl.h)
  // The session, for notifications (set before the loop starts; null in tests without one).
  fuse_session* session = nullptr;
  // st_dev of the mount (caller_fd.h), to tell a caller's descriptor on this mount from others; 0
  // when unknown (tests without a mount): no descriptor is then taken as ours.
  dev_t mount_dev = 0;
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  bool writeback_cache = false;  // -o writeback_cache=on
  // Open files' modes and the writeback cache's space guard (page_cache_guard.h); null in tests
  // that build a context by hand: every open is then cached, nothing guarded.
  PageCacheGuard* guard = nullptr;
  // The FUSE over io_uring transport (fuse_uring.h), for its counters; null without one.
  const FuseUring* uring = nullptr;
  // Names changed behind the kernel's back (name_invalidation.h); null in tests without a session.
  NameInvalidator* names = nullptr;
};

const fuse_lowlevel_ops& ubtrfs_fuse_ops();

}  // namespace ubtrfs::daemon
