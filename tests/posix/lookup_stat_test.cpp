// POSIX suite: lookup and getattr — stat/lstat/fstat/fstatat/statx of every file type, the errors of
// path lookup (ENOENT, ENOTDIR, empty path), and the attributes a new inode starts with.
#include "posix_util.h"

#include <sys/sysmacros.h>

using namespace posix_test;

namespace {

// Creates one node of every file type in d: reg, dir, symlink (to reg), fifo, sock, chr, blk.
void make_every_type(const TestDir& d) {
  write_file(d / "reg", "data");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  REQUIRE(err(::symlink("reg", (d / "symlink").c_str())) == 0);
  REQUIRE(err(::mknod((d / "fifo").c_str(), S_IFIFO | 0644, 0)) == 0);
  REQUIRE(err(::mknod((d / "sock").c_str(), S_IFSOCK | 0644, 0)) == 0);
  REQUIRE(err(::mknod((d / "chr").c_str(), S_IFCHR | 0644, makedev(1, 3))) == 0);
  REQUIRE(err(::mknod((d / "blk").c_str(), S_IFBLK | 0644, makedev(7, 0))) == 0);
}

}  // namespace

TEST_CASE("lstat reports the type of every kind of file", "[lookup]") {
  TestDir d;
  make_every_type(d);
  CHECK(S_ISREG(lstat_of(d / "reg").st_mode));
  CHECK(S_ISDIR(lstat_of(d / "dir").st_mode));
  CHECK(S_ISLNK(lstat_of(d / "symlink").st_mode));
  CHECK(S_ISFIFO(lstat_of(d / "fifo").st_mode));
  CHECK(S_ISSOCK(lstat_of(d / "sock").st_mode));
  CHECK(S_ISCHR(lstat_of(d / "chr").st_mode));
  CHECK(S_ISBLK(lstat_of(d / "blk").st_mode));
}

TEST_CASE("stat follows a symlink and lstat does not", "[lookup]") {
  TestDir d;
  make_every_type(d);
  const struct stat target = lstat_of(d / "reg");
  const struct stat via = stat_of(d / "symlink");
  CHECK(S_ISREG(via.st_mode));
  CHECK(via.st_ino == target.st_ino);
  CHECK(lstat_of(d / "symlink").st_ino != target.st_ino);
}

TEST_CASE("every name in a directory has a distinct inode number on one device", "[lookup]") {
  TestDir d;
  make_every_type(d);
  const char* names[] = {"reg", "dir", "symlink", "fifo", "sock", "chr", "blk"};
  std::vector<ino_t> inos;
  for (const char* n : names) {
    const struct stat st = lstat_of(d / n);
    CHECK(st.st_dev == lstat_of(d.path()).st_dev);
    for (ino_t seen : inos) CHECK(seen != st.st_ino);
    inos.push_back(st.st_ino);
  }
}

TEST_CASE("lookup of a missing name fails with ENOENT", "[lookup]") {
  TestDir d;
  struct stat st;
  CHECK(err(::stat((d / "missing").c_str(), &st)) == ENOENT);
  CHECK(err(::lstat((d / "missing").c_str(), &st)) == ENOENT);
  CHECK(err(::open((d / "missing").c_str(), O_RDONLY)) == ENOENT);
  CHECK(err(::stat((d / "missing/below").c_str(), &st)) == ENOENT);
  CHECK(err(::access((d / "missing").c_str(), F_OK)) == ENOENT);
}

TEST_CASE("lookup of an empty path fails with ENOENT", "[lookup]") {
  struct stat st;
  CHECK(err(::stat("", &st)) == ENOENT);
  CHECK(err(::lstat("", &st)) == ENOENT);
}

TEST_CASE("a path that continues through a regular file fails with ENOTDIR", "[lookup]") {
  TestDir d;
  write_file(d / "file", "x");
  struct stat st;
  CHECK(err(::stat((d / "file/below").c_str(), &st)) == ENOTDIR);
  CHECK(err(::stat((d / "file/").c_str(), &st)) == ENOTDIR);
  CHECK(err(::open((d / "file/").c_str(), O_RDONLY)) == ENOTDIR);
}

TEST_CASE("dot and dot-dot resolve to the directory and its parent", "[lookup]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "sub").c_str(), 0755)) == 0);
  CHECK(stat_of(d / "sub/.").st_ino == stat_of(d / "sub").st_ino);
  CHECK(stat_of(d / "sub/..").st_ino == stat_of(d.path()).st_ino);
  CHECK(stat_of(d / "sub/../sub/./.").st_ino == stat_of(d / "sub").st_ino);
}

TEST_CASE("a new regular file starts with nlink 1, size 0, the caller's ids and the masked mode",
          "[getattr]") {
  TestDir d;
  UmaskGuard um(022);
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_WRONLY, 0666));
  REQUIRE(fd.valid());
  const struct stat st = fstat_of(fd.get());
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0644);
  CHECK(st.st_nlink == 1);
  CHECK(st.st_size == 0);
  CHECK(st.st_blocks == 0);
  CHECK(st.st_uid == ::geteuid());
  CHECK(st.st_gid == ::getegid());
  CHECK(st.st_blksize > 0);
}

TEST_CASE("fstat, stat and fstatat agree on the same inode", "[getattr]") {
  TestDir d;
  write_file(d / "f", pattern(5000));
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  const struct stat a = fstat_of(fd.get());
  const struct stat b = stat_of(d / "f");
  struct stat c {};
  REQUIRE(err(::fstatat(d.fd(), "f", &c, AT_SYMLINK_NOFOLLOW)) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(b.st_ino == c.st_ino);
  CHECK(a.st_size == 5000);
  CHECK(b.st_size == 5000);
  CHECK(c.st_size == 5000);
  CHECK(a.st_mode == c.st_mode);
  CHECK(ts_equal(a.st_mtim, c.st_mtim));
}

TEST_CASE("fstatat with AT_EMPTY_PATH stats the descriptor itself", "[getattr]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_PATH));
  REQUIRE(fd.valid());
  struct stat st {};
  CHECK(err(::fstatat(fd.get(), "", &st, AT_EMPTY_PATH)) == 0);
  CHECK(st.st_ino == stat_of(d / "f").st_ino);
  CHECK(err(::fstatat(fd.get(), "", &st, 0)) == ENOENT);
}

TEST_CASE("a symlink's size is the length of its target", "[getattr]") {
  TestDir d;
  REQUIRE(err(::symlink("some/where/else", (d / "l").c_str())) == 0);
  CHECK(lstat_of(d / "l").st_size == 15);
}

TEST_CASE("inode numbers and attributes are stable across lookups", "[getattr]") {
  TestDir d;
  write_file(d / "f", "abc");
  const struct stat a = stat_of(d / "f");
  const struct stat b = stat_of(d / "f");
  CHECK(a.st_ino == b.st_ino);
  CHECK(ts_equal(a.st_ctim, b.st_ctim));
  CHECK(ts_equal(a.st_mtim, b.st_mtim));
}

// [libfuse-3.14-gap]: birth time reaches a FUSE filesystem only through FUSE_STATX (kernel 6.6,
// libfuse 3.16); Debian 12's libfuse 3.14 cannot answer it, so the ubtrfs run leaves this case out.
TEST_CASE("statx reports a birth time no later than the change time", "[getattr][btrfs][libfuse-3.14-gap]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct statx sx {};
  REQUIRE(err(::statx(d.fd(), "f", 0, STATX_BASIC_STATS | STATX_BTIME, &sx)) == 0);
  CHECK((sx.stx_mask & STATX_BTIME) != 0);
  CHECK(sx.stx_btime.tv_sec > 0);
  CHECK(sx.stx_btime.tv_sec <= sx.stx_ctime.tv_sec);
  CHECK(sx.stx_size == 3);
}

TEST_CASE("a btrfs directory reports nlink 1 and a size of twice its names' lengths",
          "[getattr][btrfs]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(lstat_of(d / "dir").st_nlink == 1);
  CHECK(lstat_of(d / "dir").st_size == 0);
  write_file(d / "dir/abc", "");
  REQUIRE(err(::mkdir((d / "dir/sub12").c_str(), 0755)) == 0);
  CHECK(lstat_of(d / "dir").st_nlink == 1);
  CHECK(lstat_of(d / "dir").st_size == 2 * (3 + 5));
  REQUIRE(err(::unlink((d / "dir/abc").c_str())) == 0);
  CHECK(lstat_of(d / "dir").st_size == 2 * 5);
}
