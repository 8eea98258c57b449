// csum tree: insert / delete / lookup of data checksums against a per-sector model, on in-memory
// trees (tests/tree/tree_test_env.h), including item merging, splitting and the per-item cap.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "fs/csum_tree.h"
#include "tree/ctree.h"
#include "../tree/tree_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

namespace {

constexpr uint64_t kSector = 4096;

std::vector<uint8_t> fake_csums(const FsParams& fs, uint64_t bytenr, uint64_t nsec) {
  std::vector<uint8_t> v(nsec * fs.csum_size());
  for (uint64_t i = 0; i < nsec; ++i)
    for (size_t b = 0; b < fs.csum_size(); ++b)
      v[i * fs.csum_size() + b] = static_cast<uint8_t>((bytenr / kSector + i) * 31 + b * 7 + 1);
  return v;
}

// Every item is a csum item, items do not overlap, none exceeds the cap; returns the item count.
size_t check_items(TreeRoot& root, const FsParams& fs, std::string& err) {
  Path p;
  auto r = search_slot(nullptr, root, kMinKey, p, 0, false);
  if (!r) {
    err = r.error().message;
    return 0;
  }
  size_t n = 0;
  uint64_t prev_end = 0;
  bool valid = p.leaf().nritems() > 0;
  while (valid) {
    Key k = p.leaf().item_key(p.slots[0]);
    uint32_t size = p.leaf().item_size(p.slots[0]);
    if (k.objectid != kExtentCsumObjectid || k.type != kExtentCsumKey) err = "foreign key";
    if (size % fs.csum_size()) err = "size not a csum multiple";
    if (size / fs.csum_size() > max_csums_per_item(fs)) err = "item over the cap";
    if (k.offset < prev_end) err = "overlapping items";
    prev_end = k.offset + size / fs.csum_size() * kSector;
    ++n;
    auto nx = next_item(root, p);
    valid = nx && *nx;
  }
  return n;
}

struct CsumFixture {
  test::TreeEnv env{4096};
  TreeRoot root{env.ctx, kCsumTreeObjectid};
  std::map<uint64_t, std::vector<uint8_t>> model;  // sector bytenr -> csum

  CsumFixture() {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
  }
  void insert(uint64_t bytenr, uint64_t nsec) {
    TreeHandle h = env.handle();
    auto c = fake_csums(env.fs, bytenr, nsec);
    auto st = insert_csums(h, root, env.fs, bytenr, c);
    INFO(bytenr << " " << nsec << " " << (st ? "" : st.error().message));
    REQUIRE(st);
    for (uint64_t i = 0; i < nsec; ++i)
      model[bytenr + i * kSector] = std::vector<uint8_t>(c.begin() + i * 4, c.begin() + i * 4 + 4);
  }
  void erase(uint64_t bytenr, uint64_t nsec) {
    TreeHandle h = env.handle();
    auto st = delete_csums(h, root, env.fs, bytenr, nsec * kSector);
    INFO(bytenr << " " << nsec << " " << (st ? "" : st.error().message));
    REQUIRE(st);
    for (uint64_t i = 0; i < nsec; ++i) model.erase(bytenr + i * kSector);
  }
  void verify(uint64_t lo, uint64_t hi) {
    auto r = lookup_csums(root, env.fs, lo, hi - lo);
    REQUIRE(r);
    for (uint64_t b = lo, i = 0; b < hi; b += kSector, ++i) {
      auto it = model.find(b);
      INFO("sector " << b);
      REQUIRE(r->present[i] == (it != model.end()));
      if (it != model.end()) REQUIRE(std::equal(it->second.begin(), it->second.end(), r->csums.begin() + i * 4));
    }
    std::string err;
    check_items(root, env.fs, err);
    REQUIRE(err.empty());
    REQUIRE(env.check_tree(root).empty());
  }
};

}  // namespace

TEST_CASE("csum insert adjacent to an item extends it instead of adding one", "[csum]") {
  CsumFixture f;
  f.insert(1 << 20, 4);
  f.insert((1 << 20) + 4 * kSector, 3);
  std::string err;
  REQUIRE(check_items(f.root, f.env.fs, err) == 1);
  f.verify(1 << 20, (1 << 20) + 16 * kSector);
}

TEST_CASE("csum insert over existing checksums is refused with EEXIST", "[csum]") {
  CsumFixture f;
  f.insert(1 << 20, 4);
  TreeHandle h = f.env.handle();
  auto c = fake_csums(f.env.fs, (1 << 20) + 2 * kSector, 4);
  auto st = insert_csums(h, f.root, f.env.fs, (1 << 20) + 2 * kSector, c);
  REQUIRE(!st);
  REQUIRE(st.error().err == EEXIST);
}

TEST_CASE("csum items never exceed the per-item cap", "[csum]") {
  CsumFixture f;
  const uint64_t cap = max_csums_per_item(f.env.fs);
  REQUIRE(cap == (4096 - 101 - 50) / 4 - 1);
  f.insert(1 << 20, cap * 2 + 5);
  std::string err;
  REQUIRE(check_items(f.root, f.env.fs, err) == 3);
  REQUIRE(err.empty());
  f.verify(1 << 20, (1 << 20) + (cap * 2 + 8) * kSector);
}

TEST_CASE("csum delete in the middle of an item splits it", "[csum]") {
  CsumFixture f;
  f.insert(1 << 20, 10);
  f.erase((1 << 20) + 3 * kSector, 2);
  std::string err;
  REQUIRE(check_items(f.root, f.env.fs, err) == 2);
  f.verify(1 << 20, (1 << 20) + 12 * kSector);
  f.erase(1 << 20, 1);  // front trim
  f.erase((1 << 20) + 9 * kSector, 1);  // back trim
  f.verify(1 << 20, (1 << 20) + 12 * kSector);
  f.erase(0, 4096);  // everything
  REQUIRE(check_items(f.root, f.env.fs, err) == 0);
  f.verify(1 << 20, (1 << 20) + 12 * kSector);
}

TEST_CASE("csum tree matches a sector model under random inserts and deletes", "[csum]") {
  CsumFixture f;
  std::mt19937_64 rng(12345);
  const uint64_t span = 8192;  // sectors
  const int rounds = static_cast<int>(400 * test::stress_scale());
  for (int i = 0; i < rounds; ++i) {
    uint64_t start = rng() % span, n = 1 + rng() % 600;
    n = std::min(n, span - start);
    if (rng() % 3 != 0) {
      // Insert only the free sub-ranges (the precondition of insert_csums).
      uint64_t s = start;
      while (s < start + n) {
        while (s < start + n && f.model.count(s * kSector)) ++s;
        uint64_t e = s;
        while (e < start + n && !f.model.count(e * kSector)) ++e;
        if (e > s) f.insert(s * kSector, e - s);
        s = e;
      }
    } else {
      f.erase(start * kSector, n);
    }
    if (i % 50 == 0) f.verify(0, span * kSector);
  }
  f.verify(0, span * kSector);
  REQUIRE(f.model.size() > 0);
}

// The delayed-ref runner deletes the checksums of a freed data extent while flushers insert the
// checksums of new extents (run_delayed_refs holds only a join handle). A freed extent's sectors are
// pinned, so an insert never targets them, but the item the insert wants to extend may be the one
// being truncated or split. Replays the delete at the point where insert_csums has looked at the
// tree but not yet changed it: the result must be exactly the model, with no overlapping items.
TEST_CASE("csum items stay exact when a delete lands between an insert's lookup and its change", "[csum]") {
  const uint64_t b = 1 << 20;
  struct Case {
    const char* name;
    uint64_t del_start, del_nsec;
  };
  // Cases as a loop, not SECTIONs: ctest runs with --warn NoAssertions, and a section whose
  // assertions sit after it in the body counts as one without any.
  for (const Case k : {Case{"delete splits the item (extent in the middle freed)", b + 2 * kSector, 4},
                       Case{"delete truncates the item's tail (the extent just before the insert freed)",
                            b + 4 * kSector, 6},
                       Case{"delete removes the item's head (its start key goes away)", b, 4},
                       Case{"delete removes the whole item", b, 10}}) {
    INFO(k.name);
    CsumFixture f;
    f.insert(b, 4);                // extent 1 [b, b+4)
    f.insert(b + 4 * kSector, 6);  // extent 2 [b+4, b+10): merged into one item [b, b+10)
    std::string err;
    REQUIRE(check_items(f.root, f.env.fs, err) == 1);
    bool fired = false;
    set_insert_csums_step_hook_for_test([&](uint64_t) {
      if (fired) return;
      fired = true;
      f.erase(k.del_start, k.del_nsec);
    });
    // The new extent right after the item: the insert wants to extend [b, b+10).
    TreeHandle h = f.env.handle();
    const auto c = fake_csums(f.env.fs, b + 10 * kSector, 6);
    auto st = insert_csums(h, f.root, f.env.fs, b + 10 * kSector, c);
    set_insert_csums_step_hook_for_test(nullptr);
    INFO((st ? std::string() : st.error().message));
    REQUIRE(st);
    REQUIRE(fired);
    for (uint64_t i = 0; i < 6; ++i)
      f.model[b + (10 + i) * kSector] = std::vector<uint8_t>(c.begin() + i * 4, c.begin() + i * 4 + 4);
    f.verify(b - 4 * kSector, b + 20 * kSector);
  }
}

// The same race with real threads: flushers append extents' checksums, each next to the previous
// one (so each insert wants to extend the item just written), while a delayed-ref runner deletes
// the checksums of random earlier extents, often the one the next insert extends. Freed sectors
// are never reused (they stay pinned in the filesystem). The tree must equal the model afterwards.
// The flushers keep within an eighth of the deleter (a starved deleter — a loaded machine, a
// sanitizer build — once left 2 deletes in 60,000 inserts and no race to test).
TEST_CASE("csum items never overlap under concurrent inserts and deletes", "[csum][concurrency]") {
  CsumFixture f;
  constexpr int kFlushers = 3;
  const int extents_per_flusher = static_cast<int>(20000 * test::stress_scale());
  struct Extent {
    uint64_t bytenr, nsec;
  };
  std::mutex mu;
  std::vector<Extent> live;  // inserted and not yet deleted
  std::vector<Extent> deleted;
  std::atomic<int> flushers_left{kFlushers};
  std::atomic<size_t> inserted{0}, deleted_count{0};
  std::atomic<bool> deleter_stopped{false};
  std::vector<std::string> errors(kFlushers + 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kFlushers; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(77 + t);
      uint64_t cur = (uint64_t{1} << 30) + uint64_t(t) * (uint64_t{1} << 30);
      for (int i = 0; i < extents_per_flusher && errors[t].empty(); ++i) {
        const uint64_t nsec = 1 + rng() % 8;
        TreeHandle h = f.env.handle();
        auto st = insert_csums(h, f.root, f.env.fs, cur, fake_csums(f.env.fs, cur, nsec));
        if (!st) {
          errors[t] = st.error().message;
          break;
        }
        {
          std::lock_guard g(mu);
          live.push_back({cur, nsec});
        }
        cur += nsec * kSector;
        const size_t n = inserted.fetch_add(1) + 1;
        while (deleted_count.load() + 8 < n / 8 && !deleter_stopped.load()) std::this_thread::yield();
      }
      flushers_left.fetch_sub(1);
    });
  }
  threads.emplace_back([&] {
    std::mt19937_64 rng(99);
    while (flushers_left.load() > 0 && errors[kFlushers].empty()) {
      Extent e;
      {
        std::lock_guard g(mu);
        if (live.size() < 4) {
          std::this_thread::yield();
          continue;
        }
        // Mostly the newest extents: the ones whose item a flusher is extending right now.
        const size_t k = rng() % 2 ? live.size() - 1 - rng() % std::min<size_t>(live.size(), 6) : rng() % live.size();
        e = live[k];
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
      }
      TreeHandle h = f.env.handle();
      auto st = delete_csums(h, f.root, f.env.fs, e.bytenr, e.nsec * kSector);
      if (!st) {
        errors[kFlushers] = st.error().message;
        break;
      }
      std::lock_guard g(mu);
      deleted.push_back(e);
      deleted_count.fetch_add(1);
    }
    deleter_stopped.store(true);
  });
  for (auto& th : threads) th.join();
  for (const auto& e : errors) {
    INFO(e);
    REQUIRE(e.empty());
  }
  REQUIRE(deleted.size() > 100);
  std::string err;
  check_items(f.root, f.env.fs, err);
  INFO(err);
  REQUIRE(err.empty());
  REQUIRE(f.env.check_tree(f.root).empty());
  for (const auto& [e, present] : {std::pair{&live, true}, std::pair{&deleted, false}}) {
    for (const Extent& x : *e) {
      auto r = lookup_csums(f.root, f.env.fs, x.bytenr, x.nsec * kSector);
      REQUIRE(r);
      const auto want = fake_csums(f.env.fs, x.bytenr, x.nsec);
      for (uint64_t i = 0; i < x.nsec; ++i) {
        INFO("extent " << x.bytenr << " sector " << i << " expected " << (present ? "present" : "absent"));
        REQUIRE(r->present[i] == present);
        if (present) REQUIRE(std::equal(want.begin() + i * 4, want.begin() + i * 4 + 4, r->csums.begin() + i * 4));
      }
    }
  }
}

// Reads verify live data against the csum tree while the delayed-ref runner deletes the checksums
// of freed extents next to it: a delete that splits or front-trims an item must never leave the
// surviving sectors without their checksums, even for an instant (a reader would see a "csum hole"
// and fail the read with EIO).
TEST_CASE("live checksums stay visible while neighbouring freed ranges are deleted", "[csum][concurrency]") {
  CsumFixture f;
  constexpr uint64_t kExtentSectors = 8;
  const uint64_t extents = static_cast<uint64_t>(4000 * test::stress_scale());
  const uint64_t base = uint64_t{1} << 30;
  const uint64_t ext_bytes = kExtentSectors * kSector;
  // One contiguous run of extents: merged into few large items, so deletes split them.
  f.insert(base, extents * kExtentSectors);
  std::vector<uint64_t> freed;  // extent indexes whose checksums get deleted (every other one)
  for (uint64_t i = 0; i < extents; i += 2) freed.push_back(i);
  std::shuffle(freed.begin(), freed.end(), std::mt19937_64(5));
  const auto want = fake_csums(f.env.fs, base, extents * kExtentSectors);

  // The reader follows the deleter: it verifies the live extents on both sides of the extent
  // being deleted, where a split or front trim rewrites the items.
  std::atomic<uint64_t> current{UINT64_MAX};
  std::atomic<uint64_t> lookups{0};
  std::atomic<bool> done{false}, reader_stopped{false};
  std::string deleter_error;
  std::thread deleter([&] {
    for (uint64_t e : freed) {
      current.store(e);
      const uint64_t seen = lookups.load();
      while (lookups.load() < seen + 2 && !reader_stopped.load()) std::this_thread::yield();  // the reader is on it
      TreeHandle h = f.env.handle();
      auto st = delete_csums(h, f.root, f.env.fs, base + e * ext_bytes, ext_bytes);
      if (!st) {
        deleter_error = st.error().message;
        break;
      }
    }
    done.store(true);
  });
  std::string reader_error;
  while (!done.load() && reader_error.empty()) {
    const uint64_t e = current.load();
    if (e == UINT64_MAX) continue;
    for (uint64_t live : {e - 1, e + 1}) {
      if (live >= extents) continue;
      auto r = lookup_csums(f.root, f.env.fs, base + live * ext_bytes, ext_bytes);
      if (!r) {
        reader_error = r.error().message;
        break;
      }
      const auto* w = want.data() + live * kExtentSectors * 4;
      for (uint64_t s = 0; s < kExtentSectors; ++s)
        if (!r->present[s] || !std::equal(w + s * 4, w + s * 4 + 4, r->csums.begin() + s * 4)) {
          reader_error = "live sector " + std::to_string(base + live * ext_bytes + s * kSector) +
                         " lost its checksum while extent " + std::to_string(e) + " was deleted";
          break;
        }
    }
    lookups.fetch_add(1);
  }
  reader_stopped.store(true);
  deleter.join();
  INFO(deleter_error << reader_error);
  REQUIRE(deleter_error.empty());
  REQUIRE(reader_error.empty());
  for (uint64_t e : freed)
    for (uint64_t s = 0; s < kExtentSectors; ++s) f.model.erase(base + (e * kExtentSectors + s) * kSector);
  f.verify(base, base + extents * ext_bytes);
}
