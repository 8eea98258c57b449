// Item surgery on extent buffers: leaf data stays packed (FORMAT.md §2.3) through insert, delete,
// append, prepend, extend and truncate; node pointers stay contiguous (§2.4).
#include <catch2/catch.hpp>

#include "tree/extent_buffer.h"
#include "tree/tree_checker.h"
#include "tree_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::test;

namespace {

void init_leaf(ExtentBuffer& eb, const FsParams& fs) {
  Header& h = eb.header();
  std::memcpy(h.fsid, fs.fsid.data(), 16);
  std::memcpy(h.chunk_tree_uuid, fs.chunk_tree_uuid.data(), 16);
  h.bytenr = eb.start();
  h.flags = kMixedBackrefRev << kBackrefRevShift;
  h.generation = 1;
  h.owner = kUuidTreeObjectid;
}

Key k(uint64_t o) { return Key{o, kStringItemKey, 0}; }

void put(ExtentBuffer& eb, int slot, uint64_t o, uint32_t size) {
  Key key = k(o);
  leaf_insert_slots(eb, slot, std::span<const Key>(&key, 1), std::span<const uint32_t>(&size, 1));
  auto d = eb.item_data(slot);
  auto v = make_value(key, size, 1);
  std::copy(v.begin(), v.end(), d.begin());
}

void expect_items(const ExtentBuffer& eb, std::vector<std::pair<uint64_t, uint32_t>> want) {
  REQUIRE(eb.nritems() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    REQUIRE(eb.item_key(static_cast<int>(i)) == k(want[i].first));
    auto d = eb.item_data(static_cast<int>(i));
    REQUIRE(d.size() == want[i].second);
    auto v = make_value(k(want[i].first), want[i].second, 1);
    REQUIRE(std::equal(d.begin(), d.end(), v.begin()));
  }
}

}  // namespace

TEST_CASE("leaf item insert and delete keep item data packed without gaps", "[extent_buffer]") {
  TreeEnv env(4096);
  ExtentBuffer eb(TreeEnv::kChunkStart, 4096);
  init_leaf(eb, env.fs);
  put(eb, 0, 10, 100);
  put(eb, 1, 30, 0);
  put(eb, 1, 20, 57);
  put(eb, 0, 5, 300);
  expect_items(eb, {{5, 300}, {10, 100}, {20, 57}, {30, 0}});
  REQUIRE(check_leaf(env.fs, eb.bytes()));
  REQUIRE(eb.leaf_free_space() == eb.leaf_data_size() - 4 * sizeof(Item) - 457);
  leaf_delete_slots(eb, 1, 2);
  expect_items(eb, {{5, 300}, {30, 0}});
  REQUIRE(check_leaf(env.fs, eb.bytes()));
  leaf_delete_slots(eb, 0, 1);
  expect_items(eb, {{30, 0}});
  REQUIRE(eb.item_offset(0) == eb.leaf_data_size());
}

TEST_CASE("leaf append and prepend move items between leaves with offsets rebased", "[extent_buffer]") {
  TreeEnv env(4096);
  ExtentBuffer a(TreeEnv::kChunkStart, 4096), b(TreeEnv::kChunkStart + 4096, 4096);
  init_leaf(a, env.fs);
  init_leaf(b, env.fs);
  for (int i = 0; i < 6; ++i) put(a, i, 10 + i, 20 * i + 3);
  put(b, 0, 100, 40);
  leaf_prepend_from(b, a, 4, 2);
  leaf_delete_slots(a, 4, 2);
  expect_items(a, {{10, 3}, {11, 23}, {12, 43}, {13, 63}});
  expect_items(b, {{14, 83}, {15, 103}, {100, 40}});
  leaf_append_from(a, b, 0, 1);
  leaf_delete_slots(b, 0, 1);
  expect_items(a, {{10, 3}, {11, 23}, {12, 43}, {13, 63}, {14, 83}});
  expect_items(b, {{15, 103}, {100, 40}});
  REQUIRE(check_leaf(env.fs, a.bytes()));
  REQUIRE(check_leaf(env.fs, b.bytes()));
}

TEST_CASE("node pointer insert delete append and prepend keep pointers contiguous", "[extent_buffer]") {
  ExtentBuffer a(TreeEnv::kChunkStart, 4096), b(TreeEnv::kChunkStart + 4096, 4096);
  a.set_level(1);
  b.set_level(1);
  for (int i = 0; i < 5; ++i) node_insert_ptr(a, i, k(i * 10), 4096 * (i + 1), 7);
  node_insert_ptr(a, 0, k(1), 999 * 4096, 8);
  REQUIRE(a.nritems() == 6);
  REQUIRE(a.node_key(0) == k(1));
  REQUIRE(a.node_key(1) == k(0));  // inserted at slot 0 on purpose: raw mover, no ordering
  node_delete_ptrs(a, 0, 2);
  REQUIRE(a.node_key(0) == k(10));
  node_prepend_from(b, a, 2, 2);
  REQUIRE(b.nritems() == 2);
  REQUIRE(b.node_key(0) == k(30));
  REQUIRE(b.node_blockptr(1) == 5 * 4096);
  node_append_from(b, a, 0, 1);
  REQUIRE(b.node_key(2) == k(10));
  REQUIRE(b.node_ptr_generation(2) == 7);
}

TEST_CASE("binary search returns the match or the insertion slot", "[extent_buffer]") {
  TreeEnv env(4096);
  ExtentBuffer eb(TreeEnv::kChunkStart, 4096);
  init_leaf(eb, env.fs);
  for (int i = 0; i < 10; ++i) put(eb, i, 10 * (i + 1), 1);
  REQUIRE(eb.bin_search(k(10)) == std::pair{true, 0});
  REQUIRE(eb.bin_search(k(55)) == std::pair{false, 5});
  REQUIRE(eb.bin_search(k(5)) == std::pair{false, 0});
  REQUIRE(eb.bin_search(k(1000)) == std::pair{false, 10});
}
