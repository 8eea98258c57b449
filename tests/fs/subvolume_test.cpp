// Subvolumes through the Filesystem facade (fs/subvolume.cpp, fs/tree_search.cpp) on an in-memory
// mkfs.ubtrfs image. The kernel comparison and btrfs check are in tests/oracle/subvolume_test.sh;
// these pin the rules that script only touches once.
//
// Rules named here: tree_search_range_is_lexicographic_on_whole_keys,
// tree_search_stops_before_an_item_that_does_not_fit, tree_search_filters_by_leaf_generation,
// subvolume_ids_are_highest_root_objectid_plus_one_and_never_reused,
// subvolume_delete_refuses_what_the_kernel_refuses, inode_path_puts_a_slash_after_each_component,
// subvolume_create_and_delete_survive_a_remount, read_only_subvolume_refuses_every_change_with_erofs,
// snapshot_shares_the_source_and_the_two_diverge,
// a_snapshot_holds_its_directorys_lock_until_its_commit_took_it.
#include <fcntl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "fs/filesystem.h"
#include "io/block_device.h"
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
using test::kRootIno;
using test::mkfs_binary;

// The filesystem on `dev` with the default mount options (REQUIREs the mount).
std::unique_ptr<Filesystem> mount_with_defaults(io::BlockDevice& dev) {
  OpenOptions o = device_options(dev);
  MountOptions m;
  auto fs = Filesystem::mount(o, m);
  REQUIRE(fs);
  return std::move(*fs);
}

const Caller kRoot{};

// The FUSE number of `name` in directory `parent`.
uint64_t ino_of(Filesystem& fs, uint64_t parent, const std::string& name) {
  auto st = fs.lookup(parent, name);
  REQUIRE(st);
  return st->st_ino;
}

}  // namespace

TEST_CASE("tree_search_range_is_lexicographic_on_whole_keys") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "a", kRoot) == uint64_t{256});
  REQUIRE(fs->create_subvolume(kRootIno, "b", kRoot) == uint64_t{257});
  // (256 ROOT_ITEM 0) .. (257 ROOT_ITEM 0): the ROOT_BACKREF of 256 (type 144) lies between the two
  // keys, although no bound has its type — the kernel's key_in_sk compares whole keys.
  TreeSearchRange r;
  r.min = Key{256, kRootItemKey, 0};
  r.max = Key{257, kRootItemKey, 0};
  auto found = fs->tree_search(kRootTreeObjectid, r, 100, 4096);
  REQUIRE(found);
  std::vector<Key> keys;
  for (const auto& it : found->items) keys.push_back(it.key);
  CHECK(keys == std::vector<Key>{{256, kRootItemKey, 0}, {256, kRootBackrefKey, 5}, {257, kRootItemKey, 0}});
  // max_items bounds the count.
  auto one = fs->tree_search(kRootTreeObjectid, r, 1, 4096);
  REQUIRE(one);
  CHECK(one->items.size() == 1);
  REQUIRE(fs->unmount());
}

TEST_CASE("tree_search_stops_before_an_item_that_does_not_fit") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "a", kRoot));
  TreeSearchRange r;
  r.min = Key{256, kRootItemKey, 0};
  r.max = Key{256, kRootBackrefKey, ~0ull};
  // The ROOT_ITEM (439 bytes + a 32-byte header) fits, the back reference after it does not.
  auto first = fs->tree_search(kRootTreeObjectid, r, 100, 32 + sizeof(RootItem) + 10);
  REQUIRE(first);
  REQUIRE(first->items.size() == 1);
  CHECK(first->items[0].key == Key{256, kRootItemKey, 0});
  CHECK(first->items[0].data.size() == sizeof(RootItem));
  // Not even the first item fits: EOVERFLOW (the kernel's answer for search v1).
  auto none = fs->tree_search(kRootTreeObjectid, r, 100, 100);
  REQUIRE_FALSE(none);
  CHECK(none.error().err == EOVERFLOW);
  REQUIRE(fs->unmount());
}

TEST_CASE("tree_search_filters_by_leaf_generation") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "a", kRoot));
  const uint64_t running = fs->info().transactions().running_transid();
  TreeSearchRange r;
  r.min = Key{256, kRootItemKey, 0};
  r.max = Key{256, kRootItemKey, ~0ull};
  r.min_transid = running;
  auto now = fs->tree_search(kRootTreeObjectid, r, 10, 4096);
  REQUIRE(now);
  REQUIRE(now->items.size() == 1);
  CHECK(now->items[0].transid == running);  // the leaf was COWed in the running transaction
  r.min_transid = running + 1;
  auto later = fs->tree_search(kRootTreeObjectid, r, 10, 4096);
  REQUIRE(later);
  CHECK(later->items.empty());
  REQUIRE(fs->unmount());
}

TEST_CASE("subvolume_ids_are_highest_root_objectid_plus_one_and_never_reused") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "a", kRoot) == uint64_t{256});
  REQUIRE(fs->create_subvolume(kRootIno, "b", kRoot) == uint64_t{257});
  REQUIRE(fs->delete_subvolume(kRootIno, "b", kRoot) == uint64_t{257});
  CHECK(fs->create_subvolume(kRootIno, "c", kRoot) == uint64_t{258});
  REQUIRE(fs->unmount());
  // After a remount the counter is seeded from the root tree, where the dead root 257 still has
  // its ROOT_ITEM: 259, not 258 again or 257.
  auto again = mount_with_defaults(*dev);
  CHECK(again->create_subvolume(kRootIno, "d", kRoot) == uint64_t{259});
  REQUIRE(again->unmount());
}

TEST_CASE("subvolume_delete_refuses_what_the_kernel_refuses") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "outer", kRoot) == uint64_t{256});
  REQUIRE(fs->create_subvolume(ino_of(*fs, kRootIno, "outer"), "inner", kRoot) == uint64_t{257});
  REQUIRE(fs->mkdir(kRootIno, "plain", 0755, kRoot));
  auto err = [](const Result<uint64_t>& r) { return r ? 0 : r.error().err; };
  CHECK(err(fs->delete_subvolume(kRootIno, "outer", kRoot)) == ENOTEMPTY);  // holds 257
  CHECK(err(fs->delete_subvolume(kRootIno, "plain", kRoot)) == EINVAL);     // not a subvolume
  CHECK(err(fs->delete_subvolume(kRootIno, "missing", kRoot)) == ENOENT);
  CHECK(err(fs->delete_subvolume(kRootIno, "..", kRoot)) == EINVAL);
  Caller user;
  user.uid = 1000;
  user.gid = 1000;
  CHECK(err(fs->delete_subvolume(ino_of(*fs, kRootIno, "outer"), "inner", user)) == EPERM);
  REQUIRE(fs->set_default_subvolume(257));
  CHECK(err(fs->delete_subvolume(ino_of(*fs, kRootIno, "outer"), "inner", kRoot)) == EPERM);  // the default
  CHECK(err(fs->delete_subvolume_by_id(kFsTreeObjectid, kRoot)) == EINVAL);
  REQUIRE(fs->set_default_subvolume(0));
  CHECK(fs->delete_subvolume_by_id(257, kRoot) == uint64_t{257});
  CHECK(err(fs->delete_subvolume_by_id(257, kRoot)) == ENOENT);  // no name left
  CHECK(fs->delete_subvolume(kRootIno, "outer", kRoot) == uint64_t{256});  // empty of subvolumes now
  auto gone = fs->lookup(kRootIno, "outer");
  REQUIRE_FALSE(gone);
  CHECK(gone.error().err == ENOENT);
  REQUIRE(fs->unmount());
}

TEST_CASE("inode_path_puts_a_slash_after_each_component") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->mkdir(kRootIno, "d", 0755, kRoot));
  REQUIRE(fs->mkdir(ino_of(*fs, kRootIno, "d"), "e", 0755, kRoot));
  const uint64_t e = ino_of(*fs, ino_of(*fs, kRootIno, "d"), "e");
  auto id = fs->inode_id(e);
  REQUIRE(id);
  CHECK(fs->inode_path(kFsTreeObjectid, id->objectid, 4080) == std::string("d/e/"));
  CHECK(fs->inode_path(kFsTreeObjectid, kFirstFreeObjectid, 4080) == std::string(""));
  auto longer = fs->inode_path(kFsTreeObjectid, id->objectid, 3);
  REQUIRE_FALSE(longer);
  CHECK(longer.error().err == ENAMETOOLONG);
  auto missing = fs->inode_path(kFsTreeObjectid, 99999, 4080);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().err == ENOENT);
  REQUIRE(fs->create_subvolume(e, "sv", kRoot) == uint64_t{256});
  auto info = fs->subvolume_info(256);
  REQUIRE(info);
  CHECK(info->parent_id == kFsTreeObjectid);
  CHECK(info->dirid == id->objectid);
  CHECK(info->name == "sv");
  REQUIRE(fs->unmount());
}

TEST_CASE("subvolume_create_and_delete_survive_a_remount") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  uint64_t dir_size = 0;
  {
    auto fs = mount_with_defaults(*dev);
    REQUIRE(fs->create_subvolume(kRootIno, "keep", kRoot));
    REQUIRE(fs->create_subvolume(kRootIno, "drop", kRoot));
    REQUIRE(fs->create(ino_of(*fs, kRootIno, "keep"), "f", S_IFREG | 0644, kRoot));
    REQUIRE(fs->delete_subvolume(kRootIno, "drop", kRoot));
    auto st = fs->getattr(kRootIno);
    REQUIRE(st);
    dir_size = static_cast<uint64_t>(st->st_size);
    REQUIRE(fs->unmount());
  }
  auto fs = mount_with_defaults(*dev);
  const uint64_t keep = ino_of(*fs, kRootIno, "keep");
  CHECK(fs->lookup(keep, "f"));
  CHECK_FALSE(fs->lookup(kRootIno, "drop"));
  auto st = fs->getattr(kRootIno);
  REQUIRE(st);
  CHECK(static_cast<uint64_t>(st->st_size) == dir_size);
  CHECK(dir_size == 2 * std::string("keep").size());  // FORMAT.md §4.5: the subvolume entry counts
  // The deleted one is a dead root (refs 0, no parent) — or already gone: the cleaner takes a root
  // that was dead at mount at once, and may have dropped it by now.
  auto dead = fs->subvolume_info(257);
  if (dead) {
    CHECK(dead->item.refs.get() == 0);
    CHECK(dead->parent_id == 0);
  } else {
    CHECK((dead.error().err == ENOENT || dead.error().err == ESTALE));
  }
  REQUIRE(fs->unmount());
}

TEST_CASE("read_only_subvolume_refuses_every_change_with_erofs") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "sv", kRoot));
  const uint64_t sv = ino_of(*fs, kRootIno, "sv");
  auto file = fs->create(sv, "f", S_IFREG | 0644, kRoot);
  REQUIRE(file);
  const uint64_t f = file->st_ino;
  const std::vector<uint8_t> data(100, 'x');
  REQUIRE(fs->write(f, 0, data));
  REQUIRE(fs->mkdir(sv, "d", 0755, kRoot));
  CHECK(fs->set_subvolume_readonly(f, true, kRoot).error().err == EINVAL);  // not the root directory
  Caller user;
  user.uid = 1000;
  CHECK(fs->set_subvolume_readonly(sv, true, user).error().err == EPERM);  // not the owner
  REQUIRE(fs->set_subvolume_readonly(sv, true, kRoot));
  auto erofs = [](const auto& r) { return !r && r.error().err == EROFS; };
  CHECK(erofs(fs->write(f, 0, data)));
  CHECK(erofs(fs->create(sv, "g", S_IFREG | 0644, kRoot)));
  CHECK(erofs(fs->mkdir(sv, "e", 0755, kRoot)));
  CHECK(erofs(fs->unlink(sv, "f")));
  CHECK(erofs(fs->rmdir(sv, "d")));
  CHECK(erofs(fs->rename(sv, "f", sv, "g", 0)));
  CHECK(erofs(fs->rename(sv, "f", kRootIno, "g", 0)));
  SetAttr a;
  a.mode = 0600;
  CHECK(erofs(fs->setattr(f, a, kRoot)));
  const std::vector<uint8_t> v{'1'};
  CHECK(erofs(fs->setxattr(f, "user.x", v, 0)));
  CHECK(erofs(fs->open(f, O_WRONLY)));
  CHECK(fs->open(f, O_RDONLY));
  std::vector<uint8_t> back(100);
  CHECK(fs->read(f, 0, back) == size_t{100});
  CHECK(erofs(fs->create_subvolume(sv, "inner", kRoot)));
  // Read-only survives a remount; switching back allows changes again; deleting it is allowed.
  REQUIRE(fs->unmount());
  fs = mount_with_defaults(*dev);
  const uint64_t sv2 = ino_of(*fs, kRootIno, "sv");
  CHECK(erofs(fs->create(sv2, "g", S_IFREG | 0644, kRoot)));
  REQUIRE(fs->set_subvolume_readonly(sv2, false, kRoot));
  CHECK(fs->create(sv2, "g", S_IFREG | 0644, kRoot));
  REQUIRE(fs->set_subvolume_readonly(sv2, true, kRoot));
  CHECK(fs->delete_subvolume(kRootIno, "sv", kRoot) == uint64_t{256});
  REQUIRE(fs->unmount());
}

TEST_CASE("snapshot_shares_the_source_and_the_two_diverge") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->create_subvolume(kRootIno, "src", kRoot) == uint64_t{256});
  const uint64_t src = ino_of(*fs, kRootIno, "src");
  // Enough files for a multi-level tree, so the snapshot's root is a node whose children are shared.
  const std::vector<uint8_t> a(3000, 'a'), b(3000, 'b');
  for (int i = 0; i < 300; ++i) {
    auto f = fs->create(src, "f" + std::to_string(i), S_IFREG | 0644, kRoot);
    REQUIRE(f);
    REQUIRE(fs->write(f->st_ino, 0, a));
  }
  const auto used_before = fs->statfs();
  REQUIRE(used_before);
  REQUIRE(fs->create_snapshot(kRootIno, "snap", 256, false, kRoot) == uint64_t{257});
  REQUIRE(fs->create_snapshot(kRootIno, "ro", 256, true, kRoot) == uint64_t{258});
  const uint64_t snap = ino_of(*fs, kRootIno, "snap");
  const uint64_t ro = ino_of(*fs, kRootIno, "ro");
  auto info = fs->subvolume_info(257);
  REQUIRE(info);
  auto src_info = fs->subvolume_info(256);
  REQUIRE(src_info);
  CHECK(std::memcmp(info->item.parent_uuid, src_info->item.uuid, 16) == 0);
  CHECK(info->key_offset == info->item.otransid.get());  // (id ROOT_ITEM transid)
  CHECK_FALSE(src_info->item.flags.get() & kRootSubvolRdonly);
  auto ro_info = fs->subvolume_info(258);
  REQUIRE(ro_info);
  CHECK(ro_info->item.otransid.get() > info->item.otransid.get());  // each snapshot in its own commit
  CHECK(src_info->item.last_snapshot.get() == ro_info->item.otransid.get());  // the newest one
  CHECK(ro_info->item.flags.get() & kRootSubvolRdonly);
  // Writes on either side stay there.
  for (int i = 0; i < 300; i += 2) REQUIRE(fs->write(ino_of(*fs, snap, "f" + std::to_string(i)), 0, b));
  REQUIRE(fs->unlink(src, "f1"));
  CHECK(fs->lookup(snap, "f1"));
  CHECK(fs->lookup(ro, "f1"));
  auto read_first = [&](uint64_t dir, const std::string& name) {
    std::vector<uint8_t> out(1);
    REQUIRE(fs->read(ino_of(*fs, dir, name), 0, out) == size_t{1});
    return out[0];
  };
  CHECK(read_first(src, "f0") == 'a');
  CHECK(read_first(snap, "f0") == 'b');
  CHECK(read_first(ro, "f0") == 'a');
  CHECK(read_first(snap, "f3") == 'a');
  CHECK(fs->write(ino_of(*fs, ro, "f3"), 0, b).error().err == EROFS);
  REQUIRE(fs->unmount());
  // Everything is where it was after a remount.
  fs = mount_with_defaults(*dev);
  const uint64_t src2 = ino_of(*fs, kRootIno, "src"), snap2 = ino_of(*fs, kRootIno, "snap");
  CHECK_FALSE(fs->lookup(src2, "f1"));
  CHECK(fs->lookup(snap2, "f1"));
  std::vector<uint8_t> out(1);
  REQUIRE(fs->read(ino_of(*fs, snap2, "f0"), 0, out) == size_t{1});
  CHECK(out[0] == 'b');
  REQUIRE(fs->unmount());
}

// The commit that takes a snapshot adds its name and size to the parent directory without the
// directory's lock (take_snapshot, inside the commit). create_snapshot holds that lock until the
// commit is done, as btrfs_mksubvol holds the directory's i_rwsem: otherwise an operation in the
// directory that read the directory's inode before that commit and wrote it after undid the
// snapshot's size change (seen in a TSan run: snapshots whose copy of the directory had an isize
// 12 bytes short of its entries). Here the commit is held back by an open handle while a snapshot
// waits for it and a subvolume create in the same directory starts; once the handle ends, both
// finish and the directory's size must count both names.
TEST_CASE("a_snapshot_holds_its_directorys_lock_until_its_commit_took_it") {
  auto dev = fresh_image();
  REQUIRE(dev);  // mkfs.ubtrfs built beside the tests
  auto fs = mount_with_defaults(*dev);
  REQUIRE(fs->mkdir(kRootIno, "d", S_IFDIR | 0755, kRoot));
  const uint64_t d = ino_of(*fs, kRootIno, "d");
  auto held = fs->info().transactions().start(0);
  REQUIRE(held);
  Result<uint64_t> snap = fail(EINVAL, "not run"), sub = fail(EINVAL, "not run");
  std::thread snapshotter([&] { snap = fs->create_snapshot(d, "snapshot", 5, false, kRoot); });
  // The snapshot's commit now waits for `held` (its directory's lock taken).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::thread creator([&] { sub = fs->create_subvolume(d, "sv", kRoot); });
  // Without the lock held across the commit, the create has read d's inode by now and waits for
  // the commit at its transaction start.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  held->end();
  snapshotter.join();
  creator.join();
  REQUIRE(snap);
  REQUIRE(sub);
  auto st = fs->getattr(d);
  REQUIRE(st);
  CHECK(st->st_size == static_cast<off_t>(2 * (std::string("snapshot").size() + std::string("sv").size())));
  REQUIRE(fs->unmount());
}
