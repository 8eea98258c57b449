// Names and inodes on a real image, judged by the oracles: a fresh image (mkfs.btrfs, and
// mkfs.ubtrfs when UBTRFS_BIN is set) is mounted through Filesystem::mount, given a namespace
// (files, directories, hard links incl. INODE_EXTREF, symlinks, fifo/char device/socket, xattrs,
// renames incl. exchange and cross-directory directory moves, unlink of an open file, an orphan left
// for the next mount), unmounted; then `btrfs check` (original and lowmem) must pass, and a kernel
// read-only loop mount must show the same tree as ubtrfs does (names, types, mode, nlink, uid, gid,
// size, rdev, mtime, symlink targets, xattrs).
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <linux/fs.h>
#include <map>
#include <string>

#include "fs/filesystem.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::bytes;
using test::err_of;
using test::have_btrfs_progs_as_root;
using test::mount_file_or_fail;
using test::must;
using test::run;

// The image mounted read-write, or read-only when `ro` (a failed mount FAILs).
std::unique_ptr<Filesystem> mount_namespace_image(const std::string& path, bool ro) {
  OpenOptions o;
  o.read_only = ro;
  MountOptions m;
  m.read_only = ro;
  return mount_file_or_fail(path, m, o);
}

// One file as both sides report it.
struct Seen {
  uint32_t mode = 0, nlink = 0, uid = 0, gid = 0;
  uint64_t size = 0, rdev = 0;
  int64_t mtime_s = 0, mtime_ns = 0;
  std::string target;
  std::map<std::string, std::string> xattrs;
  bool operator==(const Seen&) const = default;
};

std::string describe(const std::map<std::string, Seen>& m) {
  std::string out;
  for (auto& [p, s] : m)
    out += fmt::format("{} mode {:o} nlink {} uid {} gid {} size {} rdev {} mtime {}.{} -> '{}' xattrs {}\n", p, s.mode,
                       s.nlink, s.uid, s.gid, s.size, s.rdev, s.mtime_s, s.mtime_ns, s.target, s.xattrs.size());
  return out;
}

Seen from_stat(const struct stat& st) {
  Seen s;
  s.mode = st.st_mode;
  s.nlink = static_cast<uint32_t>(st.st_nlink);
  s.uid = st.st_uid;
  s.gid = st.st_gid;
  s.size = static_cast<uint64_t>(st.st_size);
  s.rdev = st.st_rdev;
  s.mtime_s = st.st_mtim.tv_sec;
  s.mtime_ns = st.st_mtim.tv_nsec;
  return s;
}

// The tree as ubtrfs shows it (readdir + lookup + readlink + xattrs), paths relative to the root.
void walk_ubtrfs(Filesystem& fs, uint64_t dir, const std::string& prefix, std::map<std::string, Seen>& out) {
  std::vector<std::pair<std::string, uint64_t>> entries;
  must(fs.readdir(dir, 0, false,
                  [&](const DirEntryOut& e) {
                    if (e.name != "." && e.name != "..") entries.emplace_back(std::string(e.name), e.attr.st_ino);
                    return true;
                  }),
       "readdir");
  for (auto& [name, ino] : entries) {
    const struct stat st = must(fs.lookup(dir, name), "lookup");
    CHECK(static_cast<uint64_t>(st.st_ino) == ino);
    Seen s = from_stat(st);
    const std::string path = prefix + "/" + name;
    if (S_ISLNK(st.st_mode)) s.target = must(fs.readlink(st.st_ino), "readlink");
    for (auto& x : must(fs.listxattr(st.st_ino), "listxattr")) {
      auto v = must(fs.getxattr(st.st_ino, x), "getxattr");
      s.xattrs[x] = std::string(v.begin(), v.end());
    }
    out[path] = s;
    if (S_ISDIR(st.st_mode)) walk_ubtrfs(fs, st.st_ino, path, out);
    fs.forget(st.st_ino, 1);
  }
}

void walk_kernel(const std::string& root, std::map<std::string, Seen>& out) {
  namespace sfs = std::filesystem;
  for (auto it = sfs::recursive_directory_iterator(root); it != sfs::recursive_directory_iterator(); ++it) {
    const std::string p = it->path().string();
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    Seen s = from_stat(st);
    if (S_ISLNK(st.st_mode)) s.target = sfs::read_symlink(it->path()).string();
    std::vector<char> names(65536);
    const ssize_t n = ::llistxattr(p.c_str(), names.data(), names.size());
    REQUIRE(n >= 0);
    for (ssize_t off = 0; off < n;) {
      std::string x(names.data() + off);
      off += static_cast<ssize_t>(x.size()) + 1;
      std::vector<char> v(65536);
      const ssize_t len = ::lgetxattr(p.c_str(), x.c_str(), v.data(), v.size());
      REQUIRE(len >= 0);
      s.xattrs[x] = std::string(v.data(), static_cast<size_t>(len));
    }
    out[p.substr(root.size())] = s;
  }
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The FS_TREE item keys "(objectid TYPE offset)" in tree order, as btrfs inspect-internal dump-tree prints them.
std::vector<std::string> fs_tree_keys(const std::string& img) {
  const std::string out = "/tmp/ubtrfs-ns-dump-tree.txt";
  REQUIRE(run(fmt::format("btrfs inspect-internal dump-tree -t 5 {} >{} 2>&1", img, out)) == 0);
  std::vector<std::string> keys;
  std::istringstream in(read_text(out));
  for (std::string line; std::getline(in, line);) {
    const auto item = line.find("\titem "), key = line.find(" key (");
    if (item == std::string::npos || key == std::string::npos) continue;
    const auto close = line.find(')', key);
    if (close != std::string::npos) keys.push_back(line.substr(key + 5, close - key - 4));
  }
  return keys;
}

// btrfs-progs lowmem false positive (6.2 and upstream at the time of writing): check_inode_extref()
// passes the inode's raw st_mode to find_dir_item(), which compares it with the BTRFS_FT_* type
// byte of the DIR_INDEX/DIR_ITEM, so every INODE_EXTREF entry that lowmem visits "mismatches", and
// that path prints nothing: the run ends with only "ERROR: errors found in fs roots". Whether lowmem
// visits the inode at all depends on the leaf layout (process_one_leaf skips an INODE_ITEM in the last
// slot of a leaf that check_inode_item's cross-leaf walk stopped on), so some kernel-made images
// with extrefs pass and others (kernel_extref_recipe below) fail. Original mode checks extrefs
// correctly and must always pass.
struct LowmemVerdict {
  int rc = 0;
  bool only_silent_fs_roots_error = false;  // exit 1 and no ERROR line but the fs-roots summary
  std::string log;
};

LowmemVerdict run_lowmem(const std::string& img, const std::string& log_path) {
  LowmemVerdict v;
  v.rc = run(fmt::format("btrfs check --mode=lowmem {} >{} 2>&1", img, log_path));
  v.log = read_text(log_path);
  int errors = 0, fs_roots = 0;
  std::istringstream in(v.log);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("ERROR:", 0) != 0) continue;
    ++errors;
    if (line == "ERROR: errors found in fs roots") ++fs_roots;
  }
  v.only_silent_fs_roots_error = v.rc == 1 && errors == 1 && fs_roots == 1;
  return v;
}

// One small namespace whose "many" inode spills into INODE_EXTREF and is visited by lowmem. The
// kernel and ubtrfs versions below must stay in step (same operations, same order, so same inode
// numbers and dir indexes).
const char* const kKernelExtrefRecipe =
    "cd {} && mkdir d1 d2 d1/sub && touch f1 d1/f2 $(printf 'L%.0s' $(seq 255)) && ln f1 d1/f1link && "
    "touch d2/many && for i in $(seq -f %05g 0 69); do ln d2/many d2/$(printf 'h%.0s' $(seq 250))$i || exit 1; "
    "done && ln -s d1/f2 s1";

void build_extref_namespace(Filesystem& fs) {
  const Caller root{0, 0, 0};
  auto d1 = must(fs.mkdir(1, "d1", 0755, root), "mkdir d1");
  auto d2 = must(fs.mkdir(1, "d2", 0755, root), "mkdir d2");
  auto sub = must(fs.mkdir(d1.st_ino, "sub", 0755, root), "mkdir sub");
  auto f1 = must(fs.create(1, "f1", 0644, root), "create f1");
  auto f2 = must(fs.create(d1.st_ino, "f2", 0644, root), "create f2");
  auto longname = must(fs.create(1, std::string(255, 'L'), 0644, root), "create L*255");
  must(fs.link(f1.st_ino, d1.st_ino, "f1link"), "link f1link");
  auto many = must(fs.create(d2.st_ino, "many", 0644, root), "create many");
  for (int i = 0; i < 70; ++i)
    must(fs.link(many.st_ino, d2.st_ino, std::string(250, 'h') + fmt::format("{:05}", i)), "link many");
  auto s1 = must(fs.symlink(1, "s1", "d1/f2", root), "symlink s1");
  for (auto ino : {d1.st_ino, d2.st_ino, sub.st_ino, f1.st_ino, f2.st_ino, longname.st_ino, many.st_ino, s1.st_ino})
    fs.forget(ino, 100);
}

// Makes `img` with mkfs.btrfs and runs kKernelExtrefRecipe on it through a kernel loop mount.
bool make_kernel_extref_image(const std::string& img) {
  if (run(fmt::format("mkfs.btrfs -q -f {} >/dev/null 2>&1", img)) != 0) return false;
  test::KernelMount km;
  bool ok = km.mount(img, false) == 0;
  if (ok) {
    const std::string script = km.mnt + ".sh";
    std::ofstream(script) << fmt::format(fmt::runtime(kKernelExtrefRecipe), km.mnt) << "\n";
    ok = run(fmt::format("sh {} >/dev/null 2>&1", script)) == 0;
    ::unlink(script.c_str());
    ok = km.try_unmount() && ok;
  }
  return ok;
}

// Whether the installed lowmem has the extref false positive: probed once on a kernel-made image.
bool lowmem_has_extref_false_positive() {
  static const bool present = [] {
    io::testing::TempFile img(256ull << 20);
    if (!make_kernel_extref_image(img.path())) return false;
    return run_lowmem(img.path(), "/tmp/ubtrfs-ns-lowmem-probe.log").only_silent_fs_roots_error;
  }();
  return present;
}

// lowmem must pass; the one failure tolerated is the known extref false positive, and only when
// the image has INODE_EXTREF items and the installed lowmem fails the same way on a kernel-made image.
void check_lowmem_clean(const std::string& img, const std::string& log_path) {
  const LowmemVerdict v = run_lowmem(img, log_path);
  if (v.rc == 0) {
    SUCCEED("lowmem clean");
    return;
  }
  INFO("lowmem output:\n" << v.log);
  CHECK(v.only_silent_fs_roots_error);
  const auto keys = fs_tree_keys(img);
  const bool has_extref =
      std::any_of(keys.begin(), keys.end(), [](const std::string& k) { return k.find("INODE_EXTREF") != std::string::npos; });
  CHECK(has_extref);
  CHECK(lowmem_has_extref_false_positive());
}

// Debug aid: UBTRFS_NS_SKIP="A,C" leaves groups of operations out (to bisect an oracle failure; group A
// is the INODE_EXTREF spill that trips the lowmem false positive described at run_lowmem).
bool step(char g) {
  const char* s = std::getenv("UBTRFS_NS_SKIP");
  return !s || !std::strchr(s, g);
}

void build_namespace(Filesystem& fs, uint64_t* orphan_ino) {
  const Caller me{1000, 1000, 0};
  const Caller root{0, 0, 0};
  auto d1 = must(fs.mkdir(1, "d1", 0755, me), "mkdir d1");
  CHECK(d1.st_nlink == 1);  // btrfs keeps directories at nlink 1
  auto d2 = must(fs.mkdir(1, "d2", 0750, root), "mkdir d2");
  auto sub = must(fs.mkdir(d1.st_ino, "sub", 0700, me), "mkdir sub");
  auto f1 = must(fs.create(1, "f1", 0644, me), "create f1");
  auto f2 = must(fs.create(d1.st_ino, "f2", 0600, me), "create f2");
  CHECK(err_of(fs.create(1, "f1", 0644, me)) == EEXIST);
  CHECK(err_of(fs.create(1, std::string(256, 'x'), 0644, me)) == ENAMETOOLONG);
  CHECK(err_of(fs.lookup(1, std::string(256, 'x'))) == ENAMETOOLONG);
  CHECK(err_of(fs.lookup(1, "nope")) == ENOENT);
  must(fs.create(1, std::string(255, 'L'), 0644, me), "create 255-byte name");

  // Hard links: same dir, other dir, and enough long names in one dir to need INODE_EXTREF.
  auto l1 = must(fs.link(f1.st_ino, d1.st_ino, "f1link"), "link");
  CHECK(l1.st_nlink == 2);
  CHECK(err_of(fs.link(d1.st_ino, 1, "dirlink")) == EPERM);
  auto many = must(fs.create(d2.st_ino, "many", 0644, root), "create many");
  for (int i = 0; i < (step('A') ? 70 : 0); ++i)
    must(fs.link(many.st_ino, d2.st_ino, std::string(250, 'h') + fmt::format("{:05}", i)), "link many");
  CHECK(must(fs.getattr(many.st_ino), "getattr many").st_nlink == (step('A') ? 71u : 1u));

  // Symlinks, special files.
  auto s1 = must(fs.symlink(1, "s1", "d1/f2", me), "symlink");
  CHECK(s1.st_size == 5);
  CHECK(must(fs.readlink(s1.st_ino), "readlink") == "d1/f2");
  if (step('B')) must(fs.symlink(d1.st_ino, "long", std::string(3000, 't'), me), "long symlink");
  CHECK(err_of(fs.symlink(1, "toolong", std::string(4096, 't'), me)) == ENAMETOOLONG);
  must(fs.mknod(1, "fifo", S_IFIFO | 0644, 0, me), "mkfifo");
  auto chr = must(fs.mknod(1, "null", S_IFCHR | 0666, makedev(1, 3), root), "mknod chr");
  CHECK(major(chr.st_rdev) == 1);
  CHECK(minor(chr.st_rdev) == 3);
  must(fs.mknod(d1.st_ino, "blk", S_IFBLK | 0600, makedev(8, 300), root), "mknod blk");
  if (step('B')) must(fs.mknod(1, "sock", S_IFSOCK | 0755, 0, me), "mknod sock");

  // Xattrs.
  must(fs.setxattr(f1.st_ino, "user.color", bytes("blue"), 0), "setxattr");
  must(fs.setxattr(d1.st_ino, "user.dir", bytes("yes"), 0), "setxattr dir");
  must(fs.setxattr(f2.st_ino, "trusted.t", bytes(""), 0), "setxattr empty");
  CHECK(err_of(fs.setxattr(f1.st_ino, "user.color", bytes("red"), XATTR_CREATE)) == EEXIST);
  CHECK(err_of(fs.setxattr(f1.st_ino, "user.none", bytes("red"), XATTR_REPLACE)) == ENODATA);
  must(fs.setxattr(f1.st_ino, "user.tmp", bytes("x"), 0), "setxattr tmp");
  must(fs.removexattr(f1.st_ino, "user.tmp"), "removexattr");
  CHECK(err_of(fs.getxattr(f1.st_ino, "user.tmp")) == ENODATA);

  // setattr: chmod, chown (drops suid), times.
  SetAttr a;
  a.mode = 04755;
  must(fs.setattr(f2.st_ino, a, me), "chmod");
  SetAttr c;
  c.uid = 1001;
  c.gid = 1001;
  auto after = must(fs.setattr(f2.st_ino, c, root), "chown");
  CHECK((after.st_mode & 07777) == 0755);
  SetAttr t;
  t.mtime = SetAttr::Time::kValue;
  t.mtime_value = {1600000000, 5};
  t.atime = SetAttr::Time::kNow;
  after = must(fs.setattr(f1.st_ino, t, me), "utimes");
  CHECK(after.st_mtim.tv_sec == 1600000000);
  CHECK(after.st_mtim.tv_nsec == 5);

  // Renames.
  must(fs.rename(d1.st_ino, "f1link", d1.st_ino, "renamed", 0), "rename in dir");
  if (step('C')) {
    must(fs.rename(d1.st_ino, "sub", d2.st_ino, "sub", 0), "move dir");
    CHECK(must(fs.lookup(sub.st_ino, ".."), "lookup ..").st_ino == d2.st_ino);
    CHECK(err_of(fs.rename(1, "d2", sub.st_ino, "inside", 0)) == EINVAL);
  }
  CHECK(err_of(fs.rmdir(1, "d2")) == ENOTEMPTY);
  CHECK(err_of(fs.unlink(1, "d2")) == EISDIR);
  CHECK(err_of(fs.rmdir(1, "f1")) == ENOTDIR);
  must(fs.create(1, "victim", 0644, me), "create victim");
  must(fs.create(1, "mover", 0640, me), "create mover");
  if (step('F')) {
    must(fs.rename(1, "mover", 1, "victim", 0), "rename over file");
    CHECK(err_of(fs.lookup(1, "mover")) == ENOENT);
  }
  CHECK(err_of(fs.rename(1, "victim", 1, "f1", RENAME_NOREPLACE)) == EEXIST);
  if (step('E')) {
    must(fs.rename(1, "victim", d1.st_ino, "f2", RENAME_EXCHANGE), "exchange");
    CHECK((must(fs.lookup(1, "victim"), "lookup exchanged").st_mode & 07777) == 0755);
  }
  CHECK(err_of(fs.rename(1, "f1", 1, "nothing", RENAME_EXCHANGE)) == ENOENT);
  must(fs.mkdir(1, "emptydir", 0755, me), "mkdir emptydir");
  CHECK(err_of(fs.rename(1, "f1", 1, "emptydir", 0)) == EISDIR);
  CHECK(err_of(fs.rename(1, "d1", 1, "f1", 0)) == ENOTDIR);
  CHECK(err_of(fs.rename(1, "d1", 1, "d2", 0)) == ENOTEMPTY);
  must(fs.mkdir(1, "emptydir2", 0700, me), "mkdir emptydir2");
  if (step('D')) must(fs.rename(1, "emptydir2", 1, "emptydir", 0), "rename dir over empty dir");
  must(fs.rename(1, "f1", 1, "f1", 0), "same-name rename");

  // Unlink of an open file: the inode lives (orphan) until the last forget queues its eviction.
  auto open_file = must(fs.create(1, "open_unlinked", 0644, me), "create open_unlinked");
  must(fs.unlink(1, "open_unlinked"), "unlink open file");
  auto still = must(fs.getattr(open_file.st_ino), "getattr unlinked");
  CHECK(still.st_nlink == 0);
  fs.forget(open_file.st_ino, 1);
  REQUIRE(fs.run_delayed_iputs());
  CHECK(err_of(fs.getattr(open_file.st_ino)) == ENOENT);
  // And one that stays open across the unmount: cleaned by the next mount.
  auto left = must(fs.create(1, "orphan_left", 0644, me), "create orphan_left");
  must(fs.unlink(1, "orphan_left"), "unlink orphan_left");
  *orphan_ino = left.st_ino;
  must(fs.rmdir(1, "emptydir"), "rmdir");

  // readdir: "." -> 1, ".." -> 2, then resuming at an entry's next_offset continues after it.
  std::vector<std::pair<std::string, uint64_t>> first;
  must(fs.readdir(1, 0, false, [&](const DirEntryOut& e) {
    first.emplace_back(std::string(e.name), e.next_offset);
    return first.size() < 5;
  }), "readdir");
  REQUIRE(first.size() == 5);
  CHECK(first[0].first == ".");
  CHECK(first[0].second == 1);
  CHECK(first[1].first == "..");
  CHECK(first[1].second == 2);
  std::vector<std::string> rest;
  must(fs.readdir(1, first[3].second, false, [&](const DirEntryOut& e) {
    rest.emplace_back(e.name);
    return true;
  }), "readdir resume");
  REQUIRE_FALSE(rest.empty());
  CHECK(rest.front() == first[4].first);

  // Forget every lookup the creations added (the kernel would on unmount).
  for (auto ino : {d1.st_ino, d2.st_ino, sub.st_ino, f1.st_ino, f2.st_ino, many.st_ino, s1.st_ino})
    fs.forget(ino, 100);
}

}  // namespace

TEST_CASE("namespace_on_image_is_check_clean_and_matches_kernel_view") {
  if (!have_btrfs_progs_as_root()) return;
  std::vector<std::string> makers{"btrfs"};
  if (std::getenv("UBTRFS_BIN")) makers.push_back("ubtrfs");
  for (const auto& maker : makers) {
    DYNAMIC_SECTION("mkfs." << maker) {
      io::testing::TempFile img(256ull << 20);
      const std::string mk = maker == "btrfs"
                                 ? fmt::format("mkfs.btrfs -q -f {} >/dev/null 2>&1", img.path())
                                 : fmt::format("{}/mkfs/mkfs.ubtrfs -q -f {} >/dev/null 2>&1", std::getenv("UBTRFS_BIN"), img.path());
      REQUIRE(run(mk) == 0);
      uint64_t orphan = 0;
      {
        auto fs = mount_namespace_image(img.path(), false);
        build_namespace(*fs, &orphan);
        must(fs->unmount(), "unmount");
      }
      // The orphan left open is legal on disk (nlink 0 with an ORPHAN_ITEM).
      CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-ns-check1.log 2>&1", img.path())) == 0);
      {
        auto fs = mount_namespace_image(img.path(), false);  // cleanup_orphans runs here
        CHECK(err_of(fs->getattr(orphan)) == ENOENT);
        must(fs->setxattr(1, "user.after", bytes("remount"), 0), "setxattr after remount");
        must(fs->unmount(), "unmount 2");
      }
      CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-ns-check.log 2>&1", img.path())) == 0);
      check_lowmem_clean(img.path(), "/tmp/ubtrfs-ns-check-lowmem.log");
      if (const char* keep = std::getenv("UBTRFS_NS_KEEP_IMAGE")) run(fmt::format("cp --sparse=always {} {}", img.path(), keep));

      std::map<std::string, Seen> ours, kernels;
      {
        auto fs = mount_namespace_image(img.path(), true);
        CHECK(err_of(fs->mkdir(1, "x", 0755, Caller{})) == EROFS);
        CHECK(err_of(fs->unlink(1, "f1")) == EROFS);
        walk_ubtrfs(*fs, 1, "", ours);
        must(fs->unmount(), "unmount ro");
      }
      {
        test::KernelMount km;
        REQUIRE(km.mount(img.path(), true) == 0);
        walk_kernel(km.mnt, kernels);
        km.unmount();
      }
      CHECK(ours.size() > 80);
      INFO("ubtrfs:\n" << describe(ours) << "kernel:\n" << describe(kernels));
      CHECK(ours == kernels);
    }
  }
}

// INODE_REF holds the first names of an inode in a directory until the next name would not fit in
// one leaf item (btrfs_insert_inode_ref -> EMLINK/EOVERFLOW), then names go to INODE_EXTREF items:
// the same operations through ubtrfs and through the kernel give the same fs-tree keys (so the same
// inode numbers, dir indexes, hashes and the same REF/EXTREF split), original-mode check passes on
// both, and lowmem gives both the same verdict (see run_lowmem for its extref false positive).
TEST_CASE("inode_extref_spill_matches_kernel_items_and_lowmem_verdict") {
  if (!have_btrfs_progs_as_root()) return;
  io::testing::TempFile ours(256ull << 20), kernels(256ull << 20);
  REQUIRE(run(fmt::format("mkfs.btrfs -q -f {} >/dev/null 2>&1", ours.path())) == 0);
  {
    auto fs = mount_namespace_image(ours.path(), false);
    build_extref_namespace(*fs);
    must(fs->unmount(), "unmount");
  }
  REQUIRE(make_kernel_extref_image(kernels.path()));

  const auto our_keys = fs_tree_keys(ours.path());
  const auto kernel_keys = fs_tree_keys(kernels.path());
  CHECK(std::count_if(our_keys.begin(), our_keys.end(),
                      [](const std::string& k) { return k.find("INODE_EXTREF") != std::string::npos; }) == 9);
  CHECK(our_keys == kernel_keys);

  CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-ns-extref-check.log 2>&1", ours.path())) == 0);
  CHECK(run(fmt::format("btrfs check {} >/tmp/ubtrfs-ns-extref-kcheck.log 2>&1", kernels.path())) == 0);
  const LowmemVerdict our_lowmem = run_lowmem(ours.path(), "/tmp/ubtrfs-ns-extref-lowmem.log");
  const LowmemVerdict kernel_lowmem = run_lowmem(kernels.path(), "/tmp/ubtrfs-ns-extref-klowmem.log");
  INFO("ours:\n" << our_lowmem.log << "kernel's:\n" << kernel_lowmem.log);
  CHECK(our_lowmem.rc == kernel_lowmem.rc);
  CHECK(our_lowmem.only_silent_fs_roots_error == kernel_lowmem.only_silent_fs_roots_error);
}

}  // namespace ubtrfs::fs
