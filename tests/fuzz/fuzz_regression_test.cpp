// Inputs that once made a fuzz target fail (tests/fuzz/crashes/*.ubfz, fuzz images as fuzz/ reads
// them), replayed in the normal build through the same checks as the targets (fuzz/checks.h): no
// property may be violated and nothing may crash. Cases with a known root cause also assert the
// clean error the fix gives.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "fuzz/checks.h"

namespace stdfs = std::filesystem;
using ubtrfs::fuzz::CheckResult;

namespace {

stdfs::path crashes_dir() {
  if (const char* s = std::getenv("UBTRFS_SRC")) return stdfs::path(s) / "tests/fuzz/crashes";
  return stdfs::path(__FILE__).parent_path() / "crashes";
}

std::vector<uint8_t> read_all(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool any_message_contains(const CheckResult& r, const std::string& what) {
  for (const auto& m : r.walk.corruptions)
    if (m.find(what) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("every stored fuzz crash input passes the reader and read-write checks", "[fuzz_regression]") {
  spdlog::set_level(spdlog::level::off);
  int inputs = 0;
  for (const auto& entry : stdfs::directory_iterator(crashes_dir())) {
    if (entry.path().extension() != ".ubfz") continue;
    inputs++;
    const auto bytes = read_all(entry.path());
    INFO(entry.path().filename().string());
    const auto ro = ubtrfs::fuzz::check_reader(bytes);
    CHECK(ro.parsed);
    CHECK(ro.violation == "");
    const auto rw = ubtrfs::fuzz::check_mount_rw(bytes);
    CHECK(rw.parsed);
    CHECK(rw.violation == "");
  }
  spdlog::set_level(spdlog::level::info);
  CHECK(inputs > 0);
}

// Found by mount_rw_fuzzer: a directory entry naming an inode whose INODE_ITEM says nlink 0. The
// lookup took a lookup count, the walk's forget() then evicted the inode — deleting the items of a
// file a directory still names — and the unmount commit wrote 6 tree blocks and the superblocks to
// an image the walk had already found corrupt. Now lookup() reports EUCLEAN and takes no count.
TEST_CASE("a name leading to an inode with link count 0 is reported corrupt and nothing is written",
          "[fuzz_regression]") {
  spdlog::set_level(spdlog::level::off);
  const auto bytes = read_all(crashes_dir() / "mount_rw-linked-inode-nlink0.ubfz");
  REQUIRE(!bytes.empty());
  const auto rw = ubtrfs::fuzz::check_mount_rw(bytes);
  spdlog::set_level(spdlog::level::info);
  REQUIRE(rw.mounted);
  CHECK(rw.walk.corrupt);
  CHECK(any_message_contains(rw, "whose link count is 0"));
  CHECK(rw.writes == 0);
  CHECK(rw.violation == "");
}

// Found by mount_rw_fuzzer (a timeout): an FS tree node whose slot 6 points at the node itself.
// The block was in the cache, and a cached child was taken without checking its level, so
// search_slot "descended" into the same node forever. Now a cached child must have the level its
// parent expects (search_slot and BufferCache::read), as a block read from the device must.
TEST_CASE("a node pointing at itself is reported corrupt instead of looping", "[fuzz_regression]") {
  spdlog::set_level(spdlog::level::off);
  const auto bytes = read_all(crashes_dir() / "mount_rw-node-points-to-itself.ubfz");
  REQUIRE(!bytes.empty());
  const auto rw = ubtrfs::fuzz::check_mount_rw(bytes);
  spdlog::set_level(spdlog::level::info);
  REQUIRE(rw.mounted);
  CHECK(rw.walk.corrupt);
  CHECK(any_message_contains(rw, "bad tree block 9474048: level 1, its parent 9474048 slot 6 expects 0"));
  CHECK(rw.writes == 0);
  CHECK(rw.violation == "");
}

// Found by mount_rw_fuzzer (out of memory): a compressed file extent of image 002 whose
// disk_num_bytes was mutated to 164 GiB; reading the file allocated a buffer of that size for the
// compressed bytes. The tree checker now bounds compressed extents to 128 KiB on disk and in RAM
// (the reference images 001-005 still pass it whole).
TEST_CASE("a compressed extent larger than 128 KiB is refused by the tree checker", "[fuzz_regression]") {
  spdlog::set_level(spdlog::level::off);
  const auto bytes = read_all(crashes_dir() / "mount_rw-compressed-extent-164g.ubfz");
  REQUIRE(!bytes.empty());
  const auto rw = ubtrfs::fuzz::check_mount_rw(bytes);
  spdlog::set_level(spdlog::level::info);
  CHECK(rw.violation == "");
  // The extent sits in the FS tree's root leaf, which the mount reads: the mount fails cleanly.
  CHECK_FALSE(rw.mounted);
  CHECK(rw.mount_error.find("invalid compressed file extent, disk_num_bytes 176093683712") != std::string::npos);
  CHECK(rw.writes == 0);
}
