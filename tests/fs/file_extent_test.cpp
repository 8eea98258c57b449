// File extents: btrfs_drop_extents cases (inside, left/right trims, middle split) and a randomized
// model of a file's sector -> disk mapping, checking the items, the data ref counts and nbytes.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <tuple>

#include "fs/file_extent.h"
#include "tree/ctree.h"
#include "../tree/tree_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

namespace {

constexpr uint64_t kSs = 4096;
constexpr uint64_t kIno = 257;

// Net reference counts per (bytenr, root, ino, offset), as the extent tree would hold them.
struct RecordingRefs final : DataRefSink {
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>, int64_t> refs;
  int calls = 0;
  Status add_data_ref(TreeHandle&, uint64_t bytenr, uint64_t, uint64_t root, uint64_t ino, uint64_t offset, int delta,
                      bool) override {
    ++calls;
    auto& c = refs[{bytenr, root, ino, offset}];
    c += delta;
    if (c == 0) refs.erase({bytenr, root, ino, offset});
    return {};
  }
};

struct FileFixture {
  test::TreeEnv env{4096};
  TreeRoot root{env.ctx, kFsTreeObjectid};
  RecordingRefs refs;
  FileFixture() {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
    // An inode item first, as in a real fs tree (check_prev_ino).
    InodeItem ii{};
    ii.mode = 0100644;
    ii.nlink = 1;
    ii.generation = 1;
    ii.transid = 1;
    std::span<const uint8_t> inode{reinterpret_cast<const uint8_t*>(&ii), sizeof(ii)};
    REQUIRE(insert_item(h, root, Key{kIno, kInodeItemKey, 0}, inode));
  }
  void add(uint64_t off, uint64_t len, uint64_t bytenr) {
    TreeHandle h = env.handle();
    REQUIRE(insert_file_extent(h, root, kIno, off, make_file_extent(1, kFileExtentReg, bytenr, len, 0, len, len)));
    REQUIRE(refs.add_data_ref(h, bytenr, len, root.objectid(), kIno, off, +1, true));
  }
  uint64_t drop(uint64_t start, uint64_t end) {
    TreeHandle h = env.handle();
    auto r = drop_extents(h, root, env.fs, refs, kIno, start, end);
    INFO((r ? "" : r.error().message));
    REQUIRE(r);
    return *r;
  }
  std::vector<FileExtent> all() {
    auto r = find_file_extents(root, env.fs, kIno, 0, UINT64_MAX);
    REQUIRE(r);
    return *r;
  }
  // Reference counts implied by the items.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>, int64_t> refs_from_items() {
    std::map<std::tuple<uint64_t, uint64_t, uint64_t, uint64_t>, int64_t> m;
    for (const auto& e : all())
      if (!e.is_hole() && !e.is_inline()) ++m[{e.disk_bytenr, root.objectid(), kIno, e.file_offset - e.offset}];
    return m;
  }
};

}  // namespace

TEST_CASE("drop_extents splits an extent covering both edges into a bookend pair with two refs", "[file_extent]") {
  FileFixture f;
  f.add(0, 16 * kSs, 1 << 30);
  REQUIRE(f.drop(4 * kSs, 6 * kSs) == 2 * kSs);
  auto v = f.all();
  REQUIRE(v.size() == 2);
  REQUIRE(v[0].file_offset == 0);
  REQUIRE(v[0].num_bytes == 4 * kSs);
  REQUIRE(v[0].offset == 0);
  REQUIRE(v[1].file_offset == 6 * kSs);
  REQUIRE(v[1].offset == 6 * kSs);
  REQUIRE(v[1].num_bytes == 10 * kSs);
  REQUIRE(v[1].disk_bytenr == (1u << 30));
  REQUIRE(v[1].ram_bytes == 16 * kSs);
  // Both pieces reference (bytenr, 5, 257, 0): one ref record with count 2.
  REQUIRE(f.refs.refs.size() == 1);
  REQUIRE(f.refs.refs.begin()->second == 2);
  REQUIRE(f.refs_from_items() == f.refs.refs);
}

TEST_CASE("drop_extents trims edges and deletes inner extents with one ref drop each", "[file_extent]") {
  FileFixture f;
  f.add(0, 4 * kSs, 1 << 30);
  f.add(4 * kSs, 4 * kSs, 2u << 30);
  f.add(8 * kSs, 4 * kSs, 3u << 30);
  REQUIRE(f.drop(2 * kSs, 10 * kSs) == 8 * kSs);
  auto v = f.all();
  REQUIRE(v.size() == 2);
  REQUIRE(v[0].num_bytes == 2 * kSs);
  REQUIRE(v[1].file_offset == 10 * kSs);
  REQUIRE(v[1].offset == 2 * kSs);
  REQUIRE(v[1].num_bytes == 2 * kSs);
  REQUIRE(f.refs_from_items() == f.refs.refs);
  REQUIRE(f.refs.refs.count({2u << 30, 5, kIno, 4 * kSs}) == 0);
  // Dropping to "infinity" removes everything.
  REQUIRE(f.drop(0, UINT64_MAX) == 4 * kSs);
  REQUIRE(f.all().empty());
  REQUIRE(f.refs.refs.empty());
}

TEST_CASE("drop_extents refuses to split an inline extent", "[file_extent]") {
  FileFixture f;
  TreeHandle h = f.env.handle();
  std::vector<uint8_t> data(100, 'x');
  REQUIRE(insert_inline_extent(h, f.root, kIno, 1, data));
  auto v = f.all();
  REQUIRE(v.size() == 1);
  REQUIRE(v[0].is_inline());
  REQUIRE(v[0].ram_bytes == 100);
  REQUIRE(v[0].end(kSs) == kSs);
  auto r = drop_extents(h, f.root, f.env.fs, f.refs, kIno, 0, 2048);
  REQUIRE(!r);
  REQUIRE(r.error().err == EINVAL);
  REQUIRE(f.drop(0, kSs) == 100);  // whole: nbytes of an inline extent is its length
  REQUIRE(f.all().empty());
}

TEST_CASE("random writes and drops keep items, refs and nbytes equal to a sector model", "[file_extent]") {
  FileFixture f;
  std::mt19937_64 rng(777);
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> model;  // sector -> (bytenr, sector in extent)
  uint64_t next_bytenr = 1ull << 30;
  const uint64_t span = 512;
  const int rounds = static_cast<int>(300 * test::stress_scale());
  for (int i = 0; i < rounds; ++i) {
    const uint64_t s = rng() % span, n = std::min<uint64_t>(1 + rng() % 64, span - s);
    uint64_t expect_dropped = 0;
    for (uint64_t x = s; x < s + n; ++x) expect_dropped += model.count(x) * kSs;
    const bool insert = rng() % 4 != 0;
    const uint64_t end = (!insert && rng() % 8 == 0) ? UINT64_MAX : (s + n) * kSs;
    if (end == UINT64_MAX)
      for (auto it = model.lower_bound(s + n); it != model.end(); ++it) expect_dropped += kSs;
    REQUIRE(f.drop(s * kSs, end) == expect_dropped);
    if (end == UINT64_MAX)
      model.erase(model.lower_bound(s), model.end());
    else
      for (uint64_t x = s; x < s + n; ++x) model.erase(x);
    if (insert) {
      f.add(s * kSs, n * kSs, next_bytenr);
      for (uint64_t x = 0; x < n; ++x) model[s + x] = {next_bytenr, x};
      next_bytenr += n * kSs;
    }
    if (i % 25 == 0 || i == rounds - 1) {
      std::map<uint64_t, std::pair<uint64_t, uint64_t>> seen;
      uint64_t prev_end = 0;
      for (const auto& e : f.all()) {
        REQUIRE(e.file_offset >= prev_end);
        prev_end = e.end(kSs);
        for (uint64_t x = 0; x < e.num_bytes / kSs; ++x)
          seen[e.file_offset / kSs + x] = {e.disk_bytenr, e.offset / kSs + x};
      }
      REQUIRE(seen == model);
      REQUIRE(f.refs_from_items() == f.refs.refs);
      INFO(f.env.check_tree(f.root));
      REQUIRE(f.env.check_tree(f.root).empty());
    }
  }
}
