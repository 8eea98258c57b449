// OpenOptions::device: a filesystem opened on a caller's device (in-memory, fault-injecting)
// instead of a path — the hook the fuzz targets of fuzz/ use. Checks that it works read-write and
// read-only, that a read-only open never writes, and that an image the open finds corrupt gets no
// write at all (the rule fuzz/mount_rw_fuzzer.cpp checks on mutated images).
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"
#include "tree/format.h"
#include "tree/superblock.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
namespace stdfs = std::filesystem;

namespace {

constexpr uint64_t kImageSize = 128ull << 20;

std::string mkfs_binary() {
  if (const char* b = std::getenv("UBTRFS_BIN"); b && stdfs::exists(std::string(b) + "/mkfs/mkfs.ubtrfs"))
    return std::string(b) + "/mkfs/mkfs.ubtrfs";
  std::error_code ec;
  auto exe = stdfs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto p = exe.parent_path().parent_path() / "tools/mkfs/mkfs.ubtrfs";
  return stdfs::exists(p) ? p.string() : "";
}

// A fresh mkfs.ubtrfs image in memory (nullptr when mkfs.ubtrfs is not built).
std::unique_ptr<io::MemoryDevice> fresh_image() {
  const std::string mkfs = mkfs_binary();
  if (mkfs.empty()) return nullptr;
  io::testing::TempFile img(kImageSize);
  if (std::system((mkfs + " -q " + img.path() + " >/dev/null 2>&1").c_str()) != 0) return nullptr;
  auto dev = std::make_unique<io::MemoryDevice>(kImageSize);
  std::ifstream in(img.path(), std::ios::binary);
  in.read(reinterpret_cast<char*>(dev->bytes().data()), static_cast<std::streamsize>(kImageSize));
  return in ? std::move(dev) : nullptr;
}

Result<std::unique_ptr<Filesystem>> mount_on(io::BlockDevice& dev, bool ro) {
  OpenOptions o;
  o.path = "memory-image";
  o.device = &dev;
  o.read_only = ro;
  o.writeback.enabled = false;
  MountOptions m;
  m.read_only = ro;
  m.commit_interval_s = 300;
  return Filesystem::mount(o, m);
}

}  // namespace

TEST_CASE("a filesystem opened on a memory device is written there and read back read-only", "[open_device]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build (scripts/test.sh builds it with the unit tests)
  io::FaultInjectingDevice dev(*mem);
  const std::vector<uint8_t> data(10000, 0x5a);
  {
    auto f = mount_on(dev, false);
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

  auto f = mount_on(dev, true);
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
  auto f = mount_on(dev, false);
  REQUIRE_FALSE(f);
  INFO(f.error().message);
  CHECK((f.error().err == EUCLEAN || f.error().err == EIO));
  CHECK(dev.writes() == 0);
  CHECK(dev.flushes() == 0);
}

TEST_CASE("a device opened read-only through OpenOptions refuses writes", "[open_device]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build (scripts/test.sh builds it with the unit tests)
  io::FaultInjectingDevice dev(*mem);
  auto f = mount_on(dev, true);
  REQUIRE(f);
  CHECK((*f)->info().device().read_only());
  std::vector<uint8_t> one(4096);
  CHECK((*f)->info().device().write(1 << 20, one).error().err == EROFS);
  REQUIRE((*f)->unmount());
  CHECK(dev.writes() == 0);
}
