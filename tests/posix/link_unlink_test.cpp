// POSIX suite: link/linkat and unlink/unlinkat — link counts, shared content, EEXIST/EPERM/ENOENT,
// links to symlinks with and without AT_SYMLINK_FOLLOW, many long-named links in one directory
// (btrfs spills those into extended refs), EISDIR on unlinking a directory, and open-but-unlinked
// files.
#include "posix_util.h"

using namespace posix_test;

TEST_CASE("link adds a name for the same inode and raises nlink", "[link]") {
  TestDir d;
  write_file(d / "a", "shared");
  CHECK(err(::link((d / "a").c_str(), (d / "b").c_str())) == 0);
  const struct stat a = lstat_of(d / "a"), b = lstat_of(d / "b");
  CHECK(a.st_ino == b.st_ino);
  CHECK(a.st_nlink == 2);
  CHECK(b.st_nlink == 2);
  Fd fd(::open((d / "b").c_str(), O_WRONLY | O_APPEND));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "!", 1) == 1);
  CHECK(read_file(d / "a") == "shared!");
}

TEST_CASE("unlinking one of two names leaves the other with nlink 1", "[link][unlink]") {
  TestDir d;
  write_file(d / "a", "x");
  REQUIRE(err(::link((d / "a").c_str(), (d / "b").c_str())) == 0);
  CHECK(err(::unlink((d / "a").c_str())) == 0);
  CHECK_FALSE(exists(d / "a"));
  CHECK(lstat_of(d / "b").st_nlink == 1);
  CHECK(read_file(d / "b") == "x");
}

TEST_CASE("link across directories works", "[link]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "p1").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p2").c_str(), 0755)) == 0);
  write_file(d / "p1/f", "x");
  CHECK(err(::link((d / "p1/f").c_str(), (d / "p2/g").c_str())) == 0);
  CHECK(lstat_of(d / "p2/g").st_ino == lstat_of(d / "p1/f").st_ino);
  CHECK(err(::rmdir((d / "p1").c_str())) == ENOTEMPTY);
  CHECK(err(::unlink((d / "p1/f").c_str())) == 0);
  CHECK(err(::rmdir((d / "p1").c_str())) == 0);
  CHECK(read_file(d / "p2/g") == "x");
}

TEST_CASE("link to an existing name fails with EEXIST", "[link]") {
  TestDir d;
  write_file(d / "a", "a");
  write_file(d / "b", "b");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::link((d / "a").c_str(), (d / "b").c_str())) == EEXIST);
  CHECK(err(::link((d / "a").c_str(), (d / "dir").c_str())) == EEXIST);
  CHECK(err(::link((d / "a").c_str(), (d / "a").c_str())) == EEXIST);
  CHECK(lstat_of(d / "a").st_nlink == 1);
  CHECK(read_file(d / "b") == "b");
}

TEST_CASE("link of a directory fails with EPERM", "[link]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::link((d / "dir").c_str(), (d / "dir2").c_str())) == EPERM);
  CHECK_FALSE(exists(d / "dir2"));
}

TEST_CASE("link with a missing source or target directory fails with ENOENT", "[link]") {
  TestDir d;
  write_file(d / "a", "a");
  CHECK(err(::link((d / "missing").c_str(), (d / "x").c_str())) == ENOENT);
  CHECK(err(::link((d / "a").c_str(), (d / "nodir/x").c_str())) == ENOENT);
  CHECK(err(::link((d / "a").c_str(), (d / "a/x").c_str())) == ENOTDIR);
}

TEST_CASE("linkat links a symlink itself unless AT_SYMLINK_FOLLOW is given", "[link]") {
  TestDir d;
  write_file(d / "f", "x");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::linkat(d.fd(), "l", d.fd(), "l2", 0)) == 0);
  CHECK(S_ISLNK(lstat_of(d / "l2").st_mode));
  CHECK(lstat_of(d / "l2").st_ino == lstat_of(d / "l").st_ino);
  CHECK(lstat_of(d / "l").st_nlink == 2);
  CHECK(err(::linkat(d.fd(), "l", d.fd(), "f2", AT_SYMLINK_FOLLOW)) == 0);
  CHECK(S_ISREG(lstat_of(d / "f2").st_mode));
  CHECK(lstat_of(d / "f2").st_ino == lstat_of(d / "f").st_ino);
}

TEST_CASE("hundreds of long-named links in one directory are all counted and removable", "[link]") {
  TestDir d;
  write_file(d / "f", "x");
  const int kLinks = 300;
  auto name = [](int i) { return std::string(200, 'l') + std::to_string(i); };
  int made = 0;
  for (int i = 0; i < kLinks; ++i)
    if (::link((d / "f").c_str(), (d / name(i)).c_str()) == 0) ++made;
  CHECK(made == kLinks);
  CHECK(lstat_of(d / "f").st_nlink == kLinks + 1);
  CHECK(lstat_of(d / name(kLinks - 1)).st_ino == lstat_of(d / "f").st_ino);
  CHECK(list_dir(d.path()).size() == static_cast<size_t>(kLinks + 1));
  int removed = 0;
  for (int i = 0; i < kLinks; i += 2)
    if (::unlink((d / name(i)).c_str()) == 0) ++removed;
  CHECK(removed == kLinks / 2);
  CHECK(lstat_of(d / "f").st_nlink == kLinks / 2 + 1);
  CHECK_FALSE(exists(d / name(0)));
  CHECK(read_file(d / name(1)) == "x");
}

TEST_CASE("unlink of a directory fails with EISDIR on Linux", "[unlink]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::unlink((d / "dir").c_str())) == EISDIR);
  CHECK(S_ISDIR(lstat_of(d / "dir").st_mode));
}

TEST_CASE("unlink of a missing name fails with ENOENT and with a trailing slash ENOTDIR",
          "[unlink]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(err(::unlink((d / "missing").c_str())) == ENOENT);
  CHECK(err(::unlink((d / "f/").c_str())) == ENOTDIR);
  CHECK(exists(d / "f"));
}

TEST_CASE("an unlinked file stays readable and writable through an open descriptor", "[unlink]") {
  TestDir d;
  write_file(d / "f", "before");
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  REQUIRE(err(::unlink((d / "f").c_str())) == 0);
  CHECK_FALSE(exists(d / "f"));
  CHECK(fstat_of(fd.get()).st_nlink == 0);
  CHECK(::pwrite(fd.get(), "-after", 6, 6) == 6);
  CHECK(read_fd(fd.get()) == "before-after");
  CHECK(list_dir(d.path()).empty());
}

TEST_CASE("an unlinked file cannot be linked back by descriptor (ENOENT)", "[unlink][link]") {
  TestDir d;
  write_file(d / "f", "x");
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  REQUIRE(err(::unlink((d / "f").c_str())) == 0);
  CHECK(err(::linkat(fd.get(), "", d.fd(), "back", AT_EMPTY_PATH)) == ENOENT);
  CHECK_FALSE(exists(d / "back"));
}

TEST_CASE("unlink removes a symlink and not its target", "[unlink]") {
  TestDir d;
  write_file(d / "f", "x");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  CHECK(err(::unlink((d / "l").c_str())) == 0);
  CHECK_FALSE(exists(d / "l"));
  CHECK(read_file(d / "f") == "x");
}

TEST_CASE("special files can be linked and unlinked like regular files", "[link][unlink]") {
  TestDir d;
  REQUIRE(err(::mkfifo((d / "p").c_str(), 0644)) == 0);
  CHECK(err(::link((d / "p").c_str(), (d / "p2").c_str())) == 0);
  CHECK(S_ISFIFO(lstat_of(d / "p2").st_mode));
  CHECK(lstat_of(d / "p").st_nlink == 2);
  CHECK(err(::unlink((d / "p").c_str())) == 0);
  CHECK(err(::unlink((d / "p2").c_str())) == 0);
  CHECK(list_dir(d.path()).empty());
}
