// The live-mount side of ubtrfs-inspect without a mount: the generic text layout of the daemon's
// JSON (tools/inspect/json_text.h) and the mountinfo reading that decides what is a ubtrfs mount
// (tools/inspect/mount_client.h).
#include <catch2/catch.hpp>

#include <string>

#include "tools/inspect/json_text.h"
#include "tools/inspect/mount_client.h"

using namespace ubtrfs;
using namespace ubtrfs::inspect;

TEST_CASE("json text: scalar runs are aligned, numbers right-aligned, sections indented") {
  auto t = json_text(R"({"generation":12,"commits":3,"name":"x","restarts":{"write_lock":0,"read_block":1500},)"
                     R"("ok":true,"ratio":0.5,"missing":null})");
  REQUIRE(t);
  CHECK(*t ==
        "generation  12\n"
        "commits      3\n"
        "name        x\n"
        "restarts:\n"
        "  write_lock     0\n"
        "  read_block  1500\n"
        "ok       true\n"
        "ratio    0.5\n"
        "missing  -\n");
}

TEST_CASE("json text: arrays of flat objects are tables, scalar arrays are lists, deeper arrays sections") {
  auto t = json_text(R"({"space_info":[{"flags":"data","total":1048576,"used":5},{"flags":"metadata","used":77,"x":1}],)"
                     R"("states":["a","b"],"empty":[],"deep":[{"a":{"b":1}}],"none":{}})");
  REQUIRE(t);
  CHECK(*t ==
        "space_info:\n"
        "  flags       total  used  x\n"
        "  data      1048576     5  -\n"
        "  metadata        -    77  1\n"
        "states  a, b\n"
        "empty   (none)\n"
        "deep[0]:\n"
        "  a:\n"
        "    b  1\n"
        "none:  (none)\n");
}

TEST_CASE("json text: member order is the daemon's, and what is not JSON is an error") {
  auto t = json_text(R"({"z":1,"a":2})");
  REQUIRE(t);
  CHECK(*t == "z  1\na  2\n");
  auto bad = json_text("{\"a\":");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().err == EPROTO);
}

TEST_CASE("log text: one line per record, filtered by level, dropped records noted") {
  const std::string log =
      R"({"capacity":3,"dropped":4,"records":[)"
      R"({"time":"2025-01-02T03:04:05.006Z","level":"info","message":"mounted"},)"
      R"({"time":"2025-01-02T03:04:06.000Z","level":"warning","message":"slow"},)"
      R"({"time":"2025-01-02T03:04:07.000Z","level":"error","message":"csum failed"}]})";
  auto all = log_text(log, LogLevel::kInfo);
  REQUIRE(all);
  CHECK(*all ==
        "(4 older records were dropped: the daemon keeps the last 3)\n"
        "2025-01-02T03:04:05.006Z  info      mounted\n"
        "2025-01-02T03:04:06.000Z  warning   slow\n"
        "2025-01-02T03:04:07.000Z  error     csum failed\n");
  auto errors = log_text(log, LogLevel::kError);
  REQUIRE(errors);
  CHECK(errors->find("slow") == std::string::npos);
  CHECK(errors->find("csum failed") != std::string::npos);
  auto warn_json = log_json(log, LogLevel::kWarning);
  REQUIRE(warn_json);
  CHECK(warn_json->find("\"mounted\"") == std::string::npos);
  CHECK(warn_json->find("\"slow\"") != std::string::npos);
  CHECK(warn_json->find("\"dropped\":4") != std::string::npos);
  CHECK(log_text(R"({"records":{}})", LogLevel::kInfo).error().err == EPROTO);
  CHECK(parse_log_level("warn") == LogLevel::kWarning);
  CHECK(parse_log_level("warning") == LogLevel::kWarning);
  CHECK_FALSE(parse_log_level("debug"));
}

TEST_CASE("mountinfo: fields, escapes, optional fields; the covering mount of a path") {
  const std::string text =
      "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
      "30 22 0:26 / /tmp rw,nosuid shared:5 - tmpfs tmpfs rw,size=100k\n"
      "41 30 0:50 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:30 - fuse.ubtrfs /img/a.img "
      "rw,user_id=0,group_id=0,default_permissions\n"
      "42 30 0:51 / /tmp/my\\040mnt rw master:2 - fuse.ubtrfs /img/b.img rw,user_id=1000,group_id=1000,allow_other\n"
      "garbage line\n";
  const auto m = parse_mountinfo(text);
  REQUIRE(m.size() == 4);
  CHECK(m[0].mount_point == "/");
  CHECK(m[0].fstype == "ext4");
  CHECK(m[1].major == 0);
  CHECK(m[1].minor == 26);
  CHECK(m[2].mount_point == "/tmp/my mnt");
  CHECK(m[2].source == "/img/a.img");
  CHECK(m[2].super_options == "rw,user_id=0,group_id=0,default_permissions");
  CHECK(m[3].fstype == "fuse.ubtrfs");

  CHECK(mount_covering(m, "/usr/bin")->fstype == "ext4");
  CHECK(mount_covering(m, "/tmp")->fstype == "tmpfs");
  CHECK(mount_covering(m, "/tmpx")->fstype == "ext4");  // a prefix of the name is not a parent
  CHECK(mount_covering(m, "/tmp/my mnt/a/b")->source == "/img/b.img");  // the later mount hides the earlier
  CHECK(mount_covering(m, "/tmp/my mnt")->source == "/img/b.img");
  CHECK_FALSE(mount_covering({}, "/x"));
}
