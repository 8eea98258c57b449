// Delalloc sectors: partial writes are filled from the file, truncate zeroes tails, punch zeroes
// and drops, runs are maximal.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>

#include "fs/delalloc.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

namespace {
constexpr uint32_t kSectorSize = 4096;  // InodeDelalloc takes a uint32_t

// "On-disk" content: byte at x is (x * 7) & 0xff.
struct Backing {
  int fills = 0;
  InodeDelalloc::FillFn fn() {
    return [this](uint64_t s, std::span<uint8_t> sector) -> Status {
      ++fills;
      for (size_t i = 0; i < sector.size(); ++i) sector[i] = static_cast<uint8_t>((s + i) * 7);
      return {};
    };
  }
};
}  // namespace

TEST_CASE("delalloc fills partially written sectors from the file and not fully written ones", "[delalloc]") {
  InodeDelalloc d(kSectorSize);
  Backing b;
  std::vector<uint8_t> data(2 * kSectorSize, 0xAB);
  REQUIRE(d.write(100, data, b.fn()));  // touches 3 sectors, first and last partial
  REQUIRE(b.fills == 2);
  REQUIRE(d.bytes() == 3 * kSectorSize);
  std::vector<uint8_t> out(3 * kSectorSize, 0);
  d.overlay(0, out);
  for (size_t i = 0; i < out.size(); ++i) {
    uint8_t want = (i >= 100 && i < 100 + 2 * kSectorSize) ? 0xAB : static_cast<uint8_t>(i * 7);
    REQUIRE(out[i] == want);
  }
  std::vector<uint8_t> full(kSectorSize, 1);
  REQUIRE(d.write(8 * kSectorSize, full, b.fn()));
  REQUIRE(b.fills == 2);  // aligned full sector: no fill
}

TEST_CASE("delalloc fill errors leave the sector absent", "[delalloc]") {
  InodeDelalloc d(kSectorSize);
  std::vector<uint8_t> data(10, 1);
  auto st = d.write(5, data, [](uint64_t, std::span<uint8_t>) -> Status { return fail(EIO, "boom"); });
  REQUIRE(!st);
  REQUIRE(st.error().err == EIO);
  REQUIRE(d.empty());
}

TEST_CASE("delalloc truncate drops sectors past the size and zeroes the tail of the last", "[delalloc]") {
  InodeDelalloc d(kSectorSize);
  Backing b;
  std::vector<uint8_t> data(4 * kSectorSize, 0xCD);
  REQUIRE(d.write(0, data, b.fn()));
  d.truncate(kSectorSize + 10);
  REQUIRE(d.bytes() == 2 * kSectorSize);
  auto c = d.copy(kSectorSize, kSectorSize);
  for (size_t i = 0; i < kSectorSize; ++i) REQUIRE(c[i] == (i < 10 ? 0xCD : 0));
  d.truncate(0);
  REQUIRE(d.empty());
}

TEST_CASE("delalloc zero_range drops whole sectors and zeroes partial ones", "[delalloc]") {
  InodeDelalloc d(kSectorSize);
  Backing b;
  std::vector<uint8_t> data(4 * kSectorSize, 0xEE);
  REQUIRE(d.write(0, data, b.fn()));
  d.zero_range(kSectorSize / 2, 3 * kSectorSize);
  REQUIRE(d.has_sector(0));
  REQUIRE(!d.has_sector(kSectorSize));
  REQUIRE(!d.has_sector(2 * kSectorSize));
  REQUIRE(d.has_sector(3 * kSectorSize));
  auto c = d.copy(0, kSectorSize);
  for (size_t i = 0; i < kSectorSize; ++i) REQUIRE(c[i] == (i < kSectorSize / 2 ? 0xEE : 0));
  auto runs = d.runs();
  REQUIRE(runs.size() == 2);
  REQUIRE(runs[0].start == 0);
  REQUIRE(runs[0].len == kSectorSize);
  REQUIRE(runs[1].start == 3 * kSectorSize);
  REQUIRE(*d.next_present(kSectorSize) == 3 * kSectorSize);
}

TEST_CASE("delalloc runs are maximal and drop forgets exactly the range", "[delalloc]") {
  InodeDelalloc d(kSectorSize);
  Backing b;
  std::mt19937 rng(5);
  std::vector<bool> model(64, false);
  for (int i = 0; i < 200; ++i) {
    uint64_t s = rng() % 64, n = 1 + rng() % 4;
    n = std::min<uint64_t>(n, 64 - s);
    if (rng() % 3) {
      std::vector<uint8_t> data(n * kSectorSize, static_cast<uint8_t>(i));
      REQUIRE(d.write(s * kSectorSize, data, b.fn()));
      for (uint64_t x = s; x < s + n; ++x) model[x] = true;
    } else {
      d.drop(s * kSectorSize, n * kSectorSize);
      for (uint64_t x = s; x < s + n; ++x) model[x] = false;
    }
    std::vector<bool> seen(64, false);
    uint64_t prev_end = UINT64_MAX;
    for (auto r : d.runs()) {
      REQUIRE(r.start != prev_end);  // maximal: never adjacent to the previous run
      prev_end = r.start + r.len;
      for (uint64_t x = r.start / kSectorSize; x < (r.start + r.len) / kSectorSize; ++x) seen[x] = true;
    }
    REQUIRE(seen == model);
  }
}
