// The four search_slot restart sites (KERNEL.md §9), each provoked deterministically on a
// three-level 4k-node tree by one search, and counted by site, root objectid and level.
#include <catch2/catch.hpp>

#include "tree_workload.h"

using namespace ubtrfs;
using namespace ubtrfs::test;

namespace {

// Keys 10, 20, ... so there is room below the first one.
void build_three_levels(TreeEnv& env, TreeRoot& root) {
  TreeHandle h = env.handle();
  REQUIRE(create_empty_tree(h, root));
  for (uint64_t i = 1; i <= 4000; ++i) {
    auto v = make_value(key(i * 10), 150, 0);
    REQUIRE(insert_item(h, root, key(i * 10), v));
  }
  h.end_handle();
  REQUIRE(root.node()->level() == 2);
  REQUIRE(env.commit());
  REQUIRE(env.check_tree(root) == "");
}

}  // namespace

TEST_CASE("a cow needed above write_lock_level restarts the search at site write_lock", "[ctree][restart]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  build_three_levels(env, root);
  env.stats.reset();
  TreeHandle h = env.handle();
  REQUIRE(insert_item(h, root, key(20005), make_value(key(20005), 10, 0)));
  // Insert starts with write_lock_level 1: the committed root (level 2) must be COWed -> restart.
  CHECK(env.stats.restarts(RestartSite::kWriteLock, kUuidTreeObjectid, 2) == 1);
  CHECK(env.stats.restarts(RestartSite::kWriteLock) == 1);
  CHECK(env.stats.cows() == 3);  // root, level-1 node, leaf
  // The same path again: everything is this transaction's and unwritten -> no COW, no restart.
  REQUIRE(insert_item(h, root, key(20006), make_value(key(20006), 10, 0)));
  CHECK(env.stats.restarts(RestartSite::kWriteLock) == 1);
  CHECK(env.stats.cows() == 3);
  h.end_handle();
  REQUIRE(env.check_tree(root) == "");
}

TEST_CASE("descending through slot 0 while inserting restarts at site slot_zero to write-lock the parent",
          "[ctree][restart]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  build_three_levels(env, root);
  TreeHandle h = env.handle();
  // COW the leftmost path first so that only the slot-0 rule can restart.
  REQUIRE(insert_item(h, root, key(15), make_value(key(15), 10, 0)));
  env.stats.reset();
  REQUIRE(insert_item(h, root, key(1), make_value(key(1), 10, 0)));  // new smallest key
  CHECK(env.stats.restarts(RestartSite::kSlotZero, kUuidTreeObjectid, 2) == 1);
  CHECK(env.stats.restarts(RestartSite::kSlotZero) == 1);
  CHECK(env.stats.restarts(RestartSite::kWriteLock) == 0);
  h.end_handle();
  REQUIRE(env.check_tree(root) == "");
}

TEST_CASE("a delete through a node under half full restarts at site setup_nodes to lock its parent",
          "[ctree][restart]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  build_three_levels(env, root);
  REQUIRE(root.node()->nritems() < root.node()->max_ptrs() / 2);
  env.stats.reset();
  TreeHandle h = env.handle();
  REQUIRE(delete_item(h, root, key(20000)));
  // Deletes start with write_lock_level 2; balancing the level-2 root needs level 3 -> restart.
  CHECK(env.stats.restarts(RestartSite::kSetupNodes, kUuidTreeObjectid, 2) == 1);
  h.end_handle();
  REQUIRE(env.check_tree(root) == "");
}

TEST_CASE("an insert into a nearly full node restarts at site setup_nodes and splits the node",
          "[ctree][restart]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  TreeHandle h = env.handle();
  REQUIRE(create_empty_tree(h, root));
  // Grow until some insert has had to split a level-1 node.
  uint64_t i = 0;
  while (env.stats.restarts(RestartSite::kSetupNodes) == 0 && i < 100000) {
    ++i;
    REQUIRE(insert_item(h, root, key(i * 10), make_value(key(i * 10), 100, 0)));
  }
  CHECK(env.stats.restarts(RestartSite::kSetupNodes, kUuidTreeObjectid, 1) == 1);
  CHECK(root.node()->level() == 2);
  h.end_handle();
  REQUIRE(env.check_tree(root) == "");
}

TEST_CASE("a child missing from the cache releases the path and restarts at site read_block", "[ctree][restart]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  build_three_levels(env, root);
  env.cache.set_budget(0);
  env.cache.evict_to_budget();
  env.stats.reset();
  const auto misses = env.cache.counters().misses;
  // Pick a key whose level-1 node and leaf were evicted (the cache keeps only its floor).
  for (uint64_t k = 10; k <= 40000; k += 10) {
    Path p;
    EbRef r = root.node();
    r->lock_read();
    auto [found, slot] = r->bin_search(key(k));
    if (!found && slot > 0) --slot;
    const bool cached = env.cache.find(r->node_blockptr(slot)) != nullptr;
    r->unlock_read();
    if (cached) continue;
    auto res = lookup_item(root, key(k));
    REQUIRE(res);
    REQUIRE(res->has_value());
    CHECK(env.stats.restarts(RestartSite::kReadBlock, kUuidTreeObjectid, 1) == 1);
    CHECK(env.stats.restarts(RestartSite::kReadBlock, kUuidTreeObjectid, 0) == 1);
    CHECK(env.cache.counters().misses == misses + 2);
    return;
  }
  FAIL("every level-1 node stayed cached");
}

TEST_CASE("a root node left with one child collapses into it", "[ctree][balance]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  TreeHandle h = env.handle();
  REQUIRE(create_empty_tree(h, root));
  for (uint64_t i = 1; i <= 200; ++i) REQUIRE(insert_item(h, root, key(i), make_value(key(i), 100, 0)));
  REQUIRE(root.node()->level() == 1);
  for (uint64_t i = 1; i <= 195; ++i) REQUIRE(delete_item(h, root, key(i)));
  REQUIRE(delete_item(h, root, key(196)));  // one more descent after the last merge
  TreeShape s;
  REQUIRE(env.check_tree(root, &s) == "");
  CHECK(s.height == 1);
  CHECK(s.items == 4);
  h.end_handle();
}
