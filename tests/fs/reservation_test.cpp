// The reservation system as the POSIX layer uses it, on real mkfs.ubtrfs images (issue 7):
//
// Rules named here:
// - data_may_use_equals_dirty_sectors: every dirty sector holds exactly one sector of DATA may_use
//   through random writes, overwrites, truncates, punches, fsyncs and commits; none after a commit;
// - write_into_prealloc_on_full_fs_allocates_nothing: a preallocated range takes writes on a 100 %
//   full filesystem and they land in place (same disk extent, nothing allocated);
// - abandoned_chunk_plan_gives_back_device_space: a chunk that cannot be as large as asked leaves
//   DEV_ITEM bytes_used equal to the device extents;
// - delayed_inode_item_visible_before_the_commit: an inode update is a delayed item that readers
//   see at once and the commit writes;
// - a_write_reserves_its_inode_update_once: no second reservation (and no ticket) for the update;
// - a_write_that_adds_no_run_needs_no_metadata: appends succeed with METADATA exhausted;
// - reclaim_leaves_the_inode_updates_of_files_with_delalloc;
// - a_write_short_of_data_waits_with_its_inode_lock_dropped and
//   a_write_short_of_metadata_waits_with_its_inode_lock_dropped: it returns EAGAIN with the bytes
//   it lacks instead of queueing a ticket under the lock;
// - a_write_plans_again_after_flushing_its_own_delalloc: sectors its own flush turned into extents
//   are reserved again (a write reserved for them once wrote more than it held, and the commit
//   could not place it);
// - relatime_updates_atime_only_when_stale, noatime_never_updates_atime;
// - deletions_succeed_on_full_metadata: with metadata exhausted by empty files, unlink, rmdir,
//   truncate and rename over a name still succeed, and afterwards creates work again;
// - idle_metadata_may_use_is_the_reserves: after a commit, METADATA may_use is what the block
//   reserves hold;
// - delayed_refs_reserve_holds_the_refs_of_running_handles, and
//   flusher_runs_only_delayed_refs_its_reserve_paid_for (at the end of the file).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <atomic>
#include <random>
#include <mutex>
#include <thread>

#include "alloc/space_infos.h"
#include "fs/chunk_creator.h"
#include "fs/delayed_inode.h"
#include "fs/file_data.h"
#include "fs/file_extent.h"
#include "fs/space_flusher.h"
#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "tests/fs/fs_test_env.h"
#include "tests/io/temp_file.h"
#include "tree/ctree.h"
#include "tests/test_support.h"

namespace ubtrfs::fs {
namespace {

using test::kMiB;
using test::run;
using test::mkfs_binary;

namespace stdfs = std::filesystem;
using io::testing::pattern;
using io::testing::TempFile;

// A fresh mkfs.ubtrfs image of `size` (metadata `profile`), mounted read-write.
struct Mounted {
  TempFile img;
  std::unique_ptr<Filesystem> fs;
  Mounted(uint64_t size, const char* profile, MountOptions m = {}) : img(size) {
    const std::string mkfs = mkfs_binary();
    REQUIRE(!mkfs.empty());
    REQUIRE(run(fmt::format("{} -q -f -m {} {}", mkfs, profile, img.path())) == 0);
    OpenOptions o;
    o.path = img.path();
    m.commit_interval_s = 300;
    auto r = Filesystem::mount(o, m);
    INFO((r ? "" : r.error().message));
    REQUIRE(r);
    fs = std::move(*r);
  }
  alloc::SpaceInfos& sp() { return fs->info().spaces(); }
  uint64_t create(const std::string& name) {
    auto st = fs->create(1, name, 0100644, Caller{});
    INFO(name << ": " << (st ? "" : st.error().message));
    REQUIRE(st);
    return st->st_ino;
  }
  void commit() {
    auto st = fs->info().transactions().commit();
    INFO((st ? "" : st.error().message));
    REQUIRE(st);
  }
};

// Every image ends check-clean: btrfs check original, lowmem and with data checksums (a missing
// btrfs fails under UBTRFS_REQUIRE_ORACLES=1, skips otherwise).
void check_btrfs_clean(const std::string& img) {
  if (!test::have_btrfs_progs()) return;
  test::btrfs_check_clean(img);
}

}  // namespace

TEST_CASE("data_may_use_equals_dirty_sectors", "[reservation]") {
  Mounted m(256 * kMiB, "dup");
  std::mt19937 rng(7);
  std::vector<uint64_t> inos;
  for (int i = 0; i < 4; ++i) inos.push_back(m.create(fmt::format("f{}", i)));
  const uint64_t ss = m.fs->info().params().sectorsize;
  for (int step = 0; step < 400; ++step) {
    const uint64_t ino = inos[rng() % inos.size()];
    const int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      const uint64_t off = rng() % (4 * kMiB), len = 1 + rng() % (256 * 1024);
      auto r = m.fs->write(ino, off, pattern(len, step));
      INFO("write: " << (r ? "" : r.error().message));
      REQUIRE(r);
    } else if (op == 5) {
      SetAttr a;
      a.size = rng() % (5 * kMiB);
      REQUIRE(m.fs->setattr(ino, a, Caller{}));
    } else if (op == 6) {
      REQUIRE(m.fs->fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, rng() % (4 * kMiB),
                              1 + rng() % kMiB));
    } else if (op == 7 || op == 8) {
      REQUIRE(m.fs->fsync(ino, false));
    } else {
      m.commit();
    }
    // Every dirty sector holds exactly one sector of may_use (no preallocated space here: writes
    // into it are the one case that needs none, tested below).
    const uint64_t may_use = m.sp().data().counters().may_use;
    INFO("step " << step << " op " << op);
    CHECK(may_use % ss == 0);
    CHECK(may_use == m.fs->info().space_flusher().delalloc_bytes());
  }
  m.commit();
  CHECK(m.sp().data().counters().may_use == 0);
  CHECK(m.fs->info().space_flusher().delalloc_bytes() == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

TEST_CASE("write_into_prealloc_on_full_fs_allocates_nothing", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t pre = m.create("pre");
  REQUIRE(m.fs->fallocate(pre, 0, 0, 4 * kMiB));
  m.commit();
  auto id = m.fs->numbers().from_fuse(pre);
  REQUIRE(id);
  auto* rec = *m.fs->info().fs_root(id->subvol);
  auto before = find_file_extents(*rec->tree, m.fs->info().params(), id->objectid, 0, 4 * kMiB);
  REQUIRE(before);
  REQUIRE(!before->empty());
  // Fill the rest of the data space.
  const uint64_t fill = m.create("fill");
  uint64_t off = 0;
  for (;;) {
    auto r = m.fs->write(fill, off, pattern(kMiB, 3));
    if (!r) {
      CHECK(r.error().err == ENOSPC);
      break;
    }
    off += *r;
    if (*r < kMiB) continue;
  }
  m.commit();
  const auto full = m.sp().data().counters();
  // Nothing left to reserve: a copy-on-write overwrite of the filled file fails...
  auto cow = m.fs->write(fill, 0, pattern(64 * 1024, 4));
  REQUIRE(!cow);
  CHECK(cow.error().err == ENOSPC);
  // ...but the preallocated range takes every byte, in place.
  const auto data = pattern(4 * kMiB, 5);
  for (uint64_t o = 0; o < data.size(); o += 256 * 1024) {
    auto r = m.fs->write(pre, o, std::span<const uint8_t>(data).subspan(o, 256 * 1024));
    INFO("prealloc write at " << o << ": " << (r ? "" : r.error().message));
    REQUIRE(r);
  }
  REQUIRE(m.fs->fsync(pre, false));
  const auto after = m.sp().data().counters();
  CHECK(after.used == full.used);
  CHECK(after.total == full.total);
  auto now = find_file_extents(*rec->tree, m.fs->info().params(), id->objectid, 0, 4 * kMiB);
  REQUIRE(now);
  uint64_t covered = 0;
  for (const auto& e : *now) {
    CHECK_FALSE(e.is_prealloc());
    bool inside = false;
    for (const auto& b : *before) inside |= e.disk_bytenr == b.disk_bytenr;
    CHECK(inside);
    covered += e.num_bytes;
  }
  CHECK(covered == 4 * kMiB);
  std::vector<uint8_t> back(4 * kMiB);
  auto r = m.fs->read(pre, 0, back);
  REQUIRE(r);
  CHECK(back == data);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

TEST_CASE("abandoned_chunk_plan_gives_back_device_space", "[reservation]") {
  Mounted m(256 * kMiB, "dup");
  FsInfo& info = m.fs->info();
  const uint64_t before = info.device_space().allocated_bytes();
  // Larger than the whole device: planned smaller, then abandoned.
  auto st = info.chunk_creator().create_chunk(kBlockGroupData, 512 * kMiB);
  REQUIRE(!st);
  CHECK(st.error().err == ENOSPC);
  CHECK(info.device_space().allocated_bytes() == before);
  CHECK(info.spaces().free_chunk_space() == info.device_space().unallocated_bytes());
  REQUIRE(m.fs->unmount());
}

TEST_CASE("delayed_inode_item_visible_before_the_commit", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  m.commit();
  REQUIRE(m.fs->write(ino, 0, pattern(10000, 1)));
  auto id = *m.fs->numbers().from_fuse(ino);
  auto* rec = *m.fs->info().fs_root(id.subvol);
  // The tree still has the committed item; readers see the new size.
  CHECK(read_inode_item(*rec->tree, id.objectid)->size.get() == 0);
  CHECK(m.fs->getattr(ino)->st_size == 10000);
  CHECK(m.sp().delayed_block_rsv().reserved() > 0);
  m.commit();
  CHECK(read_inode_item(*rec->tree, id.objectid)->size.get() == 10000);
  CHECK(m.sp().delayed_block_rsv().reserved() == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// A write to an inode with no pending update reserves the update once, from the reservation it
// took before its lock (DelayedInodes::reserve_update), and the update uses that one: taking a
// second with FLUSH_ALL under the inode lock made every such write wait on a ticket whenever
// metadata was tight (30+ concurrent writers on a small filesystem crawled).
TEST_CASE("a_write_reserves_its_inode_update_once", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  m.commit();
  for (int round = 0; round < 3; ++round) {
    INFO("round " << round);
    REQUIRE(m.sp().delayed_block_rsv().reserved() == 0);
    const alloc::TicketStats before = m.sp().metadata().ticket_stats();
    REQUIRE(m.fs->write(ino, static_cast<uint64_t>(round) * 4096, pattern(4096, round)));
    const alloc::TicketStats after = m.sp().metadata().ticket_stats();
    // One reservation for the whole write; nothing queued.
    CHECK(after.fast_path - before.fast_path == 1);
    CHECK(after.queued == before.queued);
    CHECK(m.sp().delayed_block_rsv().reserved() == m.sp().metadata_size(1));
    m.commit();
  }
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// With METADATA exhausted (overcommit included), a write that adds no run to the inode's delalloc
// (an append to its dirty run) needs no metadata at all: it succeeds at once and queues no ticket.
// It used to reserve the worst case of a 4 KiB write (a new run, its checksum leaf and delayed
// refs: 2.25 MiB with 16 KiB nodes) and wait for it with FLUSH_ALL, which on a small filesystem
// with 30+ writers made nearly every write queue a ticket.
// Every byte of METADATA that can be had without flushing, overcommit included, held in `hog`.
static void hog_all_metadata(alloc::BlockRsv& hog) {
  for (uint64_t chunk = 8 * kMiB; chunk >= 4096; chunk /= 2)
    while (hog.add(chunk, alloc::FlushMode::kNoFlush)) {
    }
  REQUIRE(!hog.add(4096, alloc::FlushMode::kNoFlush));
}

TEST_CASE("a_write_that_adds_no_run_needs_no_metadata", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  m.commit();
  REQUIRE(m.fs->write(ino, 0, pattern(4096, 1)));
  alloc::BlockRsv hog(alloc::RsvType::kTemp, &m.sp().metadata());
  hog_all_metadata(hog);
  const alloc::TicketStats before = m.sp().metadata().ticket_stats();
  for (int i = 1; i < 8; ++i) {
    INFO("append " << i);
    auto r = m.fs->write(ino, static_cast<uint64_t>(i) * 4096, pattern(4096, i + 1));
    INFO((r ? "" : r.error().message));
    REQUIRE(r);
    CHECK(*r == 4096);
  }
  CHECK(m.sp().metadata().ticket_stats().queued == before.queued);
  m.sp().release_block_rsv(hog, UINT64_MAX);
  m.commit();
  std::vector<uint8_t> back(8 * 4096);
  auto got = m.fs->read(ino, 0, back);
  REQUIRE(got);
  REQUIRE(*got == back.size());
  for (int i = 0; i < 8; ++i) {
    const auto want = pattern(4096, i + 1);
    CHECK(std::equal(want.begin(), want.end(), back.begin() + i * 4096));
  }
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// Every byte of DATA space held by the caller: chunk by chunk (flushing, so the data chunks grow to
// the device's end) until not even a sector can be had. Returns the bytes held.
static uint64_t hog_all_data(alloc::SpaceInfo& data) {
  uint64_t held = 0;
  for (uint64_t chunk = 64 * kMiB; chunk >= 4096; chunk /= 2)
    while (data.reserve_bytes(chunk, alloc::FlushMode::kFlushData)) held += chunk;
  REQUIRE(!data.reserve_bytes(4096, alloc::FlushMode::kNoFlush));
  return held;
}

// A write that finds no data space under its inode lock, for a caller that can drop the lock
// (Filesystem::write), changes nothing and says how much it lacks: the caller waits with the lock
// dropped, so the reclaim's flush of every inode never waits for it (with 40 writers on a full
// device, each holding its lock in a ticket wait, every pass of the reclaim took most of a second).
TEST_CASE("a_write_short_of_data_waits_with_its_inode_lock_dropped", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  m.commit();
  const InodeId id = *m.fs->numbers().from_fuse(ino);
  alloc::SpaceInfo& data = m.sp().data();
  uint64_t hog = hog_all_data(data);
  const alloc::TicketStats before = data.ticket_stats();
  {
    FileData::WriteReservation pre(m.fs->info());
    pre.wait_unlocked = true;
    auto r = m.fs->file_data().write(id, 0, pattern(8192, 1), &pre);
    REQUIRE(!r);
    CHECK(r.error().err == EAGAIN);
    CHECK(pre.data_shortfall == 8192);
    CHECK(data.ticket_stats().queued == before.queued);  // no wait while it held the lock
    CHECK(m.fs->getattr(ino)->st_size == 0);
    CHECK(m.fs->file_data().pending_bytes(id) == 0);
    // The caller's wait with the lock dropped; here the space comes back, and the write goes through.
    data.release_bytes(8192);
    hog -= 8192;
    REQUIRE(data.reserve_bytes(8192, alloc::FlushMode::kNoFlush));
    pre.data += std::exchange(pre.data_shortfall, 0);
    r = m.fs->file_data().write(id, 0, pattern(8192, 1), &pre);
    INFO((r ? "" : r.error().message));
    REQUIRE(r);
    CHECK(*r == 8192);
  }
  data.release_bytes(hog);
  m.commit();
  std::vector<uint8_t> back(8192);
  REQUIRE(m.fs->read(ino, 0, back));
  CHECK(back == pattern(8192, 1));
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// The same for metadata: a write that starts a new run needs room for it in its inode's delalloc
// reserve; with METADATA exhausted (overcommit included) it changes nothing and says how much it
// lacks, and the caller waits for that with the lock dropped (Filesystem::write; the reclaim's
// delalloc flush can then write this very inode).
TEST_CASE("a_write_short_of_metadata_waits_with_its_inode_lock_dropped", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  m.commit();
  const InodeId id = *m.fs->numbers().from_fuse(ino);
  alloc::BlockRsv hog(alloc::RsvType::kTemp, &m.sp().metadata());
  hog_all_metadata(hog);
  const alloc::TicketStats before = m.sp().metadata().ticket_stats();
  {
    FileData::WriteReservation pre(m.fs->info());
    pre.wait_unlocked = true;
    REQUIRE(m.sp().data().reserve_bytes(4096, alloc::FlushMode::kNoFlush));
    pre.data = 4096;
    auto r = m.fs->file_data().write(id, 0, pattern(4096, 1), &pre);
    REQUIRE(!r);
    CHECK(r.error().err == EAGAIN);
    CHECK(pre.meta_shortfall > 0);
    CHECK(pre.data == 4096);  // the data reservation stays the caller's
    CHECK(m.sp().metadata().ticket_stats().queued == before.queued);
    CHECK(m.fs->getattr(ino)->st_size == 0);
    CHECK(m.fs->file_data().pending_bytes(id) == 0);
    // The caller's wait with the lock dropped; here the space comes back, and the write goes through.
    m.sp().release_block_rsv(hog, UINT64_MAX);
    REQUIRE(pre.meta.add(std::exchange(pre.meta_shortfall, 0), alloc::FlushMode::kNoFlush));
    r = m.fs->file_data().write(id, 0, pattern(4096, 1), &pre);
    INFO((r ? "" : r.error().message));
    REQUIRE(r);
    CHECK(*r == 4096);
  }
  m.commit();
  std::vector<uint8_t> back(4096);
  REQUIRE(m.fs->read(ino, 0, back));
  CHECK(back == pattern(4096, 1));
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// A write short of data space flushes its own delalloc and waits; what it planned before the flush
// no longer holds: sectors that were dirty (and reserved) are extents now and need space again.
// Here sector 0 is a dirty overwrite of an extent and sector 1 new: the write first needs one
// sector; its flush writes sector 0 and pins the old extent, the commit in its wait frees it, and
// a write still planned for one sector took that one and made two dirty — which the commit then
// could not place. Planned again, it needs two, gets one: a short write of sector 0.
TEST_CASE("a_write_plans_again_after_flushing_its_own_delalloc", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t ino = m.create("f");
  REQUIRE(m.fs->write(ino, 0, pattern(4096, 1)));
  m.commit();
  const InodeId id = *m.fs->numbers().from_fuse(ino);
  alloc::SpaceInfo& data = m.sp().data();
  // The overwrite takes the one sector left (hogging first: its flushing would write it out).
  const uint64_t hog = hog_all_data(data) - 4096;
  data.release_bytes(4096);
  REQUIRE(m.fs->write(ino, 0, pattern(4096, 2)));
  REQUIRE(m.fs->file_data().pending_bytes(id) == 4096);
  // Without a WriteReservation: the caller that waits holding the lock (copy_file_range's copies).
  auto r = m.fs->file_data().write(id, 0, pattern(8192, 3));
  INFO((r ? "" : r.error().message));
  REQUIRE(r);
  CHECK(*r == 4096);
  CHECK(data.counters().may_use == hog + m.fs->info().space_flusher().delalloc_bytes());
  data.release_bytes(hog);
  m.commit();
  REQUIRE(!m.fs->read_only());
  CHECK(m.fs->getattr(ino)->st_size == 4096);
  std::vector<uint8_t> back(4096);
  REQUIRE(m.fs->read(ino, 0, back));
  CHECK(back == pattern(4096, 3));
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// The reclaim thread's FLUSH_DELAYED_ITEMS states write the pending inode updates of files without
// unwritten data and leave those of files with delalloc: their writers would need the reservation
// back at their next write (a ticket per write with many writers); the commit writes them all.
TEST_CASE("reclaim_leaves_the_inode_updates_of_files_with_delalloc", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  const uint64_t f = m.create("f"), g = m.create("g");
  m.commit();
  REQUIRE(m.fs->write(f, 0, pattern(4096, 1)));
  SetAttr a;
  a.mode = 0600;
  REQUIRE(m.fs->setattr(g, a, Caller{}));
  DelayedInodes& delayed = *m.fs->info().delayed_inodes();
  const InodeId fid = *m.fs->numbers().from_fuse(f), gid = *m.fs->numbers().from_fuse(g);
  REQUIRE(delayed.inode(fid));
  REQUIRE(delayed.inode(gid));
  alloc::SpaceInfos& sp = m.sp();
  for (auto state : {alloc::FlushState::kDelayedItemsNr, alloc::FlushState::kDelayedItems}) {
    auto got = m.fs->info().space_flusher().flush(sp.metadata(), state, sp.insert_size(4));
    REQUIRE(got);
  }
  CHECK(delayed.inode(fid));
  CHECK(!delayed.inode(gid));
  CHECK(sp.delayed_block_rsv().reserved() == sp.metadata_size(1));  // f's update only
  m.commit();
  CHECK(!delayed.inode(fid));
  CHECK(sp.delayed_block_rsv().reserved() == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

TEST_CASE("relatime_updates_atime_only_when_stale, noatime_never_updates_atime", "[reservation]") {
  for (auto mode : {MountOptions::Atime::kRelatime, MountOptions::Atime::kNoatime, MountOptions::Atime::kStrict}) {
    MountOptions o;
    o.atime = mode;
    Mounted m(128 * kMiB, "dup", o);
    const uint64_t ino = m.create("f");
    REQUIRE(m.fs->write(ino, 0, pattern(100, 1)));
    std::vector<uint8_t> buf(100);
    auto a0 = m.fs->getattr(ino)->st_atim;
    REQUIRE(m.fs->read(ino, 0, buf));
    auto a1 = m.fs->getattr(ino)->st_atim;
    const bool moved1 = a1.tv_sec != a0.tv_sec || a1.tv_nsec != a0.tv_nsec;
    REQUIRE(m.fs->read(ino, 0, buf));
    auto a2 = m.fs->getattr(ino)->st_atim;
    const bool moved2 = a2.tv_sec != a1.tv_sec || a2.tv_nsec != a1.tv_nsec;
    // A read after a write: relatime and strictatime update (atime <= mtime); a second read only
    // strictatime does; noatime never.
    CHECK(moved1 == (mode != MountOptions::Atime::kNoatime));
    CHECK(moved2 == (mode == MountOptions::Atime::kStrict));
    REQUIRE(m.fs->unmount());
  }
}

TEST_CASE("deletions_succeed_on_full_metadata, idle_metadata_may_use_is_the_reserves", "[reservation]") {
  // SINGLE metadata on a small image: 8 MiB of metadata that empty files exhaust quickly.
  Mounted m(64 * kMiB, "single");
  auto d = m.fs->mkdir(1, "d", 040755, Caller{});
  REQUIRE(d);
  auto victim_dir = m.fs->mkdir(1, "victim-dir", 040755, Caller{});
  REQUIRE(victim_dir);
  const uint64_t t = m.create("trunc");
  REQUIRE(m.fs->write(t, 0, pattern(64 * 1024, 1)));
  m.create("rename-src");
  m.create("rename-dst");
  int n = 0, err = 0;
  for (;; ++n) {
    auto st = m.fs->create(d->st_ino, fmt::format("file-{:06}", n), 0100644, Caller{});
    if (!st) {
      err = st.error().err;
      break;
    }
    m.fs->forget(st->st_ino, 1);
    REQUIRE(n < 2000000);
  }
  INFO("created " << n << " files before ENOSPC");
  CHECK(err == ENOSPC);
  CHECK(n > 1000);
  CHECK(m.fs->unlink(d->st_ino, "file-000000"));
  CHECK(m.fs->rmdir(1, "victim-dir"));
  SetAttr a;
  a.size = 0;
  CHECK(m.fs->setattr(t, a, Caller{}));
  CHECK(m.fs->rename(1, "rename-src", 1, "rename-dst", 0));
  // Deleting more gives room back without a remount.
  for (int i = 1; i < 2000 && i < n; ++i) REQUIRE(m.fs->unlink(d->st_ino, fmt::format("file-{:06}", i)));
  auto again = m.fs->create(1, "again", 0100644, Caller{});
  INFO((again ? "" : again.error().message));
  CHECK(again);
  m.commit();
  auto& sp = m.sp();
  const uint64_t held = sp.global_rsv().reserved() + sp.trans_rsv().reserved() + sp.delayed_refs_rsv().reserved() +
                        sp.delayed_block_rsv().reserved();
  CHECK(sp.metadata().counters().may_use == held);
  CHECK(sp.data().counters().may_use == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

// Rule: flushers_commits_and_operations_never_deadlock — every flush state run from several threads
// beside commits and POSIX operations (creates, writes, unlinks, evictions) finishes: the lock order
// handle -> runner lock, gate -> inode try-locks, no ticket wait with a handle held.
TEST_CASE("flushers_commits_and_operations_never_deadlock", "[reservation][threads]") {
  Mounted m(256 * kMiB, "dup");
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::mutex first_error_mu;
  std::string first_error;  // GUARDED_BY(first_error_mu): the first failure, for the report
  auto note = [&](const char* what, const Error& e) {
    errors++;
    std::lock_guard g(first_error_mu);
    if (first_error.empty()) first_error = fmt::format("{}: {} ({})", what, e.message, e.err);
  };
  const double scale = [] {
    const char* s = std::getenv("UBTRFS_STRESS_SCALE");
    return s ? std::max(0.1, std::atof(s)) : 1.0;
  }();
  const int per_thread = static_cast<int>(300 * scale);
  std::vector<std::thread> ops;
  for (int t = 0; t < 3; ++t)
    ops.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < per_thread; ++i) {
        const std::string name = fmt::format("t{}-{}", t, i % 40);
        auto st = m.fs->create(1, name, 0100644, Caller{});
        if (!st) {
          if (st.error().err != EEXIST) note("create", st.error());
          auto lk = m.fs->lookup(1, name);
          if (!lk) continue;
          st = lk;
        }
        if (auto w = m.fs->write(st->st_ino, rng() % (1 << 20), pattern(1 + rng() % 100000, i)); !w)
          note("write", w.error());
        if (rng() % 3 == 0)
          if (auto u = m.fs->unlink(1, name); !u) note("unlink", u.error());
        m.fs->forget(st->st_ino, 1);  // the last forget of an unlinked file evicts it
      }
    });
  std::thread flusher([&] {
    std::mt19937 rng(99);
    auto& sp = m.sp();
    while (!stop) {
      const auto state = static_cast<alloc::FlushState>(1 + rng() % (alloc::kFlushStateCount - 1));
      alloc::SpaceInfo& si = rng() % 2 ? sp.metadata() : sp.data();
      // No forced METADATA chunks: each takes a DUP chunk whatever the usage, and a few hundred
      // passes of this loop gave 121 MiB of empty metadata chunks on the 256 MiB device, so the
      // writers met a real ENOSPC for data (device fully allocated: seen 1 run in ~20). The forced
      // state still runs for data, the usage-gated ALLOC_CHUNK for both.
      if (state == alloc::FlushState::kAllocChunkForce && &si == &sp.metadata()) continue;
      auto r = sp.run_flush_state(si, state, 1 << 20);
      if (!r && r.error().err != ENOSPC) note("flush state", r.error());
    }
  });
  std::thread committer([&] {
    while (!stop) {
      if (auto c = m.fs->info().transactions().commit(); !c) note("commit", c.error());
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  for (auto& t : ops) t.join();
  stop = true;
  flusher.join();
  committer.join();
  INFO("first failure: " << first_error);
  INFO("chunks: metadata " << m.sp().metadata().counters().total << " data " << m.sp().data().counters().total
                           << " system " << m.sp().system().counters().total);
  CHECK(errors.load() == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// delayed_refs_reserve_holds_the_refs_of_running_handles: the references a handle queues (each COW
// adds one for the new block and drops the old one) grow the delayed-refs reserve at once, paid
// from the handle's own delayed-ref reservation (btrfs_update_delayed_refs_rsv at ref-add time).
// The reclaim thread runs delayed refs while handles are running (FLUSH_DELAYED_REFS); when the
// bytes only moved at handle end, it found a reserve of size 0 and every extent-tree COW it made
// was an overrun (cowbench at a 2 MiB cache: 16 to 45 overruns per 6 s run, all in this reserve).
TEST_CASE("delayed_refs_reserve_holds_the_refs_of_running_handles", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  m.create("f");
  m.commit();
  alloc::SpaceInfos& sp = m.sp();
  REQUIRE(sp.delayed_refs_rsv().size() == 0);
  auto* rec = *m.fs->info().fs_root(5);
  {
    auto th = m.fs->info().transactions().start(2);
    REQUIRE(th);
    Path path;
    // A COW search of the committed fs tree: its leaf is copied, nothing else changes.
    auto found = search_slot(&th->tree(), *rec->tree, Key{256, kInodeItemKey, 0}, path, 0, true);
    REQUIRE(found);
    CHECK(*found == 0);
    path.release();
    // Still inside the handle: the new block's and the old block's references are accounted.
    CHECK(sp.delayed_refs_rsv().size() >= sp.delayed_ref_bytes(2));
    CHECK(sp.delayed_refs_rsv().reserved() == sp.delayed_refs_rsv().size());
    th->end();
  }
  m.commit();
  CHECK(sp.delayed_refs_rsv().size() == 0);
  CHECK(sp.reservation_stats().overruns_by_rsv[static_cast<int>(alloc::RsvType::kDelayedRefs)] == 0);
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// A COW search of inode `ino`'s item in the fs tree of subvolume 5, in a handle that reserves for
// `items` items (0: a join handle, which reserves nothing): its path is copied if this transaction
// has not copied it yet, queueing references for the new and the old blocks.
static void copy_fs_tree_path(Mounted& m, uint64_t ino, unsigned items) {
  TransactionManager& txm = m.fs->info().transactions();
  auto th = items ? txm.start(items) : txm.join();
  REQUIRE(th);
  Path path;
  auto found = search_slot(&th->tree(), *(*m.fs->info().fs_root(5))->tree, Key{ino, kInodeItemKey, 0}, path, 0, true);
  REQUIRE(found);
  path.release();
  th->end();
}

// The reclaim thread's FLUSH_DELAYED_REFS runs no head the delayed-refs reserve has not paid for:
// heads queued by a join handle (which reserves nothing, btrfs_join_transaction) wait, so the
// run copies no extent-tree block from outside every reservation (the overruns ubtrfs-cowbench
// counted right after commits); once a reserving handle's bytes reach the reserve, that many heads
// run; the commit runs the rest.
TEST_CASE("flusher_runs_only_delayed_refs_its_reserve_paid_for", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  m.create("f");
  m.create("g");
  m.commit();
  alloc::SpaceInfos& sp = m.sp();
  TransactionManager& txm = m.fs->info().transactions();
  REQUIRE(sp.delayed_refs_rsv().reserved() == 0);
  REQUIRE(m.fs->info().delayed_refs().empty());
  const auto delayed_refs_overruns = [&] {
    return sp.reservation_stats().overruns_by_rsv[static_cast<int>(alloc::RsvType::kDelayedRefs)];
  };
  const uint64_t overruns_before = delayed_refs_overruns();
  // A join handle copies the committed fs-tree leaf: two references queued, nothing reserved.
  copy_fs_tree_path(m, 257, 0);
  const size_t queued = m.fs->info().delayed_refs().num_heads();
  REQUIRE(queued >= 2);
  CHECK(sp.delayed_refs_rsv().size() >= sp.delayed_ref_bytes(2));
  REQUIRE(sp.delayed_refs_rsv().reserved() < sp.delayed_ref_bytes(1));
  const uint64_t deferred_before = txm.refs_runs_deferred();
  // The flush state as the reclaim thread runs it: nothing funded, nothing run, nothing reclaimed.
  auto got = m.fs->info().space_flusher().flush(sp.metadata(), alloc::FlushState::kDelayedRefs, 0);
  REQUIRE(got);
  CHECK(*got == 0);
  CHECK(m.fs->info().delayed_refs().num_heads() == queued);
  CHECK(txm.refs_runs_deferred() == deferred_before + 1);
  // A reserving handle (start(2): insert and delayed-ref bytes) copies another path; what it
  // reserved for references reaches the delayed-refs reserve as they are queued and at its end.
  copy_fs_tree_path(m, 258, 2);
  const uint64_t funded = sp.delayed_refs_rsv().reserved() / sp.delayed_ref_bytes(1);
  REQUIRE(funded >= 1);
  const size_t before_run = m.fs->info().delayed_refs().num_heads();
  auto ran = txm.run_delayed_refs(0);
  REQUIRE(ran);
  CHECK(*ran == std::min<uint64_t>(funded, before_run));
  // (The run's own extent-tree copies queue heads of their own, so the queue need not shrink.)
  CHECK(delayed_refs_overruns() == overruns_before);
  m.commit();
  CHECK(m.fs->info().delayed_refs().empty());
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

// FLUSH_DELAYED_REFS (the full state, run_all_delayed_refs): once the delayed-refs reserve holds a
// head's worst case, every queued head runs — the unfunded ones a join handle queued, and the ones
// the run's own copies queue — so the reserve's size drops to zero and all it held is free again.
// Running only the funded heads left the size above what the reserve held, and its release freed
// nothing: on a nearly full metadata space every create's ticket ended in a commit.
TEST_CASE("full_delayed_refs_flush_runs_unfunded_heads_once_the_reserve_can_pay", "[reservation]") {
  Mounted m(128 * kMiB, "dup");
  m.create("f");
  m.create("g");
  m.commit();
  alloc::SpaceInfos& sp = m.sp();
  REQUIRE(m.fs->info().delayed_refs().empty());
  const auto delayed_refs_overruns = [&] {
    return sp.reservation_stats().overruns_by_rsv[static_cast<int>(alloc::RsvType::kDelayedRefs)];
  };
  const uint64_t overruns_before = delayed_refs_overruns();
  // Unfunded heads (a join handle's copy of the fs-tree path), then a reserving handle whose
  // unused reservation, released at its end, tops the delayed-refs reserve up by one head's worst
  // case at least (the release routing) without filling it.
  copy_fs_tree_path(m, 257, 0);
  copy_fs_tree_path(m, 258, 1);
  const uint64_t held = sp.delayed_refs_rsv().reserved();
  REQUIRE(held >= sp.delayed_ref_bytes(1));
  REQUIRE(sp.delayed_refs_rsv().size() > held);  // under-funded: a release of funded heads frees nothing
  const uint64_t may_use_before = sp.metadata().counters().may_use;
  auto got = m.fs->info().space_flusher().flush(sp.metadata(), alloc::FlushState::kDelayedRefs, 0);
  REQUIRE(got);
  CHECK(*got > 0);
  CHECK(m.fs->info().delayed_refs().empty());
  CHECK(sp.delayed_refs_rsv().size() == 0);
  CHECK(sp.delayed_refs_rsv().reserved() == 0);
  CHECK(sp.metadata().counters().may_use + held <= may_use_before);  // what the reserve held is free
  CHECK(delayed_refs_overruns() == overruns_before);
  m.commit();
  REQUIRE(m.fs->unmount());
  check_btrfs_clean(m.img.path());
}

}  // namespace ubtrfs::fs
