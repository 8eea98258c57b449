// The caller's descriptors seen from the daemon; see caller_fd.h.
#include "tools/daemon/caller_fd.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <utility>

namespace ubtrfs::daemon {

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

Result<CallerFile> stat_caller_fd(int32_t pid, int64_t fd) {
  if (pid <= 0) return fail(ESRCH, "no caller process to take descriptor {} from", fd);
  if (fd < 0 || fd > INT32_MAX) return fail(EBADF, "descriptor {} of pid {} is not valid", fd, pid);
  Fd pidfd{static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))};
  if (pidfd.fd < 0) return fail(errno, "pidfd_open of pid {}: {}", pid, std::strerror(errno));
  Fd local{static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.fd, static_cast<int>(fd), 0))};
  if (local.fd < 0) return fail(errno, "descriptor {} of pid {}: {}", fd, pid, std::strerror(errno));
  // Device and inode number from the kernel's cache (AT_STATX_DONT_SYNC): never fstat(). A file on
  // this mount with stale attributes would make fstat send FUSE_GETATTR to this daemon from inside
  // the handler asking — on FUSE over io_uring, to the queue of this CPU, whose pinned workers
  // may all be such handlers: a deadlock (tests/oracle/snapshot_ioctl_never_waits_on_its_own_
  // mount_test.sh). Neither number can change for an open descriptor.
  struct statx stx {};
  if (::statx(local.fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_INO | STATX_TYPE, &stx) != 0)
    return fail(errno, "statx of descriptor {} of pid {}: {}", fd, pid, std::strerror(errno));
  // For the same reason the duplicate of anything but a directory is closed by a thread of its
  // own: closing a file on a FUSE mount may send FUSE_FLUSH (and, with the writeback cache, write
  // its dirty pages) to this daemon and wait for the answer.
  if (!((stx.stx_mask & STATX_TYPE) && S_ISDIR(stx.stx_mode)))
    std::thread([f = std::exchange(local.fd, -1)] { ::close(f); }).detach();
  return CallerFile{makedev(stx.stx_dev_major, stx.stx_dev_minor), static_cast<uint64_t>(stx.stx_ino)};
}

dev_t mounted_device(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  dev_t dev = 0;
  while (std::getline(in, line)) {
    // "36 35 0:52 / /mnt/x rw,... - fuse.ubtrfs src rw,...": field 3 is major:minor, field 5 the mount point.
    std::istringstream f(line);
    std::string id, parent, majmin, root, point;
    if (!(f >> id >> parent >> majmin >> root >> point)) continue;
    if (unescape(point) != mountpoint) continue;
    unsigned major = 0, minor = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &major, &minor) == 2) dev = makedev(major, minor);
  }
  return dev;
}

}  // namespace ubtrfs::daemon
