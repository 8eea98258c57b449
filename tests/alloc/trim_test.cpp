// BlockGroup::take_free_for_trim (the "trimming" state of btrfs do_trimming, used by FITRIM and
// -o discard, fs/discard.h) and unpin_all's list of unpinned ranges.
//
// Rules named here: trim_takes_only_free_space_and_holds_it_reserved_until_released,
// unpinned_ranges_are_reported_and_trimmable_only_after_unpin.
#include <catch2/catch.hpp>

#include <vector>

#include "alloc/block_group.h"
#include "tests/test_support.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;

namespace {

using test::kMiB;
constexpr uint64_t kBase = 1ull << 30;  // logical == physical 1 GiB: no superblock mirror inside

std::unique_ptr<BlockGroup> make_data_group(uint64_t len) {
  ChunkMapping m{kBase, len, kBlockGroupData, {ChunkStripe{1, kBase, {}}}};
  auto bg = std::make_unique<BlockGroup>(m, 0);
  REQUIRE(bg->init_free_from_allocated({}));
  return bg;
}

using Range = std::pair<uint64_t, uint64_t>;

bool overlaps(Range a, uint64_t s, uint64_t l) { return a.first < s + l && s < a.first + a.second; }

}  // namespace

TEST_CASE("trim_takes_only_free_space_and_holds_it_reserved_until_released", "[trim]") {
  auto bg = make_data_group(16 * kMiB);
  // used [1M, 2M), reserved [4M, 4.5M), pinned [6M, 7M).
  REQUIRE(bg->mark_used(kBase + kMiB, kMiB));
  REQUIRE(bg->reserve_exact(kBase + 4 * kMiB, kMiB / 2));
  REQUIRE(bg->mark_used(kBase + 6 * kMiB, kMiB));
  REQUIRE(bg->pin_extent(kBase + 6 * kMiB, kMiB));
  const uint64_t free_before = bg->free_bytes();

  std::vector<Range> taken;
  uint64_t cur = kBase;
  while (auto r = bg->take_free_for_trim(cur, kBase + 16 * kMiB, 0, 64 * kMiB)) {
    taken.push_back(*r);
    CHECK_FALSE(overlaps(*r, kBase + kMiB, kMiB));           // used
    CHECK_FALSE(overlaps(*r, kBase + 4 * kMiB, kMiB / 2));   // reserved
    CHECK_FALSE(overlaps(*r, kBase + 6 * kMiB, kMiB));       // pinned
    cur = r->first + r->second;
  }
  REQUIRE(taken == std::vector<Range>{{kBase, kMiB},
                                      {kBase + 2 * kMiB, 2 * kMiB},
                                      {kBase + 4 * kMiB + kMiB / 2, kMiB + kMiB / 2},
                                      {kBase + 7 * kMiB, 9 * kMiB}});
  // While taken, nothing is free: an allocation finds no room, the accounting still adds up.
  CHECK(bg->free_bytes() == 0);
  CHECK_FALSE(bg->reserve_extent(4096, 4096, kBase, 0));
  CHECK(bg->usage().reserved == free_before + kMiB / 2);
  REQUIRE(bg->check_invariant());
  for (auto [s, l] : taken) REQUIRE(bg->release_reserved(s, l));
  CHECK(bg->free_bytes() == free_before);
  CHECK(bg->usage().free_extent_count == 4);  // merged back into the same maximal runs
  REQUIRE(bg->check_invariant());

  // minlen skips shorter runs; max_len and [from, end) clip.
  auto big = bg->take_free_for_trim(kBase, kBase + 16 * kMiB, 2 * kMiB, 64 * kMiB);
  REQUIRE(big);
  CHECK(*big == Range{kBase + 2 * kMiB, 2 * kMiB});
  REQUIRE(bg->release_reserved(big->first, big->second));
  auto clipped = bg->take_free_for_trim(kBase + 3 * kMiB, kBase + 5 * kMiB, 0, kMiB / 4);
  REQUIRE(clipped);
  CHECK(*clipped == Range{kBase + 3 * kMiB, kMiB / 4});
  REQUIRE(bg->release_reserved(clipped->first, clipped->second));
  CHECK_FALSE(bg->take_free_for_trim(kBase + kMiB, kBase + 2 * kMiB, 0, 64 * kMiB));  // all used
  CHECK_FALSE(bg->take_free_for_trim(kBase + 8 * kMiB, kBase + 8 * kMiB + 4096, 8192, 64 * kMiB));  // < minlen
}

TEST_CASE("unpinned_ranges_are_reported_and_trimmable_only_after_unpin", "[trim]") {
  auto bg = make_data_group(8 * kMiB);
  REQUIRE(bg->mark_used(kBase, 8 * kMiB));
  REQUIRE(bg->pin_extent(kBase + kMiB, kMiB));
  REQUIRE(bg->pin_extent(kBase + 4 * kMiB, 2 * kMiB));
  CHECK_FALSE(bg->take_free_for_trim(kBase, kBase + 8 * kMiB, 0, 64 * kMiB));
  std::vector<Range> unpinned;
  CHECK(bg->unpin_all(&unpinned) == 3 * kMiB);
  CHECK(unpinned == std::vector<Range>{{kBase + kMiB, kMiB}, {kBase + 4 * kMiB, 2 * kMiB}});
  auto r = bg->take_free_for_trim(kBase, kBase + 8 * kMiB, 0, 64 * kMiB);
  REQUIRE(r);
  CHECK(*r == Range{kBase + kMiB, kMiB});
  REQUIRE(bg->release_reserved(r->first, r->second));
  REQUIRE(bg->check_invariant());
}
