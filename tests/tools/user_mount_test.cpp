// The checks before a mount by a user who is not root (tools/daemon/user_mount.h), on files of
// this test: fuse.conf parsing as fusermount3 does it, and each refusal naming the image, with
// a stand-in /dev/fuse and fuse.conf so the test does not depend on this machine's.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tools/daemon/user_mount.h"

namespace {

using ubtrfs::daemon::check_user_mount;
using ubtrfs::daemon::fuse_conf_allows_other;
using ubtrfs::daemon::UserMountCheck;

struct ConfDir {
  std::string path;
  ConfDir() {
    char tmpl[] = "/tmp/ubtrfs-user-mount-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~ConfDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name, const std::string& text, mode_t mode) const {
    const std::string p = path + "/" + name;
    std::ofstream(p) << text;
    chmod(p.c_str(), mode);
    return p;
  }
};

}  // namespace

TEST_CASE("fuse_conf_allows_other reads user_allow_other lines as fusermount3 does", "[user_mount]") {
  CHECK(fuse_conf_allows_other("user_allow_other\n"));
  CHECK(fuse_conf_allows_other("# comment\n  user_allow_other  \nmount_max = 1000\n"));
  CHECK(fuse_conf_allows_other("user_allow_other # why"));
  CHECK_FALSE(fuse_conf_allows_other("#user_allow_other\n"));
  CHECK_FALSE(fuse_conf_allows_other("mount_max = 1000\n"));
  CHECK_FALSE(fuse_conf_allows_other("user_allow_others\n"));
  CHECK_FALSE(fuse_conf_allows_other(""));
}

TEST_CASE("user_mount_refusals_are_one_line_naming_the_image", "[user_mount]") {
  ConfDir dir;
  UserMountCheck c;
  c.source = dir.file("img", "x", 0644);
  c.mountpoint = dir.path;
  c.uid = 65534;  // the checks use access(): as root, only the uid-gated ones are exercised
  c.fuse_device = dir.file("fuse", "", 0666);
  c.fuse_conf = dir.file("fuse.conf", "#user_allow_other\n", 0644);

  SECTION("root skips the user-only checks") {
    c.uid = 0;
    c.fuse_device = dir.path + "/no-such-fuse";
    c.allow_other = true;
    CHECK(check_user_mount(c).has_value());
  }
  SECTION("a missing /dev/fuse names the image and the device") {
    c.fuse_device = dir.path + "/no-such-fuse";
    auto s = check_user_mount(c);
    REQUIRE_FALSE(s.has_value());
    CHECK_THAT(s.error().message, Catch::StartsWith("cannot mount " + c.source + ": " + c.fuse_device));
    CHECK(s.error().message.find('\n') == std::string::npos);
  }
  SECTION("allow_other without user_allow_other") {
    c.allow_other = true;
    auto s = check_user_mount(c);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().err == EPERM);
    CHECK_THAT(s.error().message, Catch::Contains("user_allow_other") && Catch::Contains(c.fuse_conf));
    c.fuse_conf = dir.file("fuse.conf", "user_allow_other\n", 0644);
    CHECK(check_user_mount(c).has_value());
  }
  SECTION("a missing image") {
    c.source = dir.path + "/missing.img";
    auto s = check_user_mount(c);
    REQUIRE_FALSE(s.has_value());
    CHECK(s.error().err == ENOENT);
    CHECK_THAT(s.error().message, Catch::StartsWith("cannot mount " + c.source + ": No such file"));
  }
}
