// Unit tests of ubtrfs-stress's model (tools/stress): the extent-map file content against a
// plain byte vector, the namespace errno rules against the real filesystem under /tmp, whole
// seeded worker runs against /tmp (they must verify, replay identically, and notice damage done
// behind their back), the manifest, and --ops parsing.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "tools/stress/content.h"
#include "tools/stress/manifest.h"
#include "tools/stress/model.h"
#include "tools/stress/ops.h"
#include "tools/stress/prng.h"
#include "tools/stress/worker.h"

using namespace ubtrfs::stress;

namespace {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it at scope exit.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base ? base : "/tmp") + "/ubtrfs-stress-test.XXXXXX";
    REQUIRE(mkdtemp(templ.data()) != nullptr);
    path_ = templ;
  }
  ~ScratchDir() {
    nftw(path_.c_str(), [](const char* p, const struct stat*, int flag, struct FTW*) {
      return flag == FTW_DP ? rmdir(p) : unlink(p);
    }, 16, FTW_DEPTH | FTW_PHYS);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Byte-vector reference for FileContent.
struct NaiveFile {
  std::vector<uint8_t> bytes;
  void write(uint64_t off, uint64_t len, uint64_t seed) {
    if (bytes.size() < off + len) bytes.resize(off + len, 0);
    for (uint64_t i = 0; i < len; ++i) bytes[off + i] = pattern_byte(seed, off + i);
  }
  void truncate(uint64_t size) { bytes.resize(size, 0); }
  void punch(uint64_t off, uint64_t len) {
    for (uint64_t i = off; i < off + len && i < bytes.size(); ++i) bytes[i] = 0;
  }
};

// Runs a namespace call on the real directory, returning 0 or errno.
int real_errno(int ret) { return ret < 0 ? errno : 0; }

WorkerOptions small_options(const std::string& root, uint64_t seed, uint64_t nops) {
  WorkerOptions o;
  o.root = root;
  o.seed = seed;
  o.nops = nops;
  o.data_budget = 24ULL << 20;
  o.max_entries = 150;
  return o;
}

}  // namespace

TEST_CASE("fill_pattern agrees with pattern_byte at every alignment", "[stress][content]") {
  for (uint64_t off : {0ULL, 1ULL, 7ULL, 8ULL, 4093ULL, (1ULL << 40) + 3}) {
    std::vector<uint8_t> buf(37);
    fill_pattern(42, off, buf);
    for (size_t i = 0; i < buf.size(); ++i) REQUIRE(buf[i] == pattern_byte(42, off + i));
  }
}

TEST_CASE("FileContent matches a byte vector under random writes, truncates and punches", "[stress][content]") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    Prng prng(seed);
    FileContent model;
    NaiveFile naive;
    for (int step = 0; step < 300; ++step) {
      const uint64_t r = prng.below(10);
      const uint64_t off = prng.below(200000);
      const uint64_t len = prng.range(1, 30000);
      if (r < 5) {
        const uint64_t s = prng.next() | 1;
        model.write(off, len, s);
        naive.write(off, len, s);
      } else if (r < 7) {
        const uint64_t size = prng.below(220000);
        model.truncate(size);
        naive.truncate(size);
      } else if (r < 9) {
        model.punch(off, len);
        naive.punch(off, len);
      } else {
        const bool keep = prng.chance(0.5);
        model.fallocate(off, len, keep);
        if (!keep && naive.bytes.size() < off + len) naive.bytes.resize(off + len, 0);
      }
      REQUIRE(model.size() == naive.bytes.size());
      const uint64_t roff = prng.below(model.size() + 100);
      std::vector<uint8_t> got(prng.range(1, 50000));
      const size_t n = model.read(roff, got);
      const size_t want = roff >= naive.bytes.size() ? 0 : std::min<size_t>(got.size(), naive.bytes.size() - roff);
      REQUIRE(n == want);
      REQUIRE(std::equal(got.begin(), got.begin() + static_cast<long>(n), naive.bytes.begin() + static_cast<long>(roff)));
    }
    std::vector<uint8_t> all(model.size());
    REQUIRE(model.read(0, all) == naive.bytes.size());
    REQUIRE(all == naive.bytes);
    REQUIRE(model.data_bytes() <= model.size());
  }
}

TEST_CASE("Model namespace errnos match the real filesystem", "[stress][model]") {
  ScratchDir dir;
  Model m;
  const auto p = [&](const char* rel) { return dir / rel; };
  // Each line: the model call and the same call on the real directory must agree.
  const auto both = [&](int model_err, int real_err) { REQUIRE(model_err == real_err); };

  both(m.mkdir("a", 0755), real_errno(mkdir(p("a").c_str(), 0755)));
  both(m.mkdir("a/b", 0755), real_errno(mkdir(p("a/b").c_str(), 0755)));
  both(m.mkdir("e", 0755), real_errno(mkdir(p("e").c_str(), 0755)));
  both(m.create("a/f", 0644), real_errno(open(p("a/f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)));
  both(m.create("a/f", 0644), real_errno(open(p("a/f").c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644)));  // EEXIST
  both(m.mkdir("a", 0755), real_errno(mkdir(p("a").c_str(), 0755)));                                    // EEXIST
  both(m.link("a/f", "g"), real_errno(link(p("a/f").c_str(), p("g").c_str())));
  both(m.link("a/f", "g"), real_errno(link(p("a/f").c_str(), p("g").c_str())));  // EEXIST
  REQUIRE(m.inode(*m.lookup("g")).nlink == 2);
  both(m.symlink("s", "nowhere"), real_errno(symlink("nowhere", p("s").c_str())));

  // rename: the VFS trap checks and type clashes.
  both(m.rename("a", "a/b/c"), real_errno(rename(p("a").c_str(), p("a/b/c").c_str())));  // EINVAL
  both(m.rename("a", "a/b"), real_errno(rename(p("a").c_str(), p("a/b").c_str())));      // EINVAL
  both(m.rename("a/b", "a"), real_errno(rename(p("a/b").c_str(), p("a").c_str())));      // ENOTEMPTY
  both(m.rename("a/f", "a"), real_errno(rename(p("a/f").c_str(), p("a").c_str())));      // ENOTEMPTY (trap)
  both(m.rename("a/f", "e"), real_errno(rename(p("a/f").c_str(), p("e").c_str())));      // EISDIR
  both(m.rename("e", "g"), real_errno(rename(p("e").c_str(), p("g").c_str())));          // ENOTDIR
  both(m.rename("e", "a"), real_errno(rename(p("e").c_str(), p("a").c_str())));          // ENOTEMPTY
  both(m.rename("a/f", "g"), real_errno(rename(p("a/f").c_str(), p("g").c_str())));      // same inode: no-op
  REQUIRE(m.lookup("a/f"));
  both(m.rename("a/b", "e"), real_errno(rename(p("a/b").c_str(), p("e").c_str())));  // over an empty dir
  REQUIRE(!m.lookup("a/b"));
  REQUIRE(m.lookup("e"));
  both(m.rename("s", "a/f"), real_errno(rename(p("s").c_str(), p("a/f").c_str())));  // over a file
  REQUIRE(m.inode(*m.lookup("g")).nlink == 1);
  REQUIRE(m.inode(*m.lookup("a/f")).type == NodeType::kSymlink);

  both(m.unlink("e"), real_errno(unlink(p("e").c_str())));   // EISDIR
  both(m.rmdir("a"), real_errno(rmdir(p("a").c_str())));     // ENOTEMPTY
  both(m.rmdir("g"), real_errno(rmdir(p("g").c_str())));     // ENOTDIR
  both(m.unlink("zz"), real_errno(unlink(p("zz").c_str())));  // ENOENT
  both(m.unlink("a/f"), real_errno(unlink(p("a/f").c_str())));
  both(m.rmdir("a"), real_errno(rmdir(p("a").c_str())));
  REQUIRE(m.entries().size() == 3);  // "", "e", "g"
  REQUIRE(m.entries()[1].path == "e");
}

TEST_CASE("Model xattr flags", "[stress][model]") {
  Model m;
  REQUIRE(m.create("f", 0600) == 0);
  const InodeId f = *m.lookup("f");
  REQUIRE(m.setxattr(f, "user.a", "1", XATTR_REPLACE) == ENODATA);
  REQUIRE(m.setxattr(f, "user.a", "1", XATTR_CREATE) == 0);
  REQUIRE(m.setxattr(f, "user.a", "2", XATTR_CREATE) == EEXIST);
  REQUIRE(m.setxattr(f, "user.a", "3", XATTR_REPLACE) == 0);
  REQUIRE(m.inode(f).xattrs.at("user.a") == "3");
  REQUIRE(m.removexattr(f, "user.a") == 0);
  REQUIRE(m.removexattr(f, "user.a") == ENODATA);
}

TEST_CASE("FileContent copy_from matches a byte-vector copy at the same offset", "[stress][content]") {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    Prng prng(seed);
    FileContent a, b;
    NaiveFile na, nb;
    for (int step = 0; step < 200; ++step) {
      const uint64_t off = prng.below(200000), len = prng.range(1, 30000), s = prng.next() | 1;
      const bool to_a = prng.chance(0.5);
      (to_a ? a : b).write(off, len, s);
      (to_a ? na : nb).write(off, len, s);
      if (prng.chance(0.2)) {
        a.punch(off / 2, len);
        na.punch(off / 2, len);
      }
      const uint64_t coff = prng.below(a.size() + 1);
      const uint64_t n = std::min<uint64_t>(prng.range(0, 60000), a.size() - coff);
      b.copy_from(a, coff, n);
      if (nb.bytes.size() < coff + n) nb.bytes.resize(coff + n, 0);
      std::copy(na.bytes.begin() + static_cast<long>(coff), na.bytes.begin() + static_cast<long>(coff + n),
                nb.bytes.begin() + static_cast<long>(coff));
      std::vector<uint8_t> all(b.size());
      REQUIRE(b.read(0, all) == nb.bytes.size());
      REQUIRE(all == nb.bytes);
    }
  }
}

TEST_CASE("Seeded workers verify against the real filesystem", "[stress][worker]") {
  for (uint64_t seed : {1ULL, 2ULL, 3ULL, 99ULL}) {
    ScratchDir dir;
    WorkerStats stats{};
    Worker w(small_options(dir / "p0", seed, 1500), &stats);
    std::string error;
    REQUIRE(w.setup(&error));
    INFO("seed " << seed);
    REQUIRE(w.run());
    REQUIRE(stats.ops_done == 1500);
    REQUIRE(stats.failures == 0);
    REQUIRE(stats.expected_errors > 0);  // the errno paths were exercised
    uint64_t total = 0;
    for (uint64_t c : stats.counts) total += c;
    REQUIRE(total >= 1500);  // fsyncs after data ops count on top
    for (size_t k = 0; k < kNumOps; ++k) {
      INFO(op_name(static_cast<OpKind>(k)));
      if (default_op_weights()[k] == 0) continue;  // off by default (copy_range)
      REQUIRE(stats.counts[k] > 0);  // every op was drawn
    }
  }
}

TEST_CASE("copy_range verifies against the real filesystem", "[stress][worker]") {
  ScratchDir dir;
  WorkerStats stats{};
  WorkerOptions o = small_options(dir / "p0", 11, 1000);
  o.weights[static_cast<size_t>(OpKind::kCopyRange)] = 15;
  Worker w(o, &stats);
  std::string error;
  REQUIRE(w.setup(&error));
  REQUIRE(w.run());
  REQUIRE(stats.failures == 0);
  REQUIRE(stats.counts[static_cast<size_t>(OpKind::kCopyRange)] > 50);
}

TEST_CASE("The same seed replays the same tree", "[stress][worker]") {
  std::vector<std::string> trees[2];
  for (auto& tree : trees) {
    ScratchDir dir;
    WorkerStats stats{};
    Worker w(small_options(dir / "p0", 5, 800), &stats);
    std::string error;
    REQUIRE(w.setup(&error));
    REQUIRE(w.run());
    for (const Entry& e : w.model().entries()) {
      const Inode& ino = w.model().inode(e.id);
      tree.push_back(e.path + " " + node_type_name(e.type) + " " + std::to_string(ino.content.size()) + " " +
                     std::to_string(ino.mode) + " " + std::to_string(ino.xattrs.size()));
    }
  }
  REQUIRE(trees[0].size() > 10);
  REQUIRE(trees[0] == trees[1]);
}

TEST_CASE("The final verify notices damage done behind the model's back", "[stress][worker]") {
  const auto quiet = spdlog::get_level();
  spdlog::set_level(spdlog::level::off);
  ScratchDir dir;
  WorkerStats stats{};
  WorkerOptions o = small_options(dir / "p0", 11, 400);
  o.weights = *parse_op_list("creat=2,write=5,mkdir=1", nullptr);
  Worker w(o, &stats);
  std::string error;
  REQUIRE(w.setup(&error));
  for (int i = 0; i < 400; ++i) REQUIRE(w.step());
  REQUIRE(w.verify_tree());

  // Find a file with data and flip one byte of it.
  std::string victim;
  for (const Entry& e : w.model().entries()) {
    if (e.type == NodeType::kFile && w.model().inode(e.id).content.data_bytes() > 0) victim = e.path;
  }
  REQUIRE(!victim.empty());
  SECTION("a flipped byte") {
    std::vector<uint8_t> one(1);
    const int fd = open((dir / ("p0/" + victim)).c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    off_t off = lseek(fd, 0, SEEK_DATA);
    REQUIRE(pread(fd, one.data(), 1, off) == 1);
    one[0] ^= 0x5a;
    REQUIRE(pwrite(fd, one.data(), 1, off) == 1);
    close(fd);
  }
  SECTION("a removed name") { REQUIRE(unlink((dir / ("p0/" + victim)).c_str()) == 0); }
  SECTION("an extra name") { REQUIRE(mkdir((dir / "p0/intruder").c_str(), 0700) == 0); }
  SECTION("an xattr") { REQUIRE(setxattr((dir / ("p0/" + victim)).c_str(), "user.intruder", "x", 1, 0) == 0); }
  SECTION("a mode") { REQUIRE(chmod((dir / ("p0/" + victim)).c_str(), 0) == 0); }
  REQUIRE_FALSE(w.verify_tree());
  REQUIRE(stats.failures > 0);
  spdlog::set_level(quiet);
}

TEST_CASE("Manifests compare equal for the same tree and list differences", "[stress][manifest]") {
  ScratchDir dir;
  WorkerStats stats{};
  Worker w(small_options(dir / "p0", 3, 500), &stats);
  std::string error;
  REQUIRE(w.setup(&error));
  REQUIRE(w.run());

  std::vector<std::string> first, second;
  REQUIRE(build_manifest(dir.path(), &first, &error));
  REQUIRE(build_manifest(dir.path(), &second, &error));
  REQUIRE(first.size() == w.model().entries().size() + 1);  // plus DIR itself
  REQUIRE(first[0].starts_with(".\ttype=dir"));
  REQUIRE(compare_manifests(first, second).empty());

  const std::string file = dir.path() + ".manifest";
  REQUIRE(write_manifest(file, first, &error));
  std::vector<std::string> reread;
  REQUIRE(read_manifest(file, &reread, &error));
  unlink(file.c_str());
  REQUIRE(reread == first);

  std::string victim;
  for (const Entry& e : w.model().entries()) {
    if (e.type == NodeType::kFile && w.model().inode(e.id).content.size() > 0) victim = e.path;
  }
  REQUIRE(!victim.empty());
  const int fd = open((dir / ("p0/" + victim)).c_str(), O_WRONLY | O_APPEND);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, "x", 1) == 1);
  close(fd);
  REQUIRE(mkdir((dir / "p0/new").c_str(), 0700) == 0);
  REQUIRE(build_manifest(dir.path(), &second, &error));
  const auto diffs = compare_manifests(first, second);
  bool saw_data = false, saw_new = false;
  for (const auto& d : diffs) {
    saw_data = saw_data || (d.starts_with("differs: p0/" + victim + ":") && d.find("data ") != std::string::npos &&
                            d.find("size ") != std::string::npos);
    saw_new = saw_new || d == "unexpected: p0/new";
  }
  INFO(diffs.size() << " differences");
  REQUIRE(saw_data);
  REQUIRE(saw_new);
  REQUIRE(compare_manifests(second, first).size() == diffs.size());
}

TEST_CASE("--ops lists parse names and weights", "[stress][ops]") {
  std::string error;
  const auto w = parse_op_list("write,read=7", &error);
  REQUIRE(w);
  REQUIRE((*w)[static_cast<size_t>(OpKind::kWrite)] == default_op_weights()[static_cast<size_t>(OpKind::kWrite)]);
  REQUIRE((*w)[static_cast<size_t>(OpKind::kRead)] == 7);
  REQUIRE((*w)[static_cast<size_t>(OpKind::kCreat)] == 0);
  REQUIRE_FALSE(parse_op_list("write,bogus", &error));
  REQUIRE(error.find("bogus") != std::string::npos);
  REQUIRE_FALSE(parse_op_list("write=x", &error));
  REQUIRE_FALSE(parse_op_list("write=0", &error));
  REQUIRE_FALSE(parse_op_list("", &error));
  REQUIRE(op_from_name("punch") == OpKind::kPunch);
}
