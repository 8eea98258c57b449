// POSIX suite: statfs/statvfs/fstatfs — sane block counts, name length limit, agreement between
// the calls, and free space that shrinks after writing 8 MiB and grows again after deleting it.
#include "posix_util.h"

#include <sys/statfs.h>
#include <sys/statvfs.h>

using namespace posix_test;

namespace {

struct statfs statfs_of(const std::string& path) {
  struct statfs s {};
  REQUIRE(err(::statfs(path.c_str(), &s)) == 0);
  return s;
}

}  // namespace

TEST_CASE("statfs reports a positive block size and ordered block counts", "[statfs]") {
  TestDir d;
  const struct statfs s = statfs_of(d.path());
  CHECK(s.f_bsize > 0);
  CHECK(s.f_frsize > 0);
  CHECK(s.f_blocks > 0);
  CHECK(s.f_blocks >= s.f_bfree);
  CHECK(s.f_bfree >= s.f_bavail);
  CHECK(s.f_namelen == 255);
}

TEST_CASE("statvfs and fstatfs agree with statfs", "[statfs]") {
  TestDir d;
  write_file(d / "f", "");
  const struct statfs s = statfs_of(d.path());
  struct statvfs v {};
  REQUIRE(err(::statvfs(d.c_str(), &v)) == 0);
  CHECK(v.f_namemax == 255);
  CHECK(v.f_blocks == s.f_blocks);
  CHECK(v.f_frsize == static_cast<unsigned long>(s.f_frsize));
  CHECK((v.f_flag & ST_RDONLY) == 0);
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  struct statfs fs {};
  CHECK(err(::fstatfs(fd.get(), &fs)) == 0);
  CHECK(fs.f_blocks == s.f_blocks);
  CHECK(fs.f_bsize == s.f_bsize);
}

TEST_CASE("statfs of a missing path fails with ENOENT", "[statfs]") {
  TestDir d;
  struct statfs s;
  CHECK(err(::statfs((d / "missing").c_str(), &s)) == ENOENT);
}

TEST_CASE("free blocks decrease after writing 8 MiB and syncing, and return after deleting it",
          "[statfs]") {
  TestDir d;
  Fd dirfd(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(dirfd.valid());
  REQUIRE(err(::syncfs(dirfd.get())) == 0);
  const struct statfs before = statfs_of(d.path());
  const uint64_t bytes_before = before.f_bfree * before.f_bsize;
  write_file(d / "big", pattern(8 << 20, 21));
  {
    Fd fd(::open((d / "big").c_str(), O_RDONLY));
    REQUIRE(fd.valid());
    REQUIRE(err(::fsync(fd.get())) == 0);
  }
  REQUIRE(err(::syncfs(dirfd.get())) == 0);
  const struct statfs after = statfs_of(d.path());
  const uint64_t bytes_after = after.f_bfree * after.f_bsize;
  CHECK(bytes_after < bytes_before);
  CHECK(bytes_before - bytes_after >= (uint64_t{6} << 20));
  CHECK(after.f_blocks >= after.f_bfree);
  REQUIRE(err(::unlink((d / "big").c_str())) == 0);
  REQUIRE(err(::syncfs(dirfd.get())) == 0);
  REQUIRE(err(::syncfs(dirfd.get())) == 0);
  const struct statfs freed = statfs_of(d.path());
  CHECK(freed.f_bfree * freed.f_bsize >= bytes_after + (uint64_t{6} << 20));
}

TEST_CASE("btrfs statfs reports 4 KiB blocks and no inode counts", "[statfs][btrfs]") {
  TestDir d;
  const struct statfs s = statfs_of(d.path());
  CHECK(s.f_bsize == 4096);
  CHECK(s.f_frsize == 4096);
  CHECK(s.f_files == 0);
  CHECK(s.f_ffree == 0);
}
