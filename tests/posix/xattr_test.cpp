// POSIX suite: extended attributes — set/get/list/remove in the user, trusted and security
// namespaces, XATTR_CREATE/XATTR_REPLACE, ERANGE/ENODATA/E2BIG/EOPNOTSUPP errors, size limits, and
// POSIX ACLs written as raw system.posix_acl_access/default xattrs (no libacl) that change what a
// non-root user may do.
#include "posix_util.h"

#include <sys/xattr.h>

#include <algorithm>
#include <cstring>
#include <set>

using namespace posix_test;

namespace {

std::string get_xattr(const std::string& path, const char* name) {
  std::vector<char> buf(70000);
  ssize_t n = ::lgetxattr(path.c_str(), name, buf.data(), buf.size());
  INFO("lgetxattr " << name << ": " << std::strerror(errno));
  REQUIRE(n >= 0);
  return std::string(buf.data(), static_cast<size_t>(n));
}

Errno set_xattr(const std::string& path, const char* name, std::string_view value, int flags = 0) {
  return err(::lsetxattr(path.c_str(), name, value.data(), value.size(), flags));
}

std::set<std::string> list_xattrs(const std::string& path) {
  ssize_t size = ::llistxattr(path.c_str(), nullptr, 0);
  REQUIRE(size >= 0);
  std::vector<char> buf(static_cast<size_t>(size) + 1);
  ssize_t n = ::llistxattr(path.c_str(), buf.data(), buf.size());
  REQUIRE(n == size);
  std::set<std::string> names;
  for (ssize_t i = 0; i < n;) {
    std::string name(buf.data() + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    names.insert(name);
  }
  return names;
}

// The binary format of system.posix_acl_* (include/uapi/linux/posix_acl_xattr.h), little-endian.
enum AclTag : uint16_t {
  kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10, kOther = 0x20
};
struct AclEntry {
  uint16_t tag;
  uint16_t perm;  // 4 = r, 2 = w, 1 = x
  uint32_t id;    // for kUser/kGroup; ignored otherwise
};

void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::string acl_xattr(const std::vector<AclEntry>& entries, uint32_t version = 2) {
  std::string s;
  put_le(s, version, 4);
  for (const AclEntry& e : entries) {
    put_le(s, e.tag, 2);
    put_le(s, e.perm, 2);
    put_le(s, (e.tag == kUser || e.tag == kGroup) ? e.id : 0xFFFFFFFFu, 4);
  }
  return s;
}

}  // namespace

TEST_CASE("a user xattr round-trips, including binary and empty values", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  CHECK(set_xattr(d / "f", "user.bin", binary) == 0);
  CHECK(set_xattr(d / "f", "user.empty", "") == 0);
  CHECK(first_difference(get_xattr(d / "f", "user.bin"), binary) == -1);
  CHECK(get_xattr(d / "f", "user.empty").empty());
  CHECK(::lgetxattr((d / "f").c_str(), "user.bin", nullptr, 0) == 256);
}

TEST_CASE("setting an existing xattr replaces its value", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(set_xattr(d / "f", "user.k", "a long first value") == 0);
  CHECK(set_xattr(d / "f", "user.k", "short") == 0);
  CHECK(get_xattr(d / "f", "user.k") == "short");
  CHECK(list_xattrs(d / "f") == std::set<std::string>{"user.k"});
}

TEST_CASE("XATTR_CREATE on an existing name fails with EEXIST", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(set_xattr(d / "f", "user.k", "v1", XATTR_CREATE) == 0);
  CHECK(set_xattr(d / "f", "user.k", "v2", XATTR_CREATE) == EEXIST);
  CHECK(get_xattr(d / "f", "user.k") == "v1");
}

TEST_CASE("XATTR_REPLACE on a missing name fails with ENODATA", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(set_xattr(d / "f", "user.k", "v", XATTR_REPLACE) == ENODATA);
  CHECK(set_xattr(d / "f", "user.k", "v1") == 0);
  CHECK(set_xattr(d / "f", "user.k", "v2", XATTR_REPLACE) == 0);
  CHECK(get_xattr(d / "f", "user.k") == "v2");
}

TEST_CASE("getxattr and removexattr of a missing name fail with ENODATA", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  char buf[16];
  CHECK(err(::lgetxattr((d / "f").c_str(), "user.none", buf, sizeof buf)) == ENODATA);
  CHECK(err(::lremovexattr((d / "f").c_str(), "user.none")) == ENODATA);
  CHECK(err(::lgetxattr((d / "missing").c_str(), "user.none", buf, sizeof buf)) == ENOENT);
}

TEST_CASE("getxattr and listxattr into a too small buffer fail with ERANGE", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(set_xattr(d / "f", "user.k", "0123456789") == 0);
  char buf[4];
  CHECK(err(::lgetxattr((d / "f").c_str(), "user.k", buf, sizeof buf)) == ERANGE);
  CHECK(err(::llistxattr((d / "f").c_str(), buf, sizeof buf)) == ERANGE);
  CHECK(::llistxattr((d / "f").c_str(), nullptr, 0) == 7);
}

TEST_CASE("removexattr removes the name from get and list", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(set_xattr(d / "f", "user.a", "1") == 0);
  REQUIRE(set_xattr(d / "f", "user.b", "2") == 0);
  CHECK(err(::lremovexattr((d / "f").c_str(), "user.a")) == 0);
  char buf[4];
  CHECK(err(::lgetxattr((d / "f").c_str(), "user.a", buf, sizeof buf)) == ENODATA);
  CHECK(list_xattrs(d / "f") == std::set<std::string>{"user.b"});
}

TEST_CASE("listxattr names every attribute exactly once", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  std::set<std::string> want;
  for (int i = 0; i < 120; ++i) {
    const std::string name = "user.attr" + std::to_string(i);
    REQUIRE(set_xattr(d / "f", name.c_str(), pattern(50 + i, i)) == 0);
    want.insert(name);
  }
  CHECK(list_xattrs(d / "f") == want);
  CHECK(get_xattr(d / "f", "user.attr77") == pattern(127, 77));
}

TEST_CASE("trusted and security xattrs round-trip for root", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(set_xattr(d / "f", "trusted.t", "tv") == 0);
  CHECK(set_xattr(d / "f", "security.s", "sv") == 0);
  CHECK(get_xattr(d / "f", "trusted.t") == "tv");
  CHECK(get_xattr(d / "f", "security.s") == "sv");
  const auto names = list_xattrs(d / "f");
  CHECK(names.count("trusted.t") == 1);
  CHECK(names.count("security.s") == 1);
}

TEST_CASE("a non-root user cannot read (ENODATA) or set (EPERM) trusted xattrs", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(::chown((d / "f").c_str(), kNobody, kNogroup) == 0);
  REQUIRE(set_xattr(d / "f", "trusted.t", "tv") == 0);
  const std::string f = d / "f";
  const auto r = run_as(kNobody, kNogroup, [&] {
    char buf[64];
    return std::vector<long>{err_l(::lgetxattr(f.c_str(), "trusted.t", buf, sizeof buf)),
                             err_l(::lsetxattr(f.c_str(), "trusted.x", "v", 1, 0)),
                             err_l(::lsetxattr(f.c_str(), "user.mine", "v", 1, 0))};
  });
  REQUIRE(r.size() == 3);
  CHECK(r[0] == ENODATA);
  CHECK(r[1] == EPERM);
  CHECK(r[2] == 0);
}

TEST_CASE("btrfs lists trusted xattr names even to a non-root user", "[xattr][btrfs]") {
  // Unlike tmpfs and ext4, btrfs_listxattr() does not filter the trusted namespace by capability.
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(set_xattr(d / "f", "trusted.t", "tv") == 0);
  REQUIRE(set_xattr(d / "f", "user.u", "uv") == 0);
  const std::string f = d / "f";
  const auto r = run_as(kNobody, kNogroup, [&] {
    char buf[64];
    ssize_t n = ::llistxattr(f.c_str(), buf, sizeof buf);
    return std::vector<long>{n, n > 0 ? static_cast<long>(std::count(buf, buf + n, '\0')) : -1};
  });
  REQUIRE(r.size() == 2);
  CHECK(r[0] == static_cast<long>(sizeof "trusted.t" + sizeof "user.u"));
  CHECK(r[1] == 2);
}

TEST_CASE("xattrs work on directories and through descriptors", "[xattr]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  CHECK(set_xattr(d / "dir", "user.d", "dv") == 0);
  CHECK(get_xattr(d / "dir", "user.d") == "dv");
  write_file(d / "f", "");
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(err(::fsetxattr(fd.get(), "user.fd", "x", 1, 0)) == 0);
  char buf[4];
  CHECK(::fgetxattr(fd.get(), "user.fd", buf, sizeof buf) == 1);
  CHECK(err(::fremovexattr(fd.get(), "user.fd")) == 0);
}

TEST_CASE("getxattr follows a symlink and lgetxattr does not", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  REQUIRE(err(::symlink("f", (d / "l").c_str())) == 0);
  REQUIRE(set_xattr(d / "f", "user.k", "target") == 0);
  char buf[16];
  CHECK(::getxattr((d / "l").c_str(), "user.k", buf, sizeof buf) == 6);
  CHECK(err(::lgetxattr((d / "l").c_str(), "user.k", buf, sizeof buf)) == ENODATA);
}

TEST_CASE("user xattrs on symlinks and FIFOs are refused with EPERM", "[xattr]") {
  TestDir d;
  REQUIRE(err(::symlink("x", (d / "l").c_str())) == 0);
  REQUIRE(err(::mkfifo((d / "p").c_str(), 0644)) == 0);
  CHECK(set_xattr(d / "l", "user.k", "v") == EPERM);
  CHECK(set_xattr(d / "p", "user.k", "v") == EPERM);
  CHECK(set_xattr(d / "l", "trusted.k", "v") == 0);
}

TEST_CASE("an unknown namespace fails with EOPNOTSUPP and a bare prefix with EINVAL", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  CHECK(set_xattr(d / "f", "nonsense.k", "v") == EOPNOTSUPP);
  CHECK(set_xattr(d / "f", "user.", "v") == EINVAL);
}

TEST_CASE("xattr names over 255 bytes fail with ERANGE and values over 64 KiB with E2BIG",
          "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  const std::string longname = "user." + std::string(251, 'n');
  CHECK(set_xattr(d / "f", longname.c_str(), "v") == ERANGE);
  const std::string maxname = "user." + std::string(250, 'n');
  CHECK(set_xattr(d / "f", maxname.c_str(), "v") == 0);
  CHECK(set_xattr(d / "f", "user.huge", std::string(65537, 'v')) == E2BIG);
}

TEST_CASE("a 4 KiB xattr value round-trips", "[xattr]") {
  TestDir d;
  write_file(d / "f", "");
  const std::string v = pattern(4096, 5);
  CHECK(set_xattr(d / "f", "user.big", v) == 0);
  CHECK(first_difference(get_xattr(d / "f", "user.big"), v) == -1);
}

TEST_CASE("btrfs xattrs must fit in one 16 KiB leaf: 16000 bytes fit, 16 KiB fails with ENOSPC",
          "[xattr][btrfs]") {
  TestDir d;
  write_file(d / "f", "");
  const std::string fits = pattern(16000, 6);
  CHECK(set_xattr(d / "f", "user.v", fits) == 0);
  CHECK(first_difference(get_xattr(d / "f", "user.v"), fits) == -1);
  CHECK(set_xattr(d / "f", "user.w", std::string(16384, 'w')) == ENOSPC);
  char buf[4];
  CHECK(err(::lgetxattr((d / "f").c_str(), "user.w", buf, sizeof buf)) == ENODATA);
}

TEST_CASE("setxattr and removexattr update ctime", "[xattr][times]") {
  TestDir d;
  write_file(d / "f", "");
  struct stat before = lstat_of(d / "f");
  tick();
  REQUIRE(set_xattr(d / "f", "user.k", "v") == 0);
  struct stat after = lstat_of(d / "f");
  CHECK(ts_after(after.st_ctim, before.st_ctim));
  CHECK(ts_equal(after.st_mtim, before.st_mtim));
  before = after;
  tick();
  REQUIRE(err(::lremovexattr((d / "f").c_str(), "user.k")) == 0);
  CHECK(ts_after(lstat_of(d / "f").st_ctim, before.st_ctim));
}

TEST_CASE("an access ACL entry for a named user grants that user access", "[xattr][acl]") {
  TestDir d;
  write_file(d / "f", "secret", 0600);
  const std::string f = d / "f";
  auto try_read = [&] {
    return run_as(kNobody, kNogroup, [&] { return std::vector<long>{err_l(::open(f.c_str(), O_RDONLY))}; });
  };
  REQUIRE(try_read() == std::vector<long>{EACCES});
  const std::string acl = acl_xattr({{kUserObj, 6, 0}, {kUser, 4, kNobody}, {kGroupObj, 0, 0},
                                     {kMask, 4, 0}, {kOther, 0, 0}});
  CHECK(set_xattr(f, "system.posix_acl_access", acl) == 0);
  // The group class bits of the mode now show the mask.
  CHECK((lstat_of(f).st_mode & 07777) == 0640);
  CHECK(try_read() == std::vector<long>{0});
  CHECK(get_xattr(f, "system.posix_acl_access") == acl);
  // chmod rewrites the mask, which now denies the named user again.
  REQUIRE(err(::chmod(f.c_str(), 0600)) == 0);
  CHECK(try_read() == std::vector<long>{EACCES});
  REQUIRE(err(::chmod(f.c_str(), 0640)) == 0);
  CHECK(try_read() == std::vector<long>{0});
  CHECK(err(::lremovexattr(f.c_str(), "system.posix_acl_access")) == 0);
  CHECK(try_read() == std::vector<long>{EACCES});
}

TEST_CASE("an ACL entry denying the named user overrides the other class", "[xattr][acl]") {
  TestDir d;
  write_file(d / "f", "public", 0644);
  const std::string f = d / "f";
  const std::string acl = acl_xattr({{kUserObj, 6, 0}, {kUser, 0, kNobody}, {kGroupObj, 4, 0},
                                     {kMask, 4, 0}, {kOther, 4, 0}});
  REQUIRE(set_xattr(f, "system.posix_acl_access", acl) == 0);
  const auto r = run_as(kNobody, kNogroup, [&] { return std::vector<long>{err_l(::open(f.c_str(), O_RDONLY))}; });
  CHECK(r == std::vector<long>{EACCES});
}

TEST_CASE("a default ACL on a directory is inherited by new files", "[xattr][acl]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  const std::string def = acl_xattr({{kUserObj, 7, 0}, {kUser, 7, kNobody}, {kGroupObj, 5, 0},
                                     {kMask, 7, 0}, {kOther, 5, 0}});
  CHECK(set_xattr(d / "dir", "system.posix_acl_default", def) == 0);
  CHECK(get_xattr(d / "dir", "system.posix_acl_default") == def);
  write_file(d / "dir/f", "inherit", 0644);
  REQUIRE(err(::mkdir((d / "dir/sub").c_str(), 0755)) == 0);
  // The new file got an access ACL; the new directory also inherited the default ACL.
  CHECK(::lgetxattr((d / "dir/f").c_str(), "system.posix_acl_access", nullptr, 0) > 0);
  CHECK(get_xattr(d / "dir/sub", "system.posix_acl_default") == def);
  const std::string f = d / "dir/f";
  const auto r = run_as(kNobody, kNogroup, [&] {
    return std::vector<long>{err_l(::open(f.c_str(), O_RDONLY)), err_l(::open(f.c_str(), O_WRONLY))};
  });
  REQUIRE(r.size() == 2);
  CHECK(r[0] == 0);
  CHECK(r[1] == EACCES);  // the create mode 0644 masks the inherited rwx down to r--
}

TEST_CASE("a malformed ACL xattr is rejected: EOPNOTSUPP for a wrong version, else EINVAL",
          "[xattr][acl]") {
  TestDir d;
  write_file(d / "f", "");
  const std::string bad_version = acl_xattr({{kUserObj, 6, 0}, {kGroupObj, 4, 0}, {kOther, 4, 0}}, 3);
  CHECK(set_xattr(d / "f", "system.posix_acl_access", bad_version) == EOPNOTSUPP);
  // A named user entry needs a mask entry.
  const std::string no_mask = acl_xattr({{kUserObj, 6, 0}, {kUser, 4, 1000}, {kGroupObj, 4, 0}, {kOther, 4, 0}});
  CHECK(set_xattr(d / "f", "system.posix_acl_access", no_mask) == EINVAL);
  CHECK(set_xattr(d / "f", "system.posix_acl_access", "xyz") == EINVAL);
}
