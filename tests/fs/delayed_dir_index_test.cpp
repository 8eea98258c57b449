// A directory's DIR_INDEX, queued by a create and written by a delayed-items run
// (fs/delayed_inode.h), must still be in the tree when the unlink or rename of that name comes.
//
// Seen once through the NBD mount with a TSan daemon: the cleanup of the POSIX case "unlinking and
// adding entries during readdir" unlinked its entries in index order while the kernel's FORGETs
// evicted the ones already unlinked and the reclaim thread ran delayed items; one unlink aborted
// the transaction with "no dir index [2549 96 531] for 'entry-529'". The mechanism: the eviction's
// delete_items_of(inode) searched for [inode 0 0], landed past the end of a leaf holding the tail
// of the directory's DIR_INDEX items (the directory's objectid is just below its files'), and went
// on through collect_items -> next_leaf, which re-searches from that leaf's LAST KEY with no lock
// held. The runner inserted the directory's next DIR_INDEX in between; next_leaf returned it,
// collect_items checked only the upper bound, and the eviction deleted the directory's item.
//
// The same walk (fs/dir_item.cpp collect_items) serves readdir's read_dir_index, which could return
// a DIR_ITEM created meanwhile as an index entry whose "index" is the name's hash.
//
// Rules named here: a_range_walk_checks_its_lower_bound (deterministic, for eviction and for
// readdir: the insert is made at the exact point, between next_leaf's release of the path and its
// search, by a TreeRoot test hook) and
// a_retired_delayed_index_is_always_findable (the whole race in a mounted filesystem: unlinks,
// evictions and a delayed-items runner; it found the bug in about half of its runs).
// The second needs mkfs.btrfs: otherwise WARN and skip, or FAIL when UBTRFS_REQUIRE_ORACLES=1.
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "../tree/tree_test_env.h"
#include "fs/dir_item.h"
#include "fs/filesystem.h"
#include "fs/space_flusher.h"
#include "io/checksum.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::have_mkfs_btrfs;
using test::kRootIno;
using test::mkfs_btrfs;
using test::run;
using test::TreeEnv;

Key item_key(uint64_t objectid, uint64_t offset) { return Key{objectid, kStringItemKey, offset}; }

TEST_CASE("a_range_walk_checks_its_lower_bound: delete_items_of never deletes a key inserted below its range "
          "while it crossed to the next leaf",
          "[fs][dir_item][race]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  std::map<Key, std::vector<uint8_t>> model;
  {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
    // Objects 100..299, three items each: many leaves, some boundaries between two objects.
    for (uint64_t o = 100; o < 300; ++o)
      for (uint64_t i = 0; i < 3; ++i) {
        const Key k = item_key(o, i);
        model[k] = test::make_value(k, 200, 0);
        REQUIRE(insert_item(h, root, k, model[k]));
      }
    h.end_handle();
  }
  REQUIRE(env.commit());

  // An object whose first item opens a leaf whose left neighbour ends with the previous object's
  // items: the search for [o 0 0] lands past that neighbour's last item.
  uint64_t victim = 0;
  for (uint64_t o = 150; o < 290 && !victim; ++o) {
    Path p;
    REQUIRE(search_slot(nullptr, root, Key{o, 0, 0}, p, 0, false));
    const int n = static_cast<int>(p.leaf().nritems());
    if (p.slots[0] == n && p.leaf().item_key(n - 1).objectid == o - 1) victim = o;
  }
  REQUIRE(victim != 0);
  INFO("evicted object " << victim);

  // The race at its exact point: delete_items_of -> collect_items -> next_leaf has released the
  // path and not yet searched again; another thread inserts a key of the previous object, above
  // the old leaf's last key and below the evicted object's first (what the delayed-items runner
  // did with the directory's next DIR_INDEX).
  TreeHandle h = env.handle();
  const Key intruder = item_key(victim - 1, 99);
  int hook_calls = 0;
  root.set_next_leaf_unlocked_hook_for_test([&] {
    if (hook_calls++ != 0) return;
    model[intruder] = test::make_value(intruder, 200, 1);
    REQUIRE(insert_item(h, root, intruder, model[intruder]));
  });
  const Status st = delete_items_of(h, root, victim);
  root.set_next_leaf_unlocked_hook_for_test(nullptr);
  REQUIRE(st);
  REQUIRE(hook_calls > 0);  // the walk really crossed a leaf with the insert in between
  for (uint64_t i = 0; i < 3; ++i) model.erase(item_key(victim, i));
  h.end_handle();

  auto intruder_now = lookup_item(root, intruder);
  REQUIRE(intruder_now);
  CHECK(intruder_now->has_value());  // the bug: deleted as if it were the evicted object's first item
  CHECK(test::compare_with_model(root, model) == "");
  CHECK(env.check_tree(root) == "");
  CHECK(env.alloc_.errors().empty());
}

// The same walk serves readdir (read_dir_index from [dir 96 start]): a DIR_ITEM a create inserted
// meanwhile at the end of the leaf before the directory's first DIR_INDEX came back as an index
// entry whose "index" is a name hash — readdir would have listed it and resumed past it,
// skipping every real index below the hash.
TEST_CASE("a_range_walk_checks_its_lower_bound: readdir's index walk never returns a dir item inserted "
          "while it crossed to the next leaf",
          "[fs][dir_item][race]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  auto entry_body = [](const std::string& name, uint64_t ino) {
    DirEntryRecord e;
    e.name = name;
    e.location = Key{ino, kInodeItemKey, 0};
    e.type = kFtRegFile;
    std::vector<uint8_t> body;
    append_dir_entry(body, e);
    return body;
  };
  {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
    // Directories 300..499 with 3 names each (names of varied lengths): DIR_ITEMs, then DIR_INDEXes
    // 2..4. Many leaves; some end with a directory's last DIR_ITEM.
    for (uint64_t d = 300; d < 500; ++d)
      for (uint64_t i = 0; i < 3; ++i) {
        const std::string name = fmt::format("name-of-{}-{}-{}", d, i, std::string(20 + (d * 37 + i * 11) % 90, 'x'));
        REQUIRE(insert_item(h, root, Key{d, kDirItemKey, io::name_hash(name)}, entry_body(name, 10000 + d * 10 + i)));
        REQUIRE(insert_item(h, root, Key{d, kDirIndexKey, 2 + i}, entry_body(name, 10000 + d * 10 + i)));
      }
    h.end_handle();
  }
  REQUIRE(env.commit());
  // A directory whose DIR_INDEX items open a leaf whose left neighbour ends with its DIR_ITEMs, and
  // a new name hashing above the last of them (it goes at the end of that neighbour).
  uint64_t dir = 0;
  std::string late;
  for (uint64_t d = 320; d < 490 && !dir; ++d) {
    Path p;
    REQUIRE(search_slot(nullptr, root, Key{d, kDirIndexKey, 0}, p, 0, false));
    const int n = static_cast<int>(p.leaf().nritems());
    if (p.slots[0] != n) continue;
    const Key last = p.leaf().item_key(n - 1);
    if (last.objectid != d || last.type != kDirItemKey) continue;
    for (int t = 0; t < 100000 && late.empty(); ++t) {
      const std::string cand = fmt::format("created-meanwhile-{}", t);
      if (io::name_hash(cand) > last.offset) late = cand;
    }
    if (!late.empty()) dir = d;
  }
  REQUIRE(dir != 0);
  INFO("directory " << dir << ", new name " << late);
  TreeHandle h = env.handle();
  int hook_calls = 0;
  root.set_next_leaf_unlocked_hook_for_test([&] {
    if (hook_calls++ != 0) return;
    REQUIRE(insert_item(h, root, Key{dir, kDirItemKey, io::name_hash(late)}, entry_body(late, 99999)));
  });
  auto listed = read_dir_index(root, dir, 0, 100);
  root.set_next_leaf_unlocked_hook_for_test(nullptr);
  h.end_handle();
  REQUIRE(hook_calls > 0);
  REQUIRE(listed);
  std::vector<uint64_t> indexes;
  for (const auto& e : *listed) indexes.push_back(e.index);
  CHECK(indexes == std::vector<uint64_t>{2, 3, 4});
}

// ---- the whole race, through the Filesystem ------------------------------------------------------

// Rounds of: a directory of 600 empty files, listed, then every name unlinked in index order, each
// unlinked inode forgotten (evicted) at once, as the kernel's FORGET does — while another thread
// runs delayed items (the reclaim thread's FLUSH_DELAYED_ITEMS_NR) without pause. Small nodes and
// a small cache make many leaf boundaries and re-reads. Every unlink must succeed: its DIR_INDEX
// is queued or in the tree.
TEST_CASE("a_retired_delayed_index_is_always_findable: unlinks racing evictions and delayed-items runs",
          "[fs][delayed][race]") {
  if (!have_mkfs_btrfs()) return;
  io::testing::TempFile img(256ull << 20);
  mkfs_btrfs(img.path(), "-n 4096");
  OpenOptions o;
  o.path = img.path();
  o.cache_bytes = 4ull << 20;
  auto mounted = Filesystem::mount(o, MountOptions{});
  REQUIRE(mounted);
  auto fs = std::move(*mounted);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> runs{0};
  std::string runner_error;
  std::thread runner([&] {
    auto& meta = fs->info().spaces().metadata();
    while (!stop) {
      auto r = fs->info().space_flusher().flush(meta, alloc::FlushState::kDelayedItemsNr, 64 << 10);
      if (!r) {
        runner_error = r.error().message;
        return;
      }
      ++runs;
      std::this_thread::yield();
    }
  });
  const int rounds = std::max(4, static_cast<int>(24 * test::stress_scale()));
  constexpr int kEntries = 600;
  std::string error;
  uint64_t unlinked = 0;
  for (int round = 0; round < rounds && error.empty(); ++round) {
    auto d = fs->mkdir(kRootIno, fmt::format("d{}", round), 040755, Caller{});
    if (!d) {
      error = "mkdir: " + d.error().message;
      break;
    }
    const uint64_t dir = d->st_ino;
    for (int i = 0; i < kEntries && error.empty(); ++i)
      if (auto f = fs->create(dir, fmt::format("entry-{}", i), 0100644, Caller{}); !f)
        error = fmt::format("create entry-{}: {}", i, f.error().message);
    std::vector<std::pair<std::string, uint64_t>> names;
    if (error.empty())
      if (auto st = fs->readdir(dir, 0, false,
                                [&](const DirEntryOut& e) {
                                  if (e.name != "." && e.name != "..")
                                    names.emplace_back(std::string(e.name), e.attr.st_ino);
                                  return true;
                                });
          !st)
        error = "readdir: " + st.error().message;
    if (error.empty() && names.size() != kEntries) error = fmt::format("listed {} of {} names", names.size(), kEntries);
    for (auto& [name, ino] : names) {
      if (!error.empty()) break;
      if (auto u = fs->unlink(dir, name); !u) {
        error = fmt::format("round {}: unlink {}: {}", round, name, u.error().message);
        break;
      }
      ++unlinked;
      fs->forget(ino, 1);  // create counted one lookup; at 0 the inode is evicted here
    }
  }
  stop = true;
  runner.join();
  INFO(runs.load() << " delayed-items runs, " << unlinked << " unlinks in " << rounds << " rounds");
  CHECK(runner_error == "");
  REQUIRE(error == "");
  CHECK(runs.load() > 0);
  REQUIRE(fs->unmount());
}

}  // namespace
}  // namespace ubtrfs::fs
