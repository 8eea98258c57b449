// Concurrency of the whole Filesystem facade on a real image, judged by per-thread models and the
// oracles. Four threads each work on the files of their own directory (create, random writes,
// read-back against the model, truncate, fallocate, punch, rename, unlink + forget (eviction),
// link, setxattr/getxattr) while two more threads write and verify disjoint ranges of one shared
// file (their ranges meet inside a sector, so both read-modify-write it under the inode lock).
// Commits run all the time: the commit thread (commit=1s), dirty-metadata-triggered commits (a
// 2 MiB cache forces eviction and early commits) and explicit fsyncs. Afterwards the image must be
// `btrfs check` clean (original, lowmem, --check-data-csum) and the kernel must read every name,
// content and xattr equal to the models.
//
// Rules named here: concurrent_operations_match_models_and_image_is_check_clean.
// Needs root, loop devices, mkfs.btrfs and btrfs: otherwise WARN and skip, or FAIL when
// UBTRFS_REQUIRE_ORACLES=1. Sizes shrink under sanitizers (stress_scale()).
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/tree/tree_test_env.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::btrfs_check_clean;
using test::have_kernel_loop_mount;
using test::kRootIno;
using test::mkfs_btrfs;
using test::read_host_file;
using test::run;

namespace stdfs = std::filesystem;
using io::testing::pattern;
using io::testing::TempFile;

struct ModelInode {
  uint64_t ino = 0;
  std::vector<uint8_t> content;
  std::map<std::string, std::vector<uint8_t>> xattrs;
  uint32_t nlink = 1;
  uint64_t lookups = 1;
};

// One private-files worker: its directory, its names, its model. Errors are collected (Catch2
// assertions are not thread-safe) and stop the worker.
class PrivateWorker {
 public:
  PrivateWorker(Filesystem& fs, int index, uint64_t dir_ino, int ops)
      : fs_(fs), index_(index), dir_(dir_ino), ops_(ops), rng_(1000 + index) {}

  void run() {
    for (int i = 0; i < ops_ && error.empty(); ++i) step(i);
  }

  std::string error;
  std::map<std::string, std::shared_ptr<ModelInode>> names;

 private:
  template <class R>
  bool ok(const R& r, const std::string& what) {
    if (r) return true;
    if (error.empty()) error = fmt::format("thread {}: {}: {}", index_, what, r.error().message);
    return false;
  }
  void mismatch(const std::string& what) {
    if (error.empty()) error = fmt::format("thread {}: {}", index_, what);
  }
  uint64_t rnd(uint64_t n) { return n ? rng_() % n : 0; }
  std::shared_ptr<ModelInode> pick(std::string* name = nullptr) {
    if (names.empty()) return nullptr;
    auto it = names.begin();
    std::advance(it, static_cast<long>(rnd(names.size())));
    if (name) *name = it->first;
    return it->second;
  }
  std::string fresh_name() { return fmt::format("f{}", next_name_++); }

  // The inode lost a name; at nlink 0 the kernel would forget it: eviction runs here.
  void drop_link(const std::shared_ptr<ModelInode>& m) {
    if (--m->nlink == 0) fs_.forget(m->ino, m->lookups);
  }

  void step(int i) {
    const uint64_t op = rnd(100);
    std::string name;
    auto m = pick(&name);
    if (!m || (op < 5 && names.size() < 8)) {
      name = fresh_name();
      auto st = fs_.create(dir_, name, 0100644, Caller{});
      if (!ok(st, "create " + name)) return;
      auto n = std::make_shared<ModelInode>();
      n->ino = st->st_ino;
      names[name] = n;
      return;
    }
    if (op < 35) {  // write
      const uint64_t off = rnd(384 << 10), len = 1 + rnd(64 << 10);
      const auto data = pattern(len, static_cast<uint32_t>(index_ * 1000003 + i));
      auto r = fs_.write(m->ino, off, data);
      if (!ok(r, fmt::format("write {} at {} len {}", name, off, len))) return;
      if (*r != len) return mismatch(fmt::format("write {} returned {} of {}", name, *r, len));
      if (m->content.size() < off + len) m->content.resize(off + len, 0);
      std::copy(data.begin(), data.end(), m->content.begin() + static_cast<std::ptrdiff_t>(off));
    } else if (op < 55) {  // read back
      const uint64_t off = rnd(m->content.size() + 4096), len = 1 + rnd(96 << 10);
      std::vector<uint8_t> buf(len);
      auto r = fs_.read(m->ino, off, buf);
      if (!ok(r, fmt::format("read {} at {} len {}", name, off, len))) return;
      const uint64_t want = off >= m->content.size() ? 0 : std::min<uint64_t>(len, m->content.size() - off);
      if (*r != want) return mismatch(fmt::format("read {} at {}: {} bytes, model {}", name, off, *r, want));
      for (uint64_t x = 0; x < want; ++x)
        if (buf[x] != m->content[off + x])
          return mismatch(fmt::format("read {} (ino {}): byte {} is {:#x}, model {:#x}", name, m->ino, off + x,
                                      buf[x], m->content[off + x]));
    } else if (op < 60) {  // truncate
      SetAttr a;
      a.size = rnd(320 << 10);
      auto r = fs_.setattr(m->ino, a, Caller{});
      if (!ok(r, fmt::format("truncate {} to {}", name, *a.size))) return;
      m->content.resize(*a.size, 0);
    } else if (op < 65) {  // preallocate
      const int mode = rnd(2) ? FALLOC_FL_KEEP_SIZE : 0;
      const uint64_t off = rnd(384 << 10), len = 1 + rnd(128 << 10);
      if (!ok(fs_.fallocate(m->ino, mode, off, len), fmt::format("fallocate {} mode {}", name, mode))) return;
      if (mode == 0 && off + len > m->content.size()) m->content.resize(off + len, 0);
    } else if (op < 70) {  // punch
      const uint64_t off = rnd(m->content.size() + 1), len = 1 + rnd(100 << 10);
      if (!ok(fs_.fallocate(m->ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len), "punch " + name)) return;
      const uint64_t end = std::min<uint64_t>(off + len, m->content.size());
      for (uint64_t x = off; x < end; ++x) m->content[x] = 0;
    } else if (op < 75) {  // rename, maybe over another name
      std::string target = rnd(3) == 0 ? std::string() : fresh_name();
      std::shared_ptr<ModelInode> victim;
      if (target.empty()) victim = pick(&target);
      if (victim == m) return;  // both names of one inode: rename is a no-op, skip it
      if (!ok(fs_.rename(dir_, name, dir_, target, 0), fmt::format("rename {} -> {}", name, target))) return;
      names.erase(name);
      names[target] = m;
      if (victim) drop_link(victim);
    } else if (op < 80) {  // unlink
      if (!ok(fs_.unlink(dir_, name), "unlink " + name)) return;
      names.erase(name);
      drop_link(m);
    } else if (op < 85) {  // link
      const std::string target = fresh_name();
      auto st = fs_.link(m->ino, dir_, target);
      if (!ok(st, fmt::format("link {} -> {}", name, target))) return;
      m->nlink++;
      m->lookups++;
      names[target] = m;
    } else if (op < 93) {  // setxattr
      const std::string key = fmt::format("user.k{}", rnd(4));
      const auto value = pattern(1 + rnd(200), static_cast<uint32_t>(i + 7 * index_));
      if (!ok(fs_.setxattr(m->ino, key, value, 0), "setxattr " + key + " on " + name)) return;
      m->xattrs[key] = value;
    } else if (op < 97) {  // getxattr
      if (m->xattrs.empty()) return;
      auto it = m->xattrs.begin();
      std::advance(it, static_cast<long>(rnd(m->xattrs.size())));
      auto v = fs_.getxattr(m->ino, it->first);
      if (!ok(v, "getxattr " + it->first + " on " + name)) return;
      if (*v != it->second) mismatch(fmt::format("getxattr {} on {}: value differs", it->first, name));
    } else if (op < 99) {  // size
      auto st = fs_.getattr(m->ino);
      if (!ok(st, "getattr " + name)) return;
      if (static_cast<uint64_t>(st->st_size) != m->content.size())
        mismatch(fmt::format("{}: size {}, model {}", name, st->st_size, m->content.size()));
    } else {
      ok(fs_.fsync(m->ino, false), "fsync " + name);
    }
  }

  Filesystem& fs_;
  int index_;
  uint64_t dir_;
  int ops_;
  std::mt19937_64 rng_;
  uint64_t next_name_ = 0;
};

// A writer of its own range [base, base + len) of the shared file.
struct SharedWorker {
  Filesystem& fs;
  uint64_t ino, base, len;
  int index, ops;
  std::vector<uint8_t> model;  // the range's content
  std::string error;

  void run() {
    std::mt19937_64 rng(77 + index);
    for (int i = 0; i < ops && error.empty(); ++i) {
      const uint64_t off = rng() % len, n = 1 + rng() % std::min<uint64_t>(len - off, 40000);
      if (rng() % 2) {
        const auto data = pattern(n, static_cast<uint32_t>(5000000 + index * 100000 + i));
        auto r = fs.write(ino, base + off, data);
        if (!r || *r != n) {
          error = fmt::format("shared {}: write at {}: {}", index, base + off, r ? "short" : r.error().message);
          return;
        }
        std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
      } else {
        std::vector<uint8_t> buf(n);
        auto r = fs.read(ino, base + off, buf);
        if (!r || *r != n) {
          error = fmt::format("shared {}: read at {}: {}", index, base + off, r ? "short" : r.error().message);
          return;
        }
        for (uint64_t x = 0; x < n; ++x)
          if (buf[x] != model[off + x]) {
            error = fmt::format("shared {}: byte {} is {:#x}, model {:#x}", index, base + off + x, buf[x],
                                model[off + x]);
            return;
          }
      }
      if (rng() % 100 == 0) {
        if (auto st = fs.fsync(ino, false); !st) error = fmt::format("shared {}: fsync: {}", index, st.error().message);
      }
    }
  }
};

}  // namespace

TEST_CASE("concurrent_operations_match_models_and_image_is_check_clean", "[fs][concurrency][oracle]") {
  if (!have_kernel_loop_mount()) return;
  TempFile img(256ull << 20);
  mkfs_btrfs(img.path(), "-n 4096");
  const double scale = test::stress_scale();
  const int private_ops = std::max(50, static_cast<int>(1500 * scale));
  const int shared_ops = std::max(50, static_cast<int>(1500 * scale));
  constexpr int kPrivate = 4;
  constexpr uint64_t kRange = 300001;  // not sector-aligned: the two ranges share a sector

  std::vector<std::unique_ptr<PrivateWorker>> workers;
  std::vector<SharedWorker> shared;
  std::vector<uint64_t> dir_inos;
  CommitStats stats;
  {
    OpenOptions o;
    o.path = img.path();
    o.cache_bytes = 2ull << 20;  // eviction and dirty-triggered commits all the time
    MountOptions mo;
    mo.commit_interval_s = 1;
    auto mounted = Filesystem::mount(o, mo);
    INFO("mount: " << (mounted ? "" : mounted.error().message));
    REQUIRE(mounted);
    Filesystem& fs = **mounted;

    for (int t = 0; t < kPrivate; ++t) {
      auto d = fs.mkdir(kRootIno, fmt::format("t{}", t), 040755, Caller{});
      REQUIRE(d);
      dir_inos.push_back(d->st_ino);
      workers.push_back(std::make_unique<PrivateWorker>(fs, t, d->st_ino, private_ops));
    }
    auto sf = fs.create(kRootIno, "shared", 0100644, Caller{});
    REQUIRE(sf);
    SetAttr grow;
    grow.size = 2 * kRange;
    REQUIRE(fs.setattr(sf->st_ino, grow, Caller{}));
    for (int k = 0; k < 2; ++k)
      shared.push_back(SharedWorker{fs, static_cast<uint64_t>(sf->st_ino), k * kRange, kRange, k, shared_ops,
                                    std::vector<uint8_t>(kRange, 0), {}});

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    for (auto& s : shared) threads.emplace_back([&s] { s.run(); });
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (auto& w : workers) CHECK(w->error == "");
    for (auto& s : shared) CHECK(s.error == "");
    stats = fs.info().transactions().stats();
    INFO("ran " << secs << " s, " << stats.commits << " commits");
    REQUIRE(stats.aborted == 0);
    // Commits really ran while the workers did (periodic, dirty-triggered and fsync commits).
    REQUIRE(stats.commits >= 3);
    auto um = fs.unmount();
    INFO("unmount: " << (um ? "" : um.error().message));
    REQUIRE(um);
  }
  for (auto& w : workers) REQUIRE(w->error == "");
  for (auto& s : shared) REQUIRE(s.error == "");

  btrfs_check_clean(img.path());

  test::KernelMount km;
  const std::string& mnt = km.mnt;
  std::string out;
  const int rc = km.mount(img.path(), true, &out);
  INFO("kernel mount: " << out);
  REQUIRE(rc == 0);
  std::vector<std::string> problems;
  for (int t = 0; t < kPrivate; ++t) {
    const std::string dir = fmt::format("{}/t{}", mnt, t);
    std::set<std::string> on_disk, model;
    for (const auto& e : stdfs::directory_iterator(dir)) on_disk.insert(e.path().filename().string());
    for (const auto& [name, m] : workers[t]->names) {
      model.insert(name);
      const std::string path = dir + "/" + name;
      if (read_host_file(path) != m->content) problems.push_back(fmt::format("{}: content differs", path));
      struct stat sb {};
      if (::stat(path.c_str(), &sb) != 0 || sb.st_nlink != m->nlink || sb.st_size != static_cast<off_t>(m->content.size()))
        problems.push_back(fmt::format("{}: nlink {} size {}, model {} {}", path, sb.st_nlink, sb.st_size, m->nlink,
                                       m->content.size()));
      for (const auto& [key, value] : m->xattrs) {
        std::vector<uint8_t> got(4096);
        const ssize_t n = ::getxattr(path.c_str(), key.c_str(), got.data(), got.size());
        got.resize(n < 0 ? 0 : static_cast<size_t>(n));
        if (n < 0 || got != value) problems.push_back(fmt::format("{}: xattr {} differs", path, key));
      }
    }
    if (on_disk != model) problems.push_back(fmt::format("{}: {} names on disk, {} in the model", dir, on_disk.size(),
                                                         model.size()));
  }
  const auto sh = read_host_file(mnt + "/shared");
  std::vector<uint8_t> want = shared[0].model;
  want.insert(want.end(), shared[1].model.begin(), shared[1].model.end());
  if (sh != want) problems.push_back(fmt::format("shared: {} bytes, content differs from the models", sh.size()));
  km.unmount();
  for (const auto& p : problems) UNSCOPED_INFO(p);
  REQUIRE(problems.empty());
}

}  // namespace ubtrfs::fs
