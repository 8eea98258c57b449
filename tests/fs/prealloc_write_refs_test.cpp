// Writing into preallocated space in place (fs/file_nocow.cpp) beside delayed-ref runners.
//
// Converting a PREALLOC piece to REG drops the piece's reference and adds it back for the REG
// item (one ref key: they cancel). The space flusher runs delayed refs in a join handle of the
// same transaction at any moment, so it can take the extent's head between the two. If the drop
// came first, that head holds only the -1 of the extent's last reference: the runner frees the
// extent (or, born in this transaction, cancels it), and the +1 that follows finds no extent item
// — the transaction aborts and the filesystem goes read-only (found by xfstests generic/091,
// fsx with fallocate and direct I/O). The add must be queued before the drop.
//
// Rules named here: prealloc_conversion_adds_the_ref_before_dropping_it.
#include <linux/falloc.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "fs/filesystem.h"
#include "fs/mount_options.h"
#include "fs/transaction.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {
using test::have_mkfs_btrfs;
using test::have_tool;
using test::mkfs_btrfs;
using io::testing::pattern;
using io::testing::run;
using io::testing::TempFile;

TEST_CASE("prealloc_conversion_adds_the_ref_before_dropping_it", "[fs][nocow][concurrency]") {
  if (!have_mkfs_btrfs()) return;
  TempFile img(512ull << 20);
  mkfs_btrfs(img.path());
  OpenOptions o;
  o.path = img.path();
  MountOptions m;
  m.commit_interval_s = 300;  // the test's loop decides when commits happen
  auto mounted = Filesystem::mount(o, m);
  REQUIRE(mounted);
  Filesystem& fs = **mounted;
  auto st = fs.create(1, "f", 0100644, Caller{});
  REQUIRE(st);
  const uint64_t ino = st->st_ino;

  // The runner: delayed refs taken one head at a time, as fast as it can.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> runs{0};
  std::thread runner([&] {
    while (!stop.load()) {
      if (fs.info().transactions().run_delayed_refs(1)) runs.fetch_add(1);
    }
  });
  constexpr uint64_t kBlock = 4096;
  bool ok = true;
  std::string failure;
  for (int round = 0; round < 300 && ok; ++round) {
    // Whole preallocated extents born in this transaction, one sector each, each written over
    // completely: each conversion drops the extent's only reference and adds it back.
    const uint64_t base = static_cast<uint64_t>(round % 16) * 16 * kBlock;
    for (uint64_t b = 0; b < 16 && ok; b += 2) {
      if (auto r = fs.fallocate(ino, 0, base + b * kBlock, kBlock); !r) {
        ok = false;
        failure = "fallocate: " + r.error().message;
      }
    }
    for (uint64_t b = 0; b < 16 && ok; b += 2) {
      auto w = fs.write(ino, base + b * kBlock, pattern(kBlock, round + static_cast<int>(b)));
      if (!w) {
        ok = false;
        failure = "write: " + w.error().message;
      }
    }
    if (!ok) break;
    // fsync through the tree log flushes the dirty sectors in join handles of the running
    // transaction, beside the runner (as the space flusher's delalloc flush does).
    if (auto r = fs.fsync(ino, false); !r) {
      ok = false;
      failure = "fsync: " + r.error().message;
    }
    if (ok && round % 4 == 3)
      if (auto r = fs.info().transactions().commit(); !r) {
        ok = false;
        failure = "commit: " + r.error().message;
      }
    // Drop the range again so the next round preallocates new extents.
    if (ok && round % 16 == 15)
      if (auto r = fs.fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 256 * kBlock); !r) {
        ok = false;
        failure = "punch: " + r.error().message;
      }
  }
  stop.store(true);
  runner.join();
  INFO(failure);
  CHECK(ok);
  CHECK_FALSE(fs.info().transactions().aborted());
  INFO("delayed-ref runs beside the writes: " << runs.load());
  CHECK(runs.load() > 0);
  REQUIRE(fs.unmount());
  if (have_tool("btrfs")) CHECK(run(fmt::format("btrfs check {} >/dev/null 2>&1", img.path())) == 0);
}

}  // namespace
}  // namespace ubtrfs::fs
