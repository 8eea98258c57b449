// Helpers shared by the POSIX conformance suite (tests/posix/). The suite runs against a mounted
// filesystem: UBTRFS_POSIX_DIR names a directory on it, and every test case works inside its own
// fresh subdirectory (TestDir) that is removed when the case ends.
//
// Conventions:
// - err(rc) turns a syscall result into an Errno: 0 on success, errno on failure, so a check reads
//   CHECK(err(::mkdir(p, 0755)) == EEXIST) and a failure prints the errno by name.
// - run_as() forks a child that drops to another uid/gid and returns the values the child computed;
//   the parent makes the assertions (Catch2 assertions inside the child would be lost).
// - tick() sleeps long enough for the kernel's coarse clock to advance, so a timestamp that must
//   change is observably different.
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace posix_test {

// An errno value (0 for success) that Catch2 prints by name.
struct Errno {
  int value;
  friend bool operator==(Errno a, Errno b) { return a.value == b.value; }
  friend bool operator==(Errno a, int b) { return a.value == b; }
};

// 0 when rc >= 0, else the errno the failing call set. Pass the syscall directly: err(::open(...)).
inline Errno err(long rc) { return Errno{rc < 0 ? errno : 0}; }

// The nobody user and group used for the non-root permission tests.
inline constexpr uid_t kNobody = 65534;
inline constexpr gid_t kNogroup = 65534;

// A closing file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A fresh directory <UBTRFS_POSIX_DIR>/t-<pid>-<n> (mode 0755, umask set to 022) for one test case;
// the destructor removes it recursively. Fails the test case if UBTRFS_POSIX_DIR is unset.
class TestDir {
 public:
  TestDir();
  ~TestDir();
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name.
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }
  const char* c_str() const { return path_.c_str(); }
  // An O_DIRECTORY descriptor of the test directory, for the *at() calls.
  int fd() const { return fd_.get(); }

 private:
  std::string path_;
  Fd fd_;
};

// The root of the directory under test (UBTRFS_POSIX_DIR); FAILs when unset.
std::string posix_root();

// Removes a tree (no assertions; used for cleanup).
void remove_tree(const std::string& path);

// Creates (or truncates) path with the given content and exactly the given mode (not masked by
// the umask); REQUIREs success.
void write_file(const std::string& path, std::string_view data, mode_t mode = 0644);
// The whole content of path; REQUIREs success.
std::string read_file(const std::string& path);
// The whole content readable through fd from offset 0.
std::string read_fd(int fd);

// lstat()/stat() that REQUIRE success.
struct stat lstat_of(const std::string& path);
struct stat stat_of(const std::string& path);
struct stat fstat_of(int fd);
bool exists(const std::string& path);  // lstat succeeds

// Entry names of a directory excluding "." and "..", in readdir order; REQUIREs opendir success.
std::vector<std::string> list_dir(const std::string& path);

// -1 when a and b are equal, else the first offset where they differ (the shorter size when one is
// a prefix of the other). Use it for large contents so that a failure prints a number, not megabytes.
long first_difference(std::string_view a, std::string_view b);

// Deterministic pseudo-random bytes (not compressible), for content checks.
std::string pattern(size_t n, uint32_t seed = 1);

// Sleeps 20 ms so that coarse kernel timestamps advance.
void tick();
bool ts_equal(const struct timespec& a, const struct timespec& b);
bool ts_after(const struct timespec& a, const struct timespec& b);  // a later than b

// Runs fn in a child process with uid/gid (no supplementary groups) and returns fn's values.
// fn must not use Catch2 assertions. REQUIREs that the child ran to completion.
std::vector<long> run_as(uid_t uid, gid_t gid, const std::function<std::vector<long>()>& fn);

// Errno value as a long, for run_as() children: 0 on success, errno on failure.
inline long err_l(long rc) { return rc < 0 ? errno : 0; }

// Sets the process umask for the lifetime of the guard.
class UmaskGuard {
 public:
  explicit UmaskGuard(mode_t m) : old_(::umask(m)) {}
  ~UmaskGuard() { ::umask(old_); }

 private:
  mode_t old_;
};

}  // namespace posix_test

namespace Catch {
template <>
struct StringMaker<posix_test::Errno> {
  static std::string convert(const posix_test::Errno& e);
};
}  // namespace Catch
