// POSIX suite: opendir/readdir/getdents — every name exactly once (also in large directories and
// while entries are unlinked and added during the iteration), telldir/seekdir positions that stay
// valid while the directory changes, rewinddir, d_ino/d_type, and the ENOTDIR/EINVAL errors.
#include "posix_util.h"

#include <dirent.h>
#include <sys/syscall.h>

#include <algorithm>
#include <map>
#include <set>

using namespace posix_test;

namespace {

// Reads the remaining entries of an open stream (without "." and "..").
std::vector<std::string> read_rest(DIR* dir) {
  std::vector<std::string> out;
  while (struct dirent* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  return out;
}

std::string entry_name(int i) { return "entry-" + std::to_string(i); }

}  // namespace

TEST_CASE("an empty directory lists only dot and dot-dot", "[readdir]") {
  TestDir d;
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  std::multiset<std::string> seen;
  while (struct dirent* e = ::readdir(dir)) seen.insert(e->d_name);
  ::closedir(dir);
  CHECK(seen == std::multiset<std::string>{".", ".."});
}

TEST_CASE("a directory of 1000 entries lists every name exactly once", "[readdir]") {
  TestDir d;
  std::set<std::string> want;
  for (int i = 0; i < 1000; ++i) {
    const std::string n = entry_name(i) + std::string(i % 50, 'x');
    write_file(d / n, "");
    want.insert(n);
  }
  const std::vector<std::string> got = list_dir(d.path());
  CHECK(got.size() == want.size());
  CHECK(std::set<std::string>(got.begin(), got.end()) == want);
}

TEST_CASE("d_ino matches st_ino and dot-dot names the parent", "[readdir]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::mkdir((d / "sub").c_str(), 0755)) == 0);
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  DIR* dir = ::opendir((d / "sub/..").c_str());
  REQUIRE(dir != nullptr);
  std::map<std::string, ino_t> ino;
  while (struct dirent* e = ::readdir(dir)) ino[e->d_name] = e->d_ino;
  ::closedir(dir);
  CHECK(ino.size() == 5);
  CHECK(ino["f"] == lstat_of(d / "f").st_ino);
  CHECK(ino["sub"] == lstat_of(d / "sub").st_ino);
  CHECK(ino["l"] == lstat_of(d / "l").st_ino);
  CHECK(ino["."] == lstat_of(d.path()).st_ino);
  DIR* sub = ::opendir((d / "sub").c_str());
  REQUIRE(sub != nullptr);
  ino_t dotdot = 0;
  while (struct dirent* e = ::readdir(sub))
    if (std::string(e->d_name) == "..") dotdot = e->d_ino;
  ::closedir(sub);
  CHECK(dotdot == lstat_of(d.path()).st_ino);
}

TEST_CASE("d_type reports the type of every kind of entry on btrfs", "[readdir][btrfs]") {
  TestDir d;
  write_file(d / "reg", "");
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  REQUIRE(err(::symlink("reg", (d / "lnk").c_str())) == 0);
  REQUIRE(err(::mknod((d / "fifo").c_str(), S_IFIFO | 0644, 0)) == 0);
  REQUIRE(err(::mknod((d / "sock").c_str(), S_IFSOCK | 0644, 0)) == 0);
  REQUIRE(err(::mknod((d / "chr").c_str(), S_IFCHR | 0644, 0)) == 0);
  REQUIRE(err(::mknod((d / "blk").c_str(), S_IFBLK | 0644, 0)) == 0);
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  std::map<std::string, unsigned> type;
  while (struct dirent* e = ::readdir(dir)) type[e->d_name] = e->d_type;
  ::closedir(dir);
  CHECK(type["reg"] == DT_REG);
  CHECK(type["dir"] == DT_DIR);
  CHECK(type["lnk"] == DT_LNK);
  CHECK(type["fifo"] == DT_FIFO);
  CHECK(type["sock"] == DT_SOCK);
  CHECK(type["chr"] == DT_CHR);
  CHECK(type["blk"] == DT_BLK);
  CHECK(type["."] == DT_DIR);
  CHECK(type[".."] == DT_DIR);
}

TEST_CASE("unlinking and adding entries during readdir skips and repeats no surviving entry",
          "[readdir]") {
  TestDir d;
  const int kEntries = 600;
  for (int i = 0; i < kEntries; ++i) write_file(d / entry_name(i), "");
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  std::multiset<std::string> seen;
  std::set<std::string> removed, added;
  int step = 0;
  while (struct dirent* e = ::readdir(dir)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    seen.insert(n);
    // Every 7th step: unlink one entry we have seen and one we probably have not; add a new one.
    if (++step % 7 == 0) {
      const std::string seen_victim = n;
      const std::string later_victim = entry_name((step * 37) % kEntries);
      for (const std::string& v : {seen_victim, later_victim}) {
        if (removed.insert(v).second) REQUIRE(err(::unlink((d / v).c_str())) == 0);
      }
      const std::string fresh = "added-" + std::to_string(step);
      write_file(d / fresh, "");
      added.insert(fresh);
    }
  }
  ::closedir(dir);
  int missing = 0, duplicated = 0;
  for (int i = 0; i < kEntries; ++i) {
    const std::string n = entry_name(i);
    if (removed.count(n)) continue;
    if (seen.count(n) == 0) ++missing;
    if (seen.count(n) > 1) ++duplicated;
  }
  for (const std::string& n : added)
    if (seen.count(n) > 1) ++duplicated;
  CHECK(removed.size() > 100);
  CHECK(missing == 0);
  CHECK(duplicated == 0);
  // After the iteration the directory holds exactly the survivors and the additions.
  const std::vector<std::string> now = list_dir(d.path());
  CHECK(now.size() == kEntries - removed.size() + added.size());
}

// The rule readdir_stops_at_last_index_at_open (btrfs_opendir / btrfs_real_readdir, xfstests
// generic/736): an entry renamed within the directory gets a new, higher DIR_INDEX, so a listing
// that followed the index past what existed at opendir would meet every renamed entry again and
// never end.
TEST_CASE("renaming every entry during readdir lists each at most once and ends", "[readdir]") {
  TestDir d;
  const int kEntries = 2000;
  for (int i = 0; i < kEntries; ++i) write_file(d / entry_name(i), "");
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  std::multiset<std::string> seen;
  std::set<ino_t> inodes;
  int repeated_inodes = 0;
  while (struct dirent* e = ::readdir(dir)) {
    const std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    seen.insert(n);
    if (!inodes.insert(e->d_ino).second) ++repeated_inodes;
    REQUIRE(err(::rename((d / n).c_str(), (d / ("renamed-" + n)).c_str())) == 0);
    if (seen.size() > 3u * kEntries) break;  // would never end: fail below rather than hang
  }
  ::closedir(dir);
  CHECK(seen.size() <= static_cast<size_t>(kEntries));
  CHECK(repeated_inodes == 0);
  for (const std::string& n : seen) CHECK(n.rfind("entry-", 0) == 0);  // no renamed name came back
  CHECK(list_dir(d.path()).size() == static_cast<size_t>(kEntries));
}

TEST_CASE("seekdir to a telldir position stays valid while the directory changes", "[readdir]") {
  TestDir d;
  const int kEntries = 300;
  for (int i = 0; i < kEntries; ++i) write_file(d / entry_name(i), "");
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  // Record the position before every entry and the order of names.
  std::vector<long> pos;
  std::vector<std::string> order;
  for (;;) {
    const long p = ::telldir(dir);
    struct dirent* e = ::readdir(dir);
    if (e == nullptr) break;
    pos.push_back(p);
    order.push_back(e->d_name);
  }
  REQUIRE(order.size() == kEntries + 2u);
  // Change the directory: remove every third name, add a few new ones.
  std::set<std::string> removed;
  for (size_t i = 0; i < order.size(); i += 3) {
    if (order[i] == "." || order[i] == "..") continue;
    REQUIRE(err(::unlink((d / order[i]).c_str())) == 0);
    removed.insert(order[i]);
  }
  for (int i = 0; i < 20; ++i) write_file(d / ("late-" + std::to_string(i)), "");
  for (size_t k : {size_t{1}, order.size() / 3, order.size() / 2, order.size() - 1}) {
    INFO("seek to position #" << k << " (before " << order[k] << ")");
    ::seekdir(dir, pos[k]);
    const std::vector<std::string> rest = read_rest(dir);
    const std::multiset<std::string> got(rest.begin(), rest.end());
    int lost = 0, repeated = 0, earlier = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      const std::string& n = order[i];
      if (n == "." || n == ".." || removed.count(n)) continue;
      if (i >= k && got.count(n) != 1) ++lost;
      if (got.count(n) > 1) ++repeated;
      if (i < k && got.count(n) != 0) ++earlier;
    }
    CHECK(lost == 0);
    CHECK(repeated == 0);
    CHECK(earlier == 0);
  }
  ::closedir(dir);
}

TEST_CASE("rewinddir restarts the listing and shows entries added meanwhile", "[readdir]") {
  TestDir d;
  write_file(d / "a", "");
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  CHECK(read_rest(dir) == std::vector<std::string>{"a"});
  write_file(d / "b", "");
  ::rewinddir(dir);
  std::vector<std::string> again = read_rest(dir);
  std::sort(again.begin(), again.end());
  CHECK(again == std::vector<std::string>{"a", "b"});
  ::closedir(dir);
}

// xfstests generic/471 (btrfs: "refresh dir last index during a rewinddir(3) call"): the listing
// bound taken at opendir must not hide names a rewinddir has to show.
TEST_CASE("rewinddir before the first readdir shows entries created after opendir", "[readdir]") {
  TestDir d;
  DIR* dir = ::opendir(d.c_str());
  REQUIRE(dir != nullptr);
  const int kEntries = 300;
  for (int i = 0; i < kEntries; ++i) write_file(d / entry_name(i), "");
  ::rewinddir(dir);
  std::vector<std::string> got = read_rest(dir);
  ::closedir(dir);
  std::sort(got.begin(), got.end());
  std::vector<std::string> want;
  for (int i = 0; i < kEntries; ++i) want.push_back(entry_name(i));
  std::sort(want.begin(), want.end());
  CHECK(got == want);
}

TEST_CASE("opendir of a non-directory fails with ENOTDIR and of a missing name with ENOENT",
          "[readdir]") {
  TestDir d;
  write_file(d / "f", "");
  errno = 0;
  CHECK(::opendir((d / "f").c_str()) == nullptr);
  CHECK(errno == ENOTDIR);
  errno = 0;
  CHECK(::opendir((d / "missing").c_str()) == nullptr);
  CHECK(errno == ENOENT);
}

TEST_CASE("getdents64 with a buffer too small for one entry fails with EINVAL", "[readdir]") {
  TestDir d;
  write_file(d / "f", "");
  Fd fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(fd.valid());
  char small[8];
  CHECK(err(::syscall(SYS_getdents64, fd.get(), small, sizeof small)) == EINVAL);
  Fd file(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(file.valid());
  alignas(8) char buf[4096];
  CHECK(err(::syscall(SYS_getdents64, file.get(), buf, sizeof buf)) == ENOTDIR);
}

TEST_CASE("getdents64 with a one-entry buffer still returns every name", "[readdir]") {
  TestDir d;
  std::set<std::string> want = {".", ".."};
  for (int i = 0; i < 50; ++i) {
    write_file(d / entry_name(i), "");
    want.insert(entry_name(i));
  }
  Fd fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(fd.valid());
  std::multiset<std::string> seen;
  alignas(8) char buf[48];  // room for one short entry at a time
  for (;;) {
    long n = ::syscall(SYS_getdents64, fd.get(), buf, sizeof buf);
    REQUIRE(n >= 0);
    if (n == 0) break;
    for (long off = 0; off < n;) {
      auto* e = reinterpret_cast<struct dirent64*>(buf + off);
      seen.insert(e->d_name);
      off += e->d_reclen;
    }
  }
  CHECK(seen.size() == want.size());
  CHECK(std::set<std::string>(seen.begin(), seen.end()) == want);
}
