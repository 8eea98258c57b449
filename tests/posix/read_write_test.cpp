// POSIX suite: read and write — offsets and lseek, reads at and past EOF, holes reading as zeros,
// pread/pwrite not moving the offset, writes crossing 128 KiB boundaries against an in-memory model,
// sparse writes at 1 GiB, readv/writev, shared mmap, and EISDIR/ESPIPE/EINVAL errors.
#include "posix_util.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

using namespace posix_test;

TEST_CASE("write advances the offset and read returns what was written", "[read][write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "hello ", 6) == 6);
  CHECK(::write(fd.get(), "world", 5) == 5);
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 11);
  CHECK(::lseek(fd.get(), 0, SEEK_SET) == 0);
  char buf[32] = {};
  CHECK(::read(fd.get(), buf, 4) == 4);
  CHECK(std::string(buf, 4) == "hell");
  CHECK(::read(fd.get(), buf, sizeof buf) == 7);
  CHECK(std::string(buf, 7) == "o world");
  CHECK(::read(fd.get(), buf, sizeof buf) == 0);
  CHECK(::lseek(fd.get(), -5, SEEK_END) == 6);
  CHECK(::read(fd.get(), buf, sizeof buf) == 5);
}

TEST_CASE("reads at or beyond end of file return 0 bytes", "[read]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(fd.valid());
  char buf[8];
  CHECK(::pread(fd.get(), buf, sizeof buf, 3) == 0);
  CHECK(::pread(fd.get(), buf, sizeof buf, 1 << 20) == 0);
  CHECK(::pread(fd.get(), buf, sizeof buf, 2) == 1);
}

TEST_CASE("pread and pwrite do not move the file offset", "[read][write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "abcdef", 6) == 6);
  CHECK(::pwrite(fd.get(), "XY", 2, 1) == 2);
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 6);
  char buf[4] = {};
  CHECK(::pread(fd.get(), buf, 3, 0) == 3);
  CHECK(std::string(buf, 3) == "aXY");
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 6);
}

TEST_CASE("a write beyond end of file leaves a hole that reads as zeros", "[write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  CHECK(::write(fd.get(), "head", 4) == 4);
  const off_t far = (1 << 20) + 123;
  CHECK(::pwrite(fd.get(), "tail", 4, far) == 4);
  CHECK(fstat_of(fd.get()).st_size == far + 4);
  const std::string all = read_fd(fd.get());
  REQUIRE(all.size() == static_cast<size_t>(far + 4));
  CHECK(all.substr(0, 4) == "head");
  CHECK(all.find_first_not_of('\0', 4) == static_cast<size_t>(far));
  CHECK(all.substr(far) == "tail");
}

TEST_CASE("lseek past end of file and a write there extends the file with zeros", "[write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  CHECK(::lseek(fd.get(), 5000, SEEK_SET) == 5000);
  CHECK(fstat_of(fd.get()).st_size == 0);
  CHECK(::write(fd.get(), "z", 1) == 1);
  CHECK(fstat_of(fd.get()).st_size == 5001);
  const std::string all = read_fd(fd.get());
  CHECK(all.find_first_not_of('\0') == 5000u);
}

TEST_CASE("writes crossing 128 KiB boundaries match an in-memory model", "[write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  std::string model;
  struct Op { off_t off; size_t len; uint32_t seed; };
  const Op ops[] = {
      {131072 - 100, 200, 1},          // across the first 128 KiB boundary
      {0, 1048576 + 12345, 2},         // 1 MiB + a bit from 0
      {262144 - 4096, 8192 + 7, 3},    // straddles 256 KiB, unaligned end
      {393216 + 1, 131072, 4},         // unaligned start, exactly 128 KiB long
      {1048576 - 3, 131072 * 3, 5},    // past the old end of file
      {777, 1, 6},                     // a single byte
  };
  for (const Op& op : ops) {
    const std::string data = pattern(op.len, op.seed);
    REQUIRE(::pwrite(fd.get(), data.data(), data.size(), op.off) == static_cast<ssize_t>(op.len));
    if (model.size() < op.off + op.len) model.resize(op.off + op.len, '\0');
    model.replace(op.off, op.len, data);
  }
  CHECK(fstat_of(fd.get()).st_size == static_cast<off_t>(model.size()));
  CHECK(first_difference(read_fd(fd.get()), model) == -1);
  fd.reset();
  CHECK(first_difference(read_file(d / "f"), model) == -1);
  // Reading in odd-sized pieces gives the same bytes.
  Fd rd(::open((d / "f").c_str(), O_RDONLY));
  REQUIRE(rd.valid());
  std::string pieces;
  std::vector<char> buf(99991);
  ssize_t n;
  while ((n = ::read(rd.get(), buf.data(), buf.size())) > 0) pieces.append(buf.data(), n);
  CHECK(n == 0);
  CHECK(first_difference(pieces, model) == -1);
}

TEST_CASE("a write at 1 GiB makes a sparse file", "[write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  const off_t gib = off_t{1} << 30;
  const std::string data = pattern(4096, 9);
  CHECK(::pwrite(fd.get(), data.data(), data.size(), gib) == 4096);
  REQUIRE(err(::fsync(fd.get())) == 0);
  const struct stat st = fstat_of(fd.get());
  CHECK(st.st_size == gib + 4096);
  CHECK(st.st_blocks * 512 < (1 << 20));
  char buf[4096];
  CHECK(::pread(fd.get(), buf, sizeof buf, gib / 2) == 4096);
  CHECK(std::all_of(buf, buf + sizeof buf, [](char c) { return c == 0; }));
  CHECK(::pread(fd.get(), buf, sizeof buf, gib) == 4096);
  CHECK(std::memcmp(buf, data.data(), 4096) == 0);
}

TEST_CASE("overwriting inside a file keeps its size", "[write]") {
  TestDir d;
  write_file(d / "f", std::string(10000, 'a'));
  Fd fd(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(fd.valid());
  CHECK(::pwrite(fd.get(), "bbbb", 4, 4094) == 4);
  CHECK(fstat_of(fd.get()).st_size == 10000);
  const std::string all = read_file(d / "f");
  CHECK(all.substr(4090, 12) == "aaaabbbbaaaa");
}

TEST_CASE("a zero-length write succeeds and changes nothing", "[write]") {
  TestDir d;
  write_file(d / "f", "abc");
  Fd fd(::open((d / "f").c_str(), O_WRONLY));
  REQUIRE(fd.valid());
  CHECK(::pwrite(fd.get(), "", 0, 100) == 0);
  CHECK(fstat_of(fd.get()).st_size == 3);
}

TEST_CASE("readv and writev move data in vector order", "[read][write]") {
  TestDir d;
  Fd fd(::open((d / "f").c_str(), O_CREAT | O_RDWR, 0644));
  REQUIRE(fd.valid());
  char a[] = "one-", b[] = "two-", c[] = "three";
  struct iovec w[3] = {{a, 4}, {b, 4}, {c, 5}};
  CHECK(::writev(fd.get(), w, 3) == 13);
  char x[6] = {}, y[7] = {};
  struct iovec r[2] = {{x, 6}, {y, 7}};
  CHECK(::preadv(fd.get(), r, 2, 0) == 13);
  CHECK(std::string(x, 6) == "one-tw");
  CHECK(std::string(y, 7) == "o-three");
}

TEST_CASE("stores through a shared mapping reach the file", "[write][mmap]") {
  TestDir d;
  write_file(d / "f", std::string(8192, 'a'));
  Fd fd(::open((d / "f").c_str(), O_RDWR));
  REQUIRE(fd.valid());
  void* p = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  REQUIRE(p != MAP_FAILED);
  std::memcpy(static_cast<char*>(p) + 4000, "mapped", 6);
  CHECK(err(::msync(p, 8192, MS_SYNC)) == 0);
  CHECK(err(::munmap(p, 8192)) == 0);
  CHECK(read_file(d / "f").substr(3998, 10) == "aamappedaa");
}

TEST_CASE("reading a directory descriptor fails with EISDIR", "[read]") {
  TestDir d;
  Fd fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE(fd.valid());
  char buf[16];
  CHECK(err(::read(fd.get(), buf, sizeof buf)) == EISDIR);
}

TEST_CASE("lseek to a negative offset fails with EINVAL and on a fifo with ESPIPE", "[read]") {
  TestDir d;
  write_file(d / "f", "abc");
  REQUIRE(err(::mkfifo((d / "p").c_str(), 0644)) == 0);
  Fd fd(::open((d / "f").c_str(), O_RDONLY));
  Fd fifo(::open((d / "p").c_str(), O_RDONLY | O_NONBLOCK));
  REQUIRE(fd.valid());
  REQUIRE(fifo.valid());
  CHECK(err(::lseek(fd.get(), -1, SEEK_SET)) == EINVAL);
  CHECK(err(::lseek(fd.get(), -10, SEEK_END)) == EINVAL);
  CHECK(::lseek(fd.get(), 0, SEEK_CUR) == 0);
  CHECK(err(::lseek(fifo.get(), 0, SEEK_SET)) == ESPIPE);
}

TEST_CASE("content survives closing and reopening the file", "[write]") {
  TestDir d;
  const std::string data = pattern(300000, 11);
  write_file(d / "f", data);
  CHECK(first_difference(read_file(d / "f"), data) == -1);
  CHECK(lstat_of(d / "f").st_size == 300000);
}
