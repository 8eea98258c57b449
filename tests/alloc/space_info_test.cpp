// The reservation system: space_info counters against a model under random reserve / allocate /
// commit / release / pin / unpin / chunk-grow sequences, the overcommit formula, block reserves and
// their release routing, the tree-block fallback chain, tickets (FIFO, priority first, no
// starvation, ENOSPC only after the flushers made no progress, stealing, interruption) and 8
// threads reserving at once (run under TSan by scripts/test.sh's full profile).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <random>
#include <thread>

#include "alloc/block_group.h"
#include "alloc/block_rsv.h"
#include "alloc/space_infos.h"
#include "tests/alloc/alloc_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;
using namespace std::chrono_literals;

namespace {

using test::kGiB;
using test::kMiB;
using test::make_group;
constexpr uint32_t kNode = 16384;

double stress_scale() {
  const char* s = std::getenv("UBTRFS_STRESS_SCALE");
  return s ? std::max(0.05, std::atof(s)) : 1.0;
}

// A flusher that does nothing except count, and can hold the reclaim thread inside a state until
// the test releases it (so grants come only from what the test frees).
class TestFlusher final : public SpaceFlusher {
 public:
  Result<uint64_t> flush(SpaceInfo&, FlushState s, uint64_t) override {
    std::unique_lock lk(mu);
    runs[static_cast<int>(s)]++;
    ++total_runs;
    cv.notify_all();
    cv.wait(lk, [&] { return !hold; });
    if (on_state) {
      auto f = on_state;
      lk.unlock();
      f(s);
    }
    return uint64_t{0};
  }
  void release_hold() {
    std::lock_guard lk(mu);
    hold = false;
    cv.notify_all();
  }
  bool wait_runs(int n, std::chrono::milliseconds t) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, t, [&] { return total_runs >= n; });
  }
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false;
  int total_runs = 0;
  std::map<int, int> runs;
  std::function<void(FlushState)> on_state;
};

// Polls until `pred` holds (a thread reached its wait) or fails the test after 10 s.
template <class F>
void eventually(F pred) {
  for (int i = 0; i < 10000; ++i) {
    if (pred()) return;
    std::this_thread::sleep_for(1ms);
  }
  FAIL("condition never became true");
}

struct Counters {
  uint64_t total = 0, used = 0, reserved = 0, pinned = 0, may_use = 0, readonly = 0;
};

void check_same(const SpaceCounters& c, const Counters& m, const char* what) {
  INFO(what);
  CHECK(c.total == m.total);
  CHECK(c.used == m.used);
  CHECK(c.reserved == m.reserved);
  CHECK(c.pinned == m.pinned);
  CHECK(c.may_use == m.may_use);
  CHECK(c.readonly == m.readonly);
}

}  // namespace

TEST_CASE("space_info counters follow a model through random reserve, allocate, commit, free, pin, unpin, grow",
          "[space_info]") {
  std::mt19937_64 rng(GENERATE(1u, 2u, 3u));
  SpaceInfos sp(kNode, true, false);
  const uint64_t unalloc = 400 * kMiB;
  sp.set_free_chunk_space(unalloc);
  sp.set_device_bytes(1 * kGiB);
  sp.set_factor(kBlockGroupMetadata, 2);
  BlockGroupCache groups;
  uint64_t next = 4 * kGiB;
  Counters meta, data;
  auto add_group = [&](uint64_t flags, uint64_t len) {
    auto bg = make_group(next, len, flags);
    next += len;
    bg->attach(&sp.for_flags(flags), flags & kBlockGroupMetadata ? 2 : 1);
    REQUIRE(groups.add(std::move(bg)));
    (flags & kBlockGroupData ? data : meta).total += len;
    sp.for_flags(flags).grant_tickets();
  };
  add_group(kBlockGroupMetadata, 8 * kMiB);
  add_group(kBlockGroupData, 16 * kMiB);
  // The global reserve (model: its reserved bytes are in meta may_use).
  uint64_t g_size = 0, g_res = 0;
  auto model_free_space = [&](uint64_t bytes) {  // btrfs_return_free_space in the model
    const uint64_t take = std::min(bytes, g_size > g_res ? g_size - g_res : 0);
    g_res += take;
    meta.may_use += take;
  };
  sp.global_rsv().set_size_and_fill(2 * kMiB);
  g_size = g_res = 2 * kMiB;
  meta.may_use += 2 * kMiB;

  auto used_all = [](const Counters& c) { return c.used + c.reserved + c.pinned + c.readonly + c.may_use; };
  auto meta_avail = [&](FlushMode mode) {
    uint64_t avail = unalloc / 2;
    const uint64_t dc = sp.effective_data_chunk_size();
    if (avail <= dc) return uint64_t{0};
    avail -= dc;
    return mode == FlushMode::kFlushAll ? avail >> 3 : avail >> 1;
  };
  std::deque<uint64_t> held_meta, held_data;          // reservations we hold
  struct Ext {
    uint64_t start, len;
    bool is_data;
    int state;  // 0 reserved, 1 used, 2 pinned
  };
  std::vector<Ext> exts;
  const int steps = static_cast<int>(4000 * stress_scale());
  for (int step = 0; step < steps; ++step) {
    const int op = static_cast<int>(rng() % 12);
    const bool is_data = rng() % 2;
    Counters& m = is_data ? data : meta;
    SpaceInfo& si = is_data ? sp.data() : sp.metadata();
    switch (op) {
      case 0:
      case 1: {  // reserve NO_FLUSH
        const uint64_t b = (1 + rng() % 64) * 4096;
        const bool fits = used_all(m) + b <= m.total || (!is_data && used_all(m) + b < m.total + meta_avail(FlushMode::kNoFlush));
        const bool ok = static_cast<bool>(si.reserve_bytes(b, FlushMode::kNoFlush));
        REQUIRE(ok == fits);
        if (ok) {
          m.may_use += b;
          (is_data ? held_data : held_meta).push_back(b);
        }
        break;
      }
      case 2: {  // release a held reservation
        auto& held = is_data ? held_data : held_meta;
        if (held.empty()) break;
        const uint64_t b = held.front();
        held.pop_front();
        si.release_bytes(b);
        m.may_use -= b;
        if (!is_data) model_free_space(b);
        break;
      }
      case 3:
      case 4: {  // allocate an extent charged to a held reservation
        auto& held = is_data ? held_data : held_meta;
        if (held.empty()) break;
        const uint64_t len = is_data ? held.front() : kNode;
        if (held.front() < len) break;
        BlockGroup* target = nullptr;
        for (auto* bg : groups.all())
          if ((bg->flags() & kBlockGroupData) == (is_data ? kBlockGroupData : 0)) target = bg;
        auto at = target->reserve_extent(len, is_data ? 4096 : kNode, 0, is_data ? 0 : kStripeLen, len);
        if (!at) break;
        held.front() -= len;
        if (held.front() == 0) held.pop_front();
        m.may_use -= len;
        m.reserved += len;
        exts.push_back({*at, len, is_data, 0});
        break;
      }
      case 5: {  // its reference runs: reserved -> used
        for (auto& e : exts)
          if (e.state == 0) {
            REQUIRE(groups.find(e.start)->commit_reserved(e.start, e.len));
            Counters& c = e.is_data ? data : meta;
            c.reserved -= e.len;
            c.used += e.len;
            e.state = 1;
            break;
          }
        break;
      }
      case 6: {  // an unwritten reserved extent goes back
        for (size_t i = 0; i < exts.size(); ++i)
          if (exts[i].state == 0) {
            Ext e = exts[i];
            REQUIRE(groups.find(e.start)->release_reserved(e.start, e.len));
            Counters& c = e.is_data ? data : meta;
            c.reserved -= e.len;
            if (!e.is_data) model_free_space(e.len);
            exts.erase(exts.begin() + static_cast<long>(i));
            break;
          }
        break;
      }
      case 7: {  // written but never referenced: reserved -> pinned
        for (auto& e : exts)
          if (e.state == 0 && rng() % 2) {
            REQUIRE(groups.find(e.start)->pin_reserved(e.start, e.len));
            Counters& c = e.is_data ? data : meta;
            c.reserved -= e.len;
            c.pinned += e.len;
            e.state = 2;
            break;
          }
        break;
      }
      case 8: {  // freed: used -> pinned
        for (auto& e : exts)
          if (e.state == 1) {
            REQUIRE(groups.find(e.start)->pin_extent(e.start, e.len));
            Counters& c = e.is_data ? data : meta;
            c.used -= e.len;
            c.pinned += e.len;
            e.state = 2;
            break;
          }
        break;
      }
      case 9: {  // commit: unpin everything
        if (rng() % 4) break;
        for (auto* bg : groups.all()) {
          const uint64_t n = bg->unpin_all();
          Counters& c = (bg->flags() & kBlockGroupData) ? data : meta;
          c.pinned -= n;
          if (!(bg->flags() & kBlockGroupData)) model_free_space(n);
        }
        std::erase_if(exts, [](const Ext& e) { return e.state == 2; });
        break;
      }
      case 11: {  // a tree block paid by the global reserve (the fallback chain's step 4)
        if (g_res < kNode) break;
        BlockGroup* target = nullptr;
        for (auto* bg : groups.all())
          if (!(bg->flags() & kBlockGroupData)) target = bg;
        REQUIRE(sp.global_rsv().use_bytes(kNode));
        g_res -= kNode;
        auto at = target->reserve_extent(kNode, kNode, 0, kStripeLen, kNode);
        if (!at) {
          sp.unuse_block_rsv(&sp.global_rsv(), kNode);  // back where it came from
          g_res += kNode;
          break;
        }
        meta.may_use -= kNode;
        meta.reserved += kNode;
        exts.push_back({*at, kNode, false, 0});
        break;
      }
      case 10: {  // a chunk grows the type
        if (rng() % 8) break;
        add_group(is_data ? kBlockGroupData : kBlockGroupMetadata, (4 + rng() % 8) * kMiB);
        break;
      }
    }
    check_same(sp.data().counters(), data, "data");
    check_same(sp.metadata().counters(), meta, "metadata");
    REQUIRE(sp.global_rsv().reserved() == g_res);
    for (auto* bg : groups.all()) REQUIRE(bg->check_invariant());
  }
  // Give everything back: may_use returns to the global reserve's bytes.
  for (auto b : held_meta) sp.metadata().release_bytes(b);
  for (auto b : held_data) sp.data().release_bytes(b);
  CHECK(sp.data().counters().may_use == 0);
  CHECK(sp.metadata().counters().may_use == sp.global_rsv().reserved());
}

TEST_CASE("overcommit follows calc_available_free_space (KERNEL.md §3 worked example)", "[space_info]") {
  SpaceInfos sp(kNode, true, false);
  sp.set_free_chunk_space(60 * kGiB);
  sp.set_device_bytes(100 * kGiB);
  sp.set_factor(kBlockGroupMetadata, 2);
  // 60 GiB unallocated / DUP = 30 GiB, minus min(10 GiB, 10 GiB, 1 GiB) = 29 GiB.
  CHECK(sp.overcommit_avail(sp.metadata(), FlushMode::kFlushAll) == 29 * kGiB / 8);
  CHECK(sp.overcommit_avail(sp.metadata(), FlushMode::kNoFlush) == 29 * kGiB / 2);
  CHECK(sp.overcommit_avail(sp.metadata(), FlushMode::kFlushLimit) == 29 * kGiB / 2);
  CHECK(sp.overcommit_avail(sp.data(), FlushMode::kNoFlush) == 0);  // data never overcommits
  // No more than one data chunk unallocated: nothing to overcommit into.
  sp.set_free_chunk_space(2 * kGiB);
  CHECK(sp.overcommit_avail(sp.metadata(), FlushMode::kNoFlush) == 0);
  // A reservation fits by overcommit with a strict "<".
  SpaceInfos sp2(kNode, true, false);
  sp2.set_free_chunk_space(100 * kMiB);
  sp2.set_device_bytes(1 * kGiB);
  sp2.set_factor(kBlockGroupMetadata, 1);
  // avail = 100 MiB - min(10 % of 1 GiB, 1 GiB) = 100 - 102.4 MiB -> 0: no overcommit.
  CHECK(sp2.overcommit_avail(sp2.metadata(), FlushMode::kNoFlush) == 0);
  sp2.set_free_chunk_space(300 * kMiB);
  const uint64_t avail = (300 * kMiB - kGiB / 10) / 2;
  CHECK(sp2.overcommit_avail(sp2.metadata(), FlushMode::kNoFlush) == avail);
  CHECK(sp2.metadata().can_overcommit(avail - 1, FlushMode::kNoFlush));
  CHECK_FALSE(sp2.metadata().can_overcommit(avail, FlushMode::kNoFlush));
}

TEST_CASE("block reserves: add, use, migrate, release routing, failfast", "[block_rsv]") {
  SpaceInfos sp(kNode, true, false);
  BlockGroupCache groups;
  auto bg = make_group(4 * kGiB, 64 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  REQUIRE(groups.add(std::move(bg)));
  SpaceInfo& meta = sp.metadata();
  BlockRsv local(RsvType::kTemp, &meta);
  REQUIRE(local.add(4 * kMiB, FlushMode::kNoFlush));
  CHECK(local.size() == 4 * kMiB);
  CHECK(local.reserved() == 4 * kMiB);
  CHECK(meta.counters().may_use == 4 * kMiB);
  REQUIRE(local.use_bytes(kMiB));
  CHECK(local.reserved() == 3 * kMiB);
  CHECK_FALSE(local.use_bytes(8 * kMiB));  // ENOSPC, nothing taken
  CHECK(local.reserved() == 3 * kMiB);
  // Migrate 1 MiB into the delayed-ops reserve, growing its size.
  REQUIRE(BlockRsv::migrate(local, sp.delayed_block_rsv(), kMiB, true));
  CHECK(sp.delayed_block_rsv().size() == kMiB);
  CHECK(sp.delayed_block_rsv().reserved() == kMiB);
  // A delayed-ops release refills the global reserve first.
  sp.global_rsv().set_size_and_fill(0);
  sp.global_rsv().grow_size(512 * 1024);  // global short by 512 KiB
  const uint64_t may_before = meta.counters().may_use;
  sp.release_block_rsv(sp.delayed_block_rsv(), kMiB);
  CHECK(sp.global_rsv().reserved() == 512 * 1024);
  CHECK(meta.counters().may_use == may_before - 512 * 1024);
  // Any other reserve's excess tops up the delayed-refs reserve while it is short.
  sp.delayed_refs_rsv().grow_size(kMiB);
  const uint64_t released = sp.release_block_rsv(local, UINT64_MAX);  // 2 MiB reserved
  CHECK(sp.delayed_refs_rsv().reserved() == kMiB);
  CHECK(released == kMiB);
  CHECK(local.size() == 0);
  CHECK(local.reserved() == 0);
  // Failfast: the fallback chain stops at a failfast reserve.
  BlockRsv temp(RsvType::kTemp, &meta);
  temp.set_failfast(true);
  REQUIRE(temp.add(kNode, FlushMode::kNoFlush));
  REQUIRE(sp.use_block_rsv(&temp, kNode, nullptr));
  auto r = sp.use_block_rsv(&temp, kNode, nullptr);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == ENOSPC);
  CHECK(sp.reservation_stats().failfast_enospc == 1);
  sp.release_block_rsv(temp, UINT64_MAX);
  sp.release_block_rsv(sp.delayed_refs_rsv(), UINT64_MAX);
  sp.release_block_rsv(sp.global_rsv(), UINT64_MAX);
  // What was "used" (taken for allocations this test never made) stays in may_use; the rest is back.
  CHECK(meta.counters().may_use == kMiB + kNode);
}

TEST_CASE("use_block_rsv falls back in the kernel's order and counts each step", "[block_rsv]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 1 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  SpaceInfo& meta = sp.metadata();
  sp.global_rsv().set_size_and_fill(4 * kNode);
  BlockRsv trans(RsvType::kTrans, &meta);
  REQUIRE(trans.add(2 * kNode, FlushMode::kNoFlush));
  uint64_t share = kNode;  // this handle put one block of the two there
  // Step 1: from the reserve; the second block is past the handle's own share.
  CHECK(*sp.use_block_rsv(&trans, kNode, &share) == &trans);
  CHECK(*sp.use_block_rsv(&trans, kNode, &share) == &trans);
  CHECK(sp.reservation_stats().from_rsv == 2);
  CHECK(sp.reservation_stats().beyond_handle == 1);
  // Step 3: the reserve is dry, NO_FLUSH still fits (1 MiB total, 64 KiB global + nothing used).
  CHECK(*sp.use_block_rsv(&trans, kNode, &share) == &sp.empty_rsv());
  CHECK(sp.reservation_stats().no_flush == 1);
  // Fill the space_info with may_use so NO_FLUSH fails: step 4 takes from the global reserve.
  const uint64_t fill = meta.free_now();
  REQUIRE(meta.reserve_bytes(fill, FlushMode::kNoFlush));
  CHECK(*sp.use_block_rsv(&trans, kNode, &share) == &sp.global_rsv());
  CHECK(sp.reservation_stats().global == 1);
  // Global dry too (take the rest): step 5, FLUSH_EMERGENCY, ignores may_use.
  REQUIRE(sp.global_rsv().use_bytes(sp.global_rsv().reserved()));
  CHECK(*sp.use_block_rsv(&trans, kNode, &share) == &sp.empty_rsv());
  CHECK(sp.reservation_stats().emergency == 1);
  CHECK(sp.reservation_stats().overruns() == 3);
  CHECK(sp.reservation_stats().overruns_by_rsv[static_cast<int>(RsvType::kTrans)] == 3);
  // Real usage fills the group: step 6, ENOSPC.
  REQUIRE(bg->mark_used(4 * kGiB, 1 * kMiB));
  auto r = sp.use_block_rsv(&trans, kNode, &share);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == ENOSPC);
  CHECK(sp.reservation_stats().enospc == 1);
  CHECK(sp.enospc_counts()[static_cast<int>(EnospcReason::kTreeBlock)] == 1);
}

TEST_CASE("tickets are granted FIFO, priority tickets first, and never out of order", "[tickets]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 16 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  SpaceInfo& meta = sp.metadata();
  TestFlusher flusher;
  flusher.hold = true;  // the reclaim thread never frees anything: only the test does
  sp.start_reclaim(&flusher);
  REQUIRE(meta.reserve_bytes(16 * kMiB, FlushMode::kNoFlush));  // full
  std::mutex order_mu;
  std::vector<std::string> order;
  auto waiter = [&](std::string name, uint64_t bytes, FlushMode mode) {
    return std::thread([&, name, bytes, mode] {
      auto st = meta.reserve_bytes(bytes, mode);
      std::lock_guard g(order_mu);
      order.push_back(st ? name : name + ":" + std::to_string(st.error().err));
    });
  };
  auto t1 = waiter("big", 4 * kMiB, FlushMode::kFlushAll);
  eventually([&] { return meta.counters().tickets == 1; });
  auto t2 = waiter("small", 1 * kMiB, FlushMode::kFlushAll);
  eventually([&] { return meta.counters().tickets == 2; });
  // A priority ticket runs its own flush states in its thread (held inside the first one); it is
  // served before both normal tickets although it came last.
  auto t3 = waiter("priority", 2 * kMiB, FlushMode::kFlushLimit);
  eventually([&] { return meta.counters().priority_tickets == 1; });
  // 1 MiB freed: "small" would fit, but "big" is ahead of it (strict head of line), and the
  // priority ticket needs 2.
  meta.release_bytes(1 * kMiB);
  std::this_thread::sleep_for(50ms);
  CHECK(meta.ticket_stats().granted == 0);
  CHECK(meta.ticket_stats().priority_granted == 0);
  meta.release_bytes(1 * kMiB);  // 2 MiB free: the priority ticket, not the normal ones
  eventually([&] { return meta.ticket_stats().priority_granted == 1; });
  CHECK(meta.ticket_stats().granted == 0);
  meta.release_bytes(4 * kMiB);  // the big one
  eventually([&] { return meta.ticket_stats().granted == 1; });
  eventually([&] {
    std::lock_guard g(order_mu);
    return order.size() == 1;
  });
  meta.release_bytes(1 * kMiB);  // then the small one
  eventually([&] { return meta.ticket_stats().granted == 2; });
  eventually([&] {
    std::lock_guard g(order_mu);
    return order.size() == 2;
  });
  flusher.release_hold();
  t1.join();
  t2.join();
  t3.join();
  // The normal waiters returned in queue order (the priority one only once its flusher let go).
  CHECK(order == std::vector<std::string>{"big", "small", "priority"});
  const auto ts = meta.ticket_stats();
  CHECK(ts.queued == 2);
  CHECK(ts.granted == 2);
  CHECK(ts.priority_queued == 1);
  CHECK(ts.priority_granted == 1);
  CHECK(ts.failed == 0);
  CHECK(meta.counters().may_use == 16 * kMiB);
  sp.stop_reclaim();
}

TEST_CASE("a ticket fails with ENOSPC only after three passes without progress; progress restarts the passes",
          "[tickets]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 8 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  SpaceInfo& meta = sp.metadata();
  REQUIRE(meta.reserve_bytes(8 * kMiB, FlushMode::kNoFlush));  // full
  SECTION("no progress: ENOSPC after the commit state ran in three passes") {
    TestFlusher flusher;
    sp.start_reclaim(&flusher);
    auto st = meta.reserve_bytes(kMiB, FlushMode::kFlushAll);
    REQUIRE_FALSE(st);
    CHECK(st.error().err == ENOSPC);
    CHECK(flusher.runs[static_cast<int>(FlushState::kCommitTrans)] == 3);
    CHECK(flusher.runs[static_cast<int>(FlushState::kDelayedItemsNr)] == 3);
    // FLUSH_DELALLOC_FULL and ALLOC_CHUNK_FORCE only after a failed pass: passes 2 and 3.
    CHECK(flusher.runs[static_cast<int>(FlushState::kDelallocFull)] == 2);
    CHECK(flusher.runs[static_cast<int>(FlushState::kAllocChunkForce)] == 2);
    CHECK(meta.ticket_stats().failed == 1);
    CHECK(sp.enospc_counts()[static_cast<int>(EnospcReason::kMetadataTicket)] == 1);
    sp.stop_reclaim();
  }
  SECTION("the commit of the second pass frees space: the ticket is granted") {
    TestFlusher flusher;
    int commits = 0;
    flusher.on_state = [&](FlushState s) {
      if (s == FlushState::kCommitTrans && ++commits == 2) meta.release_bytes(2 * kMiB);
    };
    sp.start_reclaim(&flusher);
    REQUIRE(meta.reserve_bytes(kMiB, FlushMode::kFlushAll));
    CHECK(commits == 2);
    CHECK(meta.ticket_stats().granted == 1);
    CHECK(meta.ticket_stats().failed == 0);
    sp.stop_reclaim();
  }
  SECTION("FLUSH_ALL_STEAL takes from the global reserve instead of failing") {
    sp.global_rsv().set_size_and_fill(4 * kMiB);  // may_use is now 12 MiB of 8
    TestFlusher flusher;
    sp.start_reclaim(&flusher);
    REQUIRE(meta.reserve_bytes(2 * kMiB, FlushMode::kFlushAllSteal));
    CHECK(sp.global_rsv().reserved() == 2 * kMiB);
    CHECK(meta.ticket_stats().stolen == 1);
    // A plain FLUSH_ALL ticket may not steal.
    CHECK_FALSE(meta.reserve_bytes(kMiB, FlushMode::kFlushAll));
    sp.stop_reclaim();
  }
}

// Mixed block groups: one DATA|METADATA space_info, which kick_reclaim knows as data_. Its tickets
// must be served (they once waited forever: the data loop skipped a shared space_info and the
// metadata loop was never asked), by the metadata loop, whose states include every data state.
TEST_CASE("a_ticket_on_mixed_block_groups_is_served_by_the_reclaim_thread", "[tickets]") {
  SpaceInfos sp(4096, true, /*mixed_groups=*/true);
  REQUIRE(sp.mixed());
  REQUIRE(&sp.data() == &sp.metadata());
  auto bg = make_group(4 * kGiB, 8 * kMiB, kBlockGroupData | kBlockGroupMetadata);
  bg->attach(&sp.data(), 1);
  SpaceInfo& mixed = sp.data();
  REQUIRE(mixed.reserve_bytes(8 * kMiB, FlushMode::kNoFlush));  // full
  TestFlusher flusher;
  int commits = 0;
  flusher.on_state = [&](FlushState s) {
    if (s == FlushState::kCommitTrans && ++commits == 1) mixed.release_bytes(2 * kMiB);
  };
  sp.start_reclaim(&flusher);
  SECTION("a data reservation") { REQUIRE(mixed.reserve_bytes(kMiB, FlushMode::kFlushData)); }
  SECTION("a metadata reservation") { REQUIRE(sp.metadata().reserve_bytes(kMiB, FlushMode::kFlushAll)); }
  CHECK(commits == 1);
  CHECK(flusher.runs[static_cast<int>(FlushState::kDelayedItemsNr)] >= 1);  // the metadata loop ran
  CHECK(mixed.ticket_stats().granted == 1);
  sp.stop_reclaim();
}

TEST_CASE("an interrupted waiter leaves the queue with EINTR holding nothing", "[tickets]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 8 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  SpaceInfo& meta = sp.metadata();
  REQUIRE(meta.reserve_bytes(8 * kMiB, FlushMode::kNoFlush));
  TestFlusher flusher;
  flusher.hold = true;
  sp.start_reclaim(&flusher);
  WaitInterrupt intr;
  Status result;
  std::thread t([&] {
    set_current_wait_interrupt(&intr);
    result = meta.reserve_bytes(kMiB, FlushMode::kFlushAll);
    set_current_wait_interrupt(nullptr);
  });
  eventually([&] { return meta.counters().tickets == 1; });
  intr.interrupted.store(true);
  meta.wake_waiters();
  t.join();
  REQUIRE_FALSE(result);
  CHECK(result.error().err == EINTR);
  CHECK(meta.counters().tickets == 0);
  CHECK(meta.counters().reclaim_size == 0);
  CHECK(meta.counters().may_use == 8 * kMiB);  // nothing granted, nothing released twice
  CHECK(meta.ticket_stats().interrupted == 1);
  flusher.release_hold();
  sp.stop_reclaim();
}

TEST_CASE("no ticket starves: a big ticket at the head is served while small reservations keep coming",
          "[tickets]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 8 * kMiB, kBlockGroupData);
  bg->attach(&sp.data(), 1);
  SpaceInfo& data = sp.data();
  TestFlusher flusher;
  flusher.hold = true;
  sp.start_reclaim(&flusher);
  REQUIRE(data.reserve_bytes(8 * kMiB, FlushMode::kNoFlush));
  std::atomic<bool> big_done{false};
  std::thread big([&] {
    REQUIRE(data.reserve_bytes(4 * kMiB, FlushMode::kFlushData));
    big_done = true;
  });
  eventually([&] { return data.counters().tickets == 1; });
  // Small reservations keep arriving as space trickles back; none may pass the queued big one
  // (FLUSH_DATA respects the queue here, unlike the kernel).
  int small_ok = 0;
  for (int i = 0; i < 4; ++i) {
    data.release_bytes(kMiB);
    if (data.reserve_bytes(64 * 1024, FlushMode::kNoFlush)) small_ok++;
  }
  eventually([&] { return big_done.load(); });
  CHECK(small_ok == 0);
  flusher.release_hold();
  big.join();
  sp.stop_reclaim();
}

TEST_CASE("eight threads reserving, using and releasing at once keep the counters exact", "[tickets][threads]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 32 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  SpaceInfo& meta = sp.metadata();
  sp.global_rsv().set_size_and_fill(2 * kMiB);
  // The "commit" of this test frees what the threads pinned meanwhile: some threads give their
  // reservation back only through it, so tickets really wait and get served.
  std::mutex pinned_mu;
  uint64_t parked = 0;
  TestFlusher flusher;
  flusher.on_state = [&](FlushState s) {
    if (s != FlushState::kCommitTrans) return;
    uint64_t n;
    {
      std::lock_guard g(pinned_mu);
      n = parked;
      parked = 0;
    }
    meta.release_bytes(n);
  };
  sp.start_reclaim(&flusher);
  std::atomic<int> enospc{0}, ok{0};
  const int per_thread = static_cast<int>(400 * stress_scale());
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      BlockRsv rsv(RsvType::kTemp, &meta);
      for (int i = 0; i < per_thread; ++i) {
        const uint64_t b = (1 + rng() % 16) * 64 * 1024;
        if (!rsv.add(b, i % 3 ? FlushMode::kFlushAll : FlushMode::kFlushAllSteal)) {
          enospc++;
          continue;
        }
        ok++;
        (void)rsv.use_bytes(b / 2);  // "allocated": park those bytes for the next commit
        {
          std::lock_guard g(pinned_mu);
          parked += b / 2;
        }
        sp.release_block_rsv(rsv, UINT64_MAX);
      }
    });
  for (auto& th : threads) th.join();
  sp.stop_reclaim();
  meta.release_bytes(parked);
  INFO("ok " << ok.load() << " enospc " << enospc.load());
  CHECK(ok.load() > 0);
  const auto ts = meta.ticket_stats();
  CHECK(ts.granted + ts.failed == ts.queued);  // a stolen ticket counts as granted
  CHECK(meta.counters().tickets == 0);
  // Idle: may_use is back to what the reserves hold.
  const uint64_t held = sp.global_rsv().reserved() + sp.delayed_refs_rsv().reserved() +
                        sp.delayed_block_rsv().reserved() + sp.trans_rsv().reserved();
  CHECK(meta.counters().may_use == held);
}

TEST_CASE("update_delayed_refs_rsv grows the size by the refs and moves what the handle reserved", "[block_rsv]") {
  SpaceInfos sp(kNode, true, false);
  auto bg = make_group(4 * kGiB, 64 * kMiB, kBlockGroupMetadata);
  bg->attach(&sp.metadata(), 1);
  BlockRsv handle(RsvType::kDelayedRefs, &sp.metadata());
  REQUIRE(handle.add(sp.delayed_ref_bytes(2), FlushMode::kNoFlush));
  sp.update_delayed_refs_rsv(&handle, 1);
  CHECK(sp.delayed_refs_rsv().size() == sp.delayed_ref_bytes(1));
  CHECK(sp.delayed_refs_rsv().reserved() == sp.delayed_ref_bytes(1));
  CHECK(handle.reserved() == sp.delayed_ref_bytes(1));
  // More refs than the handle reserved: the size grows by all of them, the bytes by what is left.
  sp.update_delayed_refs_rsv(&handle, 3);
  CHECK(sp.delayed_refs_rsv().size() == sp.delayed_ref_bytes(4));
  CHECK(sp.delayed_refs_rsv().reserved() == sp.delayed_ref_bytes(2));
  CHECK(handle.reserved() == 0);
  // A handle without a delayed-ref reserve (a join): only the size grows.
  sp.update_delayed_refs_rsv(nullptr, 1);
  CHECK(sp.delayed_refs_rsv().size() == sp.delayed_ref_bytes(5));
  CHECK(sp.delayed_refs_rsv().reserved() == sp.delayed_ref_bytes(2));
  sp.update_delayed_refs_rsv(nullptr, 0);
  CHECK(sp.delayed_refs_rsv().size() == sp.delayed_ref_bytes(5));
  sp.release_block_rsv(handle, UINT64_MAX);
  sp.release_block_rsv(sp.delayed_refs_rsv(), UINT64_MAX);
  CHECK(sp.delayed_refs_rsv().size() == 0);
}
