// Image lock and background detaching; see lifecycle.h.
#include "tools/daemon/lifecycle.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ubtrfs::daemon {

ImageLock::~ImageLock() {
  if (fd_ >= 0) close(fd_);
}

Status ImageLock::acquire(const std::string& path, bool shared) {
  // O_RDONLY is enough for flock and never fails for a read-only image file or device node.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno, "cannot open {}: {}", path, strerror(errno));
  if (flock(fd, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) return fail(EBUSY, "{} is in use by another ubtrfs daemon", path);
    return fail(err, "cannot lock {}: {}", path, strerror(err));
  }
  fd_ = fd;
  return {};
}

Status Detacher::fork_and_wait() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return fail(errno, "cannot create a pipe: {}", strerror(errno));
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return fail(err, "cannot fork: {}", strerror(err));
  }
  if (pid == 0) {
    close(fds[0]);
    report_fd_ = fds[1];
    // A process group of its own, so that no terminal signal (a ^C meant for `mount`, the SIGHUP
    // a shell sends its jobs) reaches the daemon; but the caller's session is kept, not a new one
    // (setsid): with the scheduler's autogroups (CONFIG_SCHED_AUTOGROUP, on by default) a new
    // session is a scheduling group of its own, and every FUSE round trip between a client in the
    // mounting session and a daemon in another group is placed across CPUs: creates and unlinks
    // ran at half the rate of the same daemon inside the session (see README, "Speed").
    setpgid(0, 0);
    // A background process group writing to the terminal (its error, before ready()) is stopped
    // by SIGTTOU under `stty tostop`, which would leave `mount` waiting forever.
    signal(SIGTTOU, SIG_IGN);
    signal(SIGTTIN, SIG_IGN);
    return {};
  }
  close(fds[1]);
  char status = 1;
  ssize_t n;
  do n = read(fds[0], &status, 1);
  while (n < 0 && errno == EINTR);
  if (n == 1 && status == 0) _exit(0);
  // The child failed before reporting: its error is on our shared stderr; pass its status on.
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(wstatus)) _exit(WEXITSTATUS(wstatus) ? WEXITSTATUS(wstatus) : 32);
  _exit(32);
}

void Detacher::ready() {
  if (report_fd_ < 0) return;
  int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nul >= 0) {
    dup2(nul, STDIN_FILENO);
    dup2(nul, STDOUT_FILENO);
    dup2(nul, STDERR_FILENO);
    if (nul > STDERR_FILENO) close(nul);
  }
  if (chdir("/") != 0) {
    // Unreachable in practice; the daemon uses absolute paths only.
  }
  char ok = 0;
  ssize_t n;
  do n = write(report_fd_, &ok, 1);
  while (n < 0 && errno == EINTR);
  close(report_fd_);
  report_fd_ = -1;
}

}  // namespace ubtrfs::daemon
