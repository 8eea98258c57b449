// POSIX suite: fsync, fdatasync, fsync of a directory (fsyncdir), sync_file_range and syncfs, and
// flush/release semantics of close — data and metadata written before them stay visible.
#include "posix_util.h"

using namespace posix_test;

TEST_CASE("fsync and fdatasync of a written file succeed and keep its content", "[fsync]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  const std::string data = pattern(200000, 31);
  REQUIRE(::write(fd.get(), data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  CHECK(err(::fsync(fd.get())) == 0);
  CHECK(::pwrite(fd.get(), "tail", 4, 200000) == 4);
  CHECK(err(::fdatasync(fd.get())) == 0);
  CHECK(fstat_of(fd.get()).st_size == 200004);
  CHECK(first_difference(read_file(d / "f"), data + "tail") == -1);
}

TEST_CASE("fsync of a read-only descriptor succeeds", "[fsync]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  CHECK(err(::fsync(fd.get())) == 0);
  CHECK(err(::fdatasync(fd.get())) == 0);
}

TEST_CASE("fsync of a directory descriptor succeeds (fsyncdir)", "[fsync]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "dir").c_str(), 0755)) == 0);
  write_file(d / "dir/f", "x");
  Fd fd(::open((d / "dir").c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(fd.valid());
  CHECK(err(::fsync(fd.get())) == 0);
  CHECK(err(::fdatasync(fd.get())) == 0);
  REQUIRE(err(::unlink((d / "dir/f").c_str())) == 0);
  CHECK(err(::fsync(fd.get())) == 0);
  CHECK(list_dir(d / "dir").empty());
}

TEST_CASE("fsync of a closed descriptor fails with EBADF and of a FIFO with EINVAL", "[fsync]") {
  TestDir d;
  int fd = ::open((d / "f").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::close(fd) == 0);
  CHECK(err(::fsync(fd)) == EBADF);
  REQUIRE(err(::mkfifo((d / "p").c_str(), 0644)) == 0);
  Fd fifo(::open((d / "p").c_str(), O_RDONLY | O_NONBLOCK));
  REQUIRE(fifo.valid());
  CHECK(err(::fsync(fifo.get())) == EINVAL);
}

TEST_CASE("fsync of an unlinked but open file succeeds", "[fsync]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  REQUIRE(::write(fd.get(), "gone", 4) == 4);
  REQUIRE(err(::unlink((d / "f").c_str())) == 0);
  CHECK(err(::fsync(fd.get())) == 0);
  CHECK(read_fd(fd.get()) == "gone");
}

TEST_CASE("sync_file_range and syncfs succeed on the file system", "[fsync]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  const std::string data = pattern(1 << 20, 32);
  REQUIRE(::write(fd.get(), data.data(), data.size()) == (1 << 20));
  CHECK(err(::sync_file_range(fd.get(), 0, 0,
                              SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER)) == 0);
  CHECK(err(::syncfs(fd.get())) == 0);
  CHECK(err(::sync_file_range(fd.get(), -1, 10, SYNC_FILE_RANGE_WRITE)) == EINVAL);
  CHECK(first_difference(read_fd(fd.get()), data) == -1);
}

TEST_CASE("close of a written descriptor returns 0 and the data is visible to the next open",
          "[fsync][close]") {
  TestDir d;
  for (int i = 0; i < 20; ++i) {
    const std::string name = "f" + std::to_string(i);
    int fd = ::open((d / name).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    const std::string data = pattern(1000 + i * 777, i);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    CHECK(err(::close(fd)) == 0);
    CHECK(first_difference(read_file(d / name), data) == -1);
  }
}

TEST_CASE("closing one of two duplicated descriptors leaves the other usable", "[close]") {
  TestDir d;
  Fd a(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(a.valid());
  Fd b(::dup(a.get()));
  REQUIRE(b.valid());
  CHECK(::write(a.get(), "ab", 2) == 2);
  a.reset();
  CHECK(::write(b.get(), "cd", 2) == 2);  // shares the offset of the closed one
  CHECK(read_fd(b.get()) == "abcd");
}
