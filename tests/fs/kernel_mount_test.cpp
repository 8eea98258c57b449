// The kernel oracle's mount helper (fs_test_env.h KernelMount) keeps the project's rule that tests
// clean up their mounts and loop devices even when they fail:
// - kernel_mount_is_undone_when_the_test_fails: an exception between mount() and unmount() (what a
//   failed REQUIRE is) still unmounts the image, frees its loop device and removes the directory.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <stdexcept>
#include <string>

#include "tests/fs/fs_test_env.h"
#include "tests/io/temp_file.h"

namespace ubtrfs::fs {
namespace {

// True when /proc/self/mounts lists a mount on `dir`.
bool kernel_mount_listed(const std::string& dir) {
  std::ifstream in("/proc/self/mounts");
  std::string dev, on, rest;
  while (in >> dev >> on && std::getline(in, rest))
    if (on == dir) return true;
  return false;
}

// The loop devices backing `img` (losetup -j), one line each; empty when none.
std::string loop_devices_of(const std::string& img) {
  std::string out;
  test::run(fmt::format("losetup -j {}", img), &out);
  return out;
}

}  // namespace

TEST_CASE("kernel_mount_is_undone_when_the_test_fails", "[kernel_mount]") {
  if (!test::have_kernel_loop_mount()) return;
  io::testing::TempFile img(128 * test::kMiB);
  test::mkfs_btrfs(img.path());
  std::string dir;
  bool reached = false;
  try {
    test::KernelMount km;
    dir = km.mnt;
    std::string out;
    const int rc = km.mount(img.path(), true, &out);
    INFO("kernel mount: " << out);
    REQUIRE(rc == 0);
    REQUIRE(kernel_mount_listed(dir));
    REQUIRE_FALSE(loop_devices_of(img.path()).empty());
    reached = true;
    throw std::runtime_error("a failure between mount and unmount");
  } catch (const std::runtime_error&) {
  }
  REQUIRE(reached);
  CHECK_FALSE(kernel_mount_listed(dir));
  CHECK(loop_devices_of(img.path()).empty());
  struct stat st {};
  CHECK(::stat(dir.c_str(), &st) != 0);
}

}  // namespace ubtrfs::fs
