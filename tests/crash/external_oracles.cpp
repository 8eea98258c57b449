// btrfs check (x2) and the kernel's loop mount (which replays a tree log) on crash images (external_oracles.h).
#include "tests/crash/external_oracles.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>

namespace ubtrfs::crash {
namespace {

// Runs `cmd` through the shell, stderr folded into stdout; the exit status (127: could not start).
int run(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return 127;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    if (out) out->append(buf, n);
  const int st = ::pclose(p);
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 127;
}

std::string head(const std::string& text, int lines) {
  std::istringstream in(text);
  std::string line, out;
  for (int i = 0; i < lines && std::getline(in, line); ++i) out += (out.empty() ? "" : " | ") + line;
  return out;
}

// btrfs check prints problems on stdout/stderr and exits non-zero; some complaints come with exit 0.
bool check_complained(int rc, const std::string& out) {
  if (rc != 0) return true;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("ERROR", 0) == 0 || line.find("errors found") != std::string::npos ||
        line.find("checksum verify failed") != std::string::npos ||
        (line.find("wanted ") != std::string::npos && line.find(" found ") != std::string::npos))
      return true;
  return false;
}

}  // namespace

OracleAvailability probe_external_oracles() {
  OracleAvailability a;
  std::string out;
  if (::geteuid() != 0) {
    a.why_not = "not root (btrfs check and mount need it)";
    return a;
  }
  if (run("command -v btrfs", &out) != 0) {
    a.why_not = "btrfs-progs not installed";
    return a;
  }
  a.btrfs_check = true;
  out.clear();
  if (run("command -v losetup && test -e /dev/loop-control && grep -qw btrfs /proc/filesystems || modprobe btrfs", &out) != 0)
    a.why_not = "no loop devices or no kernel btrfs";
  else
    a.kernel_mount = true;
  return a;
}

std::vector<OracleFinding> run_external_oracles(const std::string& image, const OracleAvailability& avail,
                                                const std::string& scratch_dir) {
  std::vector<OracleFinding> found;
  if (avail.btrfs_check) {
    for (const char* mode : {"", " --mode lowmem"}) {
      std::string out;
      const int rc = run(std::string("btrfs check --readonly") + mode + " '" + image + "'", &out);
      if (check_complained(rc, out))
        found.push_back({*mode ? "btrfs-check-lowmem" : "btrfs-check", "exit " + std::to_string(rc) + ": " + head(out, 12)});
    }
  }
  if (avail.kernel_mount) {
    const std::string mnt = scratch_dir + "/mnt";
    std::string out;
    run("mkdir -p '" + mnt + "'", nullptr);
    // Read-write: an image with a tree log is replayed by the kernel at mount ("log replay required
    // on RO media" refuses a read-only one); the image is a scratch copy.
    const int rc = run("mount -t btrfs -o loop '" + image + "' '" + mnt + "'", &out);
    if (rc != 0) {
      std::string dmesg;
      run("dmesg | tail -n 5", &dmesg);
      found.push_back({"kernel-mount", "exit " + std::to_string(rc) + ": " + head(out, 4) + " | dmesg: " + head(dmesg, 5)});
    } else {
      out.clear();
      // Every file read whole, every directory listed.
      const int rd = run("cd '" + mnt + "' && find . -xdev -type d -exec ls -a {} + >/dev/null && "
                         "find . -xdev -type f -exec cat {} + >/dev/null", &out);
      if (rd != 0) found.push_back({"kernel-read", "exit " + std::to_string(rd) + ": " + head(out, 6)});
      std::string um;
      if (run("umount '" + mnt + "'", &um) != 0) found.push_back({"kernel-umount", head(um, 4)});
    }
  }
  return found;
}

Status write_sparse_image(
    const std::string& path, uint64_t size,
    const std::function<void(const std::function<void(uint64_t, const uint8_t*, size_t)>&)>& fill) {
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(errno, "cannot create {}: {}", path, std::strerror(errno));
  Status st;
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) st = fail(errno, "cannot size {}: {}", path, std::strerror(errno));
  if (st)
    fill([&](uint64_t off, const uint8_t* data, size_t len) {
      if (!st) return;
      for (size_t done = 0; done < len;) {
        const ssize_t n = ::pwrite(fd, data + done, len - done, static_cast<off_t>(off + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          st = fail(errno, "cannot write {}: {}", path, std::strerror(errno));
          return;
        }
        done += static_cast<size_t>(n);
      }
    });
  ::close(fd);
  return st;
}

}  // namespace ubtrfs::crash
