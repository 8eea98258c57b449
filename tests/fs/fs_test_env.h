// Helpers shared by the fs unit tests: skip gates for the oracles, fresh images (mkfs.ubtrfs in
// memory, mkfs.btrfs in a file), mounts of them, the small Filesystem steps every test repeats
// (create, write, read back, commit), the btrfs check oracle, and an in-memory FS tree.
//
// Header-only, and one definition for all: the test binaries are unity builds (batches of .cpp
// files compiled as one), so a helper that two *_test.cpp files each define in their anonymous
// namespace under the same name breaks the build as soon as the two land in one batch. A helper
// more than one test file needs belongs here; a file's own helpers need names no other file uses.
//
// Failures: helpers that REQUIRE stop the test at the first failure (a passing REQUIRE counts as an
// assertion); the `_or_fail` ones FAIL instead (nothing counted when they succeed); CHECK records a
// failure and the test goes on.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fs/file_extent.h"
#include "fs/filesystem.h"
#include "fs/mount_options.h"
#include "fs/transaction.h"
#include "io/block_device.h"
#include "io/status.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/tree/tree_test_env.h"

namespace ubtrfs::test {

// ---- skip gates -------------------------------------------------------------------------------
// A test that needs an oracle (a tool, root, loop devices) starts with `if (!gate()) return;`.

// True when `present`; otherwise FAIL(`required`) when UBTRFS_REQUIRE_ORACLES=1 (CI), else
// WARN(`skipped`) and false: the test returns, skipped.
inline bool oracle_gate(bool present, const std::string& required, const std::string& skipped) {
  if (present) return true;
  if (oracles_required()) FAIL(required);
  WARN(skipped);
  return false;
}

// mkfs.btrfs is installed.
inline bool have_mkfs_btrfs() {
  return oracle_gate(have_tool("mkfs.btrfs"), "mkfs.btrfs required: UBTRFS_REQUIRE_ORACLES=1",
                     "skipped: needs mkfs.btrfs");
}

// btrfs-progs (mkfs.btrfs and btrfs) are installed.
inline bool have_btrfs_progs() {
  return oracle_gate(have_tool("mkfs.btrfs") && have_tool("btrfs"), "btrfs-progs required: UBTRFS_REQUIRE_ORACLES=1",
                     "skipped: needs btrfs-progs");
}

// mkfs.btrfs and btrfs are installed and the test runs as root (a kernel mount of the image).
inline bool have_btrfs_progs_as_root() {
  return oracle_gate(have_tool("mkfs.btrfs") && have_tool("btrfs") && ::geteuid() == 0,
                     "mkfs.btrfs/btrfs (as root) required: UBTRFS_REQUIRE_ORACLES=1",
                     "skipped: needs mkfs.btrfs, btrfs and root");
}

// As have_btrfs_progs_as_root, and loop devices exist (a kernel loop mount of an image file).
inline bool have_kernel_loop_mount() {
  return oracle_gate(have_tool("mkfs.btrfs") && have_tool("btrfs") && ::geteuid() == 0 &&
                         std::filesystem::exists("/dev/loop-control"),
                     "mkfs.btrfs, btrfs, root and loop devices required: UBTRFS_REQUIRE_ORACLES=1",
                     "skipped: needs mkfs.btrfs, btrfs, root and loop devices");
}

// mkfs.ubtrfs of this build (mkfs_binary()), or "" after the gate (FAIL or WARN): the test returns.
inline std::string mkfs_ubtrfs_or_skip() {
  std::string mkfs = mkfs_binary();
  oracle_gate(!mkfs.empty(), "mkfs.ubtrfs not built: UBTRFS_REQUIRE_ORACLES=1", "skipped: mkfs.ubtrfs not built");
  return mkfs;
}

// ---- fresh images -----------------------------------------------------------------------------

// Superblock copies at 64 KiB and 64 MiB: room for both.
inline constexpr uint64_t kFreshImageSize = 128 * kMiB;

// A fresh `mkfs.ubtrfs -q ARGS` image of `size` bytes in memory (nullptr when mkfs.ubtrfs is not
// built or fails).
inline std::unique_ptr<io::MemoryDevice> fresh_image(const std::string& mkfs_args = "",
                                                     uint64_t size = kFreshImageSize) {
  const std::string mkfs = mkfs_binary();
  if (mkfs.empty()) return nullptr;
  io::testing::TempFile img(size);
  if (run(mkfs + " -q " + mkfs_args + " " + img.path()) != 0) return nullptr;
  auto dev = std::make_unique<io::MemoryDevice>(size);
  std::ifstream in(img.path(), std::ios::binary);
  in.read(reinterpret_cast<char*>(dev->bytes().data()), static_cast<std::streamsize>(size));
  return in ? std::move(dev) : nullptr;
}

// `mkfs.btrfs -q -f [ARGS] IMG`: REQUIREs it succeeds (the caller has passed a gate).
inline void mkfs_btrfs(const std::string& img, const std::string& args = "") {
  REQUIRE(run(fmt::format("mkfs.btrfs -q -f {}{}", args.empty() ? "" : args + " ", img)) == 0);
}

// A fresh `mkfs.btrfs -q -f [ARGS]` image in `img` for a test judged by btrfs-progs: false when
// have_btrfs_progs() skips the test.
inline bool make_btrfs_image(const io::testing::TempFile& img, const std::string& args = "") {
  if (!have_btrfs_progs()) return false;
  mkfs_btrfs(img.path(), args);
  return true;
}

// ---- mounts -----------------------------------------------------------------------------------

// The kernel oracle's mount of an image file (`mount -o loop[,ro]`) on a fresh directory under /tmp.
// The destructor unmounts (which frees the loop device) and removes the directory, so a test that
// fails — a REQUIRE, an exception — between mount() and unmount() leaves nothing mounted behind.
struct KernelMount {
  std::string mnt;
  bool mounted = false;
  KernelMount() {
    char tmpl[] = "/tmp/ubtrfs-kmnt-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    mnt = tmpl;
  }
  KernelMount(const KernelMount&) = delete;
  KernelMount& operator=(const KernelMount&) = delete;
  ~KernelMount() {
    if (mounted) run(fmt::format("umount {}", mnt));
    ::rmdir(mnt.c_str());
  }
  // `mount -o loop` (`,ro` when `read_only`) of `img` on mnt; the command's exit status (0: mounted),
  // its output in `*out` when given.
  int mount(const std::string& img, bool read_only, std::string* out = nullptr) {
    const int rc = run(fmt::format("mount -o loop{} {} {}", read_only ? ",ro" : "", img, mnt), out);
    mounted = rc == 0;
    return rc;
  }
  // Unmounts now; REQUIREs it succeeds (the destructor's unmount is only the cleanup on failure).
  void unmount() {
    REQUIRE(run(fmt::format("umount {}", mnt)) == 0);
    mounted = false;
  }
  // Unmounts now; true when it succeeded (for helpers that report failure by their result).
  bool try_unmount() {
    mounted = run(fmt::format("umount {}", mnt)) != 0;
    return !mounted;
  }
};

// The image file at `path` mounted through Filesystem::mount (with `o`, its path set here, and
// `m`). REQUIREs the mount succeeds; the error is the INFO.
inline std::unique_ptr<fs::Filesystem> mount_file(const std::string& path, const fs::MountOptions& m = {},
                                                  fs::OpenOptions o = {}) {
  o.path = path;
  auto r = fs::Filesystem::mount(o, m);
  INFO("mount " << path << ": " << (r ? "" : r.error().message));
  REQUIRE(r);
  return std::move(*r);
}

// mount_file with no periodic commit (commit=300 s): the test decides when commits happen.
inline std::unique_ptr<fs::Filesystem> mount_manual_commits(const std::string& path, fs::MountOptions m = {},
                                                            fs::OpenOptions o = {}) {
  m.commit_interval_s = 300;
  return mount_file(path, m, std::move(o));
}

// As mount_file, but a failed mount FAILs with its error (no assertion counted on success).
inline std::unique_ptr<fs::Filesystem> mount_file_or_fail(const std::string& path, const fs::MountOptions& m = {},
                                                          fs::OpenOptions o = {}) {
  o.path = path;
  auto r = fs::Filesystem::mount(o, m);
  if (!r) FAIL("mount " << path << ": " << r.error().message);
  return std::move(*r);
}

// OpenOptions for a filesystem on the caller's device `dev` ("memory-image"), which the mount does
// not own: `dev` must outlive it.
inline fs::OpenOptions device_options(io::BlockDevice& dev) {
  fs::OpenOptions o;
  o.path = "memory-image";
  o.device = std::shared_ptr<io::BlockDevice>(std::shared_ptr<void>(), &dev);  // not owned
  return o;
}

// The filesystem on `dev` (device_options) as the fuzz targets mount it: read-only when `ro`, no
// writeback thread, no periodic commit, noatime (a listing writes nothing), and no log replay when
// `nologreplay`. The mount's result, unchecked.
inline Result<std::unique_ptr<fs::Filesystem>> mount_device(io::BlockDevice& dev, bool ro, bool nologreplay = false) {
  fs::OpenOptions o = device_options(dev);
  o.read_only = ro;
  o.writeback.enabled = false;
  o.nologreplay = nologreplay;
  fs::MountOptions m;
  m.read_only = ro;
  m.nologreplay = nologreplay;
  m.commit_interval_s = 300;
  m.atime = fs::MountOptions::Atime::kNoatime;
  return fs::Filesystem::mount(o, m);
}

// ---- results and bytes ------------------------------------------------------------------------

// The errno of a failed operation, 0 on success.
inline int err_of(const Status& s) { return s ? 0 : s.error().err; }
template <class T>
int err_of(const Result<T>& r) {
  return r ? 0 : r.error().err;
}

// The value of `r`, or FAIL(`what`: its error).
template <class T>
T must(Result<T> r, const char* what) {
  if (!r) FAIL(what << ": " << r.error().message);
  return std::move(*r);
}
// `s` succeeded, or FAIL(`what`: its error).
inline void must(const Status& s, const char* what) {
  if (!s) FAIL(what << ": " << s.error().message);
}

inline std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The bytes of a plain on-disk struct `v` (an item body as the tree stores it).
template <class T>
std::span<const uint8_t> bytes_of(const T& v) {
  return {reinterpret_cast<const uint8_t*>(&v), sizeof(T)};
}

// `n` deterministic bytes (seed + 7 i + i / 4096): every sector differs from its neighbours.
inline std::vector<uint8_t> seeded_bytes(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + i / 4096);
  return v;
}

// `data` written into the model `model` of a file at `off` (grown with zeros as a write grows it).
inline void model_write(std::vector<uint8_t>& model, uint64_t off, const std::vector<uint8_t>& data) {
  if (model.size() < off + data.size()) model.resize(off + data.size(), 0);
  std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
}

// The whole content of a file of the host (a kernel mount's), empty when it cannot be read.
inline std::vector<uint8_t> read_host_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// ---- Filesystem steps (each REQUIREs it succeeds) ---------------------------------------------

// Creates regular file `name` (0644) in directory `parent`; returns its FUSE inode number.
inline uint64_t create_file(fs::Filesystem& fs, uint64_t parent, const std::string& name) {
  auto st = fs.create(parent, name, 0100644, fs::Caller{});
  INFO("create " << name << ": " << (st ? "" : st.error().message));
  REQUIRE(st);
  return st->st_ino;
}


// Writes all of `data` at `off` of inode `ino`.
inline void write_all(fs::Filesystem& fs, uint64_t ino, uint64_t off, const std::vector<uint8_t>& data) {
  auto r = fs.write(ino, off, data);
  INFO("write ino " << ino << " at " << off << ": " << (r ? "" : r.error().message));
  REQUIRE(r);
  REQUIRE(*r == data.size());
}

// Creates `name` (0644) in the root directory with `data`; returns its inode (the caller forgets it).
inline uint64_t make_file(fs::Filesystem& f, const std::string& name, const std::vector<uint8_t>& data) {
  const uint64_t ino = create_file(f, kRootIno, name);
  write_all(f, ino, 0, data);
  return ino;
}

// The whole content of inode `ino` (its st_size bytes), read `chunk` bytes at a time.
inline std::vector<uint8_t> read_whole(fs::Filesystem& fs, uint64_t ino, size_t chunk) {
  auto st = fs.getattr(ino);
  REQUIRE(st);
  std::vector<uint8_t> out(static_cast<size_t>(st->st_size));
  size_t off = 0;
  while (off < out.size()) {
    auto r = fs.read(ino, off, std::span<uint8_t>(out.data() + off, std::min<size_t>(out.size() - off, chunk)));
    REQUIRE(r);
    if (*r == 0) break;
    off += *r;
  }
  REQUIRE(off == out.size());
  return out;
}

// Commits the running transaction now.
inline void commit_now(fs::Filesystem& fs) { REQUIRE(fs.info().transactions().commit()); }

// The file extents of inode `ino` (objectid = FUSE number in subvolume 5) in the FS tree.
inline std::vector<fs::FileExtent> extents_of(fs::Filesystem& fs, uint64_t ino) {
  auto rec = fs.info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  auto e = fs::find_file_extents(*(*rec)->tree, fs.info().params(), ino, 0, UINT64_MAX);
  REQUIRE(e);
  return *e;
}

// ---- the btrfs check oracle -------------------------------------------------------------------

// `btrfs check --readonly` finds nothing (a failure is recorded, the test goes on).
inline void check_clean(const std::string& img) {
  std::string out;
  const int rc = run(fmt::format("btrfs check --readonly {}", img), &out);
  INFO("btrfs check: " << out);
  CHECK(rc == 0);
}

// btrfs check in its three modes (original, lowmem, data checksums) finds nothing.
inline void btrfs_check_clean(const std::string& img) {
  for (const char* mode : {"", "--mode=lowmem", "--check-data-csum"}) {
    std::string out;
    const int rc = run(fmt::format("btrfs check --readonly {} {}", mode, img), &out);
    INFO("btrfs check " << mode << ":\n" << out);
    REQUIRE(rc == 0);
    REQUIRE(out.find("ERROR") == std::string::npos);
  }
}

// ---- an FS tree in memory ---------------------------------------------------------------------

// An empty FS tree (subvolume 5) over a TreeEnv of 4 KiB nodes, holding only the root directory's
// INODE_ITEM (256): the tree-checker refuses an empty FS tree. Setup REQUIREs each step.
struct FsTree {
  TreeEnv env{4096};
  TreeRoot root{env.ctx, kFsTreeObjectid};
  TreeHandle h = env.handle();
  FsTree() {
    REQUIRE(create_empty_tree(h, root));
    add_inode(256, S_IFDIR | 0755);
  }
  // An INODE_ITEM with `mode`, nlink 1, of this transaction. Refs of an inode must follow its
  // INODE_ITEM in the leaf (tree-checker check_prev_ino).
  void add_inode(uint64_t objectid, uint32_t mode) {
    InodeItem ii{};
    ii.mode = mode;
    ii.nlink = 1;
    ii.generation = h.transid;
    ii.transid = h.transid;
    REQUIRE(insert_item(h, root, Key{objectid, kInodeItemKey, 0}, bytes_of(ii)));
  }
};

}  // namespace ubtrfs::test
