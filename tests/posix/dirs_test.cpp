// POSIX suite: mkdir and rmdir — modes, EEXIST/ENOENT/ENOTDIR, rmdir of "." and "..", ENOTEMPTY,
// set-group-ID inheritance, deep nesting, and what an open but removed directory still allows.
#include "posix_util.h"

#include <dirent.h>

using namespace posix_test;

TEST_CASE("mkdir creates a directory with the mode masked by the umask", "[mkdir]") {
  TestDir d;
  {
    UmaskGuard um(027);
    CHECK(err(::mkdir((d / "a").c_str(), 0777)) == 0);
  }
  {
    UmaskGuard um(0);
    CHECK(err(::mkdir((d / "b").c_str(), 01777)) == 0);
  }
  CHECK(S_ISDIR(lstat_of(d / "a").st_mode));
  CHECK((lstat_of(d / "a").st_mode & 07777) == 0750);
  CHECK((lstat_of(d / "b").st_mode & 07777) == 01777);
  CHECK(list_dir(d / "a").empty());
}

TEST_CASE("mkdir of an existing name fails with EEXIST whatever its type", "[mkdir]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  REQUIRE(err(::symlink("nowhere", (d / "dangling").c_str())) == 0);
  CHECK(err(::mkdir((d / "f").c_str(), 0755)) == EEXIST);
  CHECK(err(::mkdir((d / "dir").c_str(), 0755)) == EEXIST);
  CHECK(err(::mkdir((d / "dangling").c_str(), 0755)) == EEXIST);
  CHECK(err(::mkdir((d / "dir/.").c_str(), 0755)) == EEXIST);
  CHECK(err(::mkdir((d / "dir/..").c_str(), 0755)) == EEXIST);
  CHECK_FALSE(exists(d / "nowhere"));
}

TEST_CASE("mkdir in a missing directory fails with ENOENT and under a file with ENOTDIR", "[mkdir]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(err(::mkdir((d / "missing/sub").c_str(), 0755)) == ENOENT);
  CHECK(err(::mkdir((d / "f/sub").c_str(), 0755)) == ENOTDIR);
  CHECK(err(::mkdir("", 0755)) == ENOENT);
}

TEST_CASE("mkdir accepts a trailing slash", "[mkdir]") {
  TestDir d;
  CHECK(err(::mkdir((d / "withslash/").c_str(), 0755)) == 0);
  CHECK(S_ISDIR(lstat_of(d / "withslash").st_mode));
}

TEST_CASE("rmdir removes an empty directory", "[rmdir]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  write_file(d / "a/f", "");
  REQUIRE(err(::unlink((d / "a/f").c_str())) == 0);
  CHECK(err(::rmdir((d / "a").c_str())) == 0);
  CHECK_FALSE(exists(d / "a"));
  CHECK(list_dir(d.path()).empty());
}

TEST_CASE("rmdir of a non-empty directory fails with ENOTEMPTY", "[rmdir]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "b").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "b/sub").c_str(), 0755)) == 0);
  write_file(d / "a/f", "");
  CHECK(err(::rmdir((d / "a").c_str())) == ENOTEMPTY);
  CHECK(err(::rmdir((d / "b").c_str())) == ENOTEMPTY);
  CHECK(S_ISDIR(lstat_of(d / "a").st_mode));
  CHECK(exists(d / "a/f"));
}

TEST_CASE("rmdir of a non-directory fails with ENOTDIR and of a missing name with ENOENT",
          "[rmdir]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::symlink(".", (d / "linktodir").c_str())) == 0);
  CHECK(err(::rmdir((d / "f").c_str())) == ENOTDIR);
  CHECK(err(::rmdir((d / "linktodir").c_str())) == ENOTDIR);
  CHECK(err(::rmdir((d / "missing").c_str())) == ENOENT);
  CHECK(exists(d / "f"));
}

TEST_CASE("rmdir of dot fails with EINVAL and of dot-dot with ENOTEMPTY", "[rmdir]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  CHECK(err(::rmdir((d / "a/.").c_str())) == EINVAL);
  CHECK(err(::rmdir((d / "a/..").c_str())) == ENOTEMPTY);
  CHECK(exists(d / "a"));
}

TEST_CASE("a removed directory that is still open has nlink 0 and accepts no new entries",
          "[rmdir]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  Fd fd(::open((d / "a").c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(fd.valid());
  REQUIRE(err(::rmdir((d / "a").c_str())) == 0);
  CHECK(fstat_of(fd.get()).st_nlink == 0);
  CHECK(err(::openat(fd.get(), "new", O_CREAT | O_WRONLY, 0644)) == ENOENT);
  CHECK(err(::mkdirat(fd.get(), "new", 0755)) == ENOENT);
  DIR* dir = ::fdopendir(fd.release());
  REQUIRE(dir != nullptr);
  errno = 0;
  CHECK(::readdir(dir) == nullptr);
  ::closedir(dir);
}

TEST_CASE("files and directories created in a set-group-ID directory take its group", "[mkdir]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "sgid").c_str(), 0755)) == 0);
  REQUIRE(err(::chown((d / "sgid").c_str(), 0, 4321)) == 0);
  REQUIRE(err(::chmod((d / "sgid").c_str(), 02775)) == 0);
  write_file(d / "sgid/f", "");
  REQUIRE(err(::mkdir((d / "sgid/sub").c_str(), 0755)) == 0);
  CHECK(lstat_of(d / "sgid/f").st_gid == 4321u);
  CHECK(lstat_of(d / "sgid/sub").st_gid == 4321u);
  CHECK((lstat_of(d / "sgid/sub").st_mode & S_ISGID) != 0);
  CHECK((lstat_of(d / "sgid/f").st_mode & S_ISGID) == 0);
  write_file(d / "plain", "");
  CHECK(lstat_of(d / "plain").st_gid == ::getegid());
}

TEST_CASE("directories nest 100 levels deep and come apart again", "[mkdir][rmdir]") {
  TestDir d;
  std::string rel;
  for (int i = 0; i < 100; ++i) {
    rel += (i ? "/" : "") + std::string("level") + std::to_string(i);
    REQUIRE(err(::mkdirat(d.fd(), rel.c_str(), 0755)) == 0);
  }
  write_file(d / rel + "/leaf", "deep");
  CHECK(read_file(d / rel + "/leaf") == "deep");
  CHECK(stat_of(d / rel + "/..").st_ino == stat_of(d / rel.substr(0, rel.rfind('/'))).st_ino);
  REQUIRE(err(::unlinkat(d.fd(), (rel + "/leaf").c_str(), 0)) == 0);
  int removed = 0;
  while (!rel.empty()) {
    if (::unlinkat(d.fd(), rel.c_str(), AT_REMOVEDIR) == 0) ++removed;
    const size_t slash = rel.rfind('/');
    rel = slash == std::string::npos ? "" : rel.substr(0, slash);
  }
  CHECK(removed == 100);
  CHECK(list_dir(d.path()).empty());
}

TEST_CASE("mkdirat and unlinkat with AT_REMOVEDIR work relative to a directory descriptor",
          "[mkdir][rmdir]") {
  TestDir d;
  CHECK(err(::mkdirat(d.fd(), "x", 0700)) == 0);
  CHECK((lstat_of(d / "x").st_mode & 07777) == 0700);
  write_file(d / "f", "");
  CHECK(err(::unlinkat(d.fd(), "f", AT_REMOVEDIR)) == ENOTDIR);
  CHECK(err(::unlinkat(d.fd(), "x", AT_REMOVEDIR)) == 0);
  CHECK_FALSE(exists(d / "x"));
}
