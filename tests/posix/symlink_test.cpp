// POSIX suite: symlink and readlink — exact targets (binary bytes, up to 4095 bytes, ENAMETOOLONG
// beyond), readlink truncation and EINVAL, dangling links, loops and chains (ELOOP at 41 links,
// O_NOFOLLOW), and symlinks used as path components.
#include "posix_util.h"

#include <cstring>

using namespace posix_test;

namespace {

std::string readlink_str(const std::string& path) {
  std::vector<char> buf(8192);
  ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
  REQUIRE(n >= 0);
  return std::string(buf.data(), static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("readlink returns the exact target without a terminating NUL", "[symlink]") {
  TestDir d;
  REQUIRE(err(::symlink("../some/target", (d / "l").c_str())) == 0);
  char buf[64];
  std::memset(buf, 'Z', sizeof buf);
  CHECK(::readlink((d / "l").c_str(), buf, sizeof buf) == 14);
  CHECK(std::string(buf, 14) == "../some/target");
  CHECK(buf[14] == 'Z');
  CHECK(S_ISLNK(lstat_of(d / "l").st_mode));
}

TEST_CASE("readlink into a small buffer truncates without error", "[symlink]") {
  TestDir d;
  REQUIRE(err(::symlink("abcdefgh", (d / "l").c_str())) == 0);
  char buf[3];
  CHECK(::readlink((d / "l").c_str(), buf, sizeof buf) == 3);
  CHECK(std::string(buf, 3) == "abc");
}

TEST_CASE("symlink targets of 1, 255, 1000 and 4095 bytes round-trip", "[symlink]") {
  TestDir d;
  for (size_t len : {size_t{1}, size_t{255}, size_t{1000}, size_t{4095}}) {
    std::string target;
    while (target.size() < len) target += "dir/";
    target.resize(len);
    if (target.back() == '/') target.back() = 'x';
    const std::string name = "l" + std::to_string(len);
    INFO("target length " << len);
    CHECK(err(::symlink(target.c_str(), (d / name).c_str())) == 0);
    CHECK(readlink_str(d / name) == target);
    CHECK(lstat_of(d / name).st_size == static_cast<off_t>(len));
  }
}

TEST_CASE("a symlink target of 4096 bytes fails with ENAMETOOLONG", "[symlink]") {
  TestDir d;
  const std::string target(4096, 'a');
  CHECK(err(::symlink(target.c_str(), (d / "l").c_str())) == ENAMETOOLONG);
  CHECK_FALSE(exists(d / "l"));
}

TEST_CASE("symlink targets keep arbitrary bytes", "[symlink]") {
  TestDir d;
  std::string target;
  for (int c = 1; c < 256; ++c) target += static_cast<char>(c);
  CHECK(err(::symlink(target.c_str(), (d / "l").c_str())) == 0);
  CHECK(readlink_str(d / "l") == target);
}

TEST_CASE("readlink of a non-symlink fails with EINVAL and of a missing name with ENOENT",
          "[symlink]") {
  TestDir d;
  write_file(d / "f", "");
  char buf[16];
  CHECK(err(::readlink((d / "f").c_str(), buf, sizeof buf)) == EINVAL);
  CHECK(err(::readlink(d.c_str(), buf, sizeof buf)) == EINVAL);
  CHECK(err(::readlink((d / "missing").c_str(), buf, sizeof buf)) == ENOENT);
}

TEST_CASE("symlink onto an existing name fails with EEXIST and an empty target with ENOENT",
          "[symlink]") {
  TestDir d;
  write_file(d / "f", "keep");
  CHECK(err(::symlink("x", (d / "f").c_str())) == EEXIST);
  CHECK(err(::symlink("", (d / "empty").c_str())) == ENOENT);
  CHECK(read_file(d / "f") == "keep");
  CHECK_FALSE(exists(d / "empty"));
}

TEST_CASE("a dangling symlink fails stat with ENOENT but lstat succeeds", "[symlink]") {
  TestDir d;
  REQUIRE(err(::symlink("nowhere", (d / "l").c_str())) == 0);
  struct stat st;
  CHECK(err(::stat((d / "l").c_str(), &st)) == ENOENT);
  CHECK(err(::lstat((d / "l").c_str(), &st)) == 0);
  CHECK(err(::open((d / "l").c_str(), O_RDONLY)) == ENOENT);
}

TEST_CASE("symlink loops fail path resolution with ELOOP", "[symlink]") {
  TestDir d;
  REQUIRE(err(::symlink("b", (d / "a").c_str())) == 0);
  REQUIRE(err(::symlink("a", (d / "b").c_str())) == 0);
  REQUIRE(err(::symlink("self", (d / "self").c_str())) == 0);
  struct stat st;
  CHECK(err(::stat((d / "a").c_str(), &st)) == ELOOP);
  CHECK(err(::open((d / "a").c_str(), O_RDONLY)) == ELOOP);
  CHECK(err(::stat((d / "self").c_str(), &st)) == ELOOP);
  CHECK(err(::stat((d / "a/x").c_str(), &st)) == ELOOP);
  CHECK(err(::open((d / "self").c_str(), O_CREAT | O_WRONLY, 0644)) == ELOOP);
  CHECK(err(::lstat((d / "a").c_str(), &st)) == 0);
}

TEST_CASE("a chain of 40 symlinks resolves and a chain of 41 fails with ELOOP", "[symlink]") {
  TestDir d;
  write_file(d / "target", "end");
  // c0 -> target, ci -> c(i-1): following ci crosses i+1 links.
  REQUIRE(err(::symlink("target", (d / "c0").c_str())) == 0);
  for (int i = 1; i <= 45; ++i)
    REQUIRE(err(::symlink(("c" + std::to_string(i - 1)).c_str(), (d / ("c" + std::to_string(i))).c_str())) == 0);
  CHECK(read_file(d / "c39") == "end");
  struct stat st;
  CHECK(err(::stat((d / "c40").c_str(), &st)) == ELOOP);
  CHECK(err(::open((d / "c45").c_str(), O_RDONLY)) == ELOOP);
}

TEST_CASE("O_NOFOLLOW on a symlink fails with ELOOP even when the target exists", "[symlink]") {
  TestDir d;
  write_file(d / "f", "x");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::open((d / "l").c_str(), O_RDONLY | O_NOFOLLOW)) == ELOOP);
  CHECK(err(::open((d / "l").c_str(), O_WRONLY | O_NOFOLLOW | O_CREAT, 0644)) == ELOOP);
  // O_NOFOLLOW only concerns the last component.
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  write_file(d / "dir/g", "g");
  REQUIRE(err(::symlink("dir", (d / "dl").c_str())) == 0);
  Fd fd(::open((d / "dl/g").c_str(), O_RDONLY | O_NOFOLLOW));
  CHECK(fd.valid());
}

TEST_CASE("symlinks to directories work as path components, relative and absolute", "[symlink]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "real").c_str(), 0755)) == 0);
  write_file(d / "real/f", "via");
  REQUIRE(err(::symlink("real", (d / "rel").c_str())) == 0);
  REQUIRE(err(::symlink((d / "real").c_str(), (d / "abs").c_str())) == 0);
  CHECK(read_file(d / "rel/f") == "via");
  CHECK(read_file(d / "abs/f") == "via");
  CHECK(S_ISDIR(stat_of(d / "rel/").st_mode));
  CHECK(stat_of(d / "abs/..").st_ino == lstat_of(d.path()).st_ino);
  CHECK(err(::rmdir((d / "rel/").c_str())) == ENOTDIR);
}

TEST_CASE("a symlink's permission bits are 0777 and its owner is the creator", "[symlink]") {
  TestDir d;
  UmaskGuard um(077);
  REQUIRE(err(::symlink("t", (d / "l").c_str())) == 0);
  CHECK((lstat_of(d / "l").st_mode & 07777) == 0777);
  CHECK(lstat_of(d / "l").st_uid == ::geteuid());
}

TEST_CASE("readlinkat with an empty path reads an O_PATH descriptor of the link", "[symlink]") {
  TestDir d;
  REQUIRE(err(::symlink("target-text", (d / "l").c_str())) == 0);
  Fd fd(::open((d / "l").c_str(), O_PATH | O_NOFOLLOW));
  REQUIRE(fd.valid());
  char buf[32];
  CHECK(::readlinkat(fd.get(), "", buf, sizeof buf) == 11);
  CHECK(std::string(buf, 11) == "target-text");
}
