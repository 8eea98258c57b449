// POSIX suite: create and open — O_CREAT (mode and umask), O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY,
// O_NOFOLLOW, O_TMPFILE, opening directories for writing, access modes enforced on the descriptor,
// and close (flush/release).
#include "posix_util.h"

#include <cstring>

using namespace posix_test;

TEST_CASE("O_CREAT creates a regular file with the mode masked by the umask", "[create]") {
  TestDir d;
  {
    UmaskGuard um(077);
    Fd fd(::open((d / "a").c_str(), O_CREAT | O_WRONLY, 0666));
    REQUIRE(fd.valid());
  }
  {
    UmaskGuard um(0);
    Fd fd(::open((d / "b").c_str(), O_CREAT | O_WRONLY, 0751));
    REQUIRE(fd.valid());
  }
  CHECK(S_ISREG(lstat_of(d / "a").st_mode));
  CHECK((lstat_of(d / "a").st_mode & 07777) == 0600);
  CHECK((lstat_of(d / "b").st_mode & 07777) == 0751);
}

TEST_CASE("O_CREAT|O_EXCL on an existing name fails with EEXIST", "[create]") {
  TestDir d;
  write_file(d / "f", "keep");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  REQUIRE(err(::symlink("nowhere", (d / "dangling").c_str())) == 0);
  CHECK(err(::open((d / "f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == EEXIST);
  CHECK(err(::open((d / "dir").c_str(), O_CREAT | O_EXCL | O_RDONLY, 0644)) == EEXIST);
  // O_EXCL does not follow the symlink, even a dangling one.
  CHECK(err(::open((d / "dangling").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == EEXIST);
  CHECK_FALSE(exists(d / "nowhere"));
  CHECK(read_file(d / "f") == "keep");
}

TEST_CASE("O_CREAT without O_EXCL opens an existing file without changing it", "[create]") {
  TestDir d;
  write_file(d / "f", "keep", 0600);
  const ino_t ino = lstat_of(d / "f").st_ino;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0777));
  REQUIRE(fd.valid());
  CHECK(fstat_of(fd.get()).st_ino == ino);
  CHECK((fstat_of(fd.get()).st_mode & 07777) == 0600);
  CHECK(read_fd(fd.get()) == "keep");
}

TEST_CASE("O_CREAT through a dangling symlink creates the symlink's target", "[create]") {
  TestDir d;
  REQUIRE(err(::symlink("target", (d / "link").c_str())) == 0);
  Fd fd(::open((d / "link").c_str(), O_CREAT | O_WRONLY, 0644));
  REQUIRE(fd.valid());
  CHECK(S_ISREG(lstat_of(d / "target").st_mode));
  CHECK(S_ISLNK(lstat_of(d / "link").st_mode));
}

TEST_CASE("O_CREAT in a missing directory fails with ENOENT and under a file with ENOTDIR",
          "[create]") {
  TestDir d;
  write_file(d / "file", "");
  CHECK(err(::open((d / "nodir/f").c_str(), O_CREAT | O_WRONLY, 0644)) == ENOENT);
  CHECK(err(::open((d / "file/f").c_str(), O_CREAT | O_WRONLY, 0644)) == ENOTDIR);
}

TEST_CASE("O_CREAT on a name with a trailing slash fails with EISDIR", "[create]") {
  TestDir d;
  CHECK(err(::open((d / "new/").c_str(), O_CREAT | O_WRONLY, 0644)) == EISDIR);
  CHECK_FALSE(exists(d / "new"));
}

TEST_CASE("O_TRUNC empties an existing file and updates mtime and ctime", "[create]") {
  TestDir d;
  write_file(d / "f", pattern(10000));
  const struct stat before = lstat_of(d / "f");
  tick();
  Fd fd(::open((d / "f").c_str(), O_WRONLY | O_TRUNC));
  REQUIRE(fd.valid());
  const struct stat after = fstat_of(fd.get());
  CHECK(after.st_size == 0);
  CHECK(after.st_ino == before.st_ino);
  CHECK(ts_after(after.st_mtim, before.st_mtim));
  CHECK(ts_after(after.st_ctim, before.st_ctim));
}

TEST_CASE("creat() truncates an existing file", "[create]") {
  TestDir d;
  write_file(d / "f", "old content");
  Fd fd(::creat((d / "f").c_str(), 0644));
  REQUIRE(fd.valid());
  CHECK(fstat_of(fd.get()).st_size == 0);
}

TEST_CASE("O_APPEND writes always go to the end of the file", "[create]") {
  TestDir d;
  write_file(d / "f", "0123456789");
  Fd fd(::open((d / "f").c_str(), O_WRONLY | O_APPEND));
  REQUIRE(fd.valid());
  REQUIRE(::lseek(fd.get(), 0, SEEK_SET) == 0);
  CHECK(::write(fd.get(), "ab", 2) == 2);
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 12);
  REQUIRE(::lseek(fd.get(), 3, SEEK_SET) == 3);
  CHECK(::write(fd.get(), "cd", 2) == 2);
  CHECK(read_file(d / "f") == "0123456789abcd");
  // A second descriptor that extends the file moves the append point.
  Fd other(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(other.valid());
  CHECK(::pwrite(other.get(), "XY", 2, 20) == 2);
  CHECK(::write(fd.get(), "e", 1) == 1);
  CHECK(lstat_of(d / "f").st_size == 23);
  CHECK(read_file(d / "f").substr(22) == "e");
}

TEST_CASE("O_DIRECTORY on a non-directory fails with ENOTDIR", "[open]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::mkfifo((d / "p").c_str(), 0644)) == 0);
  CHECK(err(::open((d / "f").c_str(), O_RDONLY | O_DIRECTORY)) == ENOTDIR);
  CHECK(err(::open((d / "p").c_str(), O_RDONLY | O_DIRECTORY | O_NONBLOCK)) == ENOTDIR);
  Fd dir(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  CHECK(dir.valid());
}

TEST_CASE("opening a directory for writing fails with EISDIR", "[open]") {
  TestDir d;
  CHECK(err(::open(d.c_str(), O_WRONLY)) == EISDIR);
  CHECK(err(::open(d.c_str(), O_RDWR)) == EISDIR);
  CHECK(err(::open(d.c_str(), O_RDONLY | O_TRUNC)) == EISDIR);
  CHECK(err(::open(d.c_str(), O_CREAT | O_RDONLY, 0644)) == EISDIR);
}

TEST_CASE("O_NOFOLLOW on a symlink fails with ELOOP and follows nothing", "[open]") {
  TestDir d;
  write_file(d / "f", "x");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::open((d / "l").c_str(), O_RDONLY | O_NOFOLLOW)) == ELOOP);
  Fd ok(::open((d / "f").c_str(), O_RDONLY | O_NOFOLLOW));
  CHECK(ok.valid());
}

TEST_CASE("a descriptor only allows the access mode it was opened with", "[open]") {
  TestDir d;
  write_file(d / "f", "content");
  char buf[8];
  Fd ro(::open((d / "f").c_str(), O_RDONLY));
  Fd wo(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(ro.valid());
  REQUIRE(wo.valid());
  CHECK(err(::write(ro.get(), "x", 1)) == EBADF);
  CHECK(err(::read(wo.get(), buf, sizeof buf)) == EBADF);
  CHECK(::read(ro.get(), buf, sizeof buf) == 7);
  CHECK(::write(wo.get(), "C", 1) == 1);
  CHECK(read_file(d / "f") == "Content");
}

TEST_CASE("opening a missing file without O_CREAT fails with ENOENT", "[open]") {
  TestDir d;
  CHECK(err(::open((d / "nope").c_str(), O_RDONLY)) == ENOENT);
  CHECK(err(::open((d / "nope").c_str(), O_WRONLY | O_TRUNC)) == ENOENT);
  CHECK_FALSE(exists(d / "nope"));
}

// [libfuse-3.14-gap]: O_TMPFILE reaches a FUSE filesystem only as FUSE_TMPFILE (kernel 6.4,
// libfuse 3.15); with Debian 12's libfuse 3.14 the kernel answers EOPNOTSUPP itself.
TEST_CASE("O_TMPFILE makes an unnamed file that linkat can give a name", "[open][libfuse-3.14-gap]") {
  TestDir d;
  Fd fd(::open(d.c_str(), O_TMPFILE | O_RDWR, 0600));
  INFO("O_TMPFILE: " << std::strerror(errno));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "tmp", 3) == 3);
  CHECK(fstat_of(fd.get()).st_nlink == 0);
  CHECK(list_dir(d.path()).empty());
  const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
  CHECK(err(::linkat(AT_FDCWD, proc.c_str(), d.fd(), "named", AT_SYMLINK_FOLLOW)) == 0);
  CHECK(fstat_of(fd.get()).st_nlink == 1);
  CHECK(read_file(d / "named") == "tmp");
}

TEST_CASE("close releases the descriptor and a second close fails with EBADF", "[close]") {
  TestDir d;
  int fd = ::open((d / "f").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  CHECK(::write(fd, "abc", 3) == 3);
  CHECK(err(::close(fd)) == 0);
  CHECK(err(::close(fd)) == EBADF);
  CHECK(read_file(d / "f") == "abc");
}

TEST_CASE("data written through one descriptor is visible through another at once", "[open]") {
  TestDir d;
  Fd a(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  Fd b(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(a.valid());
  REQUIRE(b.valid());
  CHECK(::write(a.get(), "hello", 5) == 5);
  char buf[8] = {};
  CHECK(::pread(b.get(), buf, sizeof buf, 0) == 5);
  CHECK(std::string(buf, 5) == "hello");
  CHECK(fstat_of(b.get()).st_size == 5);
}
