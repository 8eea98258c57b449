// POSIX suite: setattr — truncate/ftruncate up and down (extended ranges read as zeros, old data
// never reappears), chmod, chown/lchown as root (and the set-id bits it clears), utimensat with
// explicit times, UTIME_NOW and UTIME_OMIT, and the ctime/mtime rules of every operation.
#include "posix_util.h"

#include <ctime>

using namespace posix_test;

TEST_CASE("truncating down keeps the prefix and drops the rest", "[truncate]") {
  TestDir d;
  const std::string data = pattern(200000, 3);
  write_file(d / "f", data);
  CHECK(err(::truncate((d / "f").c_str(), 70001)) == 0);
  CHECK(lstat_of(d / "f").st_size == 70001);
  CHECK(first_difference(read_file(d / "f"), data.substr(0, 70001)) == -1);
  CHECK(err(::truncate((d / "f").c_str(), 0)) == 0);
  CHECK(read_file(d / "f").empty());
}

TEST_CASE("truncating up extends the file with zeros", "[truncate]") {
  TestDir d;
  write_file(d / "f", "abc");
  CHECK(err(::truncate((d / "f").c_str(), 300000)) == 0);
  const std::string all = read_file(d / "f");
  REQUIRE(all.size() == 300000u);
  CHECK(all.substr(0, 3) == "abc");
  CHECK(all.find_first_not_of('\0', 3) == std::string::npos);
}

TEST_CASE("data cut off by truncate does not reappear when the file grows again", "[truncate]") {
  TestDir d;
  write_file(d / "f", std::string(100000, 'x'));
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::ftruncate(fd.get(), 1000)) == 0);    // inside a block
  CHECK(err(::ftruncate(fd.get(), 100000)) == 0);  // grow back over the old data
  std::string all = read_fd(fd.get());
  REQUIRE(all.size() == 100000u);
  CHECK(all.find_first_not_of('x') == 1000u);
  CHECK(all.find_first_not_of('\0', 1000) == std::string::npos);
  // Growing by writing past the end must zero the tail of the old last block as well.
  CHECK(err(::ftruncate(fd.get(), 10)) == 0);
  CHECK(::pwrite(fd.get(), "y", 1, 9000) == 1);
  all = read_fd(fd.get());
  REQUIRE(all.size() == 9001u);
  CHECK(all.find_first_not_of('x') == 10u);
  CHECK(all.find_first_not_of('\0', 10) == 9000u);
}

TEST_CASE("truncate errors: EINVAL for a negative length or a read-only descriptor, EISDIR, ENOENT",
          "[truncate]") {
  TestDir d;
  write_file(d / "f", "abc");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::truncate((d / "f").c_str(), -1)) == EINVAL);
  CHECK(err(::truncate((d / "dir").c_str(), 0)) == EISDIR);
  CHECK(err(::truncate((d / "missing").c_str(), 0)) == ENOENT);
  Fd ro(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(ro.valid());
  CHECK(err(::ftruncate(ro.get(), 0)) == EINVAL);
  CHECK(lstat_of(d / "f").st_size == 3);
}

TEST_CASE("truncate that changes the size updates mtime and ctime", "[truncate][times]") {
  TestDir d;
  write_file(d / "f", "abcdef");
  struct stat before = lstat_of(d / "f");
  tick();
  REQUIRE(err(::truncate((d / "f").c_str(), 2)) == 0);
  struct stat after = lstat_of(d / "f");
  CHECK(ts_after(after.st_mtim, before.st_mtim));
  CHECK(ts_after(after.st_ctim, before.st_ctim));
  before = after;
  tick();
  Fd fd(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(fd.valid());
  REQUIRE(err(::ftruncate(fd.get(), 50000)) == 0);
  after = fstat_of(fd.get());
  CHECK(ts_after(after.st_mtim, before.st_mtim));
  CHECK(ts_after(after.st_ctim, before.st_ctim));
}

TEST_CASE("chmod sets the permission bits and updates ctime only", "[chmod][times]") {
  TestDir d;
  write_file(d / "f", "abc", 0644);
  const struct stat before = lstat_of(d / "f");
  tick();
  CHECK(err(::chmod((d / "f").c_str(), 04751)) == 0);
  const struct stat after = lstat_of(d / "f");
  CHECK((after.st_mode & 07777) == 04751);
  CHECK(S_ISREG(after.st_mode));
  CHECK(ts_after(after.st_ctim, before.st_ctim));
  CHECK(ts_equal(after.st_mtim, before.st_mtim));
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(err(::fchmod(fd.get(), 0600)) == 0);
  CHECK((lstat_of(d / "f").st_mode & 07777) == 0600);
}

TEST_CASE("chmod through a symlink changes the target, not the link", "[chmod]") {
  TestDir d;
  write_file(d / "f", "abc", 0644);
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::chmod((d / "l").c_str(), 0600)) == 0);
  CHECK((lstat_of(d / "f").st_mode & 07777) == 0600);
  CHECK((lstat_of(d / "l").st_mode & 07777) == 0777);
}

TEST_CASE("chmod of a missing file fails with ENOENT", "[chmod]") {
  TestDir d;
  CHECK(err(::chmod((d / "missing").c_str(), 0644)) == ENOENT);
}

TEST_CASE("chown as root sets owner and group and updates ctime", "[chown][times]") {
  TestDir d;
  write_file(d / "f", "abc");
  const struct stat before = lstat_of(d / "f");
  tick();
  CHECK(err(::chown((d / "f").c_str(), 1234, 5678)) == 0);
  const struct stat after = lstat_of(d / "f");
  CHECK(after.st_uid == 1234u);
  CHECK(after.st_gid == 5678u);
  CHECK(ts_after(after.st_ctim, before.st_ctim));
  CHECK(ts_equal(after.st_mtim, before.st_mtim));
  // -1 leaves a field unchanged.
  CHECK(err(::chown((d / "f").c_str(), -1, 42)) == 0);
  CHECK(lstat_of(d / "f").st_uid == 1234u);
  CHECK(lstat_of(d / "f").st_gid == 42u);
  CHECK(err(::chown((d / "f").c_str(), 7, -1)) == 0);
  CHECK(lstat_of(d / "f").st_uid == 7u);
  CHECK(lstat_of(d / "f").st_gid == 42u);
}

TEST_CASE("chown of a regular file clears the set-user-ID and set-group-ID bits", "[chown]") {
  TestDir d;
  write_file(d / "f", "abc");
  REQUIRE(err(::chmod((d / "f").c_str(), 06755)) == 0);
  CHECK(err(::chown((d / "f").c_str(), 1000, 1000)) == 0);
  CHECK((lstat_of(d / "f").st_mode & 07777) == 0755);
}

TEST_CASE("lchown changes the symlink and leaves its target alone", "[chown]") {
  TestDir d;
  write_file(d / "f", "abc");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::lchown((d / "l").c_str(), 321, 654)) == 0);
  CHECK(lstat_of(d / "l").st_uid == 321u);
  CHECK(lstat_of(d / "l").st_gid == 654u);
  CHECK(lstat_of(d / "f").st_uid == ::geteuid());
  CHECK(err(::chown((d / "l").c_str(), 111, 222)) == 0);
  CHECK(lstat_of(d / "f").st_uid == 111u);
  CHECK(lstat_of(d / "l").st_uid == 321u);
}

TEST_CASE("utimensat stores explicit atime and mtime to the nanosecond", "[utimes][times]") {
  TestDir d;
  write_file(d / "f", "abc");
  const struct stat before = lstat_of(d / "f");
  tick();
  struct timespec ts[2] = {{1000000000, 123456789}, {1500000000, 987654321}};
  CHECK(err(::utimensat(d.fd(), "f", ts, 0)) == 0);
  const struct stat st = lstat_of(d / "f");
  CHECK(st.st_atim.tv_sec == 1000000000);
  CHECK(st.st_atim.tv_nsec == 123456789);
  CHECK(st.st_mtim.tv_sec == 1500000000);
  CHECK(st.st_mtim.tv_nsec == 987654321);
  CHECK(ts_after(st.st_ctim, before.st_ctim));
}

TEST_CASE("utimensat accepts times before 1970 and far in the future", "[utimes]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct timespec ts[2] = {{-100000, 5}, {4102444800LL, 0}};  // 1969 and 2100
  CHECK(err(::utimensat(d.fd(), "f", ts, 0)) == 0);
  const struct stat st = lstat_of(d / "f");
  CHECK(st.st_atim.tv_sec == -100000);
  CHECK(st.st_atim.tv_nsec == 5);
  CHECK(st.st_mtim.tv_sec == 4102444800LL);
}

TEST_CASE("UTIME_OMIT leaves a time alone and UTIME_NOW sets it to the current time",
          "[utimes][times]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct timespec old[2] = {{1000000000, 1}, {1000000000, 2}};
  REQUIRE(err(::utimensat(d.fd(), "f", old, 0)) == 0);
  struct timespec now0;
  ::clock_gettime(CLOCK_REALTIME, &now0);
  struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  CHECK(err(::utimensat(d.fd(), "f", ts, 0)) == 0);
  struct stat st = lstat_of(d / "f");
  CHECK(ts_equal(st.st_atim, old[0]));
  CHECK(st.st_mtim.tv_sec >= now0.tv_sec - 1);
  CHECK(st.st_mtim.tv_sec <= now0.tv_sec + 5);
  struct timespec ts2[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  const struct timespec mtime = st.st_mtim;
  CHECK(err(::utimensat(d.fd(), "f", ts2, 0)) == 0);
  st = lstat_of(d / "f");
  CHECK(st.st_atim.tv_sec >= now0.tv_sec - 1);
  CHECK(ts_equal(st.st_mtim, mtime));
}

TEST_CASE("utimensat with both times UTIME_OMIT changes nothing, not even ctime", "[utimes][times]") {
  TestDir d;
  write_file(d / "f", "abc");
  const struct stat before = lstat_of(d / "f");
  tick();
  struct timespec ts[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
  CHECK(err(::utimensat(d.fd(), "f", ts, 0)) == 0);
  const struct stat after = lstat_of(d / "f");
  CHECK(ts_equal(after.st_ctim, before.st_ctim));
  CHECK(ts_equal(after.st_mtim, before.st_mtim));
}

TEST_CASE("utimensat with a null times array sets both times to now", "[utimes]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct timespec old[2] = {{1000000000, 0}, {1000000000, 0}};
  REQUIRE(err(::utimensat(d.fd(), "f", old, 0)) == 0);
  struct timespec now0;
  ::clock_gettime(CLOCK_REALTIME, &now0);
  CHECK(err(::utimensat(d.fd(), "f", nullptr, 0)) == 0);
  const struct stat st = lstat_of(d / "f");
  CHECK(st.st_atim.tv_sec >= now0.tv_sec - 1);
  CHECK(st.st_mtim.tv_sec >= now0.tv_sec - 1);
}

TEST_CASE("utimensat rejects a nanosecond field out of range with EINVAL", "[utimes]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct timespec ts[2] = {{0, 1000000000}, {0, 0}};
  CHECK(err(::utimensat(d.fd(), "f", ts, 0)) == EINVAL);
}

TEST_CASE("utimensat with AT_SYMLINK_NOFOLLOW sets the symlink's own times", "[utimes]") {
  TestDir d;
  write_file(d / "f", "abc");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  const struct stat target = lstat_of(d / "f");
  struct timespec ts[2] = {{1111111111, 0}, {1222222222, 0}};
  CHECK(err(::utimensat(d.fd(), "l", ts, AT_SYMLINK_NOFOLLOW)) == 0);
  CHECK(lstat_of(d / "l").st_mtim.tv_sec == 1222222222);
  CHECK(ts_equal(lstat_of(d / "f").st_mtim, target.st_mtim));
  struct timespec fts[2] = {{1333333333, 0}, {1444444444, 0}};
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(err(::futimens(fd.get(), fts)) == 0);
  CHECK(lstat_of(d / "f").st_mtim.tv_sec == 1444444444);
}

TEST_CASE("write updates mtime and ctime; read changes neither", "[times]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct stat before = lstat_of(d / "f");
  tick();
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  char buf[8];
  CHECK(::read(fd.get(), buf, sizeof buf) == 3);
  struct stat after = fstat_of(fd.get());
  CHECK(ts_equal(after.st_mtim, before.st_mtim));
  CHECK(ts_equal(after.st_ctim, before.st_ctim));
  tick();
  CHECK(::pwrite(fd.get(), "x", 1, 1) == 1);
  after = fstat_of(fd.get());
  CHECK(ts_after(after.st_mtim, before.st_mtim));
  CHECK(ts_after(after.st_ctim, before.st_ctim));
}

TEST_CASE("link, unlink and rename update the inode's ctime", "[times]") {
  TestDir d;
  write_file(d / "f", "abc");
  struct stat prev = lstat_of(d / "f");
  tick();
  REQUIRE(err(::link((d / "f").c_str(), (d / "g").c_str())) == 0);
  struct stat cur = lstat_of(d / "f");
  CHECK(ts_after(cur.st_ctim, prev.st_ctim));
  CHECK(ts_equal(cur.st_mtim, prev.st_mtim));
  prev = cur;
  tick();
  REQUIRE(err(::unlink((d / "g").c_str())) == 0);
  cur = lstat_of(d / "f");
  CHECK(ts_after(cur.st_ctim, prev.st_ctim));
  prev = cur;
  tick();
  REQUIRE(err(::rename((d / "f").c_str(), (d / "h").c_str())) == 0);
  cur = lstat_of(d / "h");
  CHECK(ts_after(cur.st_ctim, prev.st_ctim));
  CHECK(ts_equal(cur.st_mtim, prev.st_mtim));
}

TEST_CASE("adding or removing a directory entry updates the directory's mtime and ctime",
          "[times]") {
  TestDir d;
  auto dir_times_advance = [&](const std::function<void()>& op) {
    const struct stat before = lstat_of(d.path());
    tick();
    op();
    const struct stat after = lstat_of(d.path());
    CHECK(ts_after(after.st_mtim, before.st_mtim));
    CHECK(ts_after(after.st_ctim, before.st_ctim));
  };
  dir_times_advance([&] { write_file(d / "f", "x"); });
  dir_times_advance([&] { REQUIRE(err(::mkdir((d / "sub").c_str(), 0755)) == 0); });
  dir_times_advance([&] { REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0); });
  dir_times_advance([&] { REQUIRE(err(::link((d / "f").c_str(), (d / "g").c_str())) == 0); });
  dir_times_advance([&] { REQUIRE(err(::rename((d / "g").c_str(), (d / "h").c_str())) == 0); });
  dir_times_advance([&] { REQUIRE(err(::unlink((d / "h").c_str())) == 0); });
  dir_times_advance([&] { REQUIRE(err(::rmdir((d / "sub").c_str())) == 0); });
  dir_times_advance([&] { REQUIRE(err(::mknod((d / "p").c_str(), S_IFIFO | 0644, 0)) == 0); });
}

TEST_CASE("writing to a file does not change its directory's mtime", "[times]") {
  TestDir d;
  write_file(d / "f", "x");
  const struct stat before = lstat_of(d.path());
  tick();
  Fd fd(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "yy", 2) == 2);
  CHECK(ts_equal(lstat_of(d.path()).st_mtim, before.st_mtim));
}
