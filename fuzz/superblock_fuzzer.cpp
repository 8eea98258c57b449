// Fuzz target 1: the superblock parser — validate_superblock (btrfs_validate_super), the feature
// gate, the open-mode decision, the sys_chunk_array bootstrap of the chunk map and its printer, and
// read_superblock on a device holding the bytes.
//
// Input: one flag byte, then the superblock bytes (zero-padded to 4 KiB). Flag bit 0 clear: the
// checksum is recomputed first, so that the fuzzer reaches the checks behind it instead of failing
// on the checksum every time; bits 1-2 choose the device size the superblock is validated against.
// The only property checked is the absence of crashes, leaks and undefined behaviour; and a
// superblock that validates must also load through read_superblock.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/mount_options.h"
#include "fuzz/fuzz_image.h"
#include "io/checksum.h"
#include "tree/chunk_map.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/print_tree.h"
#include "tree/superblock.h"

using namespace ubtrfs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  uint8_t raw[kSuperInfoSize] = {};
  std::memcpy(raw, data + 1, std::min(size - 1, sizeof(raw)));
  Superblock sb;
  std::memcpy(&sb, raw, sizeof(sb));
  if (!(flags & 1) && io::csum_supported(sb.csum_type.get())) {
    csum_superblock(sb);
    std::memcpy(raw, &sb, sizeof(sb));
  }
  static constexpr uint64_t kSizes[4] = {2ull << 20, 128ull << 20, 1ull << 40, 0};
  uint64_t dev_size = kSizes[(flags >> 1) & 3];
  if (dev_size == 0) dev_size = sb.total_bytes.get();

  const auto valid = validate_superblock(sb, kSuperInfoOffset, dev_size);
  (void)incompat_flag_names(sb.incompat_flags.get());
  (void)compat_ro_flag_names(sb.compat_ro_flags.get());
  if (!valid) return 0;
  (void)check_features(sb, false);
  (void)check_features(sb, true);
  fs::MountOptions ro, rw;
  ro.read_only = true;
  (void)fs::decide_open_mode(sb, ro);
  (void)fs::decide_open_mode(sb, rw);
  const FsParams params = FsParams::from_super(sb);
  (void)params.csum_size();
  ChunkMap map;
  if (map.load_sys_chunk_array(sb)) {
    for (const auto& m : map.all()) (void)map.find(m.logical);
  }

  // The same bytes through the device read path, on a device big enough to hold them.
  if (dev_size % 4096 == 0 && dev_size >= kSuperInfoOffset + kSuperInfoSize && dev_size <= fuzz::kMaxDeviceSize) {
    fuzz::SparseDevice dev(dev_size, true);
    dev.load(kSuperInfoOffset, raw);
    auto read = read_superblock(dev);
    if (!read) {
      std::fprintf(stderr, "validated superblock not read back: %s\n", read.error().message.c_str());
      std::abort();
    }
  }
  return 0;
}
