// Filesystem::remove_privs (fs/remove_privs.cpp): what writing into a file takes away when the
// kernel leaves it to the filesystem (FUSE_HANDLE_KILLPRIV_V2), on an image mkfs.ubtrfs made.
//
// Rules named here: remove_privs_clears_suid_and_group_executable_sgid_when_asked,
// remove_privs_asks_about_the_caller_only_for_a_setid_file,
// remove_privs_takes_security_capability_away_always,
// remove_privs_writes_nothing_when_nothing_is_to_go.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

#include "fs/filesystem.h"
#include "tests/fs/fs_test_env.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"

namespace ubtrfs::fs {
namespace {

using test::bytes;
using test::err_of;
using test::kRootIno;
using test::mkfs_ubtrfs_or_skip;
using test::run;

struct PrivsImage {
  io::testing::TempFile img{128ull << 20};
  std::unique_ptr<Filesystem> fs;
  bool ok = false;
  PrivsImage() {
    const std::string mkfs = mkfs_ubtrfs_or_skip();
    if (mkfs.empty()) return;
    REQUIRE(run(mkfs + " -q " + img.path()) == 0);
    OpenOptions o;
    o.path = img.path();
    auto r = Filesystem::mount(o, MountOptions{});
    INFO("mount: " << (r ? "" : r.error().message));
    REQUIRE(r);
    fs = std::move(*r);
    ok = true;
  }
  // A file with `mode` (set by setattr after the create: no umask, no sgid rule).
  uint64_t file(const std::string& name, uint32_t mode) {
    auto st = fs->create(kRootIno, name, S_IFREG | 0644, Caller{});
    REQUIRE(st);
    REQUIRE(fs->write(st->st_ino, 0, bytes("content")));
    SetAttr a;
    a.mode = mode;
    Caller root;
    REQUIRE(fs->setattr(st->st_ino, a, root));
    return st->st_ino;
  }
  uint32_t mode_of(uint64_t ino) {
    auto st = fs->getattr(ino);
    REQUIRE(st);
    return st->st_mode & 07777;
  }
};

const auto kYes = [] { return true; };
const auto kNo = [] { return false; };

TEST_CASE("remove_privs_clears_suid_and_group_executable_sgid_when_asked", "[fs][remove_privs]") {
  PrivsImage t;
  if (!t.ok) return;
  const uint64_t suid = t.file("suid", 04755), sgid_x = t.file("sgid_x", 02775), sgid_nox = t.file("sgid_nox", 02765),
                 both = t.file("both", 06777), kept = t.file("kept", 04755);
  auto r = t.fs->remove_privs(suid, kYes);
  REQUIRE(r);
  CHECK(*r);  // the mode changed: the caller must tell the kernel
  CHECK(t.mode_of(suid) == 0755);
  CHECK(t.fs->remove_privs(sgid_x, kYes).value_or(false));
  CHECK(t.mode_of(sgid_x) == 0775);
  // S_ISGID without group execute marks mandatory locking: it stays (setattr_should_drop_sgid).
  r = t.fs->remove_privs(sgid_nox, kYes);
  REQUIRE(r);
  CHECK_FALSE(*r);
  CHECK(t.mode_of(sgid_nox) == 02765);
  CHECK(t.fs->remove_privs(both, kYes).value_or(false));
  CHECK(t.mode_of(both) == 0777);
  // A caller with CAP_FSETID keeps them.
  r = t.fs->remove_privs(kept, kNo);
  REQUIRE(r);
  CHECK_FALSE(*r);
  CHECK(t.mode_of(kept) == 04755);
  // Only regular files.
  auto dir = t.fs->mkdir(kRootIno, "d", S_IFDIR | 02775, Caller{});
  REQUIRE(dir);
  r = t.fs->remove_privs(dir->st_ino, kYes);
  REQUIRE(r);
  CHECK_FALSE(*r);
}

TEST_CASE("remove_privs_asks_about_the_caller_only_for_a_setid_file", "[fs][remove_privs]") {
  PrivsImage t;
  if (!t.ok) return;
  const uint64_t plain = t.file("plain", 0755), suid = t.file("suid", 04755);
  int asked = 0;
  auto ask = [&] {
    ++asked;
    return true;
  };
  REQUIRE(t.fs->remove_privs(plain, ask));
  CHECK(asked == 0);  // no look at /proc for the common file
  REQUIRE(t.fs->remove_privs(suid, ask));
  CHECK(asked == 1);
  CHECK(t.mode_of(suid) == 0755);
}

TEST_CASE("remove_privs_takes_security_capability_away_always", "[fs][remove_privs]") {
  PrivsImage t;
  if (!t.ok) return;
  const uint64_t f = t.file("capped", 0755);
  // A VFS_CAP_REVISION_2 value (magic | effective, permitted cap_net_raw): any bytes do here.
  const std::string caps("\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 20);
  REQUIRE(t.fs->setxattr(f, "security.capability", bytes(caps), 0));
  REQUIRE(t.fs->setxattr(f, "user.other", bytes("v"), 0));
  const auto before = t.fs->getattr(f);
  REQUIRE(before);
  auto r = t.fs->remove_privs(f, kNo);  // even for a caller with CAP_FSETID
  REQUIRE(r);
  CHECK_FALSE(*r);  // the mode did not change
  CHECK(err_of(t.fs->getxattr(f, "security.capability")) == ENODATA);
  CHECK(t.fs->getxattr(f, "user.other"));  // nothing else goes
  const auto after = t.fs->getattr(f);
  REQUIRE(after);
  CHECK((after->st_ctim.tv_sec > before->st_ctim.tv_sec ||
         (after->st_ctim.tv_sec == before->st_ctim.tv_sec && after->st_ctim.tv_nsec >= before->st_ctim.tv_nsec)));
  // The change is on disk after a remount.
  REQUIRE(t.fs->unmount());
  OpenOptions o;
  o.path = t.img.path();
  auto again = Filesystem::mount(o, MountOptions{});
  REQUIRE(again);
  CHECK(err_of((*again)->getxattr(f, "security.capability")) == ENODATA);
  REQUIRE((*again)->unmount());
  test::btrfs_check_clean(t.img.path());
  t.fs.reset();
}

TEST_CASE("remove_privs_writes_nothing_when_nothing_is_to_go", "[fs][remove_privs]") {
  PrivsImage t;
  if (!t.ok) return;
  const uint64_t f = t.file("plain", 0755);
  const auto before = t.fs->getattr(f);
  REQUIRE(before);
  auto r = t.fs->remove_privs(f, kYes);
  REQUIRE(r);
  CHECK_FALSE(*r);
  const auto after = t.fs->getattr(f);
  REQUIRE(after);
  // No transaction: ctime as it was.
  CHECK(after->st_ctim.tv_sec == before->st_ctim.tv_sec);
  CHECK(after->st_ctim.tv_nsec == before->st_ctim.tv_nsec);
}

}  // namespace
}  // namespace ubtrfs::fs
