// BlockDevice::discard on every implementation (io/block_device.h): an image file gets a hole
// punched (allocated size drops, size unchanged, the range reads zeros, the rest is untouched),
// memory zero-fills, the fault device logs the discard in its write sequence and replays it, a
// power cut drops it, a shut gate refuses it; range and read-only checks as for write().
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "io/shutdown_gate.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::pattern;
using ubtrfs::io::testing::TempFile;

namespace {
uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}
}  // namespace

TEST_CASE("file device discard punches a hole and keeps the size", "[discard]") {
  TempFile f(4 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  BlockDevice& d = **dev;
  const auto data = pattern(4 << 20, 1);
  REQUIRE(d.write(0, data));
  REQUIRE(d.flush());
  const uint64_t before = allocated_bytes(f.path());
  auto st = d.discard(1 << 20, 2 << 20);
  if (!st && st.error().err == EOPNOTSUPP) {
    WARN("the temporary directory's filesystem cannot punch holes: not tested");
    return;
  }
  REQUIRE(st);
  CHECK(allocated_bytes(f.path()) + (2 << 20) <= before);
  CHECK(d.size() == (4u << 20));
  std::vector<uint8_t> back(4 << 20);
  REQUIRE(d.read(0, back));
  CHECK(std::equal(back.begin(), back.begin() + (1 << 20), data.begin()));
  CHECK(std::all_of(back.begin() + (1 << 20), back.begin() + (3 << 20), [](uint8_t b) { return b == 0; }));
  CHECK(std::equal(back.begin() + (3 << 20), back.end(), data.begin() + (3 << 20)));
  CHECK(d.discard(4 << 20, 1).error().err == EINVAL);
  CHECK(d.discard(0, 0));

  auto ro = open_device(f.path(), OpenMode::kReadOnly);
  REQUIRE(ro);
  CHECK((*ro)->discard(0, 4096).error().err == EROFS);
}

TEST_CASE("memory device discard zero-fills and counts", "[discard]") {
  MemoryDevice m(1 << 20);
  REQUIRE(m.write(0, pattern(1 << 20, 2)));
  REQUIRE(m.discard(4096, 8192));
  CHECK(m.discarded_bytes() == 8192);
  CHECK(std::all_of(m.bytes().begin() + 4096, m.bytes().begin() + 12288, [](uint8_t b) { return b == 0; }));
  CHECK(m.bytes()[4095] == pattern(1 << 20, 2)[4095]);
  CHECK(m.bytes()[12288] == pattern(1 << 20, 2)[12288]);
  CHECK(m.discard(1 << 20, 1).error().err == EINVAL);
}

TEST_CASE("fault device logs discards in the write sequence, replays and drops them", "[discard][fault]") {
  MemoryDevice inner(1 << 20);
  FaultInjectingDevice dev(inner, /*record_data=*/true);
  REQUIRE(dev.write(0, pattern(65536, 3)));
  REQUIRE(dev.discard(4096, 4096));
  REQUIRE(dev.write(8192, pattern(4096, 4)));
  const auto log = dev.write_log();
  REQUIRE(log.size() == 3);
  CHECK_FALSE(log[0].discard);
  CHECK(log[1].discard);
  CHECK(log[1].seq == 2);
  CHECK(log[1].offset == 4096);
  CHECK(log[1].length == 4096);
  CHECK(dev.writes() == 3);
  // Replaying the first two records reproduces the discard on the target.
  MemoryDevice target(1 << 20);
  REQUIRE(dev.replay(target, 2));
  CHECK(target.discarded_bytes() == 4096);
  CHECK(target.bytes()[4096] == 0);
  CHECK(target.bytes()[4095] == pattern(65536, 3)[4095]);
  // After a power cut a discard reaches nothing.
  dev.drop_writes_after(3);
  REQUIRE(dev.discard(0, 4096));
  CHECK(dev.write_log().back().outcome == WriteOutcome::kDropped);
  CHECK(inner.discarded_bytes() == 4096);
}

TEST_CASE("gated device refuses a discard once shut", "[discard][shutdown]") {
  auto inner = std::make_shared<MemoryDevice>(1 << 20);
  GatedDevice g(inner);
  REQUIRE(g.discard(0, 4096));
  g.shutdown_gate()->shut_down();
  CHECK(g.discard(0, 4096).error().err == EIO);
  CHECK(inner->discarded_bytes() == 4096);
}
