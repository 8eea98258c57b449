// probe_existing_filesystem against images made by the real mkfs tools.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "io/probe.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::TempFile;

namespace {

// Runs a shell command quietly with the sbin directories on PATH; true on exit status 0.
bool run(const std::string& cmd) {
  const std::string full = "PATH=\"$PATH:/usr/sbin:/sbin\" " + cmd + " >/dev/null 2>&1";
  return std::system(full.c_str()) == 0;
}

bool have(const std::string& tool) { return run("command -v " + tool); }

}  // namespace

TEST_CASE("probe finds nothing on a zeroed image", "[probe]") {
  TempFile f(64 << 20);
  auto r = probe_existing_filesystem(f.path());
  REQUIRE(r);
  CHECK_FALSE(r->has_value());
}

TEST_CASE("probe of a missing path is ENOENT", "[probe]") {
  const std::string path = "/tmp/ubtrfs-io-test-probe-missing-4711";
  auto r = probe_existing_filesystem(path);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == ENOENT);
  CHECK_THAT(r.error().message, Catch::Contains(path));
}

TEST_CASE("probe recognizes btrfs made by mkfs.btrfs", "[probe]") {
  if (!have("mkfs.btrfs")) {
    WARN("mkfs.btrfs not installed: btrfs probe skipped");
    return;
  }
  TempFile f(256 << 20);
  REQUIRE(run("mkfs.btrfs -q -f '" + f.path() + "'"));
  auto r = probe_existing_filesystem(f.path());
  REQUIRE(r);
  REQUIRE(r->has_value());
  CHECK(**r == "btrfs");
}

TEST_CASE("probe recognizes ext4 made by mkfs.ext4", "[probe]") {
  if (!have("mkfs.ext4")) {
    WARN("mkfs.ext4 not installed: ext4 probe skipped");
    return;
  }
  TempFile f(16 << 20);
  REQUIRE(run("mkfs.ext4 -q -F '" + f.path() + "'"));
  auto r = probe_existing_filesystem(f.path());
  REQUIRE(r);
  REQUIRE(r->has_value());
  CHECK(**r == "ext4");

  SECTION("a second signature still reports a filesystem") {
    if (!have("mkfs.btrfs")) {
      WARN("mkfs.btrfs not installed: ambivalent probe skipped");
      return;
    }
    // Copy a valid btrfs superblock (at 64 KiB) into the ext4 image: two signatures.
    TempFile b(256 << 20);
    REQUIRE(run("mkfs.btrfs -q -f '" + b.path() + "'"));
    auto bdev = open_device(b.path(), OpenMode::kReadOnly);
    auto edev = open_device(f.path(), OpenMode::kReadWrite);
    REQUIRE(bdev);
    REQUIRE(edev);
    std::vector<uint8_t> super(4096);
    REQUIRE((*bdev)->read(65536, super));
    REQUIRE((*edev)->write(65536, super));
    REQUIRE((*edev)->flush());
    auto r2 = probe_existing_filesystem(f.path());
    REQUIRE(r2);
    REQUIRE(r2->has_value());
    CHECK((**r2 == "ext4" || **r2 == "btrfs" || **r2 == "ambivalent"));
  }
}
