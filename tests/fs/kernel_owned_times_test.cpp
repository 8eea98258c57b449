// With the FUSE writeback cache the kernel owns regular files' mtime and ctime
// (FileData::set_kernel_owns_file_times): the data operations leave them as they are — the kernel
// stamps its own and sends them with SETATTR — and without the cache they stamp them as btrfs does.
//
// Rule named here: data_operations_leave_file_times_to_the_kernel_with_the_writeback_cache.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>
#include <thread>

#include "fs/filesystem.h"
#include "tests/fs/fs_test_env.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"

namespace ubtrfs::fs {
namespace {

using test::bytes;
using test::kRootIno;
using test::mkfs_ubtrfs_or_skip;
using test::run;

bool same_time(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

TEST_CASE("data_operations_leave_file_times_to_the_kernel_with_the_writeback_cache", "[fs][times]") {
  const std::string mkfs = mkfs_ubtrfs_or_skip();
  if (mkfs.empty()) return;
  io::testing::TempFile img(128ull << 20);
  REQUIRE(run(mkfs + " -q " + img.path()) == 0);
  OpenOptions o;
  o.path = img.path();
  auto mounted = Filesystem::mount(o, MountOptions{});
  REQUIRE(mounted);
  Filesystem& fs = **mounted;
  const bool kernel_owns = GENERATE(true, false);
  fs.set_kernel_owns_file_times(kernel_owns);
  auto st = fs.create(kRootIno, "f", S_IFREG | 0644, Caller{});
  REQUIRE(st);
  const uint64_t f = st->st_ino;
  auto src = fs.create(kRootIno, "src", S_IFREG | 0644, Caller{});
  REQUIRE(src);
  REQUIRE(fs.write(src->st_ino, 0, bytes(std::string(8192, 's'))));
  const auto before = fs.getattr(f);
  REQUIRE(before);
  // Each operation a few milliseconds later, so that a stamp shows.
  auto later = [] { std::this_thread::sleep_for(std::chrono::milliseconds(5)); };
  later();
  REQUIRE(fs.write(f, 0, bytes(std::string(16384, 'x'))));
  later();
  REQUIRE(fs.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
  later();
  REQUIRE(fs.fallocate(f, 0, 16384, 8192));
  later();
  REQUIRE(fs.copy_file_range(src->st_ino, 0, f, 0, 8192, 0));
  later();
  SetAttr size;
  size.size = 100;
  REQUIRE(fs.setattr(f, size, Caller{}));
  const auto after = fs.getattr(f);
  REQUIRE(after);
  CHECK(after->st_size == 100);
  INFO("kernel owns the times: " << kernel_owns);
  if (kernel_owns) {
    CHECK(same_time(after->st_mtim, before->st_mtim));
    CHECK(same_time(after->st_ctim, before->st_ctim));
  } else {
    CHECK_FALSE(same_time(after->st_mtim, before->st_mtim));
    CHECK_FALSE(same_time(after->st_ctim, before->st_ctim));
  }
  // Explicit times (the kernel's SETATTR) are applied either way.
  SetAttr times;
  times.mtime = SetAttr::Time::kValue;
  times.mtime_value = {1234567, 89};
  REQUIRE(fs.setattr(f, times, Caller{}));
  const auto stamped = fs.getattr(f);
  REQUIRE(stamped);
  CHECK(stamped->st_mtim.tv_sec == 1234567);
  CHECK(stamped->st_mtim.tv_nsec == 89);
  REQUIRE(fs.unmount());
}

}  // namespace
}  // namespace ubtrfs::fs
