// Image preparation and the check oracle of ubtrfs-cowbench (image.h): mkfs through the library,
// sparse copies, `btrfs check`.
#include "tools/cowbench/image.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <vector>

#include "io/block_device.h"
#include "tools/mkfs/mkfs.h"

namespace ubtrfs::cowbench {
namespace {

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::unexpected<Error> errno_fail(const std::string& what, const std::string& path) {
  const int err = errno;
  return fail(err, "{} {}: {}", what, path, std::strerror(err));
}

// Runs `cmd` through the shell with stderr folded into stdout; returns its exit status (127 when it
// could not start, 128 + signal when killed).
int run_command(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return 127;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  const int st = ::pclose(p);
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 127;
}

std::string first_lines(const std::string& text, int max_lines) {
  std::istringstream in(text);
  std::string line, out;
  for (int i = 0; i < max_lines && std::getline(in, line); ++i) out += (out.empty() ? "" : "\n") + line;
  return out;
}

}  // namespace

Status make_image(const std::string& path, uint64_t size, uint32_t nodesize) {
  ::unlink(path.c_str());
  {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (fd.fd < 0) return errno_fail("cannot create", path);
    if (::ftruncate(fd.fd, static_cast<off_t>(size)) != 0) return errno_fail("cannot size", path);
  }
  auto dev = io::open_device(path, io::OpenMode::kReadWrite);
  if (!dev) return fail(dev.error());
  mkfs::MkfsConfig config;
  config.nodesize = nodesize;
  config.label = "cowbench";
  auto made = mkfs::make_btrfs(**dev, config);
  if (!made) return fail(made.error().err, "mkfs {}: {}", path, made.error().message);
  return {};
}

Status copy_sparse(const std::string& from, const std::string& to) {
  Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.fd < 0) return errno_fail("cannot open", from);
  struct stat st {};
  if (::fstat(in.fd, &st) != 0) return errno_fail("cannot stat", from);
  ::unlink(to.c_str());
  Fd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.fd < 0) return errno_fail("cannot create", to);
  if (::ioctl(out.fd, FICLONE, in.fd) == 0) return {};
  if (::ftruncate(out.fd, st.st_size) != 0) return errno_fail("cannot size", to);
  std::vector<char> buf(4 << 20);
  off_t pos = 0;
  while (pos < st.st_size) {
    const off_t data = ::lseek(in.fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      return errno_fail("cannot seek data in", from);
    }
    off_t hole = ::lseek(in.fd, data, SEEK_HOLE);
    if (hole < 0) return errno_fail("cannot seek hole in", from);
    for (off_t off = data; off < hole;) {
      const size_t want = static_cast<size_t>(std::min<off_t>(hole - off, static_cast<off_t>(buf.size())));
      const ssize_t n = ::pread(in.fd, buf.data(), want, off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n < 0 ? errno_fail("cannot read", from) : fail(EIO, "short read of {} at {}", from, off);
      for (ssize_t done = 0; done < n;) {
        const ssize_t w = ::pwrite(out.fd, buf.data() + done, static_cast<size_t>(n - done), off + done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return errno_fail("cannot write", to);
        done += w;
      }
      off += n;
    }
    pos = hole;
  }
  if (::fsync(out.fd) != 0) return errno_fail("cannot sync", to);
  return {};
}

const char* check_state_name(CheckResult::State s) {
  switch (s) {
    case CheckResult::State::kClean: return "clean";
    case CheckResult::State::kErrors: return "errors";
    case CheckResult::State::kSkipped: return "skipped";
  }
  return "?";
}

CheckResult btrfs_check(const std::string& path) {
  CheckResult r;
  std::string ignored;
  if (run_command("command -v btrfs", &ignored) != 0) {
    r.detail = "btrfs-progs not installed";
    return r;
  }
  if (::geteuid() != 0) {
    r.detail = "btrfs check needs root";
    return r;
  }
  std::string out;
  const int rc = run_command("btrfs check --readonly '" + path + "'", &out);
  bool complained = false;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("ERROR", 0) == 0 || line.find("errors found") != std::string::npos ||
        line.find("checksum verify failed") != std::string::npos ||
        (line.find("wanted ") != std::string::npos && line.find(" found ") != std::string::npos))
      complained = true;
  }
  if (rc == 0 && !complained) {
    r.state = CheckResult::State::kClean;
    return r;
  }
  r.state = CheckResult::State::kErrors;
  r.detail = "exit " + std::to_string(rc) + ": " + first_lines(out, 20);
  return r;
}

}  // namespace ubtrfs::cowbench
