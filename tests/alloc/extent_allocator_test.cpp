// ExtentAllocator over hand-made block groups and a fake ChunkSource: placement (alignment, stripe
// boundary, group types, hints), chunk creation on shortage, the free rules of KERNEL.md §7.1
// including a block whose +1 ref already ran, data reservations, and a concurrency smoke test.
#include <atomic>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "alloc/extent_allocator.h"
#include "tests/alloc/alloc_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;

#define REQUIRE_GOOD(expr)                                            \
  do {                                                                \
    auto&& r_ = (expr);                                               \
    if (!r_) FAIL(#expr << " failed: " << r_.error().message);        \
  } while (0)

namespace {

using test::kGiB;
using test::kMiB;
using test::make_group;

class FakeChunks final : public ChunkSource {
 public:
  explicit FakeChunks(BlockGroupCache& groups) : groups_(groups) {}
  Status create_chunk(uint64_t type, uint64_t min_bytes) override {
    calls.fetch_add(1);
    last_type = type;
    if (remaining == 0) return fail(ENOSPC, "fake device has no room for a {}-byte chunk", min_bytes);
    --remaining;
    uint64_t len = std::max<uint64_t>(chunk_len, min_bytes);
    UBTRFS_TRY_STATUS(groups_.add(make_group(next_, len, type)));
    next_ += len;
    return {};
  }
  std::atomic<int> calls{0};
  uint64_t last_type = 0;
  int remaining = 0;
  uint64_t chunk_len = 8 * kMiB;

 private:
  BlockGroupCache& groups_;
  uint64_t next_ = 64 * kGiB;
};

struct Fixture {
  FsParams fs;
  BlockGroupCache groups;
  DelayedRefs refs;
  FakeChunks chunks{groups};
  ExtentAllocator alloc{fs, groups, refs, chunks};
  TreeHandle h;
  Fixture() {
    fs.nodesize = 16384;
    fs.sectorsize = 4096;
    h.transid = 7;
  }
  DelayedRefHead only_head() {
    auto heads = refs.take_all();
    REQUIRE(heads.size() == 1);
    return heads.front();
  }
};

}  // namespace

TEST_CASE("tree blocks are nodesize-aligned, never cross a 64 KiB stripe and queue a new-allocation ref") {
  Fixture f;
  auto bg = make_group(kGiB, 4 * kMiB, kBlockGroupMetadata);
  // Fragment the group: only odd 12 KiB pieces free, so many candidates are misaligned or cross.
  BlockGroup* g = bg.get();
  uint64_t used = 0;
  for (uint64_t off = 4096; off + 12288 <= 4 * kMiB; off += 45056, used += 12288)
    REQUIRE(g->mark_used(kGiB + off, 12288));
  REQUIRE(f.groups.add(std::move(bg)));
  std::set<uint64_t> got;
  for (int i = 0; i < 100; ++i) {
    auto b = f.alloc.alloc_tree_block(f.h, 5, i % 3, 0);
    REQUIRE_GOOD(b);
    CHECK(*b % 16384 == 0);
    CHECK(*b / kStripeLen == (*b + 16384 - 1) / kStripeLen);
    CHECK(g->contains(*b));
    CHECK(got.insert(*b).second);
  }
  CHECK(g->usage().reserved == 100 * 16384);
  CHECK(g->usage().used == used);
  auto heads = f.refs.take_all();
  REQUIRE(heads.size() == 100);
  for (const auto& hd : heads) {
    CHECK(hd.must_insert);
    CHECK_FALSE(hd.is_data);
    CHECK(hd.first_ref_generation == 7);
    CHECK(hd.num_bytes == 16384);
    REQUIRE(hd.refs.size() == 1);
    CHECK(hd.refs.begin()->first.root == 5);
    CHECK(hd.refs.begin()->second == 1);
  }
  REQUIRE(g->check_invariant());
}

TEST_CASE("a tree block is placed near the hint when the hint's group has room") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, 4 * kMiB, kBlockGroupMetadata)));
  REQUIRE(f.groups.add(make_group(2 * kGiB, 4 * kMiB, kBlockGroupMetadata)));
  auto b = f.alloc.alloc_tree_block(f.h, 5, 0, 2 * kGiB + kMiB);
  REQUIRE_GOOD(b);
  CHECK(*b == 2 * kGiB + kMiB);
  auto c = f.alloc.alloc_tree_block(f.h, 5, 0, 0);
  REQUIRE_GOOD(c);
  CHECK(*c == kGiB);  // no hint: lowest group first
}

TEST_CASE("the chunk tree allocates from SYSTEM groups, other trees from METADATA or mixed, data from DATA or mixed") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupSystem)));
  REQUIRE(f.groups.add(make_group(2 * kGiB, kMiB, kBlockGroupMetadata)));
  REQUIRE(f.groups.add(make_group(3 * kGiB, kMiB, kBlockGroupData)));
  auto sys = f.alloc.alloc_tree_block(f.h, kChunkTreeObjectid, 0, 0);
  auto meta = f.alloc.alloc_tree_block(f.h, kRootTreeObjectid, 0, 0);
  auto data = f.alloc.reserve_data(f.h, 65536, 65536);
  REQUIRE_GOOD(sys);
  REQUIRE_GOOD(meta);
  REQUIRE_GOOD(data);
  CHECK(f.groups.find(*sys)->flags() == kBlockGroupSystem);
  CHECK(f.groups.find(*meta)->flags() == kBlockGroupMetadata);
  CHECK(f.groups.find(data->bytenr)->flags() == kBlockGroupData);
  // Hints pointing into a group of the wrong type are ignored.
  auto meta2 = f.alloc.alloc_tree_block(f.h, 5, 0, 3 * kGiB);
  REQUIRE_GOOD(meta2);
  CHECK(f.groups.find(*meta2)->flags() == kBlockGroupMetadata);

  Fixture m;  // a mixed filesystem: one group serves both
  REQUIRE(m.groups.add(make_group(kGiB, kMiB, kBlockGroupData | kBlockGroupMetadata)));
  auto mt = m.alloc.alloc_tree_block(m.h, 5, 0, 0);
  auto md = m.alloc.reserve_data(m.h, 8192, 8192);
  REQUIRE_GOOD(mt);
  REQUIRE_GOOD(md);
  CHECK(m.alloc.free_bytes(kBlockGroupData) == kMiB - 16384 - 8192);
  CHECK(m.alloc.free_bytes(kBlockGroupMetadata) == kMiB - 16384 - 8192);
  CHECK(m.alloc.free_bytes(kBlockGroupSystem) == 0);
  CHECK(m.chunks.calls == 0);
}

TEST_CASE("a shortage creates one chunk of the needed type, a full device is ENOSPC naming size and type") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, 32768, kBlockGroupMetadata)));
  f.chunks.remaining = 1;
  REQUIRE_GOOD(f.alloc.alloc_tree_block(f.h, 5, 0, 0));
  REQUIRE_GOOD(f.alloc.alloc_tree_block(f.h, 5, 0, 0));
  CHECK(f.chunks.calls == 0);
  auto third = f.alloc.alloc_tree_block(f.h, 5, 0, 0);
  REQUIRE_GOOD(third);
  CHECK(f.chunks.calls == 1);
  CHECK(f.chunks.last_type == kBlockGroupMetadata);
  CHECK(*third >= 64 * kGiB);
  // Data shortage: the device refuses.
  auto d = f.alloc.reserve_data(f.h, 1 * kMiB, 1 * kMiB);
  REQUIRE_FALSE(d);
  CHECK(d.error().err == ENOSPC);
  CHECK_THAT(d.error().message, Catch::Contains("1048576-byte DATA extent: device full"));
  CHECK(f.chunks.calls == 2);
  CHECK(f.chunks.last_type == kBlockGroupData);
}

TEST_CASE("a never-written block freed in its own transaction is reusable at once and its ref cancels") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupMetadata)));
  auto b = f.alloc.alloc_tree_block(f.h, 5, 1, 0);
  REQUIRE_GOOD(b);
  f.alloc.free_tree_block(f.h, 5, *b, f.h.transid, /*written=*/false);
  REQUIRE(f.alloc.deferred_status());
  BlockGroup* g = f.groups.find(*b);
  CHECK(g->usage().reserved == 0);
  CHECK(g->usage().free == kMiB);
  // Handed out again at once; the cancelled head takes the new allocation.
  auto again = f.alloc.alloc_tree_block(f.h, 5, 0, 0);
  REQUIRE_GOOD(again);
  CHECK(*again == *b);
  auto head = f.only_head();
  CHECK(head.must_insert);
  REQUIRE(head.refs.size() == 1);
  CHECK(head.refs.begin()->second == 1);
  REQUIRE(g->check_invariant());
}

TEST_CASE("a written block freed in its own transaction is pinned until commit and its ref cancels") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, 65536, kBlockGroupMetadata)));
  auto b = f.alloc.alloc_tree_block(f.h, 5, 0, 0);
  REQUIRE_GOOD(b);
  f.alloc.free_tree_block(f.h, 5, *b, f.h.transid, /*written=*/true);
  REQUIRE(f.alloc.deferred_status());
  BlockGroup* g = f.groups.find(*b);
  CHECK(g->usage().pinned == 16384);
  CHECK(g->usage().reserved == 0);
  // Not reused before the commit.
  for (int i = 0; i < 3; ++i) {
    auto o = f.alloc.alloc_tree_block(f.h, 5, 0, *b);
    REQUIRE_GOOD(o);
    CHECK(*o != *b);
  }
  CHECK_FALSE(f.alloc.alloc_tree_block(f.h, 5, 0, 0));  // group full, no chunk source room
  auto heads = f.refs.take_all();
  REQUIRE(heads.size() == 4);
  CHECK(heads.front().bytenr == *b);
  CHECK(heads.front().cancelled());
  CHECK(g->unpin_all() == 16384);
  REQUIRE(g->check_invariant());
}

TEST_CASE("a block of an older transaction is freed by a -1 ref and stays used until its ref runs") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupMetadata)));
  BlockGroup* g = f.groups.find(kGiB);
  REQUIRE(g->mark_used(kGiB, 16384));  // written by an earlier transaction
  f.alloc.free_tree_block(f.h, 5, kGiB, f.h.transid - 2, /*written=*/true);
  REQUIRE(f.alloc.deferred_status());
  auto head = f.only_head();
  CHECK_FALSE(head.must_insert);
  CHECK(head.bytenr == kGiB);
  REQUIRE(head.refs.size() == 1);
  CHECK(head.refs.begin()->first.root == 5);
  CHECK(head.refs.begin()->second == -1);
  CHECK(g->usage().used == 16384);
  auto b = f.alloc.alloc_tree_block(f.h, 5, 0, kGiB);
  REQUIRE_GOOD(b);
  CHECK(*b != kGiB);
}

TEST_CASE("a block whose +1 ref already ran is freed by a -1 ref that deletes its item, never reused before commit") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupMetadata)));
  auto b = f.alloc.alloc_tree_block(f.h, kExtentTreeObjectid, 0, 0);
  REQUIRE_GOOD(b);
  BlockGroup* g = f.groups.find(*b);
  // The committer runs the refs: the item is inserted and the bytes become used (extent_inserted).
  auto first = f.only_head();
  CHECK(first.must_insert);
  REQUIRE(g->commit_reserved(first.bytenr, first.num_bytes));
  // A later COW in the same transaction frees it, unwritten.
  f.alloc.free_tree_block(f.h, kExtentTreeObjectid, *b, f.h.transid, /*written=*/false);
  REQUIRE(f.alloc.deferred_status());
  CHECK(g->usage().used == 16384);  // not released: the extent item exists
  CHECK(g->usage().free == kMiB - 16384);
  auto drop = f.only_head();
  CHECK_FALSE(drop.must_insert);   // the next run must delete the item ...
  CHECK(drop.total_ref_mod == -1);
  REQUIRE(g->pin_extent(drop.bytenr, drop.num_bytes));  // ... and extent_deleted pins it
  auto other = f.alloc.alloc_tree_block(f.h, 5, 0, *b);
  REQUIRE_GOOD(other);
  CHECK(*other != *b);
  REQUIRE(g->check_invariant());
}

TEST_CASE("data reservations are sector-aligned and shrink to the largest free piece when fragmented") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupData)));
  BlockGroup* g = f.groups.find(kGiB);
  // Occupy every other 64 KiB: the largest free piece is 64 KiB.
  for (uint64_t off = 0; off < kMiB; off += 2 * 65536) REQUIRE(g->mark_used(kGiB + off, 65536));
  auto whole = f.alloc.reserve_data(f.h, 256 * 1024, 256 * 1024);
  REQUIRE_FALSE(whole);
  CHECK(whole.error().err == ENOSPC);
  auto part = f.alloc.reserve_data(f.h, 256 * 1024, 4096);
  REQUIRE_GOOD(part);
  CHECK(part->len == 65536);
  CHECK(part->bytenr % 4096 == 0);
  CHECK(g->is_reserved(part->bytenr, part->len));
  REQUIRE(f.alloc.add_data_ref(f.h, part->bytenr, part->len, 5, 257, 0, +1, true));
  auto head = f.only_head();
  CHECK(head.is_data);
  CHECK(head.must_insert);
  // A reservation given up goes back to free space.
  auto other = f.alloc.reserve_data(f.h, 8192, 8192);
  REQUIRE_GOOD(other);
  f.alloc.release_data(other->bytenr, other->len);
  REQUIRE(f.alloc.deferred_status());
  CHECK_FALSE(g->is_reserved(other->bytenr, other->len));
  CHECK_FALSE(f.alloc.reserve_data(f.h, 4097, 4096));  // not a sector multiple
  REQUIRE(g->check_invariant());
}

TEST_CASE("freeing a block outside every block group is reported through deferred_status") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, kMiB, kBlockGroupMetadata)));
  f.alloc.free_tree_block(f.h, 5, 5 * kGiB, 3, true);
  auto st = f.alloc.deferred_status();
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EUCLEAN);
  CHECK_THAT(st.error().message, Catch::Contains("5368709120"));
}

TEST_CASE("concurrent tree block allocation and frees never hand out a block twice") {
  Fixture f;
  REQUIRE(f.groups.add(make_group(kGiB, 4 * kMiB, kBlockGroupMetadata)));
  f.chunks.remaining = 4;
  std::mutex mu;
  std::set<uint64_t> live;
  std::atomic<int> errors{0};
  auto worker = [&](int seed) {
    TreeHandle h;
    h.transid = 7;
    std::vector<uint64_t> mine;
    for (int i = 0; i < 400; ++i) {
      if (!mine.empty() && (i + seed) % 3 == 0) {
        uint64_t b = mine.back();
        mine.pop_back();
        {
          std::lock_guard g(mu);
          live.erase(b);
        }
        f.alloc.free_tree_block(h, 5, b, 7, (i % 2) == 0);
        continue;
      }
      auto b = f.alloc.alloc_tree_block(h, 5, 0, 0);
      if (!b) {
        errors.fetch_add(1);
        continue;
      }
      std::lock_guard g(mu);
      if (!live.insert(*b).second) errors.fetch_add(1);
      mine.push_back(*b);
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  REQUIRE(f.alloc.deferred_status());
  uint64_t reserved = 0;
  for (BlockGroup* g : f.groups.all()) {
    REQUIRE(g->check_invariant());
    reserved += g->usage().reserved;
  }
  CHECK(reserved == live.size() * 16384);
  // Every live block has a +1 head; every freed one cancelled.
  size_t live_heads = 0;
  for (const auto& hd : f.refs.take_all()) live_heads += hd.cancelled() ? 0 : 1;
  CHECK(live_heads == live.size());
}

TEST_CASE("delayed_ref_reservation_is_charged_per_head_not_per_reference") {
  // btrfs "only track ref_heads in delayed_ref_updates": a head runs once whatever number of
  // references it gathered, so a handle is charged one delayed_ref_bytes(1) per head it queues.
  // Random writes into one preallocated extent queue thousands of references to one head; charging
  // each one drained the writers' reserves into the delayed-refs reserve and made every ticket
  // wait for a commit.
  Fixture f;
  constexpr uint64_t kExtent = 13631488, kLen = 128 * kMiB;
  for (uint64_t i = 0; i < 50; ++i)
    REQUIRE_GOOD(f.alloc.add_data_ref(f.h, kExtent, kLen, 5, 257, i * 4096, +1, false));
  CHECK(f.h.delayed_ref_updates == 1);
  REQUIRE_GOOD(f.alloc.add_data_ref(f.h, kExtent + kLen, kLen, 5, 258, 0, -1, false));
  CHECK(f.h.delayed_ref_updates == 2);
  // References that cancel to nothing leave no head; the next reference makes a new one.
  REQUIRE_GOOD(f.alloc.add_data_ref(f.h, kExtent + kLen, kLen, 5, 258, 0, +1, false));
  REQUIRE_GOOD(f.alloc.add_data_ref(f.h, kExtent + kLen, kLen, 5, 258, 0, -1, false));
  CHECK(f.h.delayed_ref_updates == 3);
  // Once a runner took the head, a further reference needs another run: a new head, charged.
  auto taken = f.refs.take_all();
  CHECK(taken.size() == 2);
  REQUIRE_GOOD(f.alloc.add_data_ref(f.h, kExtent, kLen, 5, 257, 0, -1, false));
  CHECK(f.h.delayed_ref_updates == 4);
}
