// FreeSpace and BlockGroup accounting: maximal runs, refusal of double accounting, alignment and
// stripe-boundary rules for tree blocks, the pin-until-commit lifecycle, and superblock stripes.
#include <catch2/catch.hpp>

#include <random>
#include <set>

#include "alloc/block_group.h"
#include "alloc/free_space.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;

TEST_CASE("free space runs stay maximal: adjacent frees merge, removals split") {
  FreeSpace fs(1 << 20, 8 << 20);
  REQUIRE(fs.add(1 << 20, 4096));
  REQUIRE(fs.add((1 << 20) + 8192, 4096));
  CHECK(fs.extent_count() == 2);
  REQUIRE(fs.add((1 << 20) + 4096, 4096));  // fills the gap: one run
  CHECK(fs.extent_count() == 1);
  CHECK(fs.runs().begin()->second == 12288);
  REQUIRE(fs.remove((1 << 20) + 4096, 4096));
  CHECK(fs.extent_count() == 2);
  CHECK(fs.free_bytes() == 8192);
}

TEST_CASE("free space refuses double accounting") {
  FreeSpace fs(0, 1 << 20);
  REQUIRE(fs.add(0, 65536));
  CHECK_FALSE(fs.add(4096, 4096));            // already free
  CHECK_FALSE(fs.remove(60000, 65536));       // partly not free
  CHECK_FALSE(fs.add(1 << 20, 4096));         // outside the block group
  CHECK(fs.free_bytes() == 65536);
}

TEST_CASE("tree block allocation never crosses a 64 KiB stripe boundary") {
  const uint64_t start = 30408704;  // a metadata block group start from mkfs.btrfs
  FreeSpace fs(start, 1 << 20);
  // Free space starting 8 KiB before a boundary: a 16 KiB block must skip to the boundary.
  REQUIRE(fs.add(start + 65536 - 8192, 65536 + 8192));
  auto at = fs.find(16384, 16384, 0, 65536);
  REQUIRE(at);
  CHECK((*at - start) % 65536 + 16384 <= 65536);
  CHECK(*at == start + 65536);
}

TEST_CASE("find honours the hint and wraps around") {
  FreeSpace fs(0, 1 << 20);
  REQUIRE(fs.add(0, 1 << 20));
  CHECK(fs.find(4096, 4096, 500000).value() == 503808);  // aligned up from the hint
  REQUIRE(fs.remove(4096, (1 << 20) - 4096));
  CHECK(fs.find(4096, 4096, 500000).value() == 0);  // wrapped
  CHECK_FALSE(fs.find(8192, 4096));
}

TEST_CASE("randomized free space matches a bitmap model") {
  const uint64_t n = 512, unit = 4096;
  FreeSpace fs(0, n * unit);
  std::vector<bool> model(n, false);
  std::mt19937 rng(42);
  for (int iter = 0; iter < 20000; ++iter) {
    uint64_t a = rng() % n, len = 1 + rng() % 8;
    if (a + len > n) len = n - a;
    bool all_free = true, all_used = true;
    for (uint64_t i = a; i < a + len; ++i) (model[i] ? all_used : all_free) = false;
    if (rng() % 2) {
      bool ok = static_cast<bool>(fs.add(a * unit, len * unit));
      REQUIRE(ok == all_used);
      if (ok)
        for (uint64_t i = a; i < a + len; ++i) model[i] = true;
    } else {
      bool ok = static_cast<bool>(fs.remove(a * unit, len * unit));
      REQUIRE(ok == all_free);
      if (ok)
        for (uint64_t i = a; i < a + len; ++i) model[i] = false;
    }
  }
  // Compare runs with the model's maximal runs.
  std::map<uint64_t, uint64_t> runs;
  for (uint64_t i = 0; i < n;) {
    if (!model[i]) { ++i; continue; }
    uint64_t j = i;
    while (j < n && model[j]) ++j;
    runs[i * unit] = (j - i) * unit;
    i = j;
  }
  CHECK(fs.runs() == runs);
}

TEST_CASE("superblock mirror stripes are excluded from allocation but listed free for the FST") {
  // mkfs.btrfs's 256 MiB layout: METADATA DUP at logical 30408704, stripes at 38797312 and 72351744.
  ChunkMapping meta{30408704, 33554432, kBlockGroupMetadata | kBlockGroupDup,
                    {ChunkStripe{1, 38797312, {}}, ChunkStripe{1, 72351744, {}}}};
  auto ranges = super_mirror_ranges(meta);
  REQUIRE(ranges.size() == 1);
  CHECK(ranges[0].first == 58720256);  // FORMAT.md §3.12: the kernel lists 58720256..+64K free
  CHECK(ranges[0].second == 65536);
  BlockGroup bg(meta, 0);
  REQUIRE(bg.init_free_from_allocated({}));
  auto u = bg.usage();
  CHECK(u.super_bytes == 65536);
  CHECK(u.free == 33554432 - 65536);
  REQUIRE(bg.check_invariant());
  // Allocating everything never hands out the stripe.
  std::set<uint64_t> got;
  while (auto at = bg.reserve_extent(16384, 16384, 0, 65536)) {
    CHECK((*at + 16384 <= 58720256 || *at >= 58720256 + 65536));
    got.insert(*at);
  }
  CHECK(got.size() == (33554432 - 65536) / 16384);
  auto fst = bg.free_space_tree_runs();
  REQUIRE(fst.size() == 1);
  CHECK(fst.begin()->first == 58720256);
}

TEST_CASE("freed extents stay pinned until commit, unwritten reservations return at once") {
  ChunkMapping data{13631488, 8 << 20, kBlockGroupData, {ChunkStripe{1, 13631488, {}}}};
  BlockGroup bg(data, 0);
  REQUIRE(bg.init_free_from_allocated({}));
  auto a = bg.reserve_extent(65536, 4096, 0, 0);
  auto b = bg.reserve_extent(65536, 4096, 0, 0);
  REQUIRE((a && b));
  REQUIRE(bg.commit_reserved(*a, 65536));
  REQUIRE(bg.release_reserved(*b, 65536));  // never referenced: free again immediately
  CHECK(bg.usage().used == 65536);
  REQUIRE(bg.pin_extent(*a, 65536));
  CHECK_FALSE(bg.pin_extent(*a, 65536));  // freed twice in one transaction
  auto u = bg.usage();
  CHECK(u.pinned == 65536);
  CHECK(u.used == 0);
  // Pinned space is not handed out again before the commit.
  for (auto at = bg.reserve_extent(65536, 4096, *a, 0); at; at = bg.reserve_extent(65536, 4096, *a, 0))
    CHECK(*at != *a);
  CHECK(bg.unpin_all() == 65536);
  CHECK(bg.usage().pinned == 0);
  REQUIRE(bg.check_invariant());
}
