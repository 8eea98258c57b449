// Implementation of the POSIX suite helpers (see posix_util.h).
#include "posix_util.h"

#include <dirent.h>
#include <grp.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace posix_test {

std::string posix_root() {
  const char* root = std::getenv("UBTRFS_POSIX_DIR");
  if (root == nullptr || *root == '\0') {
    FAIL("UBTRFS_POSIX_DIR is not set: point it at a directory on the filesystem under test "
         "(tests/oracle/posix_kernel_test.sh does this)");
  }
  struct stat st;
  if (::stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
    FAIL("UBTRFS_POSIX_DIR=" << root << " is not a directory");
  }
  return root;
}

TestDir::TestDir() {
  static unsigned counter = 0;
  const std::string root = posix_root();
  ::umask(022);
  for (;;) {
    path_ = root + "/t-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    if (::mkdir(path_.c_str(), 0755) == 0) break;
    if (errno != EEXIST) FAIL("mkdir " << path_ << ": " << std::strerror(errno));
  }
  // Explicit mode: the non-root tests need to traverse it whatever the umask was.
  ::chmod(path_.c_str(), 0755);
  fd_.reset(::open(path_.c_str(), O_RDONLY | O_DIRECTORY));
  if (!fd_.valid()) FAIL("open " << path_ << ": " << std::strerror(errno));
}

TestDir::~TestDir() {
  fd_.reset();
  remove_tree(path_);
}

namespace {

// Removes `name` in the directory `parent`, descending into directories by descriptor so that trees
// deeper than PATH_MAX come apart too.
void remove_at(int parent, const char* name) {
  if (::unlinkat(parent, name, 0) == 0 || errno == ENOENT) return;
  int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (fd < 0) return;
  for (int pass = 0; pass < 4; ++pass) {
    int scan = ::dup(fd);
    DIR* dir = scan < 0 ? nullptr : ::fdopendir(scan);
    if (dir == nullptr) break;
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(std::move(n));
    }
    ::closedir(dir);
    if (names.empty()) break;
    for (const std::string& n : names) remove_at(fd, n.c_str());
  }
  ::close(fd);
  ::unlinkat(parent, name, AT_REMOVEDIR);
}

}  // namespace

void remove_tree(const std::string& path) { remove_at(AT_FDCWD, path.c_str()); }

void write_file(const std::string& path, std::string_view data, mode_t mode) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode));
  INFO("open " << path << ": " << std::strerror(errno));
  REQUIRE(fd.valid());
  // The exact mode, whatever the umask: the permission tests depend on it.
  REQUIRE(err(::fchmod(fd.get(), mode)) == 0);
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    INFO("write " << path << ": " << std::strerror(errno));
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
}

std::string read_fd(int fd) {
  std::string out;
  char buf[65536];
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    REQUIRE(n >= 0);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

std::string read_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY));
  INFO("open " << path << ": " << std::strerror(errno));
  REQUIRE(fd.valid());
  return read_fd(fd.get());
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  INFO("lstat " << path);
  REQUIRE(err(::lstat(path.c_str(), &st)) == 0);
  return st;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  INFO("stat " << path);
  REQUIRE(err(::stat(path.c_str(), &st)) == 0);
  return st;
}

struct stat fstat_of(int fd) {
  struct stat st {};
  REQUIRE(err(::fstat(fd, &st)) == 0);
  return st;
}

bool exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

std::vector<std::string> list_dir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  INFO("opendir " << path << ": " << std::strerror(errno));
  REQUIRE(d != nullptr);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

long first_difference(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return static_cast<long>(i);
  return a.size() == b.size() ? -1 : static_cast<long>(n);
}

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 12345;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

void tick() {
  struct timespec ts {0, 20 * 1000 * 1000};
  ::nanosleep(&ts, nullptr);
}

bool ts_equal(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool ts_after(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec > b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec > b.tv_nsec);
}

std::vector<long> run_as(uid_t uid, gid_t gid, const std::function<std::vector<long>()>& fn) {
  int pipefd[2];
  REQUIRE(::pipe(pipefd) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(100);
    std::vector<long> out;
    try {
      out = fn();
    } catch (...) {
      ::_exit(101);
    }
    const char* p = reinterpret_cast<const char*>(out.data());
    size_t left = out.size() * sizeof(long);
    while (left > 0) {
      ssize_t n = ::write(pipefd[1], p, left);
      if (n <= 0) ::_exit(102);
      p += n;
      left -= static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string raw;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("child exit status " << status << " (100: could not drop privileges, 101: exception)");
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  std::vector<long> out(raw.size() / sizeof(long));
  std::memcpy(out.data(), raw.data(), out.size() * sizeof(long));
  return out;
}

}  // namespace posix_test

std::string Catch::StringMaker<posix_test::Errno>::convert(const posix_test::Errno& e) {
  if (e.value == 0) return "0 (success)";
  const char* name = ::strerrorname_np(e.value);
  return name ? std::string(name) : "errno " + std::to_string(e.value);
}
