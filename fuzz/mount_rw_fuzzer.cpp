// Fuzz target 4: an in-process read-write mount of a mutated image — mount, walk everything (as the
// read-only target does), then create, write, rename, link, truncate, set xattrs, unlink and fsync,
// and unmount (the final commit). The input is a fuzz image (fuzz_image.h).
//
// The rule checked, beyond the sanitizers: the filesystem never writes to an image it found
// corrupt. The device is wrapped in the fault-injecting device, whose write log sees every write:
//   - a mount that fails must not have written anything (FsInfo's "nothing is written by open");
//   - when the read-only walk after a mount that had written nothing meets corruption (EUCLEAN or
//     EIO), the target issues no change and unmounts: still no write may reach the device.
// And a commit that reported success must leave an image whose superblock and chunk tree load.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "fuzz/checks.h"
#include "fuzz/fuzz_image.h"

using namespace ubtrfs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return fuzz::mutate_image(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto res = fuzz::check_mount_rw({data, size});
  if (!res.parsed) return -1;
  if (!res.violation.empty()) {
    std::fprintf(stderr, "RULE VIOLATED: %s (%llu writes reached the device)\n", res.violation.c_str(),
                 static_cast<unsigned long long>(res.writes));
    std::abort();
  }
  return 0;
}
