// OpenOptions::device: a filesystem opened on a caller's device (in-memory, fault-injecting)
// instead of a path — the hook the fuzz targets of fuzz/ use. Checks that it works read-write and
// read-only, that a read-only mount never writes, and that an image found corrupt gets no write
// at all (the rule fuzz/mount_rw_fuzzer.cpp checks on mutated images).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "fs/inode.h"
#include "fs/transaction.h"
#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"
#include "tree/format.h"
#include "tree/superblock.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
namespace stdfs = std::filesystem;

namespace {

using test::fresh_image;
using test::mkfs_binary;
using test::mount_device;

}  // namespace

TEST_CASE("a filesystem opened on a memory device is written there and read back read-only", "[open_device]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build (scripts/test.sh builds it with the unit tests)
  io::FaultInjectingDevice dev(*mem);
  const std::vector<uint8_t> data(10000, 0x5a);
  {
    auto f = mount_device(dev, false);
    REQUIRE(f);
    REQUIRE_FALSE((*f)->read_only());
    auto st = (*f)->create(1, "hello", S_IFREG | 0644, Caller{});
    REQUIRE(st);
    auto n = (*f)->write(st->st_ino, 0, data);
    REQUIRE(n);
    CHECK(*n == data.size());
    (*f)->forget(st->st_ino, 1);
    REQUIRE((*f)->unmount());
  }
  const uint64_t rw_writes = dev.writes();
  CHECK(rw_writes > 0);

  auto f = mount_device(dev, true);
  REQUIRE(f);
  CHECK((*f)->read_only());
  auto st = (*f)->lookup(1, "hello");
  REQUIRE(st);
  CHECK(st->st_size == static_cast<off_t>(data.size()));
  std::vector<uint8_t> back(data.size());
  auto n = (*f)->read(st->st_ino, 0, back);
  REQUIRE(n);
  CHECK(*n == data.size());
  CHECK(back == data);
  CHECK((*f)->create(1, "refused", S_IFREG | 0644, Caller{}).error().err == EROFS);
  (*f)->forget(st->st_ino, 1);
  REQUIRE((*f)->unmount());
  CHECK(dev.writes() == rw_writes);  // the read-only mount wrote nothing
}

TEST_CASE("an image whose open finds corruption gets no write", "[open_device]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build (scripts/test.sh builds it with the unit tests)
  // Point the superblock's root tree at the next node-sized block (another tree's leaf), with a
  // valid superblock checksum: the superblock validates, the root tree block does not.
  Superblock sb = load<Superblock>(mem->bytes().data() + kSuperInfoOffset);
  sb.root = sb.root.get() + sb.nodesize.get();
  csum_superblock(sb);
  store(mem->bytes().data() + kSuperInfoOffset, sb);
  io::FaultInjectingDevice dev(*mem);
  auto f = mount_device(dev, false);
  REQUIRE_FALSE(f);
  INFO(f.error().message);
  CHECK((f.error().err == EUCLEAN || f.error().err == EIO));
  CHECK(dev.writes() == 0);
  CHECK(dev.flushes() == 0);
}

// A directory entry naming an inode whose INODE_ITEM says nlink 0 (a corrupt image: the bug
// mount_rw_fuzzer found). lookup() must report it and take no lookup count, readdirplus must not
// list it with a count, so that no forget() evicts (deletes) an inode a directory still names, and
// the unmount writes nothing.
TEST_CASE("a name leading to an inode with link count 0 is neither looked up nor evicted", "[open_device]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  io::FaultInjectingDevice dev(*mem);
  uint64_t victim = 0;
  {
    auto f = mount_device(dev, false);
    REQUIRE(f);
    auto a = (*f)->create(1, "a", S_IFREG | 0644, Caller{});
    auto b = (*f)->create(1, "b", S_IFREG | 0644, Caller{});
    REQUIRE(a);
    REQUIRE(b);
    victim = b->st_ino;
    (*f)->forget(a->st_ino, 1);
    (*f)->forget(b->st_ino, 1);
    // Break the image: b's link count 0 while "b" still names it.
    FsInfo& info = (*f)->info();
    auto root = info.fs_root(kFsTreeObjectid);
    REQUIRE(root);
    auto th = info.transactions().start(1);
    REQUIRE(th);
    auto ii = read_inode(info, *(*root)->tree, victim);
    REQUIRE(ii);
    ii->nlink = 0;
    REQUIRE(update_inode(*th, *(*root)->tree, victim, *ii));
    th->end();
    REQUIRE((*f)->unmount());
  }
  const uint64_t writes_before = dev.writes();
  auto f = mount_device(dev, false);
  REQUIRE(f);
  auto lb = (*f)->lookup(1, "b");
  REQUIRE_FALSE(lb);
  CHECK(lb.error().err == EUCLEAN);
  CHECK(lb.error().message.find("whose link count is 0") != std::string::npos);
  std::vector<std::string> listed;
  std::vector<uint64_t> counted;
  REQUIRE((*f)->readdir(1, 0, true, [&](const DirEntryOut& e) {
    listed.emplace_back(e.name);
    if (e.name != "." && e.name != "..") counted.push_back(e.attr.st_ino);
    return true;
  }));
  CHECK(std::find(listed.begin(), listed.end(), "a") != listed.end());
  CHECK(std::find(listed.begin(), listed.end(), "b") == listed.end());
  for (uint64_t ino : counted) (*f)->forget(ino, 1);
  REQUIRE((*f)->unmount());
  CHECK(dev.writes() == writes_before);  // nothing evicted, nothing committed
  // The name and the inode are still there for a repair tool to see.
  auto again = mount_device(dev, true);
  REQUIRE(again);
  CHECK((*again)->lookup(1, "b").error().err == EUCLEAN);
  REQUIRE((*again)->unmount());
}
