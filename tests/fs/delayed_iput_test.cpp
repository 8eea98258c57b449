// Delayed iputs and batched eviction (fs/delayed_iput.h, fs/evict.h): the last FORGET of an
// unlinked inode queues it, a worker evicts queued inodes in batches (a run of slots per leaf
// operation), the RUN_DELAYED_IPUTS flush state gives their space to writers before ENOSPC, and a
// mount evicts the orphans a crash left in batches too. Every image ends judged by `btrfs check`.
//
// Rules named here: an_eviction_batch_deletes_every_item_of_its_inodes_and_nothing_else,
// a_data_ticket_runs_delayed_iputs_before_enospc, orphans_left_at_unmount_are_evicted_in_batches_at_mount,
// forgets_racing_the_worker_evict_each_inode_once, unmount_evicts_the_queue_before_its_final_commit.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "fs/delayed_iput.h"
#include "fs/filesystem.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

using io::testing::TempFile;
using test::btrfs_check_clean;
using test::commit_now;
using test::create_file;
using test::err_of;
using test::kMiB;
using test::make_btrfs_image;
using test::mount_manual_commits;
using test::write_all;

// The workers stay paused for the test's scope (and resume when it fails).
struct PausedWorkers {
  PausedWorkers() { DelayedIputs::set_workers_paused_for_test(true); }
  ~PausedWorkers() { DelayedIputs::set_workers_paused_for_test(false); }
};

nlohmann::json iput_stats(Filesystem& f) { return nlohmann::json::parse(f.stats_json())["delayed_iputs"]; }

// Every key of subvolume 5's tree, grouped: objectid -> number of items; orphan items separately.
struct TreeKeys {
  std::map<uint64_t, size_t> items_of;
  std::set<uint64_t> orphans;
};
TreeKeys tree_keys(Filesystem& f) {
  TreeKeys out;
  auto rec = f.info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  TreeRoot& root = *(*rec)->tree;
  Path p;
  REQUIRE(search_slot(nullptr, root, Key{0, 0, 0}, p, 0, false));
  bool valid = p.leaf().nritems() > 0;
  if (valid && p.slots[0] >= static_cast<int>(p.leaf().nritems())) valid = *next_leaf(root, p);
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid == kOrphanObjectid && k.type == kOrphanItemKey)
      out.orphans.insert(k.offset);
    else
      out.items_of[k.objectid]++;
    auto nx = next_item(root, p);
    REQUIRE(nx);
    valid = *nx;
  }
  return out;
}

uint64_t objectid_of(Filesystem& f, uint64_t ino) {
  auto id = f.inode_id(ino);
  REQUIRE(id);
  return id->objectid;
}

std::vector<uint8_t> xattr_value(size_t i, char which) { return std::vector<uint8_t>(900, static_cast<uint8_t>(i * 7 + which)); }

TEST_CASE("an_eviction_batch_deletes_every_item_of_its_inodes_and_nothing_else", "[delayed_iput]") {
  // 4 KiB leaves and three 900-byte xattrs per file: an inode's items fill most of a leaf, so the
  // batch's runs of slots end at leaf ends in the middle of inodes. Every third file is kept, every
  // third is unlinked but still referenced (an open file): the runs must stop at both.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img, "-n 4096")) return;
  PausedWorkers paused;
  auto fs = mount_manual_commits(img.path());
  constexpr size_t kFiles = 150;
  std::vector<uint64_t> inos;
  for (size_t i = 0; i < kFiles; ++i) {
    const uint64_t ino = create_file(*fs, 1, "f" + std::to_string(i));
    for (char w : {'a', 'b', 'c'})
      REQUIRE(fs->setxattr(ino, std::string("user.") + w, xattr_value(i, w), 0));
    inos.push_back(ino);
  }
  commit_now(*fs);
  std::set<uint64_t> kept, evicted, held;
  for (size_t i = 0; i < kFiles; ++i) {
    const uint64_t oid = objectid_of(*fs, inos[i]);
    if (i % 3 == 0) {
      kept.insert(oid);
      continue;
    }
    REQUIRE(fs->unlink(1, "f" + std::to_string(i)));
    if (i % 3 == 1) {
      fs->forget(inos[i], 1);  // the last reference: queued, not evicted (the workers are paused)
      evicted.insert(oid);
    } else {
      held.insert(oid);
    }
  }
  CHECK(iput_stats(*fs)["pending"].get<uint64_t>() == evicted.size());
  {
    const TreeKeys before = tree_keys(*fs);
    for (uint64_t oid : evicted) CHECK(before.orphans.count(oid) == 1);
  }
  auto ran = fs->run_delayed_iputs();
  REQUIRE(ran);
  CHECK(*ran == evicted.size());
  TreeKeys after = tree_keys(*fs);
  for (uint64_t oid : evicted) {
    INFO("evicted inode " << oid);
    CHECK(after.items_of.count(oid) == 0);
    CHECK(after.orphans.count(oid) == 0);
  }
  for (uint64_t oid : kept) {
    INFO("kept inode " << oid);
    CHECK(after.items_of[oid] == 5);  // inode item, inode ref, three xattrs
    CHECK(after.orphans.count(oid) == 0);
  }
  for (uint64_t oid : held) {
    INFO("held inode " << oid);
    CHECK(after.items_of[oid] == 4);  // its name went with the unlink; the inode and xattrs stay
    CHECK(after.orphans.count(oid) == 1);
  }
  for (size_t i = 0; i < kFiles; ++i) {
    if (i % 3 == 1) {
      CHECK(err_of(fs->getattr(inos[i])) == ENOENT);
      continue;
    }
    auto v = fs->getxattr(inos[i], "user.b");
    REQUIRE(v);
    CHECK(*v == xattr_value(i, 'b'));
  }
  // The open files' last references go: the next batch takes them.
  for (size_t i = 2; i < kFiles; i += 3) fs->forget(inos[i], 1);
  ran = fs->run_delayed_iputs();
  REQUIRE(ran);
  CHECK(*ran == held.size());
  const TreeKeys last = tree_keys(*fs);
  CHECK(last.orphans.empty());
  for (uint64_t oid : held) CHECK(last.items_of.count(oid) == 0);
  const auto st = iput_stats(*fs);
  CHECK(st["evicted"].get<uint64_t>() == evicted.size() + held.size());
  CHECK(st["failed"].get<uint64_t>() == 0);
  CHECK(st["pending"].get<uint64_t>() == 0);
  REQUIRE(fs->unmount());
  btrfs_check_clean(img.path());
}

TEST_CASE("a_data_ticket_runs_delayed_iputs_before_enospc", "[delayed_iput]") {
  // A deleted file's space is only queued for eviction while the worker is paused; a write that
  // needs it must get it from the data reclaim's RUN_DELAYED_IPUTS state (then the commit that
  // unpins it), not fail with ENOSPC.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  PausedWorkers paused;
  auto fs = mount_manual_commits(img.path());
  auto sv = fs->statfs();
  REQUIRE(sv);
  const uint64_t avail = sv->f_bavail * sv->f_frsize;
  const uint64_t size = avail / 10 * 6 / kMiB * kMiB;  // more than half: both cannot fit
  INFO("available " << avail << ", file size " << size);
  REQUIRE(size >= 64 * kMiB);
  const std::vector<uint8_t> chunk(kMiB, 0x5a);
  const uint64_t a = create_file(*fs, 1, "a");
  for (uint64_t off = 0; off < size; off += kMiB) write_all(*fs, a, off, chunk);
  commit_now(*fs);
  REQUIRE(fs->unlink(1, "a"));
  fs->forget(a, 1);
  CHECK(iput_stats(*fs)["pending"].get<uint64_t>() == 1);
  const uint64_t b = create_file(*fs, 1, "b");
  for (uint64_t off = 0; off < size; off += kMiB) write_all(*fs, b, off, chunk);
  const auto st = iput_stats(*fs);
  CHECK(st["evicted"].get<uint64_t>() == 1);
  CHECK(st["pending"].get<uint64_t>() == 0);
  fs->forget(b, 1);
  REQUIRE(fs->unmount());
  btrfs_check_clean(img.path());
}

TEST_CASE("orphans_left_at_unmount_are_evicted_in_batches_at_mount", "[delayed_iput]") {
  // Unlinked files still referenced at unmount keep their orphan items on disk, as after a crash;
  // the next mount evicts them, a batch at a time, and leaves the linked files alone.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img, "-n 4096")) return;
  constexpr size_t kFiles = 2500;  // over two of orphan cleanup's batches of 1024
  std::set<uint64_t> orphaned, kept;
  {
    auto fs = mount_manual_commits(img.path());
    for (size_t i = 0; i < kFiles; ++i) {
      const std::string name = "f" + std::to_string(i);
      const uint64_t ino = create_file(*fs, 1, name);
      if (i % 50 == 0) {
        write_all(*fs, ino, 0, std::vector<uint8_t>(20000, static_cast<uint8_t>(i)));
        kept.insert(objectid_of(*fs, ino));
        fs->forget(ino, 1);
        continue;
      }
      if (i % 7 == 0) write_all(*fs, ino, 0, std::vector<uint8_t>(8192, static_cast<uint8_t>(i)));
      REQUIRE(fs->unlink(1, name));
      orphaned.insert(objectid_of(*fs, ino));  // the create's lookup is never forgotten
    }
    REQUIRE(fs->unmount());
  }
  {
    // Read-only, the orphans are all still there.
    fs::OpenOptions o;
    o.read_only = true;
    auto fs = mount_manual_commits(img.path(), {}, o);
    const TreeKeys k = tree_keys(*fs);
    CHECK(k.orphans.size() == orphaned.size());
  }
  {
    auto fs = mount_manual_commits(img.path());
    const TreeKeys k = tree_keys(*fs);
    CHECK(k.orphans.empty());
    for (uint64_t oid : orphaned) {
      INFO("orphan " << oid);
      REQUIRE(k.items_of.count(oid) == 0);
    }
    for (uint64_t oid : kept) CHECK(k.items_of.count(oid) == 1);
    REQUIRE(fs->unmount());
  }
  btrfs_check_clean(img.path());
}

TEST_CASE("unmount_evicts_the_queue_before_its_final_commit", "[delayed_iput]") {
  // Inodes still queued when the unmount starts (the worker paused) are evicted into the final
  // commit: the image keeps neither their items nor orphan items, and their data space is free.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  PausedWorkers paused;
  std::set<uint64_t> queued;
  uint64_t data_before = 0;
  {
    auto fs = mount_manual_commits(img.path());
    data_before = fs->info().spaces().data().counters().used;
    for (int i = 0; i < 40; ++i) {
      const std::string name = "q" + std::to_string(i);
      const uint64_t ino = create_file(*fs, 1, name);
      write_all(*fs, ino, 0, std::vector<uint8_t>(64 * 1024, static_cast<uint8_t>(i)));
      queued.insert(objectid_of(*fs, ino));
      REQUIRE(fs->unlink(1, name));
      fs->forget(ino, 1);
    }
    CHECK(iput_stats(*fs)["pending"].get<uint64_t>() == queued.size());
    REQUIRE(fs->unmount());
    CHECK(iput_stats(*fs)["evicted"].get<uint64_t>() == queued.size());
  }
  {
    fs::OpenOptions o;
    o.read_only = true;  // no orphan cleanup: the image as the unmount left it
    auto fs = mount_manual_commits(img.path(), {}, o);
    const TreeKeys k = tree_keys(*fs);
    CHECK(k.orphans.empty());
    for (uint64_t oid : queued) CHECK(k.items_of.count(oid) == 0);
    CHECK(fs->info().spaces().data().counters().used == data_before);
  }
  btrfs_check_clean(img.path());
}

TEST_CASE("forgets_racing_the_worker_evict_each_inode_once", "[delayed_iput]") {
  // Two threads create, unlink and forget while the worker evicts behind them (and a third asks
  // for run_delayed_iputs now and then, as the sync ioctls do): every inode is evicted once.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_manual_commits(img.path());
  const TreeKeys initial = tree_keys(*fs);
  constexpr size_t kPerThread = 400;
  std::atomic<bool> failed{false};
  auto churn = [&](int t) {
    for (size_t i = 0; i < kPerThread && !failed; ++i) {
      const std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
      auto st = fs->create(1, name, 0100644, Caller{});
      if (!st || !fs->unlink(1, name)) {
        failed = true;
        return;
      }
      fs->forget(st->st_ino, 1);
    }
  };
  std::atomic<bool> done{false};
  std::thread syncer([&] {
    while (!done) {
      if (!fs->run_delayed_iputs()) failed = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  });
  std::thread t0(churn, 0), t1(churn, 1);
  t0.join();
  t1.join();
  done = true;
  syncer.join();
  REQUIRE_FALSE(failed);
  REQUIRE(fs->run_delayed_iputs());
  const auto st = iput_stats(*fs);
  CHECK(st["queued"].get<uint64_t>() == 2 * kPerThread);
  CHECK(st["evicted"].get<uint64_t>() == 2 * kPerThread);
  CHECK(st["failed"].get<uint64_t>() == 0);
  CHECK(st["pending"].get<uint64_t>() == 0);
  const TreeKeys k = tree_keys(*fs);
  CHECK(k.orphans.empty());
  CHECK(k.items_of == initial.items_of);  // nothing of the 800 inodes is left
  REQUIRE(fs->unmount());
  btrfs_check_clean(img.path());
}

}  // namespace
}  // namespace ubtrfs::fs
