// csum tree: insert / delete / lookup of data checksums against a per-sector model, on in-memory
// trees (tests/tree/tree_test_env.h), including item merging, splitting and the per-item cap.
#include <catch2/catch.hpp>

#include <map>
#include <random>

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
