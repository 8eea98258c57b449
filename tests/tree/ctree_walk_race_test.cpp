// Rule a_leaf_crossing_never_passes_back_over_the_search_key: a walk that searched for K and crosses
// to the next leaf (next_leaf) never lands on a key below K — also when another thread inserts such
// a key while the crossing holds no lock (between the release of the old path and the new search).
//
// Found as the "no dir index" abort (tests/fs/delayed_dir_index_test.cpp): an inode's eviction
// searched for [ino 0 0], landed past the end of a leaf and crossed; the directory's DIR_INDEX
// inserted meanwhile in the gap came back as the first item of the inode's range. Every range walk
// in fs/ and alloc/ starts the same way (file extents, xattrs, checksums, free space, root items):
// a read of a file whose first extent opens a leaf would have stopped at another inode's item and
// seen a hole. The insert is made at the exact point by TreeRoot's crossing hook; without the
// bound in next_leaf the first case fails.
#include <catch2/catch.hpp>
#include <map>

#include "tree_test_env.h"
#include "tree/ctree.h"

namespace ubtrfs {
namespace {
using test::TreeEnv;

Key key_of(uint64_t objectid, uint64_t offset) { return Key{objectid, kStringItemKey, offset}; }

struct WalkTree {
  TreeEnv env{4096};
  TreeRoot root{env.ctx, kUuidTreeObjectid};
  std::map<Key, std::vector<uint8_t>> model;

  // Objects 100..299 with items at offsets 10, 20, 30: many leaves, and room for keys between.
  WalkTree() {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
    for (uint64_t o = 100; o < 300; ++o)
      for (uint64_t i = 1; i <= 3; ++i) insert(h, key_of(o, i * 10));
    h.end_handle();
    REQUIRE(env.commit());
  }
  void insert(TreeHandle& h, const Key& k) {
    model[k] = test::make_value(k, 200, 0);
    REQUIRE(insert_item(h, root, k, model[k]));
  }
};

TEST_CASE("a_leaf_crossing_never_passes_back_over_the_search_key: next_leaf after a search that landed past a leaf's end",
          "[tree][walk][race]") {
  WalkTree t;
  // A key K between two leaves: every key of the leaf the search for K lands in is below K.
  std::optional<Key> search;
  for (uint64_t o = 150; o < 290 && !search; ++o) {
    Path p;
    const Key k = key_of(o, 5);  // below the object's first item (offset 10)
    REQUIRE(search_slot(nullptr, t.root, k, p, 0, false));
    if (p.slots[0] == static_cast<int>(p.leaf().nritems())) search = k;
  }
  REQUIRE(search);
  INFO("search key objectid " << search->objectid);

  // While the crossing holds no lock, another thread inserts a key above the old leaf's last key
  // and below K (the previous object's next item).
  TreeHandle h = t.env.handle();
  const Key intruder = key_of(search->objectid - 1, 40);
  int crossings = 0;
  t.root.set_next_leaf_unlocked_hook_for_test([&] {
    if (crossings++ == 0) t.insert(h, intruder);
  });
  Path p;
  REQUIRE(search_slot(nullptr, t.root, *search, p, 0, false));
  REQUIRE(p.slots[0] == static_cast<int>(p.leaf().nritems()));
  auto valid = next_leaf(t.root, p);
  t.root.set_next_leaf_unlocked_hook_for_test(nullptr);
  REQUIRE(valid);
  REQUIRE(*valid);
  CHECK(crossings == 1);
  const Key first = p.leaf().item_key(p.slots[0]);
  CHECK_FALSE(first < *search);                        // the bug: the intruder came back
  CHECK(first == key_of(search->objectid, 10));        // the first key at or after K
  p.release();
  h.end_handle();
  CHECK(lookup_item(t.root, intruder).value().has_value());  // the insert itself happened
  CHECK(test::compare_with_model(t.root, t.model) == "");
}

TEST_CASE("a walk that stepped back below its search key sees every item on its way forward again", "[tree][walk]") {
  WalkTree t;
  // Search the first key of some object, step back across a leaf boundary, then forward: the
  // forward crossing must not skip the items between the step-back point and the search key.
  Path p;
  const Key k = key_of(200, 10);
  REQUIRE(search_slot(nullptr, t.root, k, p, 0, false) == 0);
  std::vector<Key> back;
  for (int i = 0; i < 40; ++i) {  // far enough to cross at least one leaf (4 KiB leaves hold ~17)
    auto v = prev_item(t.root, p);
    REQUIRE(v);
    REQUIRE(*v);
    back.push_back(p.leaf().item_key(p.slots[0]));
  }
  // Forward again over the same 40 keys, in the opposite order, then k itself.
  for (int i = 39; i >= 1; --i) {
    auto v = next_item(t.root, p);
    REQUIRE(v);
    REQUIRE(*v);
    CHECK(p.leaf().item_key(p.slots[0]) == back[static_cast<size_t>(i - 1)]);
  }
  auto v = next_item(t.root, p);
  REQUIRE(v);
  REQUIRE(*v);
  CHECK(p.leaf().item_key(p.slots[0]) == k);
}

}  // namespace
}  // namespace ubtrfs
