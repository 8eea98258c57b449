// Transactions and the commit pipeline over real images, judged by the oracles: a filesystem made by
// mkfs.btrfs (and by mkfs.ubtrfs when UBTRFS_BIN is set) is opened read-write through FsInfo, changed
// through transaction handles with raw items (files created and deleted in the top directory, enough
// to split leaves, grow trees, and need new metadata chunks), committed several times, and then
// `btrfs check` (original and lowmem) must pass and the kernel must see exactly the files.
//
// Rules named here: commit_converges_and_image_is_check_clean, freed_blocks_stay_pinned_until_commit,
// new_chunks_are_created_in_the_trees, aborted_commit_leaves_previous_generation (EROFS after abort),
// every_commit_cows_the_root_tree.
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>
#include <atomic>
#include <string>

#include "fs/chunk_creator.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "io/checksum.h"
#include "tests/io/temp_file.h"
#include "tree/ctree.h"
#include "tree/superblock.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::bytes_of;
using test::have_btrfs_progs_as_root;
using test::have_tool;
using test::oracles_required;
using test::run;

struct FileMaker {
  FsInfo& fs;
  RootRecord& root;
  uint64_t next_ino = 257;
  uint64_t next_index = 2;

  Status create(TransHandle& th, const std::string& name, uint64_t* ino_out) {
    const uint64_t ino = next_ino++;
    const uint64_t index = next_index++;
    InodeItem ii{};
    ii.generation = th.transid();
    ii.transid = th.transid();
    ii.nlink = 1;
    ii.mode = 0100644;
    ii.atime.sec = 1700000000;
    ii.ctime.sec = 1700000000;
    ii.mtime.sec = 1700000000;
    ii.otime.sec = 1700000000;
    TreeRoot& t = *root.tree;
    UBTRFS_TRY_STATUS(insert_item(th.tree(), t, Key{ino, kInodeItemKey, 0}, bytes_of(ii)));
    std::vector<uint8_t> ref(sizeof(InodeRef) + name.size());
    InodeRef r{};
    r.index = index;
    r.name_len = static_cast<uint16_t>(name.size());
    store(ref.data(), r);
    std::memcpy(ref.data() + sizeof(InodeRef), name.data(), name.size());
    UBTRFS_TRY_STATUS(insert_item(th.tree(), t, Key{ino, kInodeRefKey, 256}, ref));
    std::vector<uint8_t> di(sizeof(DirItem) + name.size());
    DirItem d{};
    d.location.set(Key{ino, kInodeItemKey, 0});
    d.transid = th.transid();
    d.name_len = static_cast<uint16_t>(name.size());
    d.type = kFtRegFile;
    store(di.data(), d);
    std::memcpy(di.data() + sizeof(DirItem), name.data(), name.size());
    UBTRFS_TRY_STATUS(insert_item(th.tree(), t, Key{256, kDirItemKey, io::name_hash(name)}, di));
    UBTRFS_TRY_STATUS(insert_item(th.tree(), t, Key{256, kDirIndexKey, index}, di));
    UBTRFS_TRY_STATUS(adjust_dir_size(th, static_cast<int64_t>(2 * name.size())));
    *ino_out = ino;
    return {};
  }

  Status remove(TransHandle& th, const std::string& name, uint64_t ino, uint64_t index) {
    TreeRoot& t = *root.tree;
    UBTRFS_TRY_STATUS(delete_item(th.tree(), t, Key{ino, kInodeItemKey, 0}));
    UBTRFS_TRY_STATUS(delete_item(th.tree(), t, Key{ino, kInodeRefKey, 256}));
    UBTRFS_TRY_STATUS(delete_item(th.tree(), t, Key{256, kDirItemKey, io::name_hash(name)}));
    UBTRFS_TRY_STATUS(delete_item(th.tree(), t, Key{256, kDirIndexKey, index}));
    return adjust_dir_size(th, -static_cast<int64_t>(2 * name.size()));
  }

  Status adjust_dir_size(TransHandle& th, int64_t delta) {
    Path path;
    auto ret = search_slot(&th.tree(), *root.tree, Key{256, kInodeItemKey, 0}, path, 0, true);
    if (!ret) return fail(ret.error());
    if (*ret != 0) return fail(ENOENT, "root dir inode missing");
    auto data = path.leaf().item_data(path.slot());
    auto ii = load<InodeItem>(data.data());
    ii.size = static_cast<uint64_t>(static_cast<int64_t>(ii.size.get()) + delta);
    ii.transid = th.transid();
    store(data.data(), ii);
    fs.cache().mark_dirty(path.nodes[0]);
    return {};
  }
};

std::string mkfs_cmd(const std::string& which, const std::string& img, uint32_t nodesize,
                     const std::string& profile = "dup") {
  if (which == "btrfs")
    return fmt::format("mkfs.btrfs -q -f -n {} -m {} {} >/dev/null 2>&1", nodesize, profile, img);
  return fmt::format("{}/mkfs/mkfs.ubtrfs -q -f -n {} -m {} {} >/dev/null 2>&1", std::getenv("UBTRFS_BIN"), nodesize,
                     profile, img);
}

}  // namespace

TEST_CASE("commit_converges_and_image_is_check_clean", "[fs][commit][oracle]") {
  if (!have_btrfs_progs_as_root()) return;
  std::vector<std::string> makers{"btrfs"};
  if (std::getenv("UBTRFS_BIN")) makers.push_back("ubtrfs");
  for (const auto& maker : makers) {
    for (uint32_t nodesize : {4096u, 16384u}) {
      // SINGLE metadata on 128 MiB gets an 8 MiB metadata chunk, which the files below outgrow;
      // DUP gets 32 MiB (no new chunk needed, but both copies are written and checked).
      const std::string profile = nodesize == 4096 ? "single" : "dup";
      DYNAMIC_SECTION("mkfs." << maker << " nodesize " << nodesize << " metadata " << profile) {
        io::testing::TempFile img(128ull << 20);
        REQUIRE(run(mkfs_cmd(maker, img.path(), nodesize, profile)) == 0);
        uint64_t groups_before = 0, groups_after = 0, gen_before = 0;
        std::map<std::string, uint64_t> live;  // name -> ino
        std::map<std::string, uint64_t> index_of;
        {
          OpenOptions o;
          o.path = img.path();
          auto fs = FsInfo::open(o);
          REQUIRE(fs);
          auto& f = **fs;
          REQUIRE_FALSE(f.read_only());
          gen_before = f.super().generation.get();
          groups_before = f.block_groups().all().size();
          auto root = f.fs_root(kFsTreeObjectid);
          REQUIRE(root);
          FileMaker mk{f, **root};
          // Enough files that a 4 KiB-node tree needs several levels and the metadata group fills up.
          const int batches = 6, per_batch = nodesize == 4096 ? 6000 : 9000;
          for (int b = 0; b < batches; ++b) {
            {
              // One huge handle that reserves nothing (a join): a reservation for tens of thousands
              // of items would exceed the device, in the kernel too; its blocks come through the
              // fallback chain, which makes chunks as the metadata grows.
              auto th = f.transactions().join();
              REQUIRE(th);
              for (int i = 0; i < per_batch; ++i) {
                std::string name = fmt::format("file-{}-{:05}-{}", b, i, std::string(i % 40, 'x'));
                index_of[name] = mk.next_index;
                uint64_t ino = 0;
                auto st = mk.create(*th, name, &ino);
                if (!st) FAIL(st.error().message);
                live[name] = ino;
              }
              // Delete every third file of the previous batch: frees, merges, pinned blocks.
              if (b > 0) {
                int n = 0;
                for (auto it = live.begin(); it != live.end();) {
                  if (it->first.starts_with(fmt::format("file-{}-", b - 1)) && (n++ % 3 == 0)) {
                    auto st = mk.remove(*th, it->first, it->second, index_of[it->first]);
                    if (!st) FAIL(st.error().message);
                    it = live.erase(it);
                  } else {
                    ++it;
                  }
                }
              }
            }
            auto st = f.transactions().commit();
            if (!st) FAIL(st.error().message);
            CHECK(f.super().generation.get() == gen_before + 1 + b);
            // Every group: free + used + reserved + pinned + super == length, nothing left reserved
            // or pinned after the commit.
            for (auto* bg : f.block_groups().all()) {
              auto inv = bg->check_invariant();
              CHECK(inv);
              CHECK(bg->usage().reserved == 0);
              CHECK(bg->usage().pinned == 0);
            }
          }
          groups_after = f.block_groups().all().size();
        }
        INFO("block groups before " << groups_before << " after " << groups_after);
        // (mkfs.ubtrfs makes a larger first metadata chunk: only mkfs.btrfs's is outgrown here.)
        if (profile == "single" && maker == "btrfs") CHECK(groups_after > groups_before);  // new_chunks_are_created_in_the_trees
        CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-commit-check.log 2>&1", img.path())) == 0);
        CHECK(run(fmt::format("btrfs check --mode=lowmem {} >/tmp/ubtrfs-commit-check-lowmem.log 2>&1", img.path())) == 0);
        // The kernel sees exactly the live files.
        std::set<std::string> seen;
        {
          test::KernelMount km;
          REQUIRE(km.mount(img.path(), true) == 0);
          for (auto& e : std::filesystem::directory_iterator(km.mnt)) seen.insert(e.path().filename().string());
          km.unmount();
        }
        std::set<std::string> want;
        for (auto& [n, i] : live) want.insert(n);
        CHECK(seen.size() == want.size());
        CHECK(seen == want);
      }
    }
  }
}

// Every commit COWs the root tree (btrfs commit_cowonly_roots), also one that changes no tree at
// all or only the superblock: the superblock it writes names a root tree block of its own
// generation. Without it a commit that only ends a tree log wrote a generation-N superblock over
// the generation-(N-1) root block, which the kernel rejects ("parent transid verify failed").
TEST_CASE("every_commit_cows_the_root_tree", "[fs][commit]") {
  if (!have_tool("mkfs.btrfs")) {
    if (oracles_required()) FAIL("mkfs.btrfs required");
    return;
  }
  io::testing::TempFile img(256ull << 20);
  REQUIRE(run(mkfs_cmd("btrfs", img.path(), 16384)) == 0);
  OpenOptions o;
  o.path = img.path();
  auto fs = FsInfo::open(o);
  REQUIRE(fs);
  auto& txm = (*fs)->transactions();
  auto root = (*fs)->fs_root(kFsTreeObjectid);
  REQUIRE(root);
  FileMaker mk{**fs, **root};
  uint64_t previous_root = (*fs)->root_tree().node()->start();
  bool log_live = false;
  for (int round = 0; round < 4; ++round) {
    // Rounds 0 and 2 change an fs tree; 1 only ends a (pretended) tree log; 3 changes nothing.
    if (round % 2 == 0) {
      auto th = txm.start(4);
      REQUIRE(th);
      uint64_t ino;
      REQUIRE(mk.create(*th, fmt::format("f{}", round), &ino));
    } else if (round == 1) {
      // A commit that only ends a tree log: no tree block is dirty, but a live log makes the commit
      // run (its superblock, log_root 0, must supersede the fsync's).
      txm.set_tree_log_hooks({[&] { return log_live; }, [] {}, [&](uint64_t) { log_live = false; }});
      log_live = true;
    }
    const uint64_t generation_before = (*fs)->super().generation.get();
    REQUIRE(txm.commit());
    // A commit with nothing to write writes nothing (no new generation, the same root block).
    if (round == 3) {
      CHECK((*fs)->super().generation.get() == generation_before);
      CHECK((*fs)->root_tree().node()->start() == previous_root);
      continue;
    }
    CHECK((*fs)->super().generation.get() > generation_before);
    auto dev = io::open_device(img.path(), io::OpenMode::kReadOnly);
    REQUIRE(dev);
    for (int mirror = 0; mirror < 2; ++mirror) {
      auto sb = read_superblock_raw(**dev, mirror);
      REQUIRE(sb);
      INFO("round " << round << " mirror " << mirror);
      CHECK(sb->root.get() == (*fs)->root_tree().node()->start());
      CHECK(sb->generation.get() == (*fs)->root_tree().node()->generation());
    }
    // A new block each time: the previous commit's root block is never overwritten in place.
    CHECK((*fs)->root_tree().node()->start() != previous_root);
    previous_root = (*fs)->root_tree().node()->start();
  }
  fs->reset();
  if (have_tool("btrfs")) CHECK(run(fmt::format("btrfs check {} >/dev/null 2>&1", img.path())) == 0);
}

TEST_CASE("aborted_commit_leaves_previous_generation", "[fs][commit]") {
  if (!have_tool("mkfs.btrfs")) {
    if (oracles_required()) FAIL("mkfs.btrfs required");
    return;
  }
  io::testing::TempFile img(256ull << 20);
  REQUIRE(run(mkfs_cmd("btrfs", img.path(), 16384)) == 0);
  OpenOptions o;
  o.path = img.path();
  uint64_t gen = 0;
  {
    auto fs = FsInfo::open(o);
    REQUIRE(fs);
    gen = (*fs)->super().generation.get();
    auto& txm = (*fs)->transactions();
    // A flusher that fails stands for any failure before the superblock write.
    txm.set_pre_commit_flusher([](CommitCause) { return Status(fail(EIO, "injected flush failure")); });
    auto root = (*fs)->fs_root(kFsTreeObjectid);
    REQUIRE(root);
    FileMaker mk{**fs, **root};
    {
      auto th = txm.start(4);
      REQUIRE(th);
      uint64_t ino;
      REQUIRE(mk.create(*th, "never-committed", &ino));
    }
    auto st = txm.commit();
    REQUIRE_FALSE(st);
    CHECK(txm.aborted());
    auto th2 = txm.start(1);
    REQUIRE_FALSE(th2);
    CHECK(th2.error().err == EROFS);
  }
  auto fs = FsInfo::open(o);
  REQUIRE(fs);
  CHECK((*fs)->super().generation.get() == gen);
  auto root = (*fs)->fs_root(kFsTreeObjectid);
  REQUIRE(root);
  auto item = lookup_item(*(*root)->tree, Key{257, kInodeItemKey, 0});
  REQUIRE(item);
  CHECK_FALSE(item->has_value());
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

// Handles from several threads while commits run back to back: the gate must let every handle
// finish in the transaction it started in, a commit must never see a running handle, and the
// result must be check-clean with every file present. Under TSan this is the race test of the
// handle/commit protocol.
TEST_CASE("handles_and_commits_run_concurrently", "[fs][commit][concurrency]") {
  if (!have_btrfs_progs_as_root()) return;
  io::testing::TempFile img(256ull << 20);
  REQUIRE(run(mkfs_cmd("btrfs", img.path(), 4096, "single")) == 0);
  OpenOptions o;
  o.path = img.path();
  o.cache_bytes = 4ull << 20;  // small cache: eviction and re-reads during the run
  const int threads = 4;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  const int per_thread = 600;
#else
  const int per_thread = 3000;
#endif
  std::atomic<uint64_t> next_ino{257}, next_index{2};
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  uint64_t commits = 0;
  {
    auto fs = FsInfo::open(o);
    REQUIRE(fs);
    auto& f = **fs;
    auto root = f.fs_root(kFsTreeObjectid);
    REQUIRE(root);
    std::thread committer([&] {
      while (!done.load()) {
        if (!f.transactions().commit()) failures++;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    std::vector<std::thread> workers;
    std::vector<std::string> errors(threads);
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          auto th = f.transactions().start(5);
          if (!th) {
            errors[t] = th.error().message;
            failures++;
            return;
          }
          FileMaker mk{f, **root};
          mk.next_ino = next_ino.fetch_add(1);
          mk.next_index = next_index.fetch_add(1);
          const uint64_t transid = th->transid();
          uint64_t ino;
          auto st = mk.create(*th, fmt::format("t{}-{:06}", t, i), &ino);
          if (!st) {
            errors[t] = st.error().message;
            failures++;
            return;
          }
          // The transaction cannot have committed under a running handle.
          if (f.transactions().running_transid() != transid) {
            errors[t] = "transaction committed under a running handle";
            failures++;
            return;
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    done = true;
    committer.join();
    for (auto& e : errors) CHECK(e == "");
    REQUIRE(f.transactions().commit());
    commits = f.transactions().stats().commits;
  }
  CHECK(failures.load() == 0);
  INFO("commits during the run: " << commits);
  CHECK(commits > 2);
  CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-conc-check.log 2>&1", img.path())) == 0);
  test::KernelMount km;
  REQUIRE(km.mount(img.path(), true) == 0);
  size_t n = 0;
  for (auto& e : std::filesystem::directory_iterator(km.mnt)) {
    (void)e;
    ++n;
  }
  km.unmount();
  CHECK(n == static_cast<size_t>(threads * per_thread));
}

}  // namespace ubtrfs::fs
