// Mount option parsing (as mount(8), fstab and mount.fuse3 pass them) and the open gate.
#include <catch2/catch.hpp>

#include <cstring>

#include "fs/mount_options.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

TEST_CASE("defaults and every ubtrfs option parse") {
  auto d = parse_mount_options("");
  REQUIRE(d);
  CHECK_FALSE(d->read_only);
  CHECK(d->commit_interval_s == 30);
  CHECK_FALSE(d->cow_overwrite);
  CHECK(d->wb_inhibit);
  auto o = parse_mount_options(
      "ro,commit=5,cache_mb=64,log_level=debug,allow_other,default_permissions,subvolid=257,subvol=a/b,"
      "cow_overwrite=on,wb_inhibit=off");
  REQUIRE(o);
  CHECK(o->read_only);
  CHECK(o->commit_interval_s == 5);
  CHECK(o->cache_mb == 64);
  CHECK(o->log_level == "debug");
  CHECK(o->allow_other);
  CHECK(o->default_permissions);
  CHECK(o->subvolid == 257u);
  CHECK(o->subvol == std::string("a/b"));
  CHECK(o->cow_overwrite);
  CHECK_FALSE(o->wb_inhibit);
  CHECK_FALSE(o->wb_hold_recopied);
  // Fix 2: on = the handle's inhibitor and the transaction scope's hold; handle = the patch's
  // handle scope alone; the last one given wins.
  CHECK(d->wb_hold_recopied);
  auto h = parse_mount_options("wb_inhibit=handle");
  REQUIRE(h);
  CHECK(h->wb_inhibit);
  CHECK_FALSE(h->wb_hold_recopied);
  auto on = parse_mount_options("wb_inhibit=handle,wb_inhibit=on");
  REQUIRE(on);
  CHECK(on->wb_inhibit);
  CHECK(on->wb_hold_recopied);
  // File data written behind the flusher (io/write_behind.h): on by default.
  CHECK(d->write_behind);
  auto wb = parse_mount_options("write_behind=off");
  REQUIRE(wb);
  CHECK_FALSE(wb->write_behind);
  CHECK_FALSE(parse_mount_options("write_behind"));
  CHECK_FALSE(parse_mount_options("write_behind=sometimes"));
}

TEST_CASE("log_file takes a path, the last one wins, and needs a value") {
  CHECK(parse_mount_options("")->log_file.empty());
  auto o = parse_mount_options("rw,log_file=/var/log/ubtrfs/a b.log,commit=5");
  REQUIRE(o);
  CHECK(o->log_file == "/var/log/ubtrfs/a b.log");
  CHECK(o->commit_interval_s == 5);
  CHECK(parse_mount_options("log_file=rel/x.log,log_file=y=z.log")->log_file == "y=z.log");
  CHECK(parse_mount_options("log_file").error().message == "mount option 'log_file' needs a value");
  CHECK(parse_mount_options("log_file=").error().message == "mount option 'log_file' needs a value");
  CHECK(parse_mount_options("log_file=/x")->fuse_passthrough.empty());
}

TEST_CASE("later options win, as with mount(8)") {
  CHECK_FALSE(parse_mount_options("ro,rw")->read_only);
  CHECK(parse_mount_options("rw,ro")->read_only);
  CHECK(parse_mount_options("commit=10,commit=20")->commit_interval_s == 20);
}

TEST_CASE("generic options that mount(8) and fstab add are accepted and libfuse ones forwarded") {
  auto o = parse_mount_options("rw,relatime,nosuid,nodev,noexec,defaults,noauto,user,_netdev,x-systemd.automount,"
                               "fsname=/dev/loop0,subtype=ubtrfs");
  REQUIRE(o);
  REQUIRE(o->fuse_passthrough.size() == 2);
  CHECK(o->fuse_passthrough[0] == "fsname=/dev/loop0");
}

TEST_CASE("unknown options and bad values are errors naming them") {
  auto u = parse_mount_options("rw,inode_cache");
  REQUIRE_FALSE(u);
  CHECK(u.error().err == EINVAL);
  CHECK(u.error().message == "unknown mount option 'inode_cache'");
  CHECK(parse_mount_options("commit=0").error().message == "invalid value '0' for mount option 'commit'");
  CHECK(parse_mount_options("commit=abc").error().message == "invalid value 'abc' for mount option 'commit'");
  CHECK(parse_mount_options("commit").error().message == "mount option 'commit' needs a value");
  CHECK(parse_mount_options("ro=1").error().message == "mount option 'ro' takes no value");
  CHECK(parse_mount_options("log_level=loud").error().message == "invalid value 'loud' for mount option 'log_level'");
  CHECK(parse_mount_options("wb_inhibit=maybe").error().message ==
        "invalid value 'maybe' for mount option 'wb_inhibit'");
  CHECK_FALSE(parse_mount_options("cache_mb=0"));
  CHECK_FALSE(parse_mount_options("subvolid=x"));
}

namespace {
Superblock gate_super() {
  Superblock sb;
  std::memset(&sb, 0, sizeof(sb));
  sb.magic = kSuperMagic;
  sb.num_devices = 1;
  sb.incompat_flags = 0x341;
  sb.compat_ro_flags = 0x3;
  sb.flags = kHeaderFlagWritten;
  return sb;
}
}  // namespace

TEST_CASE("open gate: clean image mounts read-write, or read-only on request") {
  auto sb = gate_super();
  auto rw = decide_open_mode(sb, *parse_mount_options(""));
  REQUIRE(rw);
  CHECK(rw->mode == OpenMode::kReadWrite);
  CHECK(decide_open_mode(sb, *parse_mount_options("ro"))->mode == OpenMode::kReadOnly);
}

TEST_CASE("open gate: unknown incompat refuses any mount, naming the bits") {
  auto sb = gate_super();
  sb.incompat_flags = 0x341 | 0x100000;
  auto r = decide_open_mode(sb, *parse_mount_options("ro"));
  REQUIRE_FALSE(r);
  CHECK(r.error().err == EOPNOTSUPP);
  CHECK_THAT(r.error().message, Catch::Contains("0x100000"));
  sb.incompat_flags = 0x341 | kIncompatZoned;
  CHECK_THAT(decide_open_mode(sb, *parse_mount_options("ro")).error().message, Catch::Contains("ZONED"));
}

TEST_CASE("open gate: unknown compat_ro refuses read-write but allows read-only") {
  auto sb = gate_super();
  sb.compat_ro_flags = 0x3 | 0x400;
  auto rw = decide_open_mode(sb, *parse_mount_options(""));
  REQUIRE_FALSE(rw);
  CHECK(rw.error().err == EROFS);
  CHECK_THAT(rw.error().message, Catch::Contains("mount with -o ro"));
  CHECK(decide_open_mode(sb, *parse_mount_options("ro"))->mode == OpenMode::kReadOnly);
}

TEST_CASE("open gate: a log tree is replayed read-write and ignored read-only") {
  auto sb = gate_super();
  sb.log_root = 30785536;
  auto rw = decide_open_mode(sb, *parse_mount_options("rw"));
  REQUIRE(rw);
  CHECK(rw->mode == OpenMode::kReadWrite);
  CHECK(rw->replay_log_tree);
  CHECK_FALSE(rw->ignore_log_tree);
  auto ro = decide_open_mode(sb, *parse_mount_options("ro"));
  REQUIRE(ro);
  CHECK(ro->mode == OpenMode::kReadOnly);
  CHECK(ro->ignore_log_tree);
  CHECK_FALSE(ro->replay_log_tree);
  REQUIRE(ro->warnings.size() == 1);
  CHECK_THAT(ro->warnings[0], Catch::Contains("not visible") && Catch::Contains("mount read-write"));
  // No log: nothing to replay.
  sb.log_root = 0;
  CHECK_FALSE(decide_open_mode(sb, *parse_mount_options("rw"))->replay_log_tree);
}

TEST_CASE("open gate: nologreplay refuses read-write of an image with a log tree") {
  auto sb = gate_super();
  sb.log_root = 30785536;
  for (const char* o : {"nologreplay", "rescue=nologreplay", "norecovery"}) {
    auto rw = decide_open_mode(sb, *parse_mount_options(o));
    REQUIRE_FALSE(rw);
    CHECK(rw.error().err == EROFS);
    CHECK_THAT(rw.error().message, Catch::Contains("log tree at 30785536") && Catch::Contains("nologreplay"));
    CHECK(decide_open_mode(sb, *parse_mount_options(std::string(o) + ",ro"))->ignore_log_tree);
  }
  sb.log_root = 0;
  CHECK(decide_open_mode(sb, *parse_mount_options("nologreplay"))->mode == OpenMode::kReadWrite);
}

TEST_CASE("nologreplay, rescue=nologreplay and norecovery parse; other rescue options are refused") {
  CHECK_FALSE(parse_mount_options("")->nologreplay);
  CHECK(parse_mount_options("nologreplay")->nologreplay);
  CHECK(parse_mount_options("rescue=nologreplay")->nologreplay);
  CHECK(parse_mount_options("rescue=nologreplay:nologreplay")->nologreplay);
  CHECK(parse_mount_options("norecovery")->nologreplay);  // the kernel's older spelling
  CHECK(parse_mount_options("nologreplay=1").error().message == "mount option 'nologreplay' takes no value");
  CHECK(parse_mount_options("rescue").error().message == "mount option 'rescue' needs a value");
  CHECK_THAT(parse_mount_options("rescue=usebackuproot").error().message, Catch::Contains("usebackuproot"));
}

TEST_CASE("open gate: no free space tree (v1 cache) opens read-write, the ERROR flag refuses it") {
  // The free space tree is built by the first commit (fs/free_space_tree_build.h).
  auto sb = gate_super();
  sb.compat_ro_flags = 0;
  auto rw = decide_open_mode(sb, *parse_mount_options(""));
  REQUIRE(rw);
  CHECK(rw->mode == OpenMode::kReadWrite);
  CHECK(decide_open_mode(sb, *parse_mount_options("ro")));
  sb = gate_super();
  sb.flags = kHeaderFlagWritten | kSuperFlagError;
  CHECK_THAT(decide_open_mode(sb, *parse_mount_options("")).error().message, Catch::Contains("ERROR"));
}
