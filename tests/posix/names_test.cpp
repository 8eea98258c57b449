// POSIX suite: names — the 255-byte NAME_MAX limit (ENAMETOOLONG at 256 for every call that makes
// a name), names made of every byte except '/' and NUL, PATH_MAX, deep paths walked relatively,
// case sensitivity, and btrfs name-hash collisions: names whose crc32c(~1) directory hash (and
// xattr hash) are equal, forged inside the test, must behave like any other names.
#include "posix_util.h"

#include <isa-l/crc.h>
#include <sys/xattr.h>

#include <algorithm>
#include <set>

using namespace posix_test;

namespace {

// CRC-32C (Castagnoli, reflected), raw register: no pre- or post-inversion. btrfs hashes a name as
// crc32c_raw(~1, name) (FORMAT.md: btrfs_name_hash).
class Crc32c {
 public:
  Crc32c() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      table_[i] = c;
      top_index_[c >> 24] = static_cast<uint8_t>(i);
    }
  }
  uint32_t update(uint32_t crc, std::string_view s) const {
    for (unsigned char b : s) crc = table_[(crc ^ b) & 0xff] ^ (crc >> 8);
    return crc;
  }
  uint32_t name_hash(std::string_view s) const { return update(0xFFFFFFFEu, s); }

  // Four bytes that, appended to prefix, make name_hash(prefix + bytes) == target. The top byte of
  // each table entry is unique, so walking back from the target fixes the four table indices.
  std::string forge_suffix(std::string_view prefix, uint32_t target) const {
    uint8_t idx[4];
    uint32_t c = target;
    for (int k = 3; k >= 0; --k) {
      idx[k] = top_index_[c >> 24];
      c = (c ^ table_[idx[k]]) << 8;
    }
    uint32_t s = name_hash(prefix);
    std::string out;
    for (int k = 0; k < 4; ++k) {
      out += static_cast<char>((s ^ idx[k]) & 0xff);
      s = table_[idx[k]] ^ (s >> 8);
    }
    return out;
  }

 private:
  uint32_t table_[256];
  uint8_t top_index_[256];
};

// `base` followed by count-1 distinct names, each starting with `prefix` and at least `min_len`
// bytes long, whose btrfs name hash equals that of `base`; none contains '/' or NUL.
std::vector<std::string> colliding_names(const std::string& base, int count, size_t min_len = 0,
                                         const std::string& prefix = "") {
  static const Crc32c crc;
  const uint32_t target = crc.name_hash(base);
  std::vector<std::string> out{base};
  for (int i = 0; static_cast<int>(out.size()) < count; ++i) {
    std::string p = prefix + "c" + std::to_string(i) + "-";
    if (p.size() + 4 < min_len) p += std::string(min_len - 4 - p.size(), 'p');
    const std::string name = p + crc.forge_suffix(p, target);
    if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) continue;
    out.push_back(name);
  }
  return out;
}

uint32_t isal_name_hash(const std::string& s) {
  return crc32_iscsi(reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())), static_cast<int>(s.size()),
                     0xFFFFFFFEu);
}

}  // namespace

TEST_CASE("the forged names really share one btrfs name hash", "[names][hash]") {
  const Crc32c crc;
  CHECK(crc.name_hash("") == 0xFFFFFFFEu);
  // Cross-check the in-test CRC against ISA-L's crc32_iscsi (the raw register, same convention).
  for (const char* s : {"a", "hello", "file.txt", "a much longer name with spaces"})
    CHECK(crc.name_hash(s) == isal_name_hash(s));
  const auto names = colliding_names("collide-base", 30);
  std::set<std::string> distinct(names.begin(), names.end());
  CHECK(distinct.size() == 30);
  int same = 0;
  for (const std::string& n : names)
    if (isal_name_hash(n) == isal_name_hash("collide-base")) ++same;
  CHECK(same == 30);
}

TEST_CASE("names with colliding hashes can be created, looked up, listed, renamed and removed",
          "[names][hash]") {
  TestDir d;
  const auto names = colliding_names("collide-base", 40);
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string p = d / names[i];
    if (i % 5 == 3) {
      REQUIRE(err(::mkdir(p.c_str(), 0755)) == 0);
    } else if (i % 5 == 4) {
      REQUIRE(err(::symlink(("target" + std::to_string(i)).c_str(), p.c_str())) == 0);
    } else {
      write_file(p, "content" + std::to_string(i));
    }
  }
  // Creating any of them again collides with the right entry.
  CHECK(err(::open((d / names[0]).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)) == EEXIST);
  CHECK(err(::mkdir((d / names[39]).c_str(), 0755)) == EEXIST);
  int right_content = 0, right_type = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const struct stat st = lstat_of(d / names[i]);
    if (i % 5 == 3) {
      right_type += S_ISDIR(st.st_mode);
    } else if (i % 5 == 4) {
      right_type += S_ISLNK(st.st_mode);
    } else {
      right_type += S_ISREG(st.st_mode);
      right_content += read_file(d / names[i]) == "content" + std::to_string(i);
    }
  }
  CHECK(right_type == 40);
  CHECK(right_content == 24);
  std::vector<std::string> listed = list_dir(d.path());
  std::sort(listed.begin(), listed.end());
  std::vector<std::string> want = names;
  std::sort(want.begin(), want.end());
  CHECK(listed == want);
  // A missing name with the same hash is still missing.
  const auto more = colliding_names("collide-base", 45);
  struct stat st;
  CHECK(err(::lstat((d / more[44]).c_str(), &st)) == ENOENT);
  // Rename one colliding file over another, and another to a fresh colliding name.
  CHECK(err(::rename((d / names[0]).c_str(), (d / names[1]).c_str())) == 0);
  CHECK(read_file(d / names[1]) == "content0");
  CHECK(err(::lstat((d / names[0]).c_str(), &st)) == ENOENT);
  CHECK(err(::rename((d / names[2]).c_str(), (d / more[43]).c_str())) == 0);
  CHECK(read_file(d / more[43]) == "content2");
  // Remove every other name; the rest stay reachable.
  int removed = 0, kept = 0;
  for (size_t i = 3; i < names.size(); ++i) {
    const std::string p = d / names[i];
    if (i % 2 == 0) {
      removed += (i % 5 == 3 ? ::rmdir(p.c_str()) : ::unlink(p.c_str())) == 0;
    }
  }
  for (size_t i = 3; i < names.size(); ++i) {
    const bool present = ::lstat((d / names[i]).c_str(), &st) == 0;
    kept += present == (i % 2 == 1);
  }
  CHECK(removed == 18);
  CHECK(kept == 37);
  CHECK(list_dir(d.path()).size() == 40u - 1 - 18);
}

TEST_CASE("hard links with colliding names in one directory are counted separately",
          "[names][hash]") {
  TestDir d;
  const auto names = colliding_names("linkbase", 20);
  write_file(d / names[0], "x");
  int made = 0;
  for (size_t i = 1; i < names.size(); ++i) made += ::link((d / names[0]).c_str(), (d / names[i]).c_str()) == 0;
  CHECK(made == 19);
  CHECK(lstat_of(d / names[0]).st_nlink == 20);
  for (size_t i = 1; i < names.size(); ++i) REQUIRE(err(::unlink((d / names[i]).c_str())) == 0);
  CHECK(lstat_of(d / names[0]).st_nlink == 1);
}

TEST_CASE("xattrs with colliding name hashes are stored and removed independently",
          "[names][hash][xattr]") {
  TestDir d;
  write_file(d / "f", "");
  // Forged suffixes may hold any byte but NUL; xattr names need the "user." prefix.
  const auto names = colliding_names("user.xattr-base", 25, 0, "user.");
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string v = "value" + std::to_string(i);
    REQUIRE(err(::lsetxattr((d / "f").c_str(), names[i].c_str(), v.data(), v.size(), XATTR_CREATE)) == 0);
  }
  int right = 0;
  char buf[64];
  for (size_t i = 0; i < names.size(); ++i) {
    ssize_t n = ::lgetxattr((d / "f").c_str(), names[i].c_str(), buf, sizeof buf);
    right += n > 0 && std::string(buf, n) == "value" + std::to_string(i);
  }
  CHECK(right == 25);
  CHECK(err(::lsetxattr((d / "f").c_str(), names[7].c_str(), "v", 1, XATTR_CREATE)) == EEXIST);
  for (size_t i = 0; i < names.size(); i += 2) REQUIRE(err(::lremovexattr((d / "f").c_str(), names[i].c_str())) == 0);
  CHECK(err(::lgetxattr((d / "f").c_str(), names[0].c_str(), buf, sizeof buf)) == ENODATA);
  CHECK(::lgetxattr((d / "f").c_str(), names[1].c_str(), buf, sizeof buf) == 6);
  std::vector<char> list(8192);
  const ssize_t n = ::llistxattr((d / "f").c_str(), list.data(), list.size());
  REQUIRE(n >= 0);
  CHECK(std::count(list.begin(), list.begin() + n, '\0') == 12);
}

TEST_CASE("a 255-byte name works and a 256-byte name fails with ENAMETOOLONG", "[names]") {
  TestDir d;
  const std::string n255(255, 'n'), n256(256, 'n');
  write_file(d / n255, "long");
  CHECK(read_file(d / n255) == "long");
  CHECK(list_dir(d.path()) == std::vector<std::string>{n255});
  REQUIRE(err(::unlink((d / n255).c_str())) == 0);
  CHECK(err(::mkdir((d / n255).c_str(), 0755)) == 0);
  CHECK(err(::rmdir((d / n255).c_str())) == 0);
  write_file(d / "f", "");
  struct stat st;
  CHECK(err(::open((d / n256).c_str(), O_CREAT | O_WRONLY, 0644)) == ENAMETOOLONG);
  CHECK(err(::mkdir((d / n256).c_str(), 0755)) == ENAMETOOLONG);
  CHECK(err(::lstat((d / n256).c_str(), &st)) == ENAMETOOLONG);
  CHECK(err(::symlink("f", (d / n256).c_str())) == ENAMETOOLONG);
  CHECK(err(::link((d / "f").c_str(), (d / n256).c_str())) == ENAMETOOLONG);
  CHECK(err(::rename((d / "f").c_str(), (d / n256).c_str())) == ENAMETOOLONG);
  CHECK(err(::mknod((d / n256).c_str(), S_IFIFO | 0644, 0)) == ENAMETOOLONG);
  CHECK(err(::unlink((d / n256).c_str())) == ENAMETOOLONG);
  CHECK(list_dir(d.path()) == std::vector<std::string>{"f"});
}

TEST_CASE("a name made of every byte except slash and NUL round-trips", "[names]") {
  TestDir d;
  std::string all;
  for (int c = 1; c < 256; ++c)
    if (c != '/') all += static_cast<char>(c);
  REQUIRE(all.size() == 254);
  write_file(d / all, "every byte");
  CHECK(list_dir(d.path()) == std::vector<std::string>{all});
  CHECK(read_file(d / all) == "every byte");
  std::string reversed(all.rbegin(), all.rend());
  CHECK(err(::rename((d / all).c_str(), (d / reversed).c_str())) == 0);
  CHECK(list_dir(d.path()) == std::vector<std::string>{reversed});
  CHECK(err(::unlink((d / reversed).c_str())) == 0);
}

TEST_CASE("every single byte except slash, NUL and dot is a valid one-byte name", "[names]") {
  TestDir d;
  std::set<std::string> want;
  int created = 0;
  for (int c = 1; c < 256; ++c) {
    if (c == '/' || c == '.') continue;
    const std::string n(1, static_cast<char>(c));
    created += ::mknod((d / n).c_str(), S_IFREG | 0644, 0) == 0;
    want.insert(n);
  }
  CHECK(created == 253);
  const std::vector<std::string> got = list_dir(d.path());
  CHECK(got.size() == 253u);
  CHECK(std::set<std::string>(got.begin(), got.end()) == want);
  int gone = 0;
  for (const std::string& n : want) gone += ::unlink((d / n).c_str()) == 0;
  CHECK(gone == 253);
}

TEST_CASE("names are case-sensitive and dots only matter as whole components", "[names]") {
  TestDir d;
  write_file(d / "Name", "upper");
  write_file(d / "name", "lower");
  write_file(d / "...", "dots");
  write_file(d / ".hidden", "h");
  write_file(d / " space ", "s");
  write_file(d / "new\nline", "nl");
  write_file(d / "\xc3\xa9t\xc3\xa9", "utf8");
  CHECK(read_file(d / "Name") == "upper");
  CHECK(read_file(d / "name") == "lower");
  CHECK(read_file(d / "...") == "dots");
  CHECK(read_file(d / "new\nline") == "nl");
  CHECK(read_file(d / "\xc3\xa9t\xc3\xa9") == "utf8");
  CHECK(list_dir(d.path()).size() == 7u);
  struct stat st;
  CHECK(err(::lstat((d / "NAME").c_str(), &st)) == ENOENT);
}

TEST_CASE("paths of PATH_MAX bytes or more fail with ENAMETOOLONG", "[names]") {
  TestDir d;
  write_file(d / "f", "x");
  std::string path = d.path();
  while (path.size() < 4096) path += "/.";
  path += "/f";
  struct stat st;
  CHECK(err(::stat(path.c_str(), &st)) == ENAMETOOLONG);
  // Just under the limit, the many "." components resolve.
  std::string ok = d.path();
  while (ok.size() + 2 + 2 < 4090) ok += "/.";
  ok += "/f";
  REQUIRE(ok.size() < 4096);
  CHECK(err(::stat(ok.c_str(), &st)) == 0);
}

TEST_CASE("a tree deeper than PATH_MAX is reachable one component at a time", "[names]") {
  TestDir d;
  const std::string comp(200, 'd');
  Fd cur(::dup(d.fd()));
  for (int i = 0; i < 25; ++i) {  // 25 * 201 bytes > 4096
    REQUIRE(err(::mkdirat(cur.get(), comp.c_str(), 0755)) == 0);
    cur = Fd(::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY));
    REQUIRE(cur.valid());
  }
  Fd f(::openat(cur.get(), "leaf", O_CREAT | O_WRONLY, 0644));
  CHECK(f.valid());
  std::string full = d.path();
  for (int i = 0; i < 25; ++i) full += "/" + comp;
  full += "/leaf";
  struct stat st;
  CHECK(err(::stat(full.c_str(), &st)) == ENAMETOOLONG);
  CHECK(err(::fstatat(cur.get(), "leaf", &st, 0)) == 0);
  CHECK(err(::fstatat(cur.get(), "../../..", &st, 0)) == 0);
}

TEST_CASE("btrfs refuses a colliding name that would overflow the shared dir item with EOVERFLOW",
          "[names][hash][btrfs]") {
  // All names with one hash share one DIR_ITEM, which must fit in a leaf (16 KiB nodes): about
  // 56 names of 255 bytes. btrfs checks this before it starts the transaction, so the failure
  // leaves the file system writable.
  TestDir d;
  const auto names = colliding_names(std::string(255, 'o'), 80, 255);
  int created = 0;
  Errno first_failure{0};
  for (const std::string& n : names) {
    REQUIRE(n.size() == 255);
    const Errno e = err(::mknod((d / n).c_str(), S_IFREG | 0644, 0));
    if (e == 0) {
      ++created;
    } else {
      first_failure = e;
      break;
    }
  }
  CHECK(first_failure == EOVERFLOW);
  CHECK(created >= 50);
  REQUIRE(created < static_cast<int>(names.size()));
  // The directory still works: other names, and the colliding ones that fit.
  write_file(d / "after", "still writable");
  CHECK(read_file(d / "after") == "still writable");
  CHECK(list_dir(d.path()).size() == static_cast<size_t>(created) + 1);
  CHECK(err(::link((d / "after").c_str(), (d / names[created]).c_str())) == EOVERFLOW);
  CHECK(err(::rename((d / "after").c_str(), (d / names[created]).c_str())) == EOVERFLOW);
  CHECK(err(::unlink((d / names[0]).c_str())) == 0);
  CHECK(err(::mknod((d / names[created]).c_str(), S_IFREG | 0644, 0)) == 0);
}
