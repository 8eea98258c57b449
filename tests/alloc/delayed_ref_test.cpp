// Delayed refs: ADD/DROP of the same reference cancel, new extents dropped in the same
// transaction never reach the extent tree, and heads come out in bytenr order.
#include <catch2/catch.hpp>

#include <thread>

#include "alloc/delayed_ref.h"

using namespace ubtrfs::alloc;

TEST_CASE("a tree block COWed and freed in one transaction leaves only its cancelled head") {
  DelayedRefs refs;
  REQUIRE(refs.add_tree_ref(30425088, 16384, 5, 0, +1, /*new_alloc=*/true, 7));
  REQUIRE(refs.add_tree_ref(30425088, 16384, 5, 0, -1, false, 7));
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 1);
  CHECK(heads[0].cancelled());
  CHECK(heads[0].total_ref_mod == 0);
  CHECK(refs.empty());
}

TEST_CASE("add then drop of an existing extent's reference is no change at all") {
  DelayedRefs refs;
  REQUIRE(refs.add_data_ref(13631488, 8192, 5, 258, 0, +1, false, 7));
  REQUIRE(refs.add_data_ref(13631488, 8192, 5, 258, 0, -1, false, 7));
  CHECK(refs.empty());
}

TEST_CASE("data refs of one extent are counted per (root, inode, offset)") {
  DelayedRefs refs;
  // Two bookend items of one inode share a ref (count 2), a reflink adds another inode.
  REQUIRE(refs.add_data_ref(13631488, 262144, 5, 257, 0, +1, true, 9));
  REQUIRE(refs.add_data_ref(13631488, 262144, 5, 257, 0, +1, false, 9));
  REQUIRE(refs.add_data_ref(13631488, 262144, 5, 258, 4096, +1, false, 9));
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 1);
  const auto& h = heads[0];
  CHECK(h.must_insert);
  CHECK(h.is_data);
  CHECK(h.total_ref_mod == 3);
  REQUIRE(h.refs.size() == 2);
  CHECK(h.refs.at(RefKey{5, 257, 0}) == 2);
  CHECK(h.refs.at(RefKey{5, 258, 4096}) == 1);
}

TEST_CASE("inconsistent delayed refs are refused") {
  DelayedRefs refs;
  REQUIRE(refs.add_tree_ref(30425088, 16384, 5, 0, +1, true, 7));
  CHECK_FALSE(refs.add_tree_ref(30425088, 16384, 5, 0, +1, true, 7));          // allocated twice
  CHECK_FALSE(refs.add_data_ref(30425088, 16384, 5, 257, 0, +1, false, 7));    // tree block used as data
  CHECK_FALSE(refs.add_tree_ref(30425088, 4096, 5, 0, +1, false, 7));          // size changed
}

TEST_CASE("heads are run in bytenr order") {
  DelayedRefs refs;
  for (uint64_t b : {5u, 1u, 9u, 3u}) REQUIRE(refs.add_tree_ref(b * 16384, 16384, 2, 0, +1, true, 3));
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 4);
  for (size_t i = 1; i < heads.size(); ++i) CHECK(heads[i - 1].bytenr < heads[i].bytenr);
}

TEST_CASE("concurrent writers queue refs without losing any") {
  DelayedRefs refs;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) (void)refs.add_data_ref(1 << 20, 4096, 5, 256 + t, i, +1, false, 1);
    });
  for (auto& t : ts) t.join();
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 1);
  CHECK(heads[0].refs.size() == 8000);
  CHECK(heads[0].total_ref_mod == 8000);
}
