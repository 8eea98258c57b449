// Helpers shared by the fs unit tests: fresh mkfs.ubtrfs images in memory, errno of a result, the
// btrfs check oracle on an image file. Header-only (the test binaries are unity builds).
#pragma once

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "io/block_device.h"
#include "io/status.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"

namespace ubtrfs::test {

// Superblock copies at 64 KiB and 64 MiB: room for both.
inline constexpr uint64_t kFreshImageSize = 128 * kMiB;

// A fresh `mkfs.ubtrfs -q ARGS` image of `size` bytes in memory (nullptr when mkfs.ubtrfs is not
// built or fails).
inline std::unique_ptr<io::MemoryDevice> fresh_image(const std::string& mkfs_args = "",
                                                     uint64_t size = kFreshImageSize) {
  const std::string mkfs = mkfs_binary();
  if (mkfs.empty()) return nullptr;
  io::testing::TempFile img(size);
  if (run(mkfs + " -q " + mkfs_args + " " + img.path()) != 0) return nullptr;
  auto dev = std::make_unique<io::MemoryDevice>(size);
  std::ifstream in(img.path(), std::ios::binary);
  in.read(reinterpret_cast<char*>(dev->bytes().data()), static_cast<std::streamsize>(size));
  return in ? std::move(dev) : nullptr;
}

// The errno of a failed operation, 0 on success.
inline int err_of(const Status& s) { return s ? 0 : s.error().err; }
template <class T>
int err_of(const Result<T>& r) {
  return r ? 0 : r.error().err;
}

inline std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// `btrfs check --readonly` finds nothing (a failure is recorded, the test goes on).
inline void check_clean(const std::string& img) {
  std::string out;
  const int rc = run(fmt::format("btrfs check --readonly {}", img), &out);
  INFO("btrfs check: " << out);
  CHECK(rc == 0);
}

// btrfs check in its three modes (original, lowmem, data checksums) finds nothing.
inline void btrfs_check_clean(const std::string& img) {
  for (const char* mode : {"", "--mode=lowmem", "--check-data-csum"}) {
    std::string out;
    const int rc = run(fmt::format("btrfs check --readonly {} {}", mode, img), &out);
    INFO("btrfs check " << mode << ":\n" << out);
    REQUIRE(rc == 0);
    REQUIRE(out.find("ERROR") == std::string::npos);
  }
}

}  // namespace ubtrfs::test
