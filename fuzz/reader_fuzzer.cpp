// Fuzz target 3: the read-only reader over a whole image. The input is a fuzz image (fuzz_image.h);
// it is opened with FsReader (every tree walked block by block and item by item) and mounted
// read-only through the library (every directory listed, every entry looked up, every file, symlink
// and xattr read). The device refuses writes; none may even be attempted.
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "fs/filesystem.h"
#include "fuzz/fuzz_image.h"
#include "fuzz/walk.h"

using namespace ubtrfs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return fuzz::mutate_image(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto img = fuzz::parse({data, size});
  if (!img) return -1;  // not a fuzz image: keep it out of the corpus
  auto dev = fuzz::load_image(*img, true);
  fuzz::WalkStats w;
  fuzz::walk_trees(*dev, w);
  fuzz::report("trees", w);

  fs::OpenOptions open;
  open.path = "fuzz-image";
  open.device = dev.get();
  open.read_only = true;
  open.cache_bytes = 8ull << 20;
  open.writeback.enabled = false;
  fs::MountOptions opts;
  opts.read_only = true;
  opts.atime = fs::MountOptions::Atime::kNoatime;
  if (auto f = fs::Filesystem::mount(open, opts); f) {
    fuzz::walk_namespace(**f, w);
    fuzz::report("mounted read-only", w);
    (void)(*f)->unmount();
  } else if (std::getenv("UBTRFS_FUZZ_VERBOSE")) {
    std::fprintf(stderr, "mount: %s\n", f.error().message.c_str());
  }
  if (dev->writes() != 0) {
    std::fprintf(stderr, "read-only open attempted %llu writes\n", static_cast<unsigned long long>(dev->writes()));
    std::abort();
  }
  return 0;
}
