// A directory listing is bounded at open (btrfs_opendir records btrfs_get_dir_last_index;
// btrfs_real_readdir stops after it): an entry renamed within the directory gets a new, higher
// DIR_INDEX, so a reader that followed the index past its bound would meet it again and, with a
// renamer running all the time, never end (the "infinite directory read" of xfstests generic/736).
//
// Rules named here: readdir_stops_at_last_index_at_open (a reader racing renames sees each name
// and each inode at most once, ends, and sees every entry that stayed put), and
// readdir_after_reopen_sees_entries_added_since (a fresh bound, as a rewind takes, shows them).
// Needs mkfs.btrfs for the image: otherwise WARN and skip, or FAIL when UBTRFS_REQUIRE_ORACLES=1.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::have_mkfs_btrfs;
using test::kRootIno;
using test::mkfs_btrfs;
using test::mount_file_or_fail;
using test::run;

using io::testing::TempFile;

// One listing as the daemon serves it: opendir's bound, then reads of at most `per_call` entries
// each (a small reply buffer: many calls, each resuming at the last next_offset) until a read
// returns nothing. Stops after `max_calls` reads (the caller checks `ended`).
struct Listing {
  std::vector<std::pair<std::string, uint64_t>> entries;  // name, st_ino
  size_t calls = 0;
  bool ended = false;
  std::string error;
};

Listing list_dir(Filesystem& fs, uint64_t dir, size_t per_call, size_t max_calls) {
  Listing l;
  auto bound = fs.opendir(dir);
  if (!bound) {
    l.error = "opendir: " + bound.error().message;
    return l;
  }
  uint64_t offset = 0;
  while (l.calls < max_calls) {
    ++l.calls;
    size_t taken = 0;
    auto st = fs.readdir(
        dir, offset, false,
        [&](const DirEntryOut& e) {
          if (taken == per_call) return false;
          ++taken;
          offset = e.next_offset;
          if (e.name != "." && e.name != "..") l.entries.emplace_back(std::string(e.name), e.attr.st_ino);
          return true;
        },
        *bound);
    if (!st) {
      l.error = "readdir: " + st.error().message;
      return l;
    }
    if (taken == 0) {
      l.ended = true;
      return l;
    }
  }
  return l;
}

TEST_CASE("readdir_stops_at_last_index_at_open", "[fs][readdir]") {
  if (!have_mkfs_btrfs()) return;
  TempFile img(256ull << 20);
  mkfs_btrfs(img.path(), "-n 4096");
  auto fs = mount_file_or_fail(img.path());
  auto d = fs->mkdir(kRootIno, "d", 040755, Caller{});
  REQUIRE(d);
  const uint64_t dir = d->st_ino;
  constexpr int kStable = 200;   // never renamed: every listing must show them all
  constexpr int kMoving = 200;   // renamed back and forth within the directory all the time
  std::set<std::string> stable;
  std::map<uint64_t, int> moving_ino;  // st_ino -> which moving file
  for (int i = 0; i < kStable; ++i) {
    const std::string name = fmt::format("stable{}", i);
    REQUIRE(fs->create(dir, name, 0100644, Caller{}));
    stable.insert(name);
  }
  for (int i = 0; i < kMoving; ++i) {
    auto f = fs->create(dir, fmt::format("m{}_0", i), 0100644, Caller{});
    REQUIRE(f);
    moving_ino[f->st_ino] = i;
  }

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> renames{0};
  std::string rename_error;
  std::thread renamer([&] {
    std::vector<int> gen(kMoving, 0);
    while (!stop) {
      for (int i = 0; i < kMoving && !stop; ++i) {
        const std::string from = fmt::format("m{}_{}", i, gen[i]);
        const std::string to = fmt::format("m{}_{}", i, gen[i] + 1);
        if (auto st = fs->rename(dir, from, dir, to, 0); !st) {
          rename_error = from + " -> " + to + ": " + st.error().message;
          stop = true;
          return;
        }
        ++gen[i];
        ++renames;
      }
    }
  });

  constexpr int kListings = 20;
  std::vector<Listing> listings;
  for (int k = 0; k < kListings; ++k) listings.push_back(list_dir(*fs, dir, 7, 100000));
  stop = true;
  renamer.join();
  REQUIRE(rename_error == "");
  INFO(renames.load() << " renames during " << kListings << " listings");
  // The renamer really raced the readers: many renames per listing.
  CHECK(renames.load() >= kListings * 10ull);

  for (const auto& l : listings) {
    REQUIRE(l.error == "");
    REQUIRE(l.ended);
    std::set<std::string> names;
    std::set<uint64_t> inos;
    size_t stable_seen = 0;
    for (const auto& [name, ino] : l.entries) {
      INFO("entry " << name << " ino " << ino);
      CHECK(names.insert(name).second);  // each name at most once
      CHECK(inos.insert(ino).second);    // each inode at most once, under whatever name
      if (stable.count(name)) ++stable_seen;
      else CHECK(moving_ino.count(ino) == 1);
    }
    CHECK(stable_seen == stable.size());
    CHECK(l.entries.size() <= static_cast<size_t>(kStable + kMoving));
  }
  REQUIRE(fs->unmount());
}

TEST_CASE("readdir_after_reopen_sees_entries_added_since", "[fs][readdir]") {
  if (!have_mkfs_btrfs()) return;
  TempFile img(256ull << 20);
  mkfs_btrfs(img.path(), "-n 4096");
  auto fs = mount_file_or_fail(img.path());
  auto d = fs->mkdir(kRootIno, "d", 040755, Caller{});
  REQUIRE(d);
  const uint64_t dir = d->st_ino;
  // An empty directory's bound lies below every index a new entry gets.
  auto empty_bound = fs->opendir(dir);
  REQUIRE(empty_bound);
  REQUIRE(fs->create(dir, "a", 0100644, Caller{}));
  auto names_with = [&](uint64_t bound) {
    std::vector<std::string> names;
    REQUIRE(fs->readdir(
        dir, 0, false,
        [&](const DirEntryOut& e) {
          names.emplace_back(e.name);
          return true;
        },
        bound));
    return names;
  };
  CHECK(names_with(*empty_bound) == std::vector<std::string>{".", ".."});
  auto bound_a = fs->opendir(dir);
  REQUIRE(bound_a);
  REQUIRE(fs->create(dir, "b", 0100644, Caller{}));
  REQUIRE(fs->rename(dir, "a", dir, "c", 0));  // renamed: a new index past bound_a
  CHECK(names_with(*bound_a) == std::vector<std::string>{".", ".."});
  auto bound_now = fs->opendir(dir);
  REQUIRE(bound_now);
  CHECK(names_with(*bound_now) == std::vector<std::string>{".", "..", "b", "c"});
  // The bound survives a commit (the delayed index items reach the tree) and a remount (the
  // counter is seeded again from the tree's highest DIR_INDEX).
  REQUIRE(fs->fsyncdir(dir, false));
  CHECK(*fs->opendir(dir) == *bound_now);
  REQUIRE(fs->unmount());
  fs.reset();
  fs = mount_file_or_fail(img.path());
  auto again = fs->lookup(kRootIno, "d");
  REQUIRE(again);
  auto bound_remount = fs->opendir(again->st_ino);
  REQUIRE(bound_remount);
  CHECK(*bound_remount == *bound_now);
  REQUIRE(fs->unmount());
}

// The delayed DIR_INDEX changes of a rename (a deletion of the old index, an insertion of the new)
// reach the tree when delayed items run — here a commit, from inside readdir, between its two reads.
// readdir must take the delayed view before reading the tree: the other order listed the renamed
// file under its old name as well (the tree still had the old index, the view no longer had its
// deletion), and readdirplus turned that into a live dentry for a name that no longer existed.
TEST_CASE("readdir_takes_the_delayed_view_before_the_tree", "[fs][readdir]") {
  if (!have_mkfs_btrfs()) return;
  TempFile img(256ull << 20);
  mkfs_btrfs(img.path(), "-n 4096");
  auto fs = mount_file_or_fail(img.path());
  auto d = fs->mkdir(kRootIno, "d", 040755, Caller{});
  REQUIRE(d);
  const uint64_t dir = d->st_ino;
  for (int i = 0; i < 8; ++i) REQUIRE(fs->create(dir, fmt::format("f{}", i), 0100644, Caller{}));
  REQUIRE(fs->fsyncdir(dir, false));  // every index in the tree, none delayed
  REQUIRE(fs->rename(dir, "f3", dir, "renamed", 0));  // delayed: delete f3's index, insert renamed's
  for (bool plus : {false, true}) {
    int commits = 0;
    fs->set_readdir_between_reads_for_test([&] {
      if (commits++ == 0) REQUIRE(fs->fsyncdir(dir, false));  // the delayed items run here, once
    });
    std::vector<std::string> names;
    auto st = fs->readdir(dir, 0, plus, [&](const DirEntryOut& e) {
      names.emplace_back(e.name);
      return true;
    });
    fs->set_readdir_between_reads_for_test(nullptr);
    REQUIRE(st);
    CHECK(commits >= 1);
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{".", "..", "f0", "f1", "f2", "f4", "f5", "f6", "f7", "renamed"});
    // Next round: another rename, delayed again.
    REQUIRE(fs->rename(dir, "renamed", dir, "f3", 0));
    REQUIRE(fs->rename(dir, "f3", dir, "renamed", 0));
  }
  REQUIRE(fs->unmount());
}

}  // namespace
}  // namespace ubtrfs::fs
