// Process lifecycle pieces of the ubtrfs daemon that are not FUSE operations:
//
// ImageLock: flock() on the image or device, taken before the filesystem is opened and held until
// after the final commit (the process exit releases it). Read-write mounts take LOCK_EX, read-only
// mounts LOCK_SH, so any number of read-only daemons may share an image but a writer excludes
// everyone (a reader of an image that changes under it would see torn trees). Because the lock
// outlives the final commit, `flock IMAGE true` is how scripts wait for an unmount to be complete.
//
// Detacher: the background mode. The process forks FIRST, before any thread or io_uring exists
// (fork keeps only the calling thread, so forking after Filesystem::mount, as fuse_daemonize()
// would, loses the commit thread). The parent only waits on a pipe: the child reports success
// once the FUSE mount exists, then detaches (a process group of its own from the fork on, in the
// caller's session, see fork_and_wait; stdio to /dev/null, chdir /); if the child fails it prints
// its error on the inherited stderr and exits, and the parent exits with the child's status. So `ubtrfs IMG MNT` and `mount -t fuse.ubtrfs` return only when the
// mount is usable, and return the failure status when it is not.
// Thread safety: both are used by the main thread only.
#pragma once

#include <string>

#include "io/status.h"

namespace ubtrfs::daemon {

class ImageLock {
 public:
  ImageLock() = default;
  ImageLock(const ImageLock&) = delete;
  ImageLock& operator=(const ImageLock&) = delete;
  ~ImageLock();
  // Errors: EBUSY "PATH is in use by another ubtrfs daemon", or the open errno.
  [[nodiscard]] Status acquire(const std::string& path, bool shared);

 private:
  int fd_ = -1;
};

class Detacher {
 public:
  // Forks. Returns in the child (which must later call ready() or exit); the parent never returns
  // from it: it exits with 0 when the child reports ready, or with the child's exit status.
  // Errors (in the caller, before any fork): the fork/pipe errno.
  [[nodiscard]] Status fork_and_wait();
  // In the child: tells the parent the mount succeeded, then detaches from the terminal.
  void ready();

 private:
  int report_fd_ = -1;
};

}  // namespace ubtrfs::daemon
