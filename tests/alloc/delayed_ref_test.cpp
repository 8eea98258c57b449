// Delayed refs: ADD/DROP of the same reference cancel, new extents dropped in the same
// transaction never reach the extent tree, and heads come out in bytenr order.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "alloc/delayed_ref.h"
#include "tree/format.h"

using namespace ubtrfs::alloc;
using ubtrfs::kBlockFlagFullBackref;

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

// Mixed block groups: the bytes of a tree block born and freed unwritten in this transaction go
// back to the free space at once, and a data extent can be allocated there in the same
// transaction (seen as "delayed ref for extent ... disagrees with its head: data 28672 bytes, was
// tree 4096 bytes" and an aborted transaction under ubtrfs-stress on a 128M mixed image).
TEST_CASE("a_data_extent_may_take_the_bytes_of_a_cancelled_tree_block_head") {
  DelayedRefs refs;
  auto added = refs.add_tree_ref(12013568, 4096, 5, 0, +1, /*new_alloc=*/true, 11);
  REQUIRE(added);
  CHECK(*added);
  auto cancelled = refs.cancel_new_tree_alloc(12013568, 4096, 5, 0, 11);
  REQUIRE(cancelled);
  REQUIRE(*cancelled);
  // Only a new allocation takes the cancelled head over: a ref to an existing data extent there
  // would be a bug.
  CHECK_FALSE(refs.add_data_ref(12013568, 28672, 5, 276, 524288, +1, /*new_alloc=*/false, 11));
  // The new extent reuses the cancelled head (already paid for: not a new one).
  auto queued = refs.add_data_ref(12013568, 28672, 5, 276, 524288, +1, /*new_alloc=*/true, 11);
  REQUIRE(queued);
  CHECK_FALSE(*queued);
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 1);
  const auto& h = heads[0];
  CHECK(h.is_data);
  CHECK(h.num_bytes == 28672);
  CHECK(h.must_insert);
  CHECK_FALSE(h.cancelled());
  CHECK(h.total_ref_mod == 1);
  REQUIRE(h.refs.size() == 1);
  CHECK(h.refs.at(RefKey{5, 276, 524288}) == 1);
  // A live tree head (its +1 not cancelled) still refuses data at its bytenr.
  REQUIRE(refs.add_tree_ref(30425088, 4096, 5, 0, +1, true, 12));
  CHECK_FALSE(refs.add_data_ref(30425088, 4096, 5, 257, 0, +1, true, 12));
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

// Rule: lookup_extent_info must never read the extent tree while a runner holds the extent's head
// (taken from the queue, not yet applied): it would see neither the queued change nor its result.
TEST_CASE("lookup_waits_for_a_running_head") {
  DelayedRefs refs;
  REQUIRE(refs.add_tree_ref(4096, 4096, 5, 1, +1, false, 7));
  REQUIRE(refs.add_shared_tree_ref(4096, 4096, 65536, 1, +1, 7));
  uint64_t epoch0 = 0;
  auto before = refs.pending_for_lookup(4096, &epoch0);
  CHECK(before.queued);
  CHECK(before.ref_mod == 2);
  auto taken = refs.take_some(10);
  REQUIRE(taken.size() == 1);
  CHECK(taken[0].refs.size() == 2);  // the keyed and the shared ref stay apart
  CHECK(refs.take_epoch() != epoch0);
  std::atomic<bool> returned{false};
  std::thread reader([&] {
    uint64_t e = 0;
    auto p = refs.pending_for_lookup(4096, &e);
    CHECK_FALSE(p.queued);
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(returned.load());  // still running: the lookup waits
  refs.finish_run();
  reader.join();
  CHECK(returned.load());
}

TEST_CASE("extent flags ride on a head of their own and keep it alive") {
  DelayedRefs refs;
  REQUIRE(refs.add_extent_flags(8192, 4096, kBlockFlagFullBackref, 7));
  auto p = refs.pending_for_lookup(8192, nullptr);
  CHECK(p.queued);
  CHECK(p.ref_mod == 0);
  CHECK(p.set_flags == kBlockFlagFullBackref);
  // A +1 and -1 of one ref cancel, the flags stay.
  REQUIRE(refs.add_tree_ref(8192, 4096, 5, 0, +1, false, 7));
  REQUIRE(refs.add_tree_ref(8192, 4096, 5, 0, -1, false, 7));
  auto heads = refs.take_all();
  REQUIRE(heads.size() == 1);
  CHECK(heads[0].refs.empty());
  CHECK(heads[0].set_flags == kBlockFlagFullBackref);
  refs.finish_run();
}

// Rule: a block a snapshot of this transaction shares (FORCE_COW) is not "allocated and freed in
// one transaction": its drop must not cancel its extent (the snapshot still references it).
TEST_CASE("a_shared_new_block_is_never_cancelled") {
  DelayedRefs refs;
  REQUIRE(refs.add_tree_ref(12288, 4096, 5, 0, +1, true, 7));    // born in transaction 7 in root 5
  REQUIRE(refs.add_tree_ref(12288, 4096, 300, 0, +1, false, 7)); // the snapshot's copy of the root references it
  auto r = refs.cancel_new_tree_alloc(12288, 4096, 5, 0, 7);
  REQUIRE(r);
  CHECK_FALSE(*r);
  CHECK_FALSE(refs.add_tree_ref(12288, 4096, 13, 0, +1, true, 8));  // still allocated: a second alloc is refused
}
