// The properties the whole-image fuzz targets check, as functions: the libFuzzer targets abort on
// a violation; the regression test (tests/fuzz/) replays stored inputs through the same functions
// in the normal build. Both take an input in the fuzz image format (fuzz_image.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "fuzz/walk.h"

namespace ubtrfs::fuzz {

struct CheckResult {
  bool parsed = false;      // the input was a fuzz image
  bool mounted = false;     // Filesystem::mount succeeded
  std::string mount_error;  // its message otherwise
  uint64_t writes = 0;      // writes that reached (or were asked of) the device
  WalkStats walk;
  std::string violation;    // empty when every property held
};

// reader_fuzzer: FsReader over every tree, then a read-only mount walked whole; the device is
// read-only and must not even be asked to write.
CheckResult check_reader(std::span<const uint8_t> input);

// mount_rw_fuzzer: a read-write mount on a fault-injecting device over the image, walked whole,
// then changed and unmounted. Violations: a failed mount wrote; a walk that met corruption after a
// mount that had written nothing was followed by a write; a successful final commit left an image
// whose superblock and chunk tree do not load.
CheckResult check_mount_rw(std::span<const uint8_t> input);

}  // namespace ubtrfs::fuzz
