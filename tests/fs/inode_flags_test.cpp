// Inode flags (fs/inode_flags.h): the FS_*_FL <-> BTRFS_INODE_* mapping and btrfs's rules for
// changing them (pure functions), then the rules and their enforcement through Filesystem on a
// real image (mkfs.btrfs: otherwise WARN and skip, or FAIL when UBTRFS_REQUIRE_ORACLES=1).
//
// Rules named here: flags_map_exactly_as_btrfs_inode_flags_to_fsflags,
// unsupported_flags_are_eopnotsupp_and_conflicts_einval, nocow_changes_only_on_an_empty_file,
// fsxattr_changes_only_the_common_flags, new_inodes_inherit_nocow_and_compression,
// only_the_owner_changes_flags_and_only_cap_linux_immutable_changes_i_and_a,
// immutable_file_refuses_every_change, immutable_directory_refuses_new_and_removed_names,
// append_only_file_takes_only_appends, append_only_directory_keeps_its_names,
// noatime_flag_stops_access_time_updates, sync_flag_makes_every_write_durable,
// flags_persist_across_a_remount.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "fs/file_extent.h"
#include "fs/filesystem.h"
#include "fs/inode_flags.h"
#include "fs/xattr.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::bytes;
using test::err_of;
using test::have_mkfs_btrfs;
using test::kRootIno;
using test::mkfs_btrfs;
using test::mount_file_or_fail;
using test::run;

using io::testing::TempFile;

constexpr unsigned kRenameExchange = 1u << 1;  // RENAME_EXCHANGE

// ---- pure rules -----------------------------------------------------------------------------------

TEST_CASE("flags_map_exactly_as_btrfs_inode_flags_to_fsflags", "[fs][inode_flags]") {
  // Each BTRFS_INODE_* bit (its on-disk value) and the FS_*_FL bit lsattr shows for it.
  CHECK(inode_flags_to_fsflags(0x20) == 0x00000008);     // SYNC -> S
  CHECK(inode_flags_to_fsflags(0x40) == 0x00000010);     // IMMUTABLE -> i
  CHECK(inode_flags_to_fsflags(0x80) == 0x00000020);     // APPEND -> a
  CHECK(inode_flags_to_fsflags(0x100) == 0x00000040);    // NODUMP -> d
  CHECK(inode_flags_to_fsflags(0x200) == 0x00000080);    // NOATIME -> A
  CHECK(inode_flags_to_fsflags(0x400) == 0x00010000);    // DIRSYNC -> D
  CHECK(inode_flags_to_fsflags(0x2) == 0x00800000);      // NODATACOW -> C
  CHECK(inode_flags_to_fsflags(0x8) == 0x00000400);      // NOCOMPRESS -> m
  CHECK(inode_flags_to_fsflags(0x800) == 0x00000004);    // COMPRESS -> c
  CHECK(inode_flags_to_fsflags(0x8 | 0x800) == 0x400);   // NOCOMPRESS wins
  // Internal flags have no FS_*_FL: NODATASUM, READONLY, PREALLOC, ROOT_ITEM_INIT.
  CHECK(inode_flags_to_fsflags(0x1 | 0x4 | 0x10 | 0x80000000) == 0);
  // The fsxattr word carries the common ones only.
  CHECK(inode_flags_to_fsxattr(kInodeImmutable | kInodeAppend | kInodeSync | kInodeNoatime | kInodeNodump |
                               kInodeNodatacow | kInodeCompress)
            .xflags == (kXflagImmutable | kXflagAppend | kXflagSync | kXflagNoatime | kXflagNodump));
  CHECK(xflags_to_fsflags(fsflags_to_xflags(kFsImmutableFl | kFsAppendFl)) == (kFsImmutableFl | kFsAppendFl));
}

TEST_CASE("unsupported_flags_are_eopnotsupp_and_conflicts_einval", "[fs][inode_flags]") {
  CHECK(err_of(check_fsflags(0, kFsImmutableFl | kFsAppendFl | kFsNodumpFl | kFsNoatimeFl | kFsSyncFl)) == 0);
  CHECK(err_of(check_fsflags(0, 0x00000001)) == EOPNOTSUPP);  // FS_SECRM_FL (s)
  CHECK(err_of(check_fsflags(0, 0x00004000)) == EOPNOTSUPP);  // FS_JOURNAL_DATA_FL (j)
  CHECK(err_of(check_fsflags(0, kFsProjinheritFl)) == EOPNOTSUPP);
  CHECK(err_of(check_fsflags(0, kFsComprFl | kFsNocompFl)) == EINVAL);
  CHECK(err_of(check_fsflags(0, kFsComprFl | kFsNocowFl)) == EINVAL);
  CHECK(err_of(check_fsflags(kFsNocowFl, kFsNocowFl | kFsNocompFl)) == EINVAL);
  CHECK(err_of(check_fsflags(kFsComprFl, kFsComprFl | kFsNocowFl)) == EINVAL);
  CHECK(err_of(check_fsflags(kFsComprFl, kFsNocowFl)) == EINVAL);  // the old word counts
  CHECK(err_of(check_fsflags(kFsNocowFl, kFsNocowFl | kFsSyncFl)) == 0);
  // Masking by type: DIRSYNC only for directories; other inodes only d and A.
  CHECK(mask_fsflags_for_type(S_IFREG | 0644, kFsDirsyncFl | kFsSyncFl) == kFsSyncFl);
  CHECK(mask_fsflags_for_type(S_IFDIR | 0755, kFsDirsyncFl) == kFsDirsyncFl);
  CHECK(mask_fsflags_for_type(S_IFLNK | 0777, kFsImmutableFl | kFsNodumpFl | kFsNoatimeFl) ==
        (kFsNodumpFl | kFsNoatimeFl));
}

TEST_CASE("nocow_changes_only_on_an_empty_file", "[fs][inode_flags]") {
  const uint32_t reg = S_IFREG | 0644, dir = S_IFDIR | 0755;
  // +C on an empty file: NODATACOW and NODATASUM.
  CHECK(apply_fsflags(reg, 0, 0, kFsNocowFl, false).flags == (kInodeNodatacow | kInodeNodatasum));
  // +C on a file with data: silently nothing (the flag must tell the truth about its extents).
  CHECK(apply_fsflags(reg, 4096, 0, kFsNocowFl, false).flags == 0);
  // -C on a non-empty nocow file: kept; on an empty one: both go.
  const uint64_t nocow = kInodeNodatacow | kInodeNodatasum;
  CHECK(apply_fsflags(reg, 4096, nocow, 0, false).flags == nocow);
  CHECK(apply_fsflags(reg, 0, nocow, 0, false).flags == 0);
  // Directories take and drop it whatever their size, without NODATASUM.
  CHECK(apply_fsflags(dir, 12, 0, kFsNocowFl, false).flags == kInodeNodatacow);
  CHECK(apply_fsflags(dir, 12, kInodeNodatacow, 0, false).flags == 0);
  // PREALLOC and other internal bits survive any change.
  CHECK(apply_fsflags(reg, 4096, kInodePrealloc, kFsImmutableFl, false).flags == (kInodePrealloc | kInodeImmutable));
  // Compression: +c sets the property, +m drops COMPRESS, neither clears both and the property.
  auto c = apply_fsflags(reg, 0, kInodeNocompress, kFsComprFl, false);
  CHECK(c.flags == kInodeCompress);
  CHECK(c.compression_prop == std::optional<std::string>("zlib"));
  auto m = apply_fsflags(reg, 0, kInodeCompress, kFsNocompFl, false);
  CHECK(m.flags == kInodeNocompress);
  CHECK(m.compression_prop == std::optional<std::string>(""));
  CHECK(apply_fsflags(reg, 0, kInodeCompress, 0, false).flags == 0);
}

TEST_CASE("fsxattr_changes_only_the_common_flags", "[fs][inode_flags]") {
  FsXattr x;
  x.xflags = kXflagImmutable | kXflagNodump;
  const uint32_t old = kFsNocowFl | kFsSyncFl;
  // The old non-common flags stay in the word; SYNC (common) goes because the fsxattr lacks it.
  CHECK(*fsxattr_to_fsflags(x, old) == (kFsImmutableFl | kFsNodumpFl | kFsNocowFl));
  // And apply_fsflags in fsxattr mode leaves NODATACOW, DIRSYNC and compression alone.
  const uint64_t before = kInodeNodatacow | kInodeNodatasum | kInodeDirsync | kInodeSync;
  auto ch = apply_fsflags(S_IFDIR | 0755, 0, before, kFsImmutableFl, true);
  CHECK(ch.flags == (kInodeNodatacow | kInodeNodatasum | kInodeDirsync | kInodeImmutable));
  CHECK_FALSE(ch.compression_prop.has_value());
  // What btrfs cannot store: EOPNOTSUPP (fileattr_has_fsx).
  FsXattr bad;
  bad.projid = 7;
  CHECK(err_of(fsxattr_to_fsflags(bad, 0)) == EOPNOTSUPP);
  bad = FsXattr{};
  bad.xflags = 0x1;  // FS_XFLAG_REALTIME
  CHECK(err_of(fsxattr_to_fsflags(bad, 0)) == EOPNOTSUPP);
  bad = FsXattr{};
  bad.xflags = kXflagExtsize;
  bad.extsize = 65536;
  CHECK(err_of(fsxattr_to_fsflags(bad, 0)) == EOPNOTSUPP);
  bad.extsize = 0;  // a zero hint turns its flag off: accepted
  CHECK(err_of(fsxattr_to_fsflags(bad, 0)) == 0);
}

TEST_CASE("inherit_flags_follow_btrfs_inherit_iflags", "[fs][inode_flags]") {
  CHECK(inherit_flags(kInodeNodatacow, S_IFREG | 0644) == (kInodeNodatacow | kInodeNodatasum));
  CHECK(inherit_flags(kInodeNodatacow, S_IFDIR | 0755) == kInodeNodatacow);
  CHECK(inherit_flags(kInodeCompress, S_IFREG | 0644) == kInodeCompress);
  CHECK(inherit_flags(kInodeNocompress | kInodeCompress, S_IFREG | 0644) == kInodeNocompress);
  // Nothing else is inherited.
  CHECK(inherit_flags(kInodeImmutable | kInodeAppend | kInodeSync | kInodeNoatime | kInodeNodump | kInodeDirsync,
                      S_IFREG | 0644) == 0);
}

// ---- through Filesystem on a real image -------------------------------------------------------------

Caller root_caller() {
  Caller c;
  c.cap_fowner = c.cap_linux_immutable = true;
  return c;
}

struct Image {
  TempFile img{256ull << 20};
  std::unique_ptr<Filesystem> fs;
  Image() {
    mkfs_btrfs(img.path(), "-n 4096");
    fs = mount_file_or_fail(img.path());
  }
  uint64_t file(uint64_t dir, const std::string& name, std::string_view content = "") {
    auto st = fs->create(dir, name, 0100644, Caller{});
    REQUIRE(st);
    if (!content.empty()) REQUIRE(fs->write(st->st_ino, 0, bytes(content)));
    return st->st_ino;
  }
  uint64_t dir(uint64_t parent, const std::string& name) {
    auto st = fs->mkdir(parent, name, 040755, Caller{});
    REQUIRE(st);
    return st->st_ino;
  }
  void set(uint64_t ino, uint32_t fsflags) {
    auto s = fs->set_fsflags(ino, fsflags, root_caller());
    if (!s) FAIL("set_fsflags: " << s.error().message);
  }
  uint32_t get(uint64_t ino) {
    auto f = fs->get_fsflags(ino);
    REQUIRE(f);
    return *f;
  }
};

TEST_CASE("only_the_owner_changes_flags_and_only_cap_linux_immutable_changes_i_and_a", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t f = t.file(kRootIno, "f");  // owned by uid 0
  Caller other;
  other.uid = 1000;
  CHECK(err_of(t.fs->set_fsflags(f, kFsNodumpFl, other)) == EPERM);
  other.cap_fowner = true;  // CAP_FOWNER acts as the owner
  CHECK(err_of(t.fs->set_fsflags(f, kFsNodumpFl, other)) == 0);
  Caller owner;  // uid 0 owns it, but without CAP_LINUX_IMMUTABLE
  CHECK(err_of(t.fs->set_fsflags(f, kFsNodumpFl | kFsImmutableFl, owner)) == EPERM);
  CHECK(err_of(t.fs->set_fsflags(f, kFsNodumpFl | kFsAppendFl, owner)) == EPERM);
  CHECK(t.get(f) == kFsNodumpFl);
  CHECK(err_of(t.fs->set_fsflags(f, kFsNodumpFl | kFsNoatimeFl, owner)) == 0);
  t.set(f, kFsImmutableFl);
  // Clearing i needs the capability as much as setting it; other flags may change beside it.
  CHECK(err_of(t.fs->set_fsflags(f, 0, owner)) == EPERM);
  CHECK(err_of(t.fs->set_fsflags(f, kFsImmutableFl | kFsSyncFl, owner)) == 0);
  CHECK(t.get(f) == (kFsImmutableFl | kFsSyncFl));
  // Unsupported and conflicting words, through the API.
  CHECK(err_of(t.fs->set_fsflags(f, kFsImmutableFl | 0x1, root_caller())) == EOPNOTSUPP);
  CHECK(err_of(t.fs->set_fsflags(f, kFsImmutableFl | kFsComprFl | kFsNocompFl, root_caller())) == EINVAL);
  t.set(f, 0);
  // The ctime moves with a change.
  const auto before = t.fs->getattr(f)->st_ctim;
  t.set(f, kFsNodumpFl);
  const auto after = t.fs->getattr(f)->st_ctim;
  CHECK((after.tv_sec > before.tv_sec || (after.tv_sec == before.tv_sec && after.tv_nsec > before.tv_nsec)));
  REQUIRE(t.fs->unmount());
}

InodeItem inode_of(Filesystem& fs, uint64_t ino) {
  auto rec = fs.info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  auto ii = read_inode(fs.info(), *(*rec)->tree, ino);
  REQUIRE(ii);
  return *ii;
}

TEST_CASE("new_inodes_inherit_nocow_and_compression", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  // +C: only while empty.
  const uint64_t empty = t.file(kRootIno, "empty");
  const uint64_t full = t.file(kRootIno, "full", "data");
  t.set(empty, kFsNocowFl);
  t.set(full, kFsNocowFl);
  CHECK(t.get(empty) == kFsNocowFl);
  CHECK((inode_of(*t.fs, empty).flags.get() & (kInodeNodatacow | kInodeNodatasum)) == (kInodeNodatacow | kInodeNodatasum));
  CHECK(t.get(full) == 0);
  // A +C directory passes NODATACOW on (with NODATASUM to files).
  const uint64_t nocow_dir = t.dir(kRootIno, "nocow");
  t.set(nocow_dir, kFsNocowFl);
  const uint64_t child = t.file(nocow_dir, "child");
  const uint64_t subdir = t.dir(nocow_dir, "sub");
  CHECK(t.get(child) == kFsNocowFl);
  CHECK((inode_of(*t.fs, child).flags.get() & kInodeNodatasum) != 0);
  CHECK(t.get(subdir) == kFsNocowFl);
  CHECK((inode_of(*t.fs, subdir).flags.get() & kInodeNodatasum) == 0);
  // The nocow child's data goes to disk without checksums and reads back.
  REQUIRE(t.fs->write(child, 0, bytes(std::string(10000, 'n'))));
  REQUIRE(t.fs->fsync(child, false));
  std::vector<uint8_t> back(10000);
  REQUIRE(*t.fs->read(child, 0, back) == 10000);
  CHECK(std::all_of(back.begin(), back.end(), [](uint8_t b) { return b == 'n'; }));
  // +c sets the property; new inodes take both; +m replaces it, no flag removes it.
  const uint64_t comp = t.dir(kRootIno, "comp");
  t.set(comp, kFsComprFl);
  CHECK(t.get(comp) == kFsComprFl);
  auto prop = t.fs->getxattr(comp, kCompressionProp);
  REQUIRE(prop);
  CHECK(std::string(prop->begin(), prop->end()) == "zlib");
  const uint64_t cf = t.file(comp, "cf");
  CHECK(t.get(cf) == kFsComprFl);
  prop = t.fs->getxattr(cf, kCompressionProp);
  REQUIRE(prop);
  CHECK(std::string(prop->begin(), prop->end()) == "zlib");
  t.set(cf, kFsNocompFl);
  CHECK(t.get(cf) == kFsNocompFl);
  CHECK(err_of(t.fs->getxattr(cf, kCompressionProp)) == ENODATA);
  t.set(comp, 0);
  CHECK(t.get(comp) == 0);
  CHECK(err_of(t.fs->getxattr(comp, kCompressionProp)) == ENODATA);
  // Nocow and compression exclude each other on one inode.
  CHECK(err_of(t.fs->set_fsflags(empty, kFsNocowFl | kFsNocompFl, root_caller())) == EINVAL);
  REQUIRE(t.fs->unmount());
  if (io::testing::have_tool("btrfs")) {
    std::string out;
    CHECK(run(fmt::format("btrfs check {}", t.img.path()), &out) == 0);
    INFO(out);
  }
}

// The extent layout of [0, len) of `ino`: (file offset, disk bytenr, extent offset, length) each.
std::vector<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>> layout(Filesystem& fs, uint64_t ino, uint64_t len) {
  auto rec = fs.info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  auto exts = find_file_extents(*(*rec)->tree, fs.info().params(), ino, 0, len);
  REQUIRE(exts);
  std::vector<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>> out;
  for (const auto& e : *exts) out.emplace_back(e.file_offset, e.disk_bytenr, e.offset, e.num_bytes);
  return out;
}

TEST_CASE("nodatacow_file_is_overwritten_in_place", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  constexpr uint64_t kLen = 256 * 1024;
  const uint64_t nocow = t.file(kRootIno, "nocow");
  const uint64_t cow = t.file(kRootIno, "cow");
  t.set(nocow, kFsNocowFl);
  std::string expect(kLen, 'a');
  for (uint64_t ino : {nocow, cow}) {
    REQUIRE(t.fs->write(ino, 0, bytes(expect)));
    REQUIRE(t.fs->fsync(ino, false));
  }
  const auto nocow_before = layout(*t.fs, nocow, kLen);
  const auto cow_before = layout(*t.fs, cow, kLen);
  REQUIRE(!nocow_before.empty());
  // A whole sector and a partial one, each in the middle of the extent.
  const std::string b(4096, 'b'), c(1000, 'c');
  expect.replace(8192, b.size(), b);
  expect.replace(60000, c.size(), c);
  for (uint64_t ino : {nocow, cow}) {
    REQUIRE(t.fs->write(ino, 8192, bytes(b)));
    REQUIRE(t.fs->write(ino, 60000, bytes(c)));
    REQUIRE(t.fs->fsync(ino, false));
  }
  CHECK(layout(*t.fs, nocow, kLen) == nocow_before);  // the same extents: written where they lie
  CHECK(layout(*t.fs, cow, kLen) != cow_before);      // the control COWs
  auto check_content = [&](uint64_t ino) {
    std::vector<uint8_t> back(kLen);
    REQUIRE(*t.fs->read(ino, 0, back) == kLen);
    CHECK(std::string(back.begin(), back.end()) == expect);
  };
  check_content(nocow);
  check_content(cow);
  REQUIRE(t.fs->unmount());
  if (io::testing::have_tool("btrfs")) {
    std::string out;
    CHECK(run(fmt::format("btrfs check {}", t.img.path()), &out) == 0);
    INFO(out);
  }
  t.fs = mount_file_or_fail(t.img.path());
  check_content(nocow);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("immutable_file_refuses_every_change", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t f = t.file(kRootIno, "f", "content");
  REQUIRE(t.fs->setxattr(f, "user.k", bytes("v"), 0));
  t.set(f, kFsImmutableFl);
  CHECK(err_of(t.fs->write(f, 7, bytes("more"))) == EPERM);
  CHECK(err_of(t.fs->write(f, 0, bytes("x"))) == EPERM);
  CHECK(err_of(t.fs->open(f, O_WRONLY)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_RDWR)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_WRONLY | O_APPEND)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_RDONLY)) == 0);
  SetAttr size;
  size.size = 0;
  CHECK(err_of(t.fs->setattr(f, size, Caller{})) == EPERM);
  SetAttr mode;
  mode.mode = 0600;
  CHECK(err_of(t.fs->setattr(f, mode, Caller{})) == EPERM);
  SetAttr owner;
  owner.uid = 1000;
  CHECK(err_of(t.fs->setattr(f, owner, Caller{})) == EPERM);
  SetAttr times;
  times.mtime = SetAttr::Time::kValue;
  CHECK(err_of(t.fs->setattr(f, times, Caller{})) == EPERM);
  SetAttr touch;
  touch.atime = touch.mtime = SetAttr::Time::kNow;
  CHECK(err_of(t.fs->setattr(f, touch, Caller{})) == EPERM);
  CHECK(err_of(t.fs->fallocate(f, 0, 0, 4096)) == EPERM);
  CHECK(err_of(t.fs->fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 8192)) == EPERM);
  CHECK(err_of(t.fs->fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)) == EPERM);
  CHECK(err_of(t.fs->setxattr(f, "user.k", bytes("w"), 0)) == EPERM);
  CHECK(err_of(t.fs->removexattr(f, "user.k")) == EPERM);
  CHECK(err_of(t.fs->unlink(kRootIno, "f")) == EPERM);
  CHECK(err_of(t.fs->rename(kRootIno, "f", kRootIno, "g", 0)) == EPERM);
  t.file(kRootIno, "other");
  CHECK(err_of(t.fs->rename(kRootIno, "other", kRootIno, "f", 0)) == EPERM);  // over it
  CHECK(err_of(t.fs->rename(kRootIno, "other", kRootIno, "f", kRenameExchange)) == EPERM);
  CHECK(err_of(t.fs->link(f, kRootIno, "f2")) == EPERM);
  const uint64_t cp = t.file(kRootIno, "src", "copy");
  CHECK(err_of(t.fs->copy_file_range(cp, 0, f, 0, 4, 0)) == EPERM);
  // An aligned range would be shared (reflink, file_clone.cpp) rather than copied: refused too.
  const std::vector<uint8_t> block(8192, 'b');
  REQUIRE(t.fs->write(cp, 0, block));
  CHECK(err_of(t.fs->copy_file_range(cp, 0, f, 0, 8192, 0)) == EPERM);
  // Reading is fine, and nothing changed.
  std::vector<uint8_t> back(32);
  REQUIRE(*t.fs->read(f, 0, back) == 7);
  CHECK(std::string(back.begin(), back.begin() + 7) == "content");
  CHECK(t.fs->getattr(f)->st_mode == (S_IFREG | 0644));
  CHECK(t.fs->lookup(kRootIno, "f"));
  // Cleared, everything works again.
  t.set(f, 0);
  CHECK(err_of(t.fs->write(f, 7, bytes("more"))) == 0);
  CHECK(err_of(t.fs->unlink(kRootIno, "f")) == 0);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("immutable_directory_refuses_new_and_removed_names", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t d = t.dir(kRootIno, "d");
  const uint64_t inner = t.file(d, "inner");
  t.dir(d, "sub");
  const uint64_t full = t.dir(d, "full");
  t.file(full, "x");
  const uint64_t outside = t.file(kRootIno, "outside");
  t.set(d, kFsImmutableFl);
  CHECK(t.get(d) == kFsImmutableFl);
  CHECK(err_of(t.fs->create(d, "new", 0100644, Caller{})) == EPERM);
  CHECK(err_of(t.fs->mkdir(d, "newdir", 040755, Caller{})) == EPERM);
  CHECK(err_of(t.fs->symlink(d, "ln", "x", Caller{})) == EPERM);
  CHECK(err_of(t.fs->mknod(d, "fifo", S_IFIFO | 0644, 0, Caller{})) == EPERM);
  CHECK(err_of(t.fs->link(outside, d, "hard")) == EPERM);
  CHECK(err_of(t.fs->unlink(d, "inner")) == EPERM);
  CHECK(err_of(t.fs->rmdir(d, "sub")) == EPERM);
  // EPERM before the type and emptiness checks (may_delete first, as xfstests' t_immutable expects).
  CHECK(err_of(t.fs->rmdir(d, "full")) == EPERM);
  CHECK(err_of(t.fs->unlink(d, "full")) == EPERM);
  CHECK(err_of(t.fs->rmdir(d, "inner")) == EPERM);
  CHECK(err_of(t.fs->rename(d, "inner", kRootIno, "moved", 0)) == EPERM);
  CHECK(err_of(t.fs->rename(kRootIno, "outside", d, "in", 0)) == EPERM);
  // The files inside are not immutable themselves.
  CHECK(err_of(t.fs->write(inner, 0, bytes("ok"))) == 0);
  t.set(d, 0);
  CHECK(err_of(t.fs->create(d, "new", 0100644, Caller{})) == 0);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("append_only_file_takes_only_appends", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t f = t.file(kRootIno, "log", "line1\n");
  REQUIRE(t.fs->setxattr(f, "user.k", bytes("v"), 0));
  t.set(f, kFsAppendFl);
  CHECK(err_of(t.fs->write(f, 6, bytes("line2\n"))) == 0);  // at the end
  CHECK(err_of(t.fs->write(f, 0, bytes("X"))) == EPERM);      // anywhere else
  CHECK(err_of(t.fs->write(f, 100, bytes("X"))) == EPERM);
  CHECK(t.fs->getattr(f)->st_size == 12);
  CHECK(err_of(t.fs->open(f, O_WRONLY)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_RDWR)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_WRONLY | O_APPEND)) == 0);
  CHECK(err_of(t.fs->open(f, O_WRONLY | O_APPEND | O_TRUNC)) == EPERM);
  CHECK(err_of(t.fs->open(f, O_RDONLY)) == 0);
  SetAttr size;
  size.size = 0;
  CHECK(err_of(t.fs->setattr(f, size, Caller{})) == EPERM);
  SetAttr mode;
  mode.mode = 0600;
  CHECK(err_of(t.fs->setattr(f, mode, Caller{})) == EPERM);
  SetAttr touch;  // "touch" with no times given is allowed on an append-only file
  touch.atime = touch.mtime = SetAttr::Time::kNow;
  CHECK(err_of(t.fs->setattr(f, touch, Caller{})) == 0);
  CHECK(err_of(t.fs->fallocate(f, FALLOC_FL_KEEP_SIZE, 0, 65536)) == 0);
  CHECK(err_of(t.fs->fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)) == EPERM);
  CHECK(err_of(t.fs->fallocate(f, FALLOC_FL_ZERO_RANGE, 0, 4096)) == EPERM);
  CHECK(err_of(t.fs->setxattr(f, "user.k", bytes("w"), 0)) == EPERM);
  CHECK(err_of(t.fs->removexattr(f, "user.k")) == EPERM);
  CHECK(err_of(t.fs->unlink(kRootIno, "log")) == EPERM);
  CHECK(err_of(t.fs->rename(kRootIno, "log", kRootIno, "log2", 0)) == EPERM);
  CHECK(err_of(t.fs->link(f, kRootIno, "log3")) == EPERM);
  std::vector<uint8_t> back(32);
  REQUIRE(*t.fs->read(f, 0, back) == 12);
  CHECK(std::string(back.begin(), back.begin() + 12) == "line1\nline2\n");
  t.set(f, 0);
  CHECK(err_of(t.fs->unlink(kRootIno, "log")) == 0);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("append_only_directory_keeps_its_names", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t d = t.dir(kRootIno, "d");
  t.file(d, "kept");
  t.file(kRootIno, "incoming");
  t.set(d, kFsAppendFl);
  CHECK(err_of(t.fs->create(d, "new", 0100644, Caller{})) == 0);  // adding names is fine
  CHECK(err_of(t.fs->rename(kRootIno, "incoming", d, "arrived", 0)) == 0);
  CHECK(err_of(t.fs->unlink(d, "kept")) == EPERM);
  CHECK(err_of(t.fs->rename(d, "kept", kRootIno, "out", 0)) == EPERM);
  CHECK(err_of(t.fs->rename(d, "kept", d, "renamed", 0)) == EPERM);
  t.set(d, 0);
  CHECK(err_of(t.fs->unlink(d, "kept")) == 0);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("noatime_flag_stops_access_time_updates", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t plain = t.file(kRootIno, "plain", "abc");
  const uint64_t quiet = t.file(kRootIno, "quiet", "abc");
  t.set(plain, kFsNodumpFl);  // also moves ctime past atime, so relatime updates on a read
  t.set(quiet, kFsNoatimeFl);
  const auto a_plain = t.fs->getattr(plain)->st_atim;
  const auto a_quiet = t.fs->getattr(quiet)->st_atim;
  std::vector<uint8_t> buf(8);
  REQUIRE(t.fs->read(plain, 0, buf));
  REQUIRE(t.fs->read(quiet, 0, buf));
  const auto b_plain = t.fs->getattr(plain)->st_atim;
  const auto b_quiet = t.fs->getattr(quiet)->st_atim;
  CHECK((b_plain.tv_sec != a_plain.tv_sec || b_plain.tv_nsec != a_plain.tv_nsec));
  CHECK((b_quiet.tv_sec == a_quiet.tv_sec && b_quiet.tv_nsec == a_quiet.tv_nsec));
  REQUIRE(t.fs->unmount());
}

TEST_CASE("sync_flag_makes_every_write_durable", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t synced = t.file(kRootIno, "synced");
  const uint64_t plain = t.file(kRootIno, "plain");  // the control: same writes, no flag
  t.set(synced, kFsSyncFl);
  REQUIRE(t.fs->fsyncdir(kRootIno, false));  // a commit: both files and the flag are on disk
  const std::string data(20000, 's');
  REQUIRE(t.fs->write(synced, 0, bytes(data)));
  REQUIRE(t.fs->write(plain, 0, bytes(data)));
  // A power cut now (nothing more is written): what the write promised must be on disk.
  REQUIRE(t.fs->shutdown(ShutdownMode::kNoFlush, "the test"));
  t.fs->forget(synced, 1);
  t.fs->forget(plain, 1);
  REQUIRE(t.fs->unmount());
  t.fs = mount_file_or_fail(t.img.path());
  auto s = t.fs->lookup(kRootIno, "synced");
  auto p = t.fs->lookup(kRootIno, "plain");
  REQUIRE(s);
  REQUIRE(p);
  CHECK(s->st_size == static_cast<off_t>(data.size()));
  CHECK(p->st_size == 0);  // not written through: lost with the power
  std::vector<uint8_t> back(data.size());
  REQUIRE(*t.fs->read(s->st_ino, 0, back) == data.size());
  CHECK(std::string(back.begin(), back.end()) == data);
  REQUIRE(t.fs->unmount());
}

TEST_CASE("flags_persist_across_a_remount", "[fs][inode_flags]") {
  if (!have_mkfs_btrfs()) return;
  Image t;
  const uint64_t f = t.file(kRootIno, "f");
  const uint64_t d = t.dir(kRootIno, "d");
  const uint32_t ff = kFsImmutableFl | kFsAppendFl | kFsNodumpFl | kFsNoatimeFl | kFsSyncFl | kFsNocowFl;
  t.set(f, ff);
  t.set(d, kFsDirsyncFl | kFsComprFl);
  FsXattr x = *t.fs->get_fsxattr(f);
  CHECK(x.xflags == (kXflagImmutable | kXflagAppend | kXflagNodump | kXflagNoatime | kXflagSync));
  REQUIRE(t.fs->unmount());
  t.fs = mount_file_or_fail(t.img.path());
  CHECK(t.get(f) == ff);
  CHECK(t.get(d) == (kFsDirsyncFl | kFsComprFl));
  // FSSETXATTR changes only the common flags: C stays, a goes.
  FsXattr nx;
  nx.xflags = kXflagImmutable;
  REQUIRE(t.fs->set_fsxattr(f, nx, root_caller()));
  CHECK(t.get(f) == (kFsImmutableFl | kFsNocowFl));
  nx.projid = 3;
  CHECK(err_of(t.fs->set_fsxattr(f, nx, root_caller())) == EOPNOTSUPP);
  t.set(f, 0);
  REQUIRE(t.fs->unmount());
}

}  // namespace
}  // namespace ubtrfs::fs
