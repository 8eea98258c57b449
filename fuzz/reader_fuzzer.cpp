// Fuzz target 3: the read-only reader over a whole image. The input is a fuzz image (fuzz_image.h);
// it is opened with FsReader (every tree walked block by block and item by item) and mounted
// read-only through the library (every directory listed, every entry looked up, every file, symlink
// and xattr read). The device refuses writes; none may even be attempted (checks.h: check_reader).
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
  const auto res = fuzz::check_reader({data, size});
  if (!res.parsed) return -1;  // not a fuzz image: keep it out of the corpus
  if (!res.violation.empty()) {
    std::fprintf(stderr, "RULE VIOLATED: %s\n", res.violation.c_str());
    std::abort();
  }
  return 0;
}
