// FaultInjectingDevice: power cut (drop after N), torn writes, EIO injection, the write log and
// prefix replay, and concurrent use.
#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::pattern;

namespace {

bool region_is(MemoryDevice& m, uint64_t off, const std::vector<uint8_t>& want) {
  return std::equal(want.begin(), want.end(), m.bytes().begin() + static_cast<ptrdiff_t>(off));
}

bool region_zero(MemoryDevice& m, uint64_t off, size_t len) {
  return std::all_of(m.bytes().begin() + static_cast<ptrdiff_t>(off),
                     m.bytes().begin() + static_cast<ptrdiff_t>(off + len), [](uint8_t b) { return b == 0; });
}

}  // namespace

TEST_CASE("fault device passes I/O through when no fault is set", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);
  CHECK(dev.size() == mem.size());
  CHECK(dev.fd() == -1);
  const auto data = pattern(4096, 1);
  REQUIRE(dev.write(8192, data));
  std::vector<uint8_t> back(4096);
  REQUIRE(dev.read(8192, back));
  CHECK((back == data));
  CHECK(region_is(mem, 8192, data));
  CHECK(dev.writes() == 1);
  CHECK(dev.reads() == 1);
  auto st = dev.write((1 << 20) - 1, data);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EINVAL);
  CHECK(dev.writes() == 1);  // refused calls are not numbered
}

TEST_CASE("fault device drops every write after the N-th like a power cut", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);
  dev.drop_writes_after(3);
  std::vector<std::vector<uint8_t>> data;
  for (uint32_t i = 0; i < 6; ++i) {
    data.push_back(pattern(4096, i + 1));
    CHECK(dev.write(i * 4096ull, data[i]));  // all report success
  }
  CHECK(dev.flush());
  for (uint32_t i = 0; i < 3; ++i) CHECK(region_is(mem, i * 4096ull, data[i]));
  for (uint32_t i = 3; i < 6; ++i) CHECK(region_zero(mem, i * 4096ull, 4096));

  const auto log = dev.write_log();
  REQUIRE(log.size() == 6);
  CHECK(log[2].outcome == WriteOutcome::kApplied);
  CHECK(log[2].bytes_applied == 4096);
  CHECK(log[3].outcome == WriteOutcome::kDropped);
  CHECK(log[3].bytes_applied == 0);
  CHECK(log[5].outcome == WriteOutcome::kDropped);
}

TEST_CASE("fault device tears a chosen write", "[fault]") {
  MemoryDevice mem(1 << 20);
  const auto old_bytes = pattern(16384, 7);
  std::copy(old_bytes.begin(), old_bytes.end(), mem.bytes().begin());
  FaultInjectingDevice dev(mem);
  dev.tear_write(2, 1000);
  const auto first = pattern(4096, 8);
  const auto second = pattern(16384, 9);
  REQUIRE(dev.write(65536, first));
  REQUIRE(dev.write(0, second));  // torn: reports success
  // Only the first 1000 bytes of the new data reached the device; the rest is the old content.
  CHECK(std::equal(second.begin(), second.begin() + 1000, mem.bytes().begin()));
  CHECK(std::equal(old_bytes.begin() + 1000, old_bytes.end(), mem.bytes().begin() + 1000));
  const auto log = dev.write_log();
  REQUIRE(log.size() == 2);
  CHECK(log[1].outcome == WriteOutcome::kTorn);
  CHECK(log[1].bytes_applied == 1000);
  CHECK(log[1].length == 16384);
  // Write 3 is whole again.
  REQUIRE(dev.write(0, second));
  CHECK(region_is(mem, 0, second));
}

TEST_CASE("fault device injects EIO on the N-th read and write, once", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);
  dev.fail_nth_read(2);
  dev.fail_nth_write(3);
  std::vector<uint8_t> buf(512);
  const auto data = pattern(512, 3);
  CHECK(dev.read(0, buf));
  auto r = dev.read(4096, buf);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == EIO);
  CHECK_THAT(r.error().message, Catch::Contains("offset 4096"));
  CHECK(dev.read(4096, buf));  // one-shot

  CHECK(dev.write(0, data));
  CHECK(dev.write(512, data));
  auto w = dev.write(1024, data);
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  CHECK(region_zero(mem, 1024, 512));  // the failed write did not land
  CHECK(dev.write(1024, data));
  CHECK(region_is(mem, 1024, data));
  CHECK(dev.write_log()[2].outcome == WriteOutcome::kFailed);
}

TEST_CASE("fault device fails a physical range until cleared", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);
  dev.fail_range(8192, 12288, FaultOps::kRead);
  dev.fail_range(65536, 65537, FaultOps::kWrite);
  std::vector<uint8_t> buf(4096);
  const auto data = pattern(4096, 5);

  CHECK(dev.read(4096, buf));                   // ends where the range begins
  CHECK_FALSE(dev.read(4096 + 1, buf));         // overlaps by one byte
  CHECK_FALSE(dev.read(12287, {buf.data(), 1}));
  CHECK(dev.read(12288, buf));
  CHECK(dev.write(8192, data));                 // range is read-only faulty
  auto w = dev.write(65536 - 4095, data);       // covers byte 65536
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  CHECK(dev.read(65536, buf));

  dev.clear_faults();
  CHECK(dev.read(8192, buf));
  CHECK((buf == data));
  CHECK(dev.write(65536 - 4095, data));
}

TEST_CASE("fault device write log records flush points and replays prefixes", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem, /*record_data=*/true);
  const auto a = pattern(4096, 1), b = pattern(4096, 2), c = pattern(8192, 3), d = pattern(4096, 4);
  REQUIRE(dev.write(0, a));
  REQUIRE(dev.write(4096, b));
  REQUIRE(dev.flush());
  REQUIRE(dev.write(0, c));  // overwrites a and b
  REQUIRE(dev.flush());
  REQUIRE(dev.write(65536, d));

  const auto log = dev.write_log();
  REQUIRE(log.size() == 4);
  for (uint64_t i = 0; i < 4; ++i) CHECK(log[i].seq == i + 1);
  CHECK(log[2].offset == 0);
  CHECK(log[2].length == 8192);
  CHECK((log[2].data == c));
  CHECK(log[0].flushes_before == 0);
  CHECK(log[2].flushes_before == 1);
  CHECK(log[3].flushes_before == 2);
  CHECK(dev.flush_points() == std::vector<uint64_t>{2, 3});
  CHECK(dev.flushes() == 2);

  SECTION("prefix at the first flush point") {
    MemoryDevice crash(1 << 20);
    REQUIRE(dev.replay(crash, dev.flush_points()[0]));
    CHECK(region_is(crash, 0, a));
    CHECK(region_is(crash, 4096, b));
    CHECK(region_zero(crash, 65536, 4096));
  }
  SECTION("prefix with the last write torn") {
    MemoryDevice crash(1 << 20);
    REQUIRE(dev.replay(crash, 3, 100));
    CHECK(std::equal(c.begin(), c.begin() + 100, crash.bytes().begin()));
    CHECK(std::equal(a.begin() + 100, a.end(), crash.bytes().begin() + 100));
    CHECK(region_is(crash, 4096, b));
  }
  SECTION("whole log reproduces the device") {
    MemoryDevice crash(1 << 20);
    REQUIRE(dev.replay(crash, 4));
    CHECK((crash.bytes() == mem.bytes()));
  }
  SECTION("beyond the log is EINVAL") {
    MemoryDevice crash(1 << 20);
    auto st = dev.replay(crash, 5);
    REQUIRE_FALSE(st);
    CHECK(st.error().err == EINVAL);
  }
  SECTION("clear_log starts a new log") {
    dev.clear_log();
    CHECK(dev.write_log().empty());
    CHECK(dev.flush_points().empty());
    REQUIRE(dev.write(0, a));
    CHECK(dev.write_log().at(0).seq == 5);
  }
}

TEST_CASE("fault device replay needs recorded data", "[fault]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);  // record_data off
  REQUIRE(dev.write(0, pattern(4096, 1)));
  CHECK(dev.write_log().at(0).data.empty());
  MemoryDevice crash(1 << 20);
  auto st = dev.replay(crash, 1);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EINVAL);
}

TEST_CASE("fault device numbers writes uniquely under concurrency", "[fault]") {
  constexpr int kThreads = 4;
  constexpr int kWrites = 200;
  MemoryDevice mem(kThreads * kWrites * 512);
  FaultInjectingDevice dev(mem, true);
  dev.drop_writes_after(kThreads * kWrites / 2);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> back(512);
      for (int i = 0; i < kWrites; ++i) {
        const uint64_t off = static_cast<uint64_t>(t * kWrites + i) * 512;
        (void)dev.write(off, pattern(512, static_cast<uint32_t>(off)));
        (void)dev.read(off, back);
        if (i % 50 == 0) (void)dev.flush();
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(dev.writes() == kThreads * kWrites);
  CHECK(dev.reads() == kThreads * kWrites);
  const auto log = dev.write_log();
  REQUIRE(log.size() == kThreads * kWrites);
  std::set<uint64_t> offsets;
  size_t applied = 0;
  for (size_t i = 0; i < log.size(); ++i) {
    CHECK(log[i].seq == i + 1);
    offsets.insert(log[i].offset);
    applied += log[i].outcome == WriteOutcome::kApplied;
  }
  CHECK(offsets.size() == log.size());
  CHECK(applied == kThreads * kWrites / 2);
  // Replaying the whole log gives every write, dropped or not.
  MemoryDevice crash(mem.size());
  REQUIRE(dev.replay(crash, log.size()));
  size_t wrong = 0;
  for (uint64_t off = 0; off < crash.size(); off += 512)
    wrong += !region_is(crash, off, pattern(512, static_cast<uint32_t>(off)));
  CHECK(wrong == 0);
}
