// The dirty-data limits of FileData (fs/file_data.h, "Memory"): delalloc is bounded like the
// kernel's dirty page cache (balance_dirty_pages), with limits derived from the tree cache budget,
// and flushes move data through bounded buffers. Each test is named after the rule it protects.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::btrfs_check_clean;
using test::create_file;
using test::kMiB;
using test::mkfs_btrfs;
using test::mount_manual_commits;
using test::run;
using test::write_all;

using io::testing::pattern;
using io::testing::TempFile;

constexpr uint64_t kCache = 16 * kMiB;

// The image mounted with a tree cache of kCache and no periodic commit: only the limits can write
// data out.
std::unique_ptr<Filesystem> mount_small_cache(const std::string& path) {
  OpenOptions o;
  o.cache_bytes = kCache;
  return mount_manual_commits(path, {}, o);
}

// The live delalloc total, as `ubtrfs-inspect stats` shows it.
uint64_t delalloc_bytes(Filesystem& fs) {
  const std::string j = fs.stats_json();
  const std::string key = "\"delalloc_bytes\":";
  const size_t at = j.find(key);
  REQUIRE(at != std::string::npos);
  return std::stoull(j.substr(at + key.size()));
}

std::vector<uint8_t> read_back(Filesystem& fs, uint64_t ino, uint64_t len) {
  std::vector<uint8_t> out(len);
  uint64_t off = 0;
  while (off < len) {
    auto r = fs.read(ino, off, std::span<uint8_t>(out.data() + off, std::min<uint64_t>(len - off, kMiB)));
    REQUIRE(r);
    if (*r == 0) break;
    off += *r;
  }
  out.resize(off);
  return out;
}

TEST_CASE("dirty_limits_follow_the_cache_budget_within_bounds", "[dirty_limit]") {
  // 1/8 of the budget, clamped; the background threshold is half the limit.
  CHECK(dirty_limits(16 * kMiB).limit == kDirtyLimitMin);
  CHECK(dirty_limits(0).limit == kDirtyLimitMin);
  CHECK(dirty_limits(128 * kMiB).limit == 16 * kMiB);
  CHECK(dirty_limits(256 * kMiB).limit == kDirtyLimitMax);
  CHECK(dirty_limits(64ull << 30).limit == kDirtyLimitMax);
  for (uint64_t budget : std::vector<uint64_t>{0, 16 * kMiB, 100 * kMiB, 1ull << 30}) {
    const DirtyLimits l = dirty_limits(budget);
    CHECK(l.background == l.limit / 2);
    CHECK(l.background > 0);
  }
  // The whole point: the largest limit leaves most of the daemon's 64 MiB headroom to the rest.
  STATIC_REQUIRE(kDirtyLimitMax <= 32 * kMiB);
}

TEST_CASE("delalloc_writer_waits_above_dirty_limit", "[dirty_limit]") {
  if (!test::have_btrfs_progs()) return;
  TempFile img(512 * kMiB);
  mkfs_btrfs(img.path());
  const DirtyLimits lim = dirty_limits(kCache);
  // Four files written round-robin in 256 KiB pieces: none of them ever reaches the background
  // threshold on its own (each holds at most a quarter of the total), so only the global
  // throttle can keep the total at the limit.
  constexpr int kFiles = 4;
  constexpr uint64_t kPiece = 256 * 1024;
  constexpr int kRounds = 40;  // 40 MiB in all: five times the limit
  std::vector<std::vector<uint8_t>> content(kFiles);
  std::vector<uint64_t> inos;
  {
    auto fs = mount_small_cache(img.path());
    for (int f = 0; f < kFiles; ++f) inos.push_back(create_file(*fs, 1, "f" + std::to_string(f)));
    uint64_t highest = 0;
    for (int r = 0; r < kRounds; ++r) {
      for (int f = 0; f < kFiles; ++f) {
        const auto piece = pattern(kPiece, static_cast<uint32_t>(r * kFiles + f));
        write_all(*fs, inos[f], r * kPiece, piece);
        content[f].insert(content[f].end(), piece.begin(), piece.end());
        const uint64_t now = delalloc_bytes(*fs);
        INFO("round " << r << " file " << f << ": delalloc " << now << " limit " << lim.limit);
        REQUIRE(now <= lim.limit);
        highest = std::max(highest, now);
      }
    }
    // The workload did push the total past the background threshold, so the bound above was the
    // throttle's doing and not a workload too small to reach it.
    CHECK(highest > lim.background);
    for (int f = 0; f < kFiles; ++f) REQUIRE(read_back(*fs, inos[f], content[f].size()) == content[f]);
    REQUIRE(fs->unmount());
  }
  {
    auto fs = mount_small_cache(img.path());
    for (int f = 0; f < kFiles; ++f) REQUIRE(read_back(*fs, inos[f], content[f].size()) == content[f]);
    REQUIRE(fs->unmount());
  }
  btrfs_check_clean(img.path());
}

TEST_CASE("streaming_writer_flushes_its_inode_above_background_threshold", "[dirty_limit]") {
  if (!test::have_mkfs_btrfs()) return;
  TempFile img(512 * kMiB);
  mkfs_btrfs(img.path());
  const DirtyLimits lim = dirty_limits(kCache);
  auto fs = mount_small_cache(img.path());
  const uint64_t ino = create_file(*fs, 1, "stream");
  const auto piece = pattern(kMiB, 7);
  bool flushed = false;
  uint64_t prev = 0;
  for (uint64_t i = 0; i < 3 * lim.limit / kMiB; ++i) {
    write_all(*fs, ino, i * kMiB, piece);
    const uint64_t now = delalloc_bytes(*fs);
    INFO("after " << i + 1 << " MiB: delalloc " << now);
    REQUIRE(now <= lim.background);
    if (now < prev) flushed = true;
    prev = now;
  }
  CHECK(flushed);
  REQUIRE(fs->unmount());
}

TEST_CASE("flush_moves_extents_larger_than_the_io_chunk_intact", "[dirty_limit]") {
  if (!test::have_btrfs_progs()) return;
  TempFile img(512 * kMiB);
  mkfs_btrfs(img.path());
  // 3.5 MiB + 1 byte, below the background threshold: one run, flushed by fsync as one extent
  // that goes through the 1 MiB buffer four times (the last one partial).
  const uint64_t len = 3 * kFlushIoChunk + kFlushIoChunk / 2 + 1;
  REQUIRE(len < dirty_limits(kCache).background);
  const auto data = pattern(len, 42);
  uint64_t ino;
  {
    auto fs = mount_small_cache(img.path());
    ino = create_file(*fs, 1, "big");
    write_all(*fs, ino, 0, data);
    REQUIRE(delalloc_bytes(*fs) > 3 * kFlushIoChunk);
    REQUIRE(fs->fsync(ino, false));
    REQUIRE(delalloc_bytes(*fs) == 0);
    REQUIRE(fs->unmount());
  }
  {
    auto fs = mount_small_cache(img.path());
    REQUIRE(read_back(*fs, ino, len + 100) == data);  // checksums verified on read
    REQUIRE(fs->unmount());
  }
  btrfs_check_clean(img.path());
}

}  // namespace
}  // namespace ubtrfs::fs

namespace ubtrfs::fs {
namespace {

TEST_CASE("sector_pool_reuses_buffers_and_keeps_at_most_max_free", "[dirty_limit]") {
  constexpr uint32_t kSs = 4096;
  SectorPool pool(kSs, 2 * kSs);  // keeps two buffers free at most
  uint8_t* a = pool.get();
  uint8_t* b = pool.get();
  uint8_t* c = pool.get();
  REQUIRE(pool.allocated_bytes() == 3 * kSs);
  pool.put(a);
  pool.put(b);
  pool.put(c);  // over max_free: freed, not kept
  CHECK(pool.free_bytes() == 2 * kSs);
  CHECK(pool.allocated_bytes() == 2 * kSs);
  // A buffer in the pool is handed out again before anything new is allocated.
  uint8_t* d = pool.get();
  CHECK((d == a || d == b));
  CHECK(pool.allocated_bytes() == 2 * kSs);
  pool.put(d);
}

TEST_CASE("delalloc_sectors_come_from_and_return_to_the_pool_zeroed", "[dirty_limit]") {
  constexpr uint32_t kSs = 4096;
  SectorPool pool(kSs, 64 * kSs);
  auto no_fill = [](uint64_t, std::span<uint8_t>) -> Status { return {}; };
  {
    InodeDelalloc d(kSs, &pool);
    std::vector<uint8_t> ones(8 * kSs, 0xff);
    REQUIRE(d.write(0, ones, no_fill));
    CHECK(pool.allocated_bytes() == 8 * kSs);
    d.drop(0, 4 * kSs);
    CHECK(pool.free_bytes() == 4 * kSs);
    // A reused buffer that held 0xff bytes comes back zeroed: a 1-byte write reads zeros around it
    // (no fill: the sector is past EOF).
    REQUIRE(d.write(kSs + 10, std::vector<uint8_t>{7}, no_fill));
    CHECK(pool.allocated_bytes() == 8 * kSs);
    std::vector<uint8_t> got(kSs, 0xaa);
    d.overlay(kSs, got);
    for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == (i == 10 ? 7 : 0));
  }
  // The inode's buffers all went back when it went away.
  CHECK(pool.free_bytes() == 8 * kSs);
  CHECK(pool.allocated_bytes() == 8 * kSs);
}

}  // namespace
}  // namespace ubtrfs::fs
