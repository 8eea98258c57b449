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
#include <fcntl.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "fs/filesystem.h"
#include "fuzz/fuzz_image.h"
#include "fuzz/walk.h"
#include "io/fault_device.h"
#include "tree/fs_reader.h"

using namespace ubtrfs;

namespace {

[[noreturn]] void violation(const char* what, uint64_t writes) {
  std::fprintf(stderr, "RULE VIOLATED: %s (%llu writes reached the device)\n", what,
               static_cast<unsigned long long>(writes));
  std::abort();
}

// The changes made to an image the walk found clean. Every call may fail (the image is hostile).
void change_things(fs::Filesystem& f, const fuzz::WalkStats& w) {
  constexpr uint64_t kRoot = 1;
  const fs::Caller caller{0, 0, 022};
  std::vector<uint8_t> data(6000);
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<uint64_t> looked_up;
  if (auto st = f.create(kRoot, "fuzz-new", S_IFREG | 0644, caller); st) {
    const uint64_t ino = st->st_ino;
    looked_up.push_back(ino);
    (void)f.write(ino, 0, data);                                   // a regular extent
    (void)f.write(ino, 200000, std::span(data).first(100));        // past a hole
    (void)f.setxattr(ino, "user.fuzz", std::span(data).first(40), 0);
    if (auto d = f.mkdir(kRoot, "fuzz-dir", S_IFDIR | 0755, caller); d) {
      looked_up.push_back(d->st_ino);
      (void)f.rename(kRoot, "fuzz-new", d->st_ino, "moved", 0);
      if (auto l = f.link(ino, kRoot, "fuzz-link"); l) looked_up.push_back(l->st_ino);
    }
    (void)f.fsync(ino, false);
  }
  if (auto s = f.symlink(kRoot, "fuzz-symlink", "fuzz-dir/moved", caller); s) looked_up.push_back(s->st_ino);
  if (auto s = f.create(kRoot, "fuzz-inline", S_IFREG | 0600, caller); s) {
    looked_up.push_back(s->st_ino);
    (void)f.write(s->st_ino, 0, std::span(data).first(300));      // an inline extent
  }
  if (w.a_file) {
    // An existing file: overwrite inside it, shrink it, then remove its name.
    if (f.open(w.a_file, O_RDWR)) {
      (void)f.write(w.a_file, 4096, std::span(data).first(5000));
      fs::SetAttr a;
      a.size = 3000;
      (void)f.setattr(w.a_file, a, caller);
      (void)f.release(w.a_file);
    }
    (void)f.unlink(w.a_file_parent, w.a_file_name);
  }
  if (w.a_dir)
    if (auto d = f.mkdir(w.a_dir, "fuzz-sub", S_IFDIR | 0700, caller); d) looked_up.push_back(d->st_ino);
  for (uint64_t ino : looked_up) f.forget(ino, 1);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  return fuzz::mutate_image(data, size, max_size, seed);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto img = fuzz::parse({data, size});
  if (!img) return -1;
  auto sparse = fuzz::load_image(*img, false);
  io::FaultInjectingDevice dev(*sparse);

  fs::OpenOptions open;
  open.path = "fuzz-image";
  open.device = &dev;
  open.cache_bytes = 8ull << 20;
  open.writeback.enabled = false;
  fs::MountOptions opts;
  opts.atime = fs::MountOptions::Atime::kNoatime;
  opts.commit_interval_s = 300;
  auto f = fs::Filesystem::mount(open, opts);
  if (!f && std::getenv("UBTRFS_FUZZ_VERBOSE")) std::fprintf(stderr, "mount: %s\n", f.error().message.c_str());
  if (!f) {
    if (dev.writes() != 0 || sparse->writes() != 0) violation("a mount that failed wrote", sparse->writes());
    return 0;
  }
  const uint64_t mount_writes = dev.writes();
  fuzz::WalkStats w;
  fuzz::walk_namespace(**f, w);
  fuzz::report("mounted read-write", w);
  if (w.corrupt) {
    (void)(*f)->unmount();
    f->reset();
    if (mount_writes == 0 && dev.writes() != 0) violation("wrote to an image it found corrupt", dev.writes());
    return 0;
  }
  if (!(*f)->read_only()) change_things(**f, w);
  const auto unmounted = (*f)->unmount();
  const bool committed = unmounted.has_value();
  if (std::getenv("UBTRFS_FUZZ_VERBOSE"))
    std::fprintf(stderr, "unmount: %s, %llu writes\n", committed ? "ok" : unmounted.error().message.c_str(),
                 static_cast<unsigned long long>(dev.writes()));
  f->reset();
  if (committed && dev.writes() > mount_writes) {
    // What the final commit left must open again.
    auto reader = FsReader::open(*sparse);
    if (!reader) {
      std::fprintf(stderr, "reopen after a successful commit: %s\n", reader.error().message.c_str());
      std::abort();
    }
  }
  return 0;
}
