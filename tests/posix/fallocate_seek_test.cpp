// POSIX suite: fallocate and lseek SEEK_DATA/SEEK_HOLE — mode 0, FALLOC_FL_KEEP_SIZE,
// FALLOC_FL_PUNCH_HOLE, the EINVAL/EBADF/EOPNOTSUPP cases, data/hole boundaries of a sparse file and
// ENXIO at or past end of file. btrfs-specific modes (ZERO_RANGE, no COLLAPSE/INSERT) are tagged.
#include "posix_util.h"

#include <linux/falloc.h>

using namespace posix_test;

namespace {

constexpr off_t kKiB = 1024;
constexpr off_t kMiB = 1024 * 1024;

}  // namespace

TEST_CASE("fallocate mode 0 extends the file with zeros and allocates blocks", "[fallocate]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), 0, 0, kMiB)) == 0);
  const struct stat st = fstat_of(fd.get());
  CHECK(st.st_size == kMiB);
  CHECK(st.st_blocks * 512 >= kMiB);
  const std::string all = read_fd(fd.get());
  CHECK(all.size() == static_cast<size_t>(kMiB));
  CHECK(all.find_first_not_of('\0') == std::string::npos);
}

TEST_CASE("fallocate inside an existing file keeps its data and size", "[fallocate]") {
  TestDir d;
  const std::string data = pattern(100000, 4);
  write_file(d / "f", data);
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), 0, 4096, 50000)) == 0);
  CHECK(fstat_of(fd.get()).st_size == 100000);
  CHECK(first_difference(read_fd(fd.get()), data) == -1);
}

TEST_CASE("FALLOC_FL_KEEP_SIZE allocates blocks without changing the size", "[fallocate]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  REQUIRE(err(::fsync(fd.get())) == 0);
  const blkcnt_t before = fstat_of(fd.get()).st_blocks;
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 0, 2 * kMiB)) == 0);
  const struct stat st = fstat_of(fd.get());
  CHECK(st.st_size == 3);
  CHECK(st.st_blocks > before);
  CHECK(st.st_blocks * 512 >= 2 * kMiB);
  CHECK(read_fd(fd.get()) == "abc");
  // Writing into the preallocated range past EOF extends the file normally.
  CHECK(::pwrite(fd.get(), "z", 1, kMiB) == 1);
  CHECK(fstat_of(fd.get()).st_size == kMiB + 1);
}

TEST_CASE("FALLOC_FL_PUNCH_HOLE zeroes the range, frees blocks and keeps the size", "[fallocate]") {
  TestDir d;
  const std::string data = pattern(4 * kMiB, 8);
  write_file(d / "f", data);
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  REQUIRE(err(::fsync(fd.get())) == 0);
  const blkcnt_t before = fstat_of(fd.get()).st_blocks;
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kMiB, 2 * kMiB)) == 0);
  REQUIRE(err(::fsync(fd.get())) == 0);
  const struct stat st = fstat_of(fd.get());
  CHECK(st.st_size == 4 * kMiB);
  CHECK(st.st_blocks < before);
  CHECK(before - st.st_blocks >= (2 * kMiB) / 512 - 16);
  const std::string all = read_fd(fd.get());
  REQUIRE(all.size() == data.size());
  CHECK(first_difference(all.substr(0, kMiB), data.substr(0, kMiB)) == -1);
  CHECK(all.substr(kMiB, 2 * kMiB).find_first_not_of('\0') == std::string::npos);
  CHECK(first_difference(all.substr(3 * kMiB), data.substr(3 * kMiB)) == -1);
}

TEST_CASE("punching an unaligned hole zeroes exactly the requested bytes", "[fallocate]") {
  TestDir d;
  const std::string data = pattern(64 * kKiB, 10);
  write_file(d / "f", data);
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1000, 10000)) == 0);
  std::string want = data;
  want.replace(1000, 10000, std::string(10000, '\0'));
  CHECK(first_difference(read_fd(fd.get()), want) == -1);
}

TEST_CASE("punching a hole past end of file changes nothing", "[fallocate]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kMiB, kMiB)) == 0);
  CHECK(fstat_of(fd.get()).st_size == 3);
  CHECK(read_fd(fd.get()) == "abc");
}

TEST_CASE("fallocate errors: EOPNOTSUPP for a hole without KEEP_SIZE, EINVAL, EBADF", "[fallocate]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  Fd ro(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  REQUIRE(ro.valid());
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE, 0, 4096)) == EOPNOTSUPP);
  CHECK(err(::fallocate(fd.get(), 0, 0, 0)) == EINVAL);
  CHECK(err(::fallocate(fd.get(), 0, -1, 4096)) == EINVAL);
  CHECK(err(::fallocate(ro.get(), 0, 0, 4096)) == EBADF);
  CHECK(fstat_of(fd.get()).st_size == 3);
}

TEST_CASE("btrfs supports FALLOC_FL_ZERO_RANGE", "[fallocate][btrfs]") {
  TestDir d;
  const std::string data = pattern(256 * kKiB, 12);
  write_file(d / "f", data);
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 5000, 100000)) == 0);
  std::string want = data;
  want.replace(5000, 100000, std::string(100000, '\0'));
  CHECK(first_difference(read_fd(fd.get()), want) == -1);
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 200 * kKiB, 100 * kKiB)) == 0);
  CHECK(fstat_of(fd.get()).st_size == 300 * kKiB);
}

TEST_CASE("btrfs rejects FALLOC_FL_COLLAPSE_RANGE and FALLOC_FL_INSERT_RANGE with EOPNOTSUPP",
          "[fallocate][btrfs]") {
  TestDir d;
  write_file(d / "f", std::string(256 * kKiB, 'a'));
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_COLLAPSE_RANGE, 0, 64 * kKiB)) == EOPNOTSUPP);
  CHECK(err(::fallocate(fd.get(), FALLOC_FL_INSERT_RANGE, 0, 64 * kKiB)) == EOPNOTSUPP);
}

TEST_CASE("SEEK_DATA and SEEK_HOLE at or past end of file fail with ENXIO", "[seek]") {
  TestDir d;
  write_file(d / "f", std::string(10000, 'a'));
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(err(::lseek(fd.get(), 10000, SEEK_DATA)) == ENXIO);
  CHECK(err(::lseek(fd.get(), 10000, SEEK_HOLE)) == ENXIO);
  CHECK(err(::lseek(fd.get(), kMiB, SEEK_DATA)) == ENXIO);
  write_file(d / "empty", "");
  Fd e(::open((d / "empty").c_str(), O_RDONLY));
  REQUIRE(e.valid());
  CHECK(err(::lseek(e.get(), 0, SEEK_DATA)) == ENXIO);
}

TEST_CASE("SEEK_HOLE of a fully written file is its size and SEEK_DATA returns the offset",
          "[seek]") {
  TestDir d;
  write_file(d / "f", std::string(10000, 'a'));
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(::lseek(fd.get(), 0, SEEK_HOLE) == 10000);
  CHECK(::lseek(fd.get(), 5000, SEEK_HOLE) == 10000);
  CHECK(::lseek(fd.get(), 1234, SEEK_DATA) == 1234);
}

TEST_CASE("SEEK_HOLE and SEEK_DATA answers on a sparse file stay within the written data's bounds",
          "[seek]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  const std::string chunk = pattern(64 * kKiB, 13);
  REQUIRE(::pwrite(fd.get(), chunk.data(), chunk.size(), 0) == 64 * kKiB);
  REQUIRE(::pwrite(fd.get(), chunk.data(), chunk.size(), 4 * kMiB) == 64 * kKiB);
  const off_t size = 4 * kMiB + 64 * kKiB;
  // Whatever the granularity, the answers must be in range and consistent with the data.
  const off_t hole = ::lseek(fd.get(), 0, SEEK_HOLE);
  CHECK(hole >= 64 * kKiB);
  CHECK(hole <= size);
  const off_t data = ::lseek(fd.get(), 64 * kKiB, SEEK_DATA);
  CHECK(data >= 64 * kKiB);
  CHECK(data <= 4 * kMiB);
  CHECK(::lseek(fd.get(), 4 * kMiB + 10, SEEK_DATA) == 4 * kMiB + 10);
}

// [exact-holes]: not with the daemon's writeback cache, where SEEK_DATA/SEEK_HOLE are answered the
// generic way on purpose (all data up to EOF; tools/daemon/fuse_ops.cpp op_lseek).
TEST_CASE("SEEK_DATA and SEEK_HOLE find the exact extents of a sparse btrfs file", "[seek][btrfs][exact-holes]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  const std::string chunk = pattern(64 * kKiB, 14);
  REQUIRE(::pwrite(fd.get(), chunk.data(), chunk.size(), 0) == 64 * kKiB);
  REQUIRE(::pwrite(fd.get(), chunk.data(), chunk.size(), kMiB) == 64 * kKiB);
  REQUIRE(err(::ftruncate(fd.get(), 3 * kMiB)) == 0);
  for (bool synced : {false, true}) {
    INFO("after fsync: " << synced);
    if (synced) REQUIRE(err(::fsync(fd.get())) == 0);
    CHECK(::lseek(fd.get(), 0, SEEK_DATA) == 0);
    CHECK(::lseek(fd.get(), 0, SEEK_HOLE) == 64 * kKiB);
    CHECK(::lseek(fd.get(), 64 * kKiB, SEEK_DATA) == kMiB);
    CHECK(::lseek(fd.get(), kMiB + 100, SEEK_HOLE) == kMiB + 64 * kKiB);
    CHECK(::lseek(fd.get(), kMiB + 64 * kKiB, SEEK_HOLE) == kMiB + 64 * kKiB);
    CHECK(err(::lseek(fd.get(), kMiB + 64 * kKiB, SEEK_DATA)) == ENXIO);
    CHECK(::lseek(fd.get(), 2 * kMiB, SEEK_HOLE) == 2 * kMiB);
  }
}

// [exact-holes]: see above.
TEST_CASE("a punched hole is reported by SEEK_HOLE on btrfs", "[seek][fallocate][btrfs][exact-holes]") {
  TestDir d;
  write_file(d / "f", pattern(kMiB, 15));
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  REQUIRE(err(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 * kKiB, 256 * kKiB)) == 0);
  CHECK(::lseek(fd.get(), 0, SEEK_HOLE) == 256 * kKiB);
  CHECK(::lseek(fd.get(), 256 * kKiB, SEEK_DATA) == 512 * kKiB);
}
