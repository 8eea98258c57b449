// Helpers every layer's unit tests share: size units, the FUSE root inode, shell commands and
// oracle policy, and where this build's tools are. Header-only: the test glob compiles
// *_test.cpp files, and the test binaries are unity builds, so a helper defined once per test
// file would collide.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "tests/io/shell.h"

namespace ubtrfs::test {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// The root directory of the mounted subvolume as fs::Filesystem numbers it (FUSE_ROOT_ID, fs/inode.h).
inline constexpr uint64_t kRootIno = 1;

// Shell commands and oracle policy (tests/io/shell.h, the io tests' own helper).
using io::testing::have_tool;
using io::testing::oracles_required;
using io::testing::run;

// A tool of this build by its path under tools/ ("mkfs/mkfs.ubtrfs"): under $UBTRFS_BIN (set by
// ctest), else beside the test binary's directory; "" if it is not built.
inline std::string tool_binary(const std::string& rel) {
  namespace stdfs = std::filesystem;
  if (const char* b = std::getenv("UBTRFS_BIN"); b && stdfs::exists(std::string(b) + "/" + rel))
    return std::string(b) + "/" + rel;
  std::error_code ec;
  auto exe = stdfs::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  auto p = exe.parent_path().parent_path() / "tools" / rel;
  return stdfs::exists(p) ? p.string() : "";
}

inline std::string mkfs_binary() { return tool_binary("mkfs/mkfs.ubtrfs"); }

}  // namespace ubtrfs::test
