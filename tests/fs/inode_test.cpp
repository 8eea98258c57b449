// fs/inode.h: FUSE inode numbering, per-inode locks, INODE_ITEM read/insert/update, stat fields.
#include <catch2/catch.hpp>

#include <sys/sysmacros.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "../tree/tree_test_env.h"
#include "fs/dir_item.h"
#include "fs/inode.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
using ubtrfs::test::TreeEnv;

TEST_CASE("inode numbers: the mounted root is 1, own objectids are themselves, other subvolumes are (T<<48)|x") {
  InodeNumbers n(kFsTreeObjectid);
  CHECK(n.to_fuse({5, 256}) == 1);
  CHECK(n.to_fuse({5, 300}) == 300);
  CHECK(n.to_fuse({257, 256}) == ((257ull << 48) | 256));
  for (InodeId id : {InodeId{5, 256}, InodeId{5, 300}, InodeId{257, 256}, InodeId{257, 1234}}) {
    auto back = n.from_fuse(n.to_fuse(id));
    REQUIRE(back);
    CHECK(*back == id);
  }
  auto zero = n.from_fuse(0);
  REQUIRE_FALSE(zero);
  CHECK(zero.error().err == ENOENT);
  CHECK_FALSE(n.from_fuse(255));
  // A subvolume mount sees FS_TREE inodes through the high bits.
  InodeNumbers s(258);
  CHECK(s.to_fuse({258, 256}) == 1);
  CHECK(s.to_fuse({5, 256}) == ((5ull << 48) | 256));
  CHECK(*s.from_fuse((5ull << 48) | 256) == InodeId{5, 256});
}

TEST_CASE("an exclusive inode lock blocks a second locker until released") {
  InodeLocks locks;
  auto g = locks.lock({{5, 300}, {5, 257}, {5, 300}});
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto g2 = locks.lock({{5, 257}});
    got = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(got.load());
  g.release();
  t.join();
  CHECK(got.load());
  // Shared locks coexist.
  auto s1 = locks.lock_shared({5, 400});
  std::atomic<bool> shared_got{false};
  std::thread t2([&] {
    auto s2 = locks.lock_shared({5, 400});
    shared_got = true;
  });
  t2.join();
  CHECK(shared_got.load());
}

TEST_CASE("INODE_ITEM insert, read and update (transid and sequence bumped)") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kFsTreeObjectid);
  TreeHandle h = env.handle();
  REQUIRE(create_empty_tree(h, root));
  InodeItem ii{};
  ii.generation = h.transid;
  ii.mode = S_IFREG | 0644;
  ii.nlink = 1;
  ii.size = 11;
  ii.sequence = 7;
  REQUIRE(insert_inode(h, root, 257, ii));
  auto again = insert_inode(h, root, 257, ii);
  REQUIRE_FALSE(again);
  CHECK(again.error().err == EEXIST);
  auto r = read_inode_item(root, 257);
  REQUIRE(r);
  CHECK(r->size.get() == 11);
  CHECK(r->mode.get() == (S_IFREG | 0644));
  REQUIRE(env.commit());
  TreeHandle h2 = env.handle();
  ii.size = 22;
  REQUIRE(update_inode(h2, root, 257, ii));
  r = read_inode_item(root, 257);
  REQUIRE(r);
  CHECK(r->size.get() == 22);
  CHECK(r->transid.get() == h2.transid);
  CHECK(r->sequence.get() == 8);
  auto missing = read_inode_item(root, 999);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().err == ENOENT);
  auto upd_missing = update_inode(h2, root, 999, ii);
  REQUIRE_FALSE(upd_missing);
  CHECK(upd_missing.error().err == ENOENT);
  CHECK(env.check_tree(root) == "");
  // A wrong-size INODE_ITEM is corruption.
  REQUIRE(insert_item(h2, root, Key{258, kInodeItemKey, 0}, std::vector<uint8_t>(100)));
  auto bad = read_inode_item(root, 258);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().err == EUCLEAN);
}

TEST_CASE("rdev is stored as the kernel's (major << 20) | minor") {
  // FORMAT.md §3.3: mknod c 8 300 -> 8388908.
  CHECK(encode_rdev(makedev(8, 300)) == 8388908);
  const dev_t d = decode_rdev(8388908);
  CHECK(major(d) == 8);
  CHECK(minor(d) == 300);
}

TEST_CASE("inode_to_stat reports the item's fields and rounds blocks per sector like btrfs_getattr") {
  InodeItem ii{};
  ii.mode = S_IFCHR | 0600;
  ii.nlink = 3;
  ii.uid = 1000;
  ii.gid = 100;
  ii.size = 11;
  ii.nbytes = 11;
  ii.rdev = encode_rdev(makedev(1, 3));
  ii.mtime.sec = 1700000000;
  ii.mtime.nsec = 123;
  const struct stat st = inode_to_stat(ii, 42, 4096, 5000);
  CHECK(st.st_ino == 42);
  CHECK(st.st_mode == (S_IFCHR | 0600));
  CHECK(st.st_nlink == 3);
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 100);
  CHECK(st.st_size == 11);
  CHECK(st.st_blksize == 4096);
  CHECK(st.st_blocks == (4096 + 8192) / 512);
  CHECK(major(st.st_rdev) == 1);
  CHECK(minor(st.st_rdev) == 3);
  CHECK(st.st_mtim.tv_sec == 1700000000);
  CHECK(st.st_mtim.tv_nsec == 123);
}

TEST_CASE("time conversions round-trip") {
  struct timespec ts {1234567890, 987654321};
  const struct timespec back = from_btrfs(to_btrfs(ts));
  CHECK(back.tv_sec == ts.tv_sec);
  CHECK(back.tv_nsec == ts.tv_nsec);
  const Timespec now = now_btrfs();
  CHECK(now.sec.get() > 1600000000);
}
