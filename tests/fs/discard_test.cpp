// FITRIM and -o discard (fs/discard.h) through the Filesystem facade on a memory image whose
// discards zero the bytes (io::MemoryDevice) behind a device that logs them (io/fault_device.h):
// a discard of anything still needed shows up as a checksum failure, a tree block that no longer
// verifies, or wrong file contents.
//
// Rules named here:
//   trim_never_touches_allocated_pinned_or_reserved_space: with committed files, a file written
//     and fsynced in the running transaction (reserved extents, tree-log blocks) and a committed
//     file deleted in it (pinned extents), FITRIM discards only free space — the image as a crash
//     at that instant would leave it mounts, replays its log and reads all three files — and never
//     the first MiB or a superblock copy; once the deletion is committed the next FITRIM discards
//     the deleted file's space too;
//   trim_during_concurrent_writes_and_commits_never_discards_allocated_space;
//   async_discard_discards_what_a_commit_freed_and_never_a_range_allocated_again;
//   discard_mount_options (discard, discard=async, discard=sync, nodiscard).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fs/discard.h"
#include "fs/filesystem.h"
#include "fs/mount_options.h"
#include "fs/transaction.h"
#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"
#include "tree/format.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
namespace stdfs = std::filesystem;

namespace {

using test::device_options;
using test::fresh_image;
using test::kFreshImageSize;
using test::kRootIno;
using test::make_file;
using test::mkfs_binary;
using test::seeded_bytes;

Result<std::unique_ptr<Filesystem>> mount_for_trim(io::BlockDevice& dev, bool discard = false) {
  OpenOptions o = device_options(dev);
  o.writeback.enabled = false;
  MountOptions m;
  m.commit_interval_s = 300;  // commits only where the test asks for them
  m.discard = discard;
  return Filesystem::mount(o, m);
}

// The contents of `name` in the root, or empty with `err` set: no assertion, the caller judges.
std::vector<uint8_t> read_unchecked(Filesystem& f, const std::string& name, int* err = nullptr) {
  auto st = f.lookup(kRootIno, name);
  if (!st) {
    if (err) *err = st.error().err;
    return {};
  }
  std::vector<uint8_t> out(static_cast<size_t>(st->st_size));
  auto n = f.read(st->st_ino, 0, out);
  f.forget(st->st_ino, 1);
  if (!n) {
    if (err) *err = n.error().err;
    return {};
  }
  out.resize(*n);
  return out;
}

void remove_file(Filesystem& f, const std::string& name, uint64_t ino) {
  REQUIRE(f.unlink(kRootIno, name));
  f.forget(ino, 1);  // the last reference: the inode is queued for eviction (a delayed iput)
  REQUIRE(f.run_delayed_iputs());  // and its extents go now
}

nlohmann::json discard_stats(Filesystem& f) { return nlohmann::json::parse(f.stats_json())["discard"]; }

// The discard records of the device's log since `from` (an index into it).
std::vector<io::WriteRecord> discards(const io::FaultInjectingDevice& dev, size_t from = 0) {
  std::vector<io::WriteRecord> out;
  auto log = dev.write_log();
  for (size_t i = from; i < log.size(); ++i)
    if (log[i].discard) out.push_back(log[i]);
  return out;
}

bool overlaps(const io::WriteRecord& r, uint64_t start, uint64_t len) {
  return r.offset < start + len && start < r.offset + r.length;
}

}  // namespace

TEST_CASE("trim_never_touches_allocated_pinned_or_reserved_space", "[discard]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build
  io::FaultInjectingDevice dev(*mem);
  const auto a = seeded_bytes(4 << 20, 1), b = seeded_bytes(2 << 20, 2), c = seeded_bytes(8 << 20, 3);
  auto mounted = mount_for_trim(dev);
  REQUIRE(mounted);
  Filesystem& f = **mounted;

  const uint64_t ia = make_file(f, "a", a);
  const uint64_t ic = make_file(f, "c", c);
  REQUIRE(f.info().transactions().commit());
  // Running transaction: b's extents reserved and written, its tree log on disk (fsync); c
  // deleted, its extents' references dropped now, so they are pinned until the next commit.
  const uint64_t ib = make_file(f, "b", b);
  REQUIRE(f.fsync(ib, false));
  remove_file(f, "c", ic);
  REQUIRE(f.info().transactions().run_delayed_refs(0));

  const size_t log_mark = dev.write_log().size();
  auto t1 = f.trim(0, UINT64_MAX, 0);
  REQUIRE(t1);
  CHECK(*t1 > kFreshImageSize / 2);  // most of the device is free
  const auto recs = discards(dev, log_mark);
  REQUIRE(!recs.empty());
  uint64_t sum = 0;
  for (const auto& r : recs) {
    sum += r.length;
    CHECK_FALSE(overlaps(r, 0, kReserved1MForSuper));
    CHECK_FALSE(overlaps(r, super_offset(1), kSuperInfoSize));
  }
  CHECK(sum == *t1);
  CHECK(discard_stats(f)["fitrim_bytes"].get<uint64_t>() == *t1);

  // A crash now: the image holds the last commit (a and c) plus b's log. Every byte of it must have
  // survived the trim.
  {
    io::MemoryDevice crash(kFreshImageSize);
    crash.bytes() = mem->bytes();
    auto m2 = mount_for_trim(crash);
    REQUIRE(m2);
    int err = 0;
    CHECK(read_unchecked(**m2, "a", &err) == a);
    CHECK(err == 0);
    CHECK(read_unchecked(**m2, "b", &err) == b);
    CHECK(err == 0);
    CHECK(read_unchecked(**m2, "c", &err) == c);  // pinned: the committed tree still points at it
    CHECK(err == 0);
    REQUIRE((*m2)->unmount());
  }

  // Once the deletion is committed, c's space is free and the next trim discards it.
  REQUIRE(f.info().transactions().commit());
  auto t2 = f.trim(0, UINT64_MAX, 0);
  REQUIRE(t2);
  CHECK(*t2 + (1 << 20) >= *t1 + c.size());
  // minlen: nothing shorter is discarded.
  const size_t mark2 = dev.write_log().size();
  auto t3 = f.trim(0, UINT64_MAX, 32ull << 20);
  REQUIRE(t3);
  for (const auto& r : discards(dev, mark2)) CHECK(r.length >= (32ull << 20));
  CHECK(*t3 <= *t2);
  CHECK(f.trim(0, 100, 0).error().err == EINVAL);  // shorter than a sector
  CHECK(f.trim(2 * kFreshImageSize + (1ull << 30), 1 << 20, 0).error().err == EINVAL);  // beyond everything
  CHECK(f.trim(UINT64_MAX, 1 << 20, 0).error().err == EINVAL);
  auto tail = f.trim(kFreshImageSize - (1 << 20), UINT64_MAX, 0);  // a length past the end is truncated
  REQUIRE(tail);

  f.forget(ia, 1);
  f.forget(ib, 1);
  REQUIRE(f.unmount());
  mounted->reset();
  auto m3 = mount_for_trim(*mem);
  REQUIRE(m3);
  CHECK(read_unchecked(**m3, "a") == a);
  CHECK(read_unchecked(**m3, "b") == b);
  int err = 0;
  read_unchecked(**m3, "c", &err);
  CHECK(err == ENOENT);
  REQUIRE((*m3)->unmount());
}

TEST_CASE("trim_during_concurrent_writes_and_commits_never_discards_allocated_space", "[discard]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  std::vector<std::string> live;
  {
    auto mounted = mount_for_trim(*mem);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> trims{0};
    std::thread trimmer([&] {
      while (!stop.load()) {
        auto r = f.trim(0, UINT64_MAX, 0);
        if (!r) FAIL_CHECK("trim failed: " << r.error().message);
        trims.fetch_add(1);
      }
    });
    // The trimmer runs before and during the writes: on a loaded machine it could otherwise be
    // scheduled only after them (the test then proved nothing and said so: trims == 0).
    while (trims.load() == 0) std::this_thread::yield();
    for (int i = 0; i < 40; ++i) {
      const std::string name = "f" + std::to_string(i);
      const uint64_t ino = make_file(f, name, seeded_bytes(256 << 10, static_cast<uint8_t>(i)));
      if (i % 3 == 0) {
        remove_file(f, name, ino);
      } else {
        f.forget(ino, 1);
        live.push_back(name);
      }
      if (i % 5 == 4) REQUIRE(f.info().transactions().commit());
    }
    stop = true;
    trimmer.join();
    CHECK(trims.load() > 0);
    REQUIRE(f.unmount());
  }
  auto m2 = mount_for_trim(*mem);
  REQUIRE(m2);
  for (const auto& name : live) {
    int err = 0;
    const int i = std::stoi(name.substr(1));
    CHECK(read_unchecked(**m2, name, &err) == seeded_bytes(256 << 10, static_cast<uint8_t>(i)));
    CHECK(err == 0);
  }
  REQUIRE((*m2)->unmount());
  CHECK(mem->discarded_bytes() > 0);
}

TEST_CASE("async_discard_discards_what_a_commit_freed_and_never_a_range_allocated_again", "[discard]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  const auto keep = seeded_bytes(3 << 20, 5), gone = seeded_bytes(6 << 20, 6), again = seeded_bytes(6 << 20, 7);
  {
    auto mounted = mount_for_trim(*mem, /*discard=*/true);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    CHECK(discard_stats(f)["async"].get<bool>());
    const uint64_t ik = make_file(f, "keep", keep);
    const uint64_t ig = make_file(f, "gone", gone);
    REQUIRE(f.info().transactions().commit());
    CHECK(discard_stats(f)["async_bytes"].get<uint64_t>() == 0);  // nothing was freed yet
    auto async_bytes = [&] { return discard_stats(f)["async_bytes"].get<uint64_t>(); };
    auto wait_for = [&](uint64_t at_least) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (async_bytes() < at_least && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return async_bytes();
    };
    // The commit that frees gone's extents queues them; the worker discards them shortly after.
    remove_file(f, "gone", ig);
    REQUIRE(f.info().transactions().commit());
    const uint64_t first = wait_for(gone.size() - (1 << 20));
    CHECK(first >= gone.size() - (1 << 20));
    // Within the worker's delay, new data lands in the space just freed: the worker finds it
    // allocated and leaves it alone.
    const uint64_t ig2 = make_file(f, "gone2", gone);
    REQUIRE(f.info().transactions().commit());
    remove_file(f, "gone2", ig2);
    REQUIRE(f.info().transactions().commit());
    const uint64_t ia = make_file(f, "again", again);
    REQUIRE(f.info().transactions().commit());
    std::this_thread::sleep_for(kAsyncDiscardDelay * 3);
    CHECK(read_unchecked(f, "again") == again);
    CHECK(read_unchecked(f, "keep") == keep);
    f.forget(ik, 1);
    f.forget(ia, 1);
    REQUIRE(f.unmount());
    CHECK(discard_stats(f)["bytes"].get<uint64_t>() == discard_stats(f)["async_bytes"].get<uint64_t>());
  }
  auto m2 = mount_for_trim(*mem);
  REQUIRE(m2);
  CHECK(read_unchecked(**m2, "keep") == keep);
  CHECK(read_unchecked(**m2, "again") == again);
  REQUIRE((*m2)->unmount());
}

TEST_CASE("discard_mount_options", "[discard]") {
  CHECK_FALSE(parse_mount_options("")->discard);
  CHECK(parse_mount_options("discard")->discard);
  CHECK(parse_mount_options("discard=async")->discard);
  CHECK(parse_mount_options("discard=sync")->discard);
  CHECK_FALSE(parse_mount_options("discard,nodiscard")->discard);
  CHECK(parse_mount_options("discard=later").error().err == EINVAL);
  CHECK(parse_mount_options("nodiscard=1").error().err == EINVAL);
}
