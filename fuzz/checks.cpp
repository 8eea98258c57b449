#include "fuzz/checks.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "fs/filesystem.h"
#include "fuzz/fuzz_image.h"
#include "io/fault_device.h"
#include "tree/fs_reader.h"

namespace ubtrfs::fuzz {

namespace {

bool verbose() {
  static const bool v = std::getenv("UBTRFS_FUZZ_VERBOSE") != nullptr;
  return v;
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

CheckResult check_reader(std::span<const uint8_t> input) {
  CheckResult res;
  auto img = parse(input);
  if (!img) return res;
  res.parsed = true;
  auto dev = load_image(*img, true);
  walk_trees(*dev, res.walk);
  report("trees", res.walk);

  fs::OpenOptions open;
  open.path = "fuzz-image";
  open.device = borrow(*dev);
  open.read_only = true;
  open.cache_bytes = 8ull << 20;
  open.writeback.enabled = false;
  fs::MountOptions opts;
  opts.read_only = true;
  opts.atime = fs::MountOptions::Atime::kNoatime;
  if (auto f = fs::Filesystem::mount(open, opts); f) {
    res.mounted = true;
    walk_namespace(**f, res.walk);
    report("mounted read-only", res.walk);
    (void)(*f)->unmount();
  } else {
    res.mount_error = f.error().message;
    if (verbose()) std::fprintf(stderr, "mount: %s\n", res.mount_error.c_str());
  }
  res.writes = dev->writes();
  if (res.writes != 0) res.violation = "a read-only open asked for " + std::to_string(res.writes) + " writes";
  return res;
}

CheckResult check_mount_rw(std::span<const uint8_t> input) {
  CheckResult res;
  auto img = parse(input);
  if (!img) return res;
  res.parsed = true;
  auto sparse = load_image(*img, false);
  io::FaultInjectingDevice dev(*sparse);

  fs::OpenOptions open;
  open.path = "fuzz-image";
  open.device = borrow(dev);
  open.cache_bytes = 8ull << 20;
  open.writeback.enabled = false;
  fs::MountOptions opts;
  opts.atime = fs::MountOptions::Atime::kNoatime;
  opts.commit_interval_s = 300;
  auto f = fs::Filesystem::mount(open, opts);
  if (!f) {
    res.mount_error = f.error().message;
    if (verbose()) std::fprintf(stderr, "mount: %s\n", res.mount_error.c_str());
    res.writes = std::max(dev.writes(), sparse->writes());
    if (res.writes != 0) res.violation = "a mount that failed wrote";
    return res;
  }
  res.mounted = true;
  const uint64_t mount_writes = dev.writes();
  walk_namespace(**f, res.walk);
  report("mounted read-write", res.walk);
  if (res.walk.corrupt) {
    (void)(*f)->unmount();
    f->reset();
    res.writes = dev.writes();
    if (mount_writes == 0 && res.writes != 0) {
      res.violation = "wrote to an image it found corrupt";
      for (const auto& rec : dev.write_log())
        res.violation += " [write " + std::to_string(rec.seq) + ": offset " + std::to_string(rec.offset) +
                         " length " + std::to_string(rec.length) + "]";
    }
    return res;
  }
  if (!(*f)->read_only()) change_things(**f, res.walk);
  const auto unmounted = (*f)->unmount();
  f->reset();
  res.writes = dev.writes();
  if (verbose())
    std::fprintf(stderr, "unmount: %s, %llu writes\n", unmounted ? "ok" : unmounted.error().message.c_str(),
                 static_cast<unsigned long long>(res.writes));
  if (unmounted && res.writes > mount_writes) {
    // What the final commit left must open again.
    if (auto reader = FsReader::open(*sparse); !reader)
      res.violation = "reopen after a successful commit: " + reader.error().message;
  }
  return res;
}

}  // namespace ubtrfs::fuzz
