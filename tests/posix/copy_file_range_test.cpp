// POSIX suite: copy_file_range — equal content, offsets advanced (the descriptor's or the explicit
// ones), copies at end of file, partial ranges into existing data, and the EBADF/EINVAL/EISDIR
// errors. EXDEV is accepted only when the two files are on different file systems.
#include "posix_util.h"

#include <cstdlib>

using namespace posix_test;

TEST_CASE("copy_file_range copies a whole file and advances both descriptor offsets",
          "[copy_file_range]") {
  TestDir d;
  const std::string data = pattern(3 * 1024 * 1024 + 4321, 41);
  write_file(d / "src", data);
  Fd in(::open((d / "src").c_str(), O_RDONLY));
  Fd out(::open((d / "dst").c_str(), O_CREAT | O_WRONLY, 0644));
  REQUIRE(in.valid());
  REQUIRE(out.valid());
  size_t copied = 0;
  while (copied < data.size()) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, data.size() - copied, 0);
    REQUIRE(n > 0);
    copied += static_cast<size_t>(n);
  }
  CHECK(copied == data.size());
  CHECK(::lseek(in.get(), 0, SEEK_CUR) == static_cast<off_t>(data.size()));
  CHECK(::lseek(out.get(), 0, SEEK_CUR) == static_cast<off_t>(data.size()));
  CHECK(::copy_file_range(in.get(), nullptr, out.get(), nullptr, 100, 0) == 0);
  CHECK(first_difference(read_file(d / "dst"), data) == -1);
}

TEST_CASE("copy_file_range with explicit offsets advances those and not the descriptors'",
          "[copy_file_range]") {
  TestDir d;
  const std::string src = pattern(100000, 42);
  const std::string dst = pattern(50000, 43);
  write_file(d / "src", src);
  write_file(d / "dst", dst);
  Fd in(::open((d / "src").c_str(), O_RDONLY));
  Fd out(::open((d / "dst").c_str(), O_WRONLY));
  REQUIRE(in.valid());
  REQUIRE(out.valid());
  loff_t off_in = 1000, off_out = 40000;
  const ssize_t n = ::copy_file_range(in.get(), &off_in, out.get(), &off_out, 30000, 0);
  REQUIRE(n > 0);
  CHECK(off_in == 1000 + n);
  CHECK(off_out == 40000 + n);
  CHECK(::lseek(in.get(), 0, SEEK_CUR) == 0);
  CHECK(::lseek(out.get(), 0, SEEK_CUR) == 0);
  std::string want = dst;
  want.resize(40000 + n);
  want.replace(40000, n, src.substr(1000, n));
  CHECK(first_difference(read_file(d / "dst"), want) == -1);
}

TEST_CASE("copy_file_range starting at or past the source's end copies nothing", "[copy_file_range]") {
  TestDir d;
  write_file(d / "src", "abc");
  write_file(d / "dst", "xyz");
  Fd in(::open((d / "src").c_str(), O_RDONLY));
  Fd out(::open((d / "dst").c_str(), O_WRONLY));
  REQUIRE(in.valid());
  REQUIRE(out.valid());
  loff_t off_in = 3, off_out = 0;
  CHECK(::copy_file_range(in.get(), &off_in, out.get(), &off_out, 10, 0) == 0);
  off_in = 1000;
  CHECK(::copy_file_range(in.get(), &off_in, out.get(), &off_out, 10, 0) == 0);
  CHECK(::copy_file_range(in.get(), nullptr, out.get(), nullptr, 0, 0) == 0);
  CHECK(read_file(d / "dst") == "xyz");
}

TEST_CASE("copy_file_range needs a readable source and a writable, non-append destination (EBADF)",
          "[copy_file_range]") {
  TestDir d;
  write_file(d / "src", "abc");
  write_file(d / "dst", "");
  Fd in_wo(::open((d / "src").c_str(), O_WRONLY));
  Fd in(::open((d / "src").c_str(), O_RDONLY));
  Fd out_ro(::open((d / "dst").c_str(), O_RDONLY));
  Fd out_app(::open((d / "dst").c_str(), O_WRONLY | O_APPEND));
  Fd out(::open((d / "dst").c_str(), O_WRONLY));
  REQUIRE((in_wo.valid() && in.valid() && out_ro.valid() && out_app.valid() && out.valid()));
  CHECK(err(::copy_file_range(in_wo.get(), nullptr, out.get(), nullptr, 3, 0)) == EBADF);
  CHECK(err(::copy_file_range(in.get(), nullptr, out_ro.get(), nullptr, 3, 0)) == EBADF);
  CHECK(err(::copy_file_range(in.get(), nullptr, out_app.get(), nullptr, 3, 0)) == EBADF);
  CHECK(err(::copy_file_range(-1, nullptr, out.get(), nullptr, 3, 0)) == EBADF);
}

TEST_CASE("copy_file_range rejects flags, overlapping ranges in one file, and directories",
          "[copy_file_range]") {
  TestDir d;
  write_file(d / "f", pattern(100000, 44));
  Fd rw(::open((d / "f").c_str(), O_RDWR));
  Fd ro(::open((d / "f").c_str(), O_RDONLY));
  Fd dir(::open(d.c_str(), O_RDONLY | O_DIRECTORY));
  REQUIRE((rw.valid() && ro.valid() && dir.valid()));
  loff_t a = 0, b = 0;
  CHECK(err(::copy_file_range(ro.get(), &a, rw.get(), &b, 10, 1)) == EINVAL);
  a = 0;
  b = 1000;
  CHECK(err(::copy_file_range(ro.get(), &a, rw.get(), &b, 5000, 0)) == EINVAL);
  a = 0;
  CHECK(err(::copy_file_range(dir.get(), &a, rw.get(), nullptr, 10, 0)) == EISDIR);
  // Non-overlapping ranges in the same file are fine.
  a = 0;
  b = 50000;
  CHECK(::copy_file_range(ro.get(), &a, rw.get(), &b, 10000, 0) == 10000);
  const std::string all = read_file(d / "f");
  CHECK(first_difference(all.substr(50000, 10000), all.substr(0, 10000)) == -1);
}

TEST_CASE("copy_file_range within one file system never fails with EXDEV", "[copy_file_range]") {
  TestDir d;
  REQUIRE(err(::mkdir((d / "a").c_str(), 0755)) == 0);
  REQUIRE(err(::mkdir((d / "b").c_str(), 0755)) == 0);
  write_file(d / "a/src", "cross-directory");
  Fd in(::open((d / "a/src").c_str(), O_RDONLY));
  Fd out(::open((d / "b/dst").c_str(), O_CREAT | O_WRONLY, 0644));
  REQUIRE((in.valid() && out.valid()));
  CHECK(::copy_file_range(in.get(), nullptr, out.get(), nullptr, 100, 0) == 15);
  CHECK(read_file(d / "b/dst") == "cross-directory");
}

TEST_CASE("copy_file_range across file systems either copies or fails with EXDEV",
          "[copy_file_range]") {
  TestDir d;
  const char* tmp = std::getenv("TMPDIR");
  std::string other = std::string(tmp ? tmp : "/tmp") + "/ubtrfs-posix-cfr-XXXXXX";
  Fd in(::mkstemp(other.data()));
  REQUIRE(in.valid());
  ::unlink(other.c_str());
  REQUIRE(::write(in.get(), "elsewhere", 9) == 9);
  Fd out(::open((d / "dst").c_str(), O_CREAT | O_WRONLY, 0644));
  REQUIRE(out.valid());
  struct stat a = fstat_of(in.get()), b = fstat_of(out.get());
  loff_t off = 0;
  const ssize_t n = ::copy_file_range(in.get(), &off, out.get(), nullptr, 9, 0);
  const int e = n < 0 ? errno : 0;
  if (a.st_dev == b.st_dev) {
    CHECK(n == 9);
  } else {
    CHECK((n == 9 || e == EXDEV));
  }
  if (n == 9) CHECK(read_file(d / "dst") == "elsewhere");
}
