// POSIX suite: rename/renameat2 — replacing files, empty and non-empty directories, type mismatch
// errors, RENAME_NOREPLACE, RENAME_EXCHANGE (including file<->directory) and RENAME_WHITEOUT, moves into a
// directory's own subtree, renames that are no-ops, ".." after moving a directory, timestamps,
// and the parent link counts btrfs keeps.
#include "posix_util.h"

#include <linux/fs.h>
#include <sys/syscall.h>

#include <algorithm>

using namespace posix_test;

namespace {

int rename2(const std::string& from, const std::string& to, unsigned flags) {
  return static_cast<int>(::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}

}  // namespace

TEST_CASE("rename moves a file to a new name", "[rename]") {
  TestDir d;
  write_file(d / "a", "content");
  const ino_t ino = lstat_of(d / "a").st_ino;
  CHECK(err(::rename((d / "a").c_str(), (d / "b").c_str())) == 0);
  CHECK_FALSE(exists(d / "a"));
  CHECK(lstat_of(d / "b").st_ino == ino);
  CHECK(read_file(d / "b") == "content");
  CHECK(list_dir(d.path()) == std::vector<std::string>{"b"});
}

TEST_CASE("rename over an existing file replaces it and drops the old inode's link", "[rename]") {
  TestDir d;
  write_file(d / "a", "new");
  write_file(d / "b", "old");
  Fd old(::open((d / "b").c_str(), O_RDONLY));
  REQUIRE(old.valid());
  CHECK(err(::rename((d / "a").c_str(), (d / "b").c_str())) == 0);
  CHECK(read_file(d / "b") == "new");
  CHECK_FALSE(exists(d / "a"));
  CHECK(fstat_of(old.get()).st_nlink == 0);
  CHECK(read_fd(old.get()) == "old");
}

TEST_CASE("rename of a directory over an empty directory replaces it", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "src").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "dst").c_str(), 0755)) == 0);
  write_file(d / "src/f", "x");
  CHECK(err(::rename((d / "src").c_str(), (d / "dst").c_str())) == 0);
  CHECK_FALSE(exists(d / "src"));
  CHECK(read_file(d / "dst/f") == "x");
}

TEST_CASE("rename over a non-empty directory fails with ENOTEMPTY", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "src").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "dst").c_str(), 0755)) == 0);
  write_file(d / "dst/keep", "");
  CHECK(err(::rename((d / "src").c_str(), (d / "dst").c_str())) == ENOTEMPTY);
  CHECK(exists(d / "src"));
  CHECK(exists(d / "dst/keep"));
}

TEST_CASE("rename of a file over a directory fails with EISDIR", "[rename]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "f").c_str(), (d / "dir").c_str())) == EISDIR);
  CHECK(S_ISREG(lstat_of(d / "f").st_mode));
}

TEST_CASE("rename of a directory over a file fails with ENOTDIR", "[rename]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "dir").c_str(), (d / "f").c_str())) == ENOTDIR);
  CHECK(S_ISDIR(lstat_of(d / "dir").st_mode));
  CHECK(err(::rename((d / "f").c_str(), (d / "g/").c_str())) == ENOTDIR);
}

TEST_CASE("rename of a missing source fails with ENOENT", "[rename]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(err(::rename((d / "missing").c_str(), (d / "x").c_str())) == ENOENT);
  CHECK(err(::rename((d / "f").c_str(), (d / "nodir/x").c_str())) == ENOENT);
  CHECK(exists(d / "f"));
}

TEST_CASE("RENAME_NOREPLACE fails with EEXIST when the target exists", "[rename]") {
  TestDir d;
  write_file(d / "a", "a");
  write_file(d / "b", "b");
  CHECK(err(rename2(d / "a", d / "b", RENAME_NOREPLACE)) == EEXIST);
  CHECK(read_file(d / "a") == "a");
  CHECK(read_file(d / "b") == "b");
  CHECK(err(rename2(d / "a", d / "c", RENAME_NOREPLACE)) == 0);
  CHECK(read_file(d / "c") == "a");
}

TEST_CASE("RENAME_EXCHANGE swaps two files atomically", "[rename]") {
  TestDir d;
  write_file(d / "a", "AAA");
  write_file(d / "b", "B");
  const ino_t ia = lstat_of(d / "a").st_ino, ib = lstat_of(d / "b").st_ino;
  CHECK(err(rename2(d / "a", d / "b", RENAME_EXCHANGE)) == 0);
  CHECK(read_file(d / "a") == "B");
  CHECK(read_file(d / "b") == "AAA");
  CHECK(lstat_of(d / "a").st_ino == ib);
  CHECK(lstat_of(d / "b").st_ino == ia);
}

TEST_CASE("RENAME_EXCHANGE swaps a file and a directory in different parents", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "p1").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p2").c_str(), 0755)) == 0);
  write_file(d / "p1/file", "data");
  REQUIRE(err(::mkdir((d / "p2/dir").c_str(), 0755)) == 0);
  write_file(d / "p2/dir/inner", "in");
  CHECK(err(rename2(d / "p1/file", d / "p2/dir", RENAME_EXCHANGE)) == 0);
  CHECK(S_ISDIR(lstat_of(d / "p1/file").st_mode));
  CHECK(S_ISREG(lstat_of(d / "p2/dir").st_mode));
  CHECK(read_file(d / "p1/file/inner") == "in");
  CHECK(read_file(d / "p2/dir") == "data");
  CHECK(stat_of(d / "p1/file/..").st_ino == lstat_of(d / "p1").st_ino);
}

TEST_CASE("RENAME_EXCHANGE with a missing target fails with ENOENT", "[rename]") {
  TestDir d;
  write_file(d / "a", "a");
  CHECK(err(rename2(d / "a", d / "missing", RENAME_EXCHANGE)) == ENOENT);
  CHECK(exists(d / "a"));
}

TEST_CASE("RENAME_EXCHANGE combined with RENAME_NOREPLACE fails with EINVAL", "[rename]") {
  TestDir d;
  write_file(d / "a", "a");
  write_file(d / "b", "b");
  CHECK(err(rename2(d / "a", d / "b", RENAME_EXCHANGE | RENAME_NOREPLACE)) == EINVAL);
  CHECK(err(rename2(d / "a", d / "b", 0x80000000u)) == EINVAL);
}

TEST_CASE("RENAME_EXCHANGE combined with RENAME_WHITEOUT fails with EINVAL", "[rename][whiteout]") {
  TestDir d;
  write_file(d / "a", "a");
  write_file(d / "b", "b");
  CHECK(err(rename2(d / "a", d / "b", RENAME_EXCHANGE | RENAME_WHITEOUT)) == EINVAL);
  CHECK(read_file(d / "a") == "a");
  CHECK(read_file(d / "b") == "b");
}

namespace {

// What overlayfs takes for a whiteout: a character device 0:0 with no permission bits.
void check_whiteout(const std::string& path) {
  const struct stat st = lstat_of(path);
  CHECK(S_ISCHR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0);
  CHECK(st.st_rdev == 0);
  CHECK(st.st_nlink == 1);
  CHECK(st.st_uid == ::geteuid());
}

}  // namespace

TEST_CASE("RENAME_WHITEOUT moves the file and leaves a whiteout at the old name", "[rename][whiteout]") {
  TestDir d;
  write_file(d / "a", "content");
  const ino_t ino = lstat_of(d / "a").st_ino;
  REQUIRE(err(rename2(d / "a", d / "b", RENAME_WHITEOUT)) == 0);
  CHECK(lstat_of(d / "b").st_ino == ino);
  CHECK(read_file(d / "b") == "content");
  check_whiteout(d / "a");
  CHECK(lstat_of(d / "a").st_ino != ino);
  auto names = list_dir(d.path());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"a", "b"});
  // The whiteout is an ordinary name: it can be removed.
  CHECK(err(::unlink((d / "a").c_str())) == 0);
  CHECK(list_dir(d.path()) == std::vector<std::string>{"b"});
}

TEST_CASE("RENAME_WHITEOUT over an existing target replaces it", "[rename][whiteout]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "sub").c_str(), 0755)) == 0);
  write_file(d / "a", "new");
  write_file(d / "sub/b", "old");
  REQUIRE(err(rename2(d / "a", d / "sub/b", RENAME_WHITEOUT)) == 0);
  CHECK(read_file(d / "sub/b") == "new");
  check_whiteout(d / "a");
}

TEST_CASE("RENAME_WHITEOUT of a directory leaves a whiteout and moves the tree", "[rename][whiteout]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  write_file(d / "dir/f", "x");
  REQUIRE(err(rename2(d / "dir", d / "moved", RENAME_WHITEOUT)) == 0);
  CHECK(read_file(d / "moved/f") == "x");
  check_whiteout(d / "dir");
}

TEST_CASE("RENAME_WHITEOUT with RENAME_NOREPLACE fails with EEXIST and leaves both names", "[rename][whiteout]") {
  TestDir d;
  write_file(d / "a", "a");
  write_file(d / "b", "b");
  CHECK(err(rename2(d / "a", d / "b", RENAME_WHITEOUT | RENAME_NOREPLACE)) == EEXIST);
  CHECK(read_file(d / "a") == "a");
  CHECK(read_file(d / "b") == "b");
  REQUIRE(err(rename2(d / "a", d / "c", RENAME_WHITEOUT | RENAME_NOREPLACE)) == 0);
  CHECK(read_file(d / "c") == "a");
  check_whiteout(d / "a");
}

TEST_CASE("renaming a directory into its own subtree fails with EINVAL", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "a/b").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "a").c_str(), (d / "a/b/c").c_str())) == EINVAL);
  CHECK(err(::rename((d / "a").c_str(), (d / "a/c").c_str())) == EINVAL);
  CHECK(S_ISDIR(lstat_of(d / "a/b").st_mode));
}

TEST_CASE("renaming a directory over its own non-empty ancestor fails with ENOTEMPTY", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "a/b").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "a/b").c_str(), (d / "a").c_str())) == ENOTEMPTY);
}

TEST_CASE("renaming dot or dot-dot fails with EBUSY", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "a/.").c_str(), (d / "b").c_str())) == EBUSY);
  CHECK(err(::rename((d / "a/..").c_str(), (d / "b").c_str())) == EBUSY);
}

TEST_CASE("rename of a file to itself or to another link of itself is a no-op", "[rename]") {
  TestDir d;
  write_file(d / "a", "same");
  REQUIRE(err(::link((d / "a").c_str(), (d / "b").c_str())) == 0);
  CHECK(err(::rename((d / "a").c_str(), (d / "a").c_str())) == 0);
  CHECK(read_file(d / "a") == "same");
  CHECK(err(::rename((d / "a").c_str(), (d / "b").c_str())) == 0);
  CHECK(exists(d / "a"));
  CHECK(exists(d / "b"));
  CHECK(lstat_of(d / "a").st_nlink == 2);
}

TEST_CASE("a moved directory's dot-dot names its new parent", "[rename]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "p1").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p2").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p1/child").c_str(), 0755)) == 0);
  CHECK(err(::rename((d / "p1/child").c_str(), (d / "p2/child").c_str())) == 0);
  CHECK(stat_of(d / "p2/child/..").st_ino == lstat_of(d / "p2").st_ino);
  CHECK(list_dir(d / "p1").empty());
  CHECK(list_dir(d / "p2") == std::vector<std::string>{"child"});
  CHECK(err(::rmdir((d / "p1").c_str())) == 0);
  CHECK(err(::rmdir((d / "p2").c_str())) == ENOTEMPTY);
}

TEST_CASE("btrfs directories keep nlink 1 when subdirectories move between them",
          "[rename][btrfs]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "p1").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p2").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p1/c").c_str(), 0755)) == 0);
  CHECK(lstat_of(d / "p1").st_nlink == 1);
  REQUIRE(err(::rename((d / "p1/c").c_str(), (d / "p2/c").c_str())) == 0);
  CHECK(lstat_of(d / "p1").st_nlink == 1);
  CHECK(lstat_of(d / "p2").st_nlink == 1);
  CHECK(lstat_of(d / "p2/c").st_nlink == 1);
}

TEST_CASE("rename across directories updates both directories' mtime", "[rename][times]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "p1").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "p2").c_str(), 0755)) == 0);
  write_file(d / "p1/f", "");
  const struct stat s1 = lstat_of(d / "p1"), s2 = lstat_of(d / "p2");
  tick();
  REQUIRE(err(::rename((d / "p1/f").c_str(), (d / "p2/f").c_str())) == 0);
  CHECK(ts_after(lstat_of(d / "p1").st_mtim, s1.st_mtim));
  CHECK(ts_after(lstat_of(d / "p2").st_mtim, s2.st_mtim));
  CHECK(ts_after(lstat_of(d / "p2").st_ctim, s2.st_ctim));
}

TEST_CASE("rename over a symlink replaces the link, not its target", "[rename]") {
  TestDir d;
  write_file(d / "target", "t");
  REQUIRE(err(::symlink("target", (d / "link").c_str())) == 0);
  write_file(d / "f", "f");
  CHECK(err(::rename((d / "f").c_str(), (d / "link").c_str())) == 0);
  CHECK(S_ISREG(lstat_of(d / "link").st_mode));
  CHECK(read_file(d / "target") == "t");
  CHECK(read_file(d / "link") == "f");
}

TEST_CASE("many renames in a chain leave exactly one name", "[rename]") {
  TestDir d;
  write_file(d / "n0", "payload");
  for (int i = 0; i < 50; ++i) {
    REQUIRE(err(::rename((d / ("n" + std::to_string(i))).c_str(),
                         (d / ("n" + std::to_string(i + 1))).c_str())) == 0);
  }
  CHECK(list_dir(d.path()) == std::vector<std::string>{"n50"});
  CHECK(read_file(d / "n50") == "payload");
}
