// POSIX suite: mknod/mkfifo — FIFOs, sockets, character and block devices (rdev round-trips through
// major/minor), regular files via mknod, and the EEXIST/EPERM/EINVAL errors.
#include "posix_util.h"

#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

#include <cstring>

using namespace posix_test;

TEST_CASE("mknod creates a FIFO that carries data between a reader and a writer", "[mknod]") {
  TestDir d;
  CHECK(err(::mknod((d / "p").c_str(), S_IFIFO | 0640, 0)) == 0);
  const struct stat st = lstat_of(d / "p");
  CHECK(S_ISFIFO(st.st_mode));
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_size == 0);
  Fd rd(::open((d / "p").c_str(), O_RDONLY | O_NONBLOCK));
  REQUIRE(rd.valid());
  Fd wr(::open((d / "p").c_str(), O_WRONLY | O_NONBLOCK));
  REQUIRE(wr.valid());
  CHECK(::write(wr.get(), "through", 7) == 7);
  char buf[16];
  CHECK(::read(rd.get(), buf, sizeof buf) == 7);
  CHECK(std::string(buf, 7) == "through");
}

TEST_CASE("mkfifo creates a FIFO and fails with EEXIST on an existing name", "[mknod]") {
  TestDir d;
  CHECK(err(::mkfifo((d / "p").c_str(), 0600)) == 0);
  CHECK(S_ISFIFO(lstat_of(d / "p").st_mode));
  CHECK(err(::mkfifo((d / "p").c_str(), 0600)) == EEXIST);
}

TEST_CASE("mknod creates a socket node", "[mknod]") {
  TestDir d;
  CHECK(err(::mknod((d / "s").c_str(), S_IFSOCK | 0600, 0)) == 0);
  CHECK(S_ISSOCK(lstat_of(d / "s").st_mode));
}

TEST_CASE("binding a unix socket creates a socket node that accepts connections", "[mknod]") {
  TestDir d;
  const std::string path = d / "sock";
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  Fd srv(::socket(AF_UNIX, SOCK_STREAM, 0));
  REQUIRE(srv.valid());
  CHECK(err(::bind(srv.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr)) == 0);
  CHECK(S_ISSOCK(lstat_of(path).st_mode));
  REQUIRE(err(::listen(srv.get(), 1)) == 0);
  Fd cli(::socket(AF_UNIX, SOCK_STREAM, 0));
  REQUIRE(cli.valid());
  CHECK(err(::connect(cli.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr)) == 0);
}

TEST_CASE("character and block devices keep their major and minor numbers", "[mknod]") {
  TestDir d;
  struct Dev { const char* name; mode_t type; unsigned major, minor; };
  const Dev devs[] = {
      {"null", S_IFCHR, 1, 3},
      {"loop", S_IFBLK, 7, 200},
      {"bigminor", S_IFCHR, 259, 1048575},
      {"bigmajor", S_IFBLK, 4095, 65537},
      {"zero", S_IFCHR, 0, 0},
  };
  for (const Dev& dev : devs) {
    INFO(dev.name);
    CHECK(err(::mknod((d / dev.name).c_str(), dev.type | 0600, makedev(dev.major, dev.minor))) == 0);
    const struct stat st = lstat_of(d / dev.name);
    CHECK((st.st_mode & S_IFMT) == dev.type);
    CHECK(major(st.st_rdev) == dev.major);
    CHECK(minor(st.st_rdev) == dev.minor);
  }
}

TEST_CASE("a device node survives rename and chmod with its rdev intact", "[mknod]") {
  TestDir d;
  REQUIRE(err(::mknod((d / "c").c_str(), S_IFCHR | 0600, makedev(10, 20))) == 0);
  REQUIRE(err(::rename((d / "c").c_str(), (d / "c2").c_str())) == 0);
  REQUIRE(err(::chmod((d / "c2").c_str(), 0644)) == 0);
  const struct stat st = lstat_of(d / "c2");
  CHECK(S_ISCHR(st.st_mode));
  CHECK((st.st_mode & 07777) == 0644);
  CHECK(st.st_rdev == makedev(10, 20));
}

TEST_CASE("mknod with S_IFREG or type 0 creates an empty regular file", "[mknod]") {
  TestDir d;
  CHECK(err(::mknod((d / "r").c_str(), S_IFREG | 0644, 0)) == 0);
  CHECK(err(::mknod((d / "r0").c_str(), 0644, 0)) == 0);
  CHECK(S_ISREG(lstat_of(d / "r").st_mode));
  CHECK(S_ISREG(lstat_of(d / "r0").st_mode));
  CHECK(lstat_of(d / "r").st_size == 0);
}

TEST_CASE("mknod of an existing name fails with EEXIST", "[mknod]") {
  TestDir d;
  write_file(d / "f", "x");
  CHECK(err(::mknod((d / "f").c_str(), S_IFIFO | 0644, 0)) == EEXIST);
  CHECK(err(::mknod((d / "f").c_str(), S_IFCHR | 0644, makedev(1, 3))) == EEXIST);
  CHECK(S_ISREG(lstat_of(d / "f").st_mode));
}

TEST_CASE("mknod cannot make a directory (EPERM) or an unknown type (EINVAL)", "[mknod]") {
  TestDir d;
  CHECK(err(::mknod((d / "dir").c_str(), S_IFDIR | 0755, 0)) == EPERM);
  CHECK(err(::mknod((d / "bad").c_str(), 0170000 | 0644, 0)) == EINVAL);
  CHECK_FALSE(exists(d / "dir"));
  CHECK_FALSE(exists(d / "bad"));
}

TEST_CASE("mknod in a missing directory fails with ENOENT", "[mknod]") {
  TestDir d;
  CHECK(err(::mknod((d / "missing/p").c_str(), S_IFIFO | 0644, 0)) == ENOENT);
}
