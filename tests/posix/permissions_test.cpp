// POSIX suite: permission checks as a non-root user (uid/gid 65534 in a forked child), the
// default_permissions semantics a FUSE mount must reproduce — owner/group/other classes, directory
// search and write permission, the sticky bit, chmod/chown/utimes rules for non-owners, set-ID bits
// cleared by writes and chmod, and access(2) including root's execute rule.
#include "posix_util.h"

#include <sys/sysmacros.h>

using namespace posix_test;

namespace {

// A root-owned directory (mode `mode`) inside the test directory.
std::string root_dir(const TestDir& d, const char* name, mode_t mode) {
  const std::string p = d / name;
  REQUIRE(err(::mkdir(p.c_str(), 0755)) == 0);
  REQUIRE(err(::chmod(p.c_str(), mode)) == 0);
  return p;
}

std::vector<long> as_nobody(const std::function<std::vector<long>()>& fn) {
  return run_as(kNobody, kNogroup, fn);
}

}  // namespace

TEST_CASE("a non-owner cannot read a 0600 file or write a 0644 file (EACCES)", "[perm]") {
  TestDir d;
  write_file(d / "secret", "s", 0600);
  write_file(d / "public", "p", 0644);
  const std::string s = d / "secret", p = d / "public";
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::open(s.c_str(), O_RDONLY)), err_l(::open(p.c_str(), O_WRONLY)),
                             err_l(::open(p.c_str(), O_RDONLY)), err_l(::truncate(p.c_str(), 0))};
  });
  REQUIRE(r.size() == 4);
  CHECK(r[0] == EACCES);
  CHECK(r[1] == EACCES);
  CHECK(r[2] == 0);
  CHECK(r[3] == EACCES);
  CHECK(read_file(p) == "p");
}

TEST_CASE("creating, removing or renaming in a root 0755 directory fails with EACCES", "[perm]") {
  TestDir d;
  const std::string dir = root_dir(d, "dir", 0755);
  write_file(dir + "/f", "x");
  const auto r = as_nobody([&] {
    return std::vector<long>{
        err_l(::open((dir + "/new").c_str(), O_CREAT | O_WRONLY, 0644)),
        err_l(::mkdir((dir + "/newdir").c_str(), 0755)),
        err_l(::unlink((dir + "/f").c_str())),
        err_l(::rename((dir + "/f").c_str(), (dir + "/g").c_str())),
        err_l(::symlink("x", (dir + "/l").c_str())),
        err_l(::mknod((dir + "/p").c_str(), S_IFIFO | 0644, 0)),
    };
  });
  REQUIRE(r.size() == 6);
  for (long e : r) CHECK(e == EACCES);
  CHECK(list_dir(dir) == std::vector<std::string>{"f"});
}

TEST_CASE("a non-root user works freely in a 0777 directory and owns what it creates", "[perm]") {
  TestDir d;
  const std::string dir = root_dir(d, "open", 0777);
  const auto r = as_nobody([&] {
    std::vector<long> out;
    int fd = ::open((dir + "/mine").c_str(), O_CREAT | O_RDWR, 0600);
    out.push_back(err_l(fd));
    out.push_back(::write(fd, "hello", 5));
    ::close(fd);
    out.push_back(err_l(::mkdir((dir + "/sub").c_str(), 0700)));
    out.push_back(err_l(::rename((dir + "/mine").c_str(), (dir + "/sub/moved").c_str())));
    out.push_back(err_l(::chmod((dir + "/sub/moved").c_str(), 0640)));
    return out;
  });
  REQUIRE(r.size() == 5);
  CHECK(r[0] == 0);
  CHECK(r[1] == 5);
  CHECK(r[2] == 0);
  CHECK(r[3] == 0);
  CHECK(r[4] == 0);
  const struct stat st = lstat_of(dir + "/sub/moved");
  CHECK(st.st_uid == kNobody);
  CHECK(st.st_gid == kNogroup);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(read_file(dir + "/sub/moved") == "hello");
}

TEST_CASE("a directory without search permission hides its contents (EACCES)", "[perm]") {
  TestDir d;
  const std::string closed = root_dir(d, "closed", 0700);
  const std::string xonly = root_dir(d, "xonly", 0711);
  write_file(closed + "/f", "x", 0644);
  write_file(xonly + "/f", "x", 0644);
  const auto r = as_nobody([&] {
    struct stat st;
    return std::vector<long>{err_l(::stat((closed + "/f").c_str(), &st)),
                             err_l(::open((closed + "/f").c_str(), O_RDONLY)),
                             err_l(::stat((xonly + "/f").c_str(), &st)),
                             err_l(::open((xonly + "/f").c_str(), O_RDONLY)),
                             err_l(::open(xonly.c_str(), O_RDONLY | O_DIRECTORY))};
  });
  REQUIRE(r.size() == 5);
  CHECK(r[0] == EACCES);
  CHECK(r[1] == EACCES);
  CHECK(r[2] == 0);
  CHECK(r[3] == 0);
  CHECK(r[4] == EACCES);  // listing needs read permission
}

TEST_CASE("chmod, chown and explicit utimes of someone else's file fail with EPERM", "[perm]") {
  TestDir d;
  write_file(d / "f", "x", 0666);
  const std::string f = d / "f";
  const auto r = as_nobody([&] {
    struct timespec ts[2] = {{1000, 0}, {1000, 0}};
    return std::vector<long>{err_l(::chmod(f.c_str(), 0777)),
                             err_l(::chown(f.c_str(), kNobody, kNogroup)),
                             err_l(::chown(f.c_str(), -1, kNogroup)),
                             err_l(::utimensat(AT_FDCWD, f.c_str(), ts, 0)),
                             err_l(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0))};
  });
  REQUIRE(r.size() == 5);
  CHECK(r[0] == EPERM);
  CHECK(r[1] == EPERM);
  CHECK(r[2] == EPERM);
  CHECK(r[3] == EPERM);
  CHECK(r[4] == 0);  // setting "now" needs only write permission
  CHECK((lstat_of(f).st_mode & 07777) == 0666);
  CHECK(lstat_of(f).st_uid == 0u);
}

TEST_CASE("setting times to now on a non-writable file of another user fails with EACCES",
          "[perm]") {
  TestDir d;
  write_file(d / "f", "x", 0644);
  const std::string f = d / "f";
  const auto r = as_nobody([&] { return std::vector<long>{err_l(::utimensat(AT_FDCWD, f.c_str(), nullptr, 0))}; });
  CHECK(r == std::vector<long>{EACCES});
}

TEST_CASE("the owner may chown only to a group it belongs to", "[perm]") {
  TestDir d;
  write_file(d / "f", "x", 0644);
  REQUIRE(err(::chown((d / "f").c_str(), kNobody, 0)) == 0);
  const std::string f = d / "f";
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::chown(f.c_str(), -1, kNogroup)), err_l(::chown(f.c_str(), -1, 0)),
                             err_l(::chown(f.c_str(), 0, -1))};
  });
  REQUIRE(r.size() == 3);
  CHECK(r[0] == 0);
  CHECK(r[1] == EPERM);
  CHECK(r[2] == EPERM);
  CHECK(lstat_of(f).st_gid == kNogroup);
}

TEST_CASE("in a sticky directory only the owner of an entry may delete or rename it", "[perm]") {
  TestDir d;
  const std::string tmp = root_dir(d, "sticky", 01777);
  write_file(tmp + "/roots", "r", 0666);
  const auto r = as_nobody([&] {
    int fd = ::open((tmp + "/mine").c_str(), O_CREAT | O_WRONLY, 0644);
    ::close(fd);
    return std::vector<long>{err_l(fd),
                             err_l(::unlink((tmp + "/roots").c_str())),
                             err_l(::rename((tmp + "/roots").c_str(), (tmp + "/stolen").c_str())),
                             err_l(::rename((tmp + "/mine").c_str(), (tmp + "/mine2").c_str())),
                             err_l(::unlink((tmp + "/mine2").c_str()))};
  });
  REQUIRE(r.size() == 5);
  CHECK(r[0] == 0);
  CHECK(r[1] == EPERM);
  CHECK(r[2] == EPERM);
  CHECK(r[3] == 0);
  CHECK(r[4] == 0);
  CHECK(exists(tmp + "/roots"));
  CHECK_FALSE(exists(tmp + "/mine2"));
  // Root may delete anything.
  CHECK(err(::unlink((tmp + "/roots").c_str())) == 0);
}

TEST_CASE("permission classes are exclusive: the owner class applies even when others may read",
          "[perm]") {
  TestDir d;
  write_file(d / "owned", "o", 0066);
  REQUIRE(err(::chown((d / "owned").c_str(), kNobody, 0)) == 0);
  write_file(d / "group", "g", 0604);
  REQUIRE(err(::chown((d / "group").c_str(), 0, kNogroup)) == 0);
  write_file(d / "groupok", "g", 0640);
  REQUIRE(err(::chown((d / "groupok").c_str(), 0, kNogroup)) == 0);
  const std::string o = d / "owned", g = d / "group", gok = d / "groupok";
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::open(o.c_str(), O_RDONLY)), err_l(::open(g.c_str(), O_RDONLY)),
                             err_l(::open(gok.c_str(), O_RDONLY))};
  });
  REQUIRE(r.size() == 3);
  CHECK(r[0] == EACCES);
  CHECK(r[1] == EACCES);
  CHECK(r[2] == 0);
}

TEST_CASE("a write by a non-owner clears the set-user-ID bit", "[perm]") {
  TestDir d;
  write_file(d / "f", "x", 0644);
  REQUIRE(err(::chmod((d / "f").c_str(), 04777)) == 0);
  const std::string f = d / "f";
  const auto r = as_nobody([&] {
    int fd = ::open(f.c_str(), O_WRONLY);
    long w = ::write(fd, "y", 1);
    ::close(fd);
    return std::vector<long>{err_l(fd), w};
  });
  REQUIRE(r.size() == 2);
  CHECK(r[0] == 0);
  CHECK(r[1] == 1);
  CHECK((lstat_of(f).st_mode & 07777) == 0777);
}

TEST_CASE("chmod by an owner outside the file's group silently drops set-group-ID", "[perm]") {
  TestDir d;
  write_file(d / "f", "x", 0644);
  REQUIRE(err(::chown((d / "f").c_str(), kNobody, 0)) == 0);
  const std::string f = d / "f";
  const auto r = as_nobody([&] { return std::vector<long>{err_l(::chmod(f.c_str(), 02755))}; });
  CHECK(r == std::vector<long>{0});
  CHECK((lstat_of(f).st_mode & 07777) == 0755);
}

TEST_CASE("a non-root user cannot create device nodes (EPERM)", "[perm]") {
  TestDir d;
  const std::string dir = root_dir(d, "open", 0777);
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::mknod((dir + "/c").c_str(), S_IFCHR | 0644, makedev(1, 3))),
                             err_l(::mknod((dir + "/p").c_str(), S_IFIFO | 0644, 0))};
  });
  REQUIRE(r.size() == 2);
  CHECK(r[0] == EPERM);
  CHECK(r[1] == 0);
}

TEST_CASE("access checks the real user's permissions, and root needs an x bit for X_OK", "[perm]") {
  TestDir d;
  write_file(d / "noexec", "", 0644);
  write_file(d / "exec", "", 0700);
  write_file(d / "secret", "", 0600);
  CHECK(err(::access((d / "noexec").c_str(), X_OK)) == EACCES);
  CHECK(err(::access((d / "exec").c_str(), X_OK)) == 0);
  CHECK(err(::access((d / "secret").c_str(), R_OK | W_OK)) == 0);  // root reads anything
  const std::string s = d / "secret", n = d / "noexec";
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::access(s.c_str(), R_OK)), err_l(::access(n.c_str(), R_OK)),
                             err_l(::access(n.c_str(), W_OK)), err_l(::access(s.c_str(), F_OK))};
  });
  REQUIRE(r.size() == 4);
  CHECK(r[0] == EACCES);
  CHECK(r[1] == 0);
  CHECK(r[2] == EACCES);
  CHECK(r[3] == 0);
}

TEST_CASE("hard links to another user's file are allowed or refused per protected_hardlinks",
          "[perm]") {
  TestDir d;
  const std::string dir = root_dir(d, "open", 0777);
  write_file(dir + "/roots", "r", 0600);
  int protected_hardlinks = 0;
  {
    Fd fd(::open("/proc/sys/fs/protected_hardlinks", O_RDONLY));
    char c = '0';
    if (fd.valid() && ::read(fd.get(), &c, 1) == 1) protected_hardlinks = c - '0';
  }
  const auto r = as_nobody([&] {
    return std::vector<long>{err_l(::link((dir + "/roots").c_str(), (dir + "/mylink").c_str()))};
  });
  REQUIRE(r.size() == 1);
  CHECK(r[0] == (protected_hardlinks ? EPERM : 0));
}
