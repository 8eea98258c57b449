// XATTR_ITEM items over an in-memory tree (fs/xattr.h): flags, namespaces, kernel size limits,
// hash collisions.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <string>
#include <unordered_map>

#include "fs/dir_item.h"
#include "fs/xattr.h"
#include "io/checksum.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

namespace {

using test::err_of;
using test::FsTree;

std::vector<uint8_t> byte_vec(std::string_view s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("an xattr is an XATTR_ITEM keyed by name_hash with type XATTR and the value after the name") {
  FsTree t;
  REQUIRE(set_xattr(t.h, t.root, 257, "user.test", byte_vec("hello"), 0));
  // FORMAT.md §4.1: name_hash("user.test") = 103394969.
  const Key key{257, kXattrItemKey, 103394969};
  auto body = lookup_item(t.root, key);
  REQUIRE(body);
  REQUIRE(body->has_value());
  CHECK((*body)->size() == sizeof(DirItem) + 9 + 5);
  auto entries = parse_dir_entries(**body, key);
  REQUIRE(entries);
  REQUIRE(entries->size() == 1);
  CHECK((*entries)[0].type == kFtXattr);
  CHECK((*entries)[0].location == Key{});
  CHECK((*entries)[0].data == byte_vec("hello"));
  auto v = get_xattr(t.root, 257, "user.test");
  REQUIRE(v);
  CHECK(*v == std::optional(byte_vec("hello")));
  auto none = get_xattr(t.root, 257, "user.other");
  REQUIRE(none);
  CHECK_FALSE(none->has_value());
}

TEST_CASE("XATTR_CREATE fails with EEXIST and XATTR_REPLACE with ENODATA") {
  FsTree t;
  CHECK(err_of(set_xattr(t.h, t.root, 257, "user.a", byte_vec("1"), kXattrReplace)) == ENODATA);
  REQUIRE(set_xattr(t.h, t.root, 257, "user.a", byte_vec("1"), kXattrCreate));
  CHECK(err_of(set_xattr(t.h, t.root, 257, "user.a", byte_vec("2"), kXattrCreate)) == EEXIST);
  REQUIRE(set_xattr(t.h, t.root, 257, "user.a", byte_vec("a much longer value"), kXattrReplace));
  auto v = get_xattr(t.root, 257, "user.a");
  REQUIRE(v);
  CHECK(*v == std::optional(byte_vec("a much longer value")));
  REQUIRE(set_xattr(t.h, t.root, 257, "user.a", {}, 0));  // empty values are values
  v = get_xattr(t.root, 257, "user.a");
  REQUIRE(v);
  REQUIRE(v->has_value());
  CHECK((*v)->empty());
}

TEST_CASE("list and remove xattrs; removing a missing one is ENODATA") {
  FsTree t;
  for (auto n : {"user.one", "trusted.two", "security.selinux", "system.posix_acl_access"})
    REQUIRE(set_xattr(t.h, t.root, 260, n, byte_vec("v"), 0));
  REQUIRE(set_xattr(t.h, t.root, 261, "user.other_inode", byte_vec("v"), 0));
  auto names = list_xattrs(t.root, 260);
  REQUIRE(names);
  std::sort(names->begin(), names->end());
  CHECK(*names == std::vector<std::string>{"security.selinux", "system.posix_acl_access", "trusted.two", "user.one"});
  REQUIRE(remove_xattr(t.h, t.root, 260, "trusted.two"));
  CHECK(err_of(remove_xattr(t.h, t.root, 260, "trusted.two")) == ENODATA);
  names = list_xattrs(t.root, 260);
  REQUIRE(names);
  CHECK(names->size() == 3);
  auto empty = list_xattrs(t.root, 999);
  REQUIRE(empty);
  CHECK(empty->empty());
}

TEST_CASE("xattr namespaces and name lengths follow the kernel") {
  CHECK(err_of(check_xattr_name("user.x")) == 0);
  CHECK(err_of(check_xattr_name("btrfs.compression")) == 0);
  CHECK(err_of(check_xattr_name("system.posix_acl_default")) == 0);
  CHECK(err_of(check_xattr_name("system.other")) == EOPNOTSUPP);
  CHECK(err_of(check_xattr_name("nonsense")) == EOPNOTSUPP);
  CHECK(err_of(check_xattr_name("user.")) == EINVAL);
  CHECK(err_of(check_xattr_name("user." + std::string(250, 'n'))) == 0);
  CHECK(err_of(check_xattr_name("user." + std::string(251, 'n'))) == ERANGE);
}

TEST_CASE("name plus value must fit BTRFS_MAX_XATTR_SIZE (ENOSPC); values above XATTR_SIZE_MAX are E2BIG") {
  FsTree t;
  const uint32_t limit = max_xattr_size(4096);
  CHECK(limit == 3940);  // FORMAT.md §2.3 for 4 KiB nodes
  const std::string name = "user.big";
  std::vector<uint8_t> fits(limit - name.size(), 0x5A);
  REQUIRE(set_xattr(t.h, t.root, 270, name, fits, 0));
  auto v = get_xattr(t.root, 270, name);
  REQUIRE(v);
  CHECK(*v == std::optional(fits));
  std::vector<uint8_t> over(limit - name.size() + 1, 0x5A);
  CHECK(err_of(set_xattr(t.h, t.root, 270, name, over, 0)) == ENOSPC);
  std::vector<uint8_t> huge(kXattrSizeMax + 1);
  CHECK(err_of(set_xattr(t.h, t.root, 270, name, huge, 0)) == E2BIG);
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("xattr names with the same hash share one item and keep their own values") {
  FsTree t;
  std::unordered_map<uint32_t, std::string> seen;
  std::string a, b;
  for (uint32_t n = 0; a.empty(); ++n) {
    std::string s = fmt::format("user.{:x}", n);
    auto [it, inserted] = seen.emplace(static_cast<uint32_t>(io::name_hash(s)), s);
    if (!inserted) a = it->second, b = s;
  }
  REQUIRE(set_xattr(t.h, t.root, 280, a, byte_vec("value-a"), 0));
  REQUIRE(set_xattr(t.h, t.root, 280, b, byte_vec("value-b"), 0));
  const Key key{280, kXattrItemKey, io::name_hash(a)};
  auto body = lookup_item(t.root, key);
  REQUIRE(body);
  REQUIRE(body->has_value());
  CHECK((*body)->size() == 2 * sizeof(DirItem) + a.size() + b.size() + 14);
  REQUIRE(set_xattr(t.h, t.root, 280, a, byte_vec("A"), kXattrReplace));
  auto va = get_xattr(t.root, 280, a);
  auto vb = get_xattr(t.root, 280, b);
  REQUIRE(va);
  REQUIRE(vb);
  CHECK(*va == std::optional(byte_vec("A")));
  CHECK(*vb == std::optional(byte_vec("value-b")));
  REQUIRE(remove_xattr(t.h, t.root, 280, b));
  va = get_xattr(t.root, 280, a);
  REQUIRE(va);
  CHECK(*va == std::optional(byte_vec("A")));
  // Collision items must still fit one leaf item as a whole.
  std::vector<uint8_t> big(max_xattr_size(4096) - b.size(), 1);
  CHECK(err_of(set_xattr(t.h, t.root, 280, b, big, 0)) == ENOSPC);
}
