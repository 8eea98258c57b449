// Randomized model tests of the B-tree, single-threaded: every batch of operations is followed by a
// full forward and backward scan compared with std::map, a whole-tree invariant walk (levels, key
// order, ptr key == child first key, ptr generation == child generation, write-time checker on every
// block, no block of an older generation modified without COW), and periodic commits.
#include <catch2/catch.hpp>

#include <chrono>

#include <spdlog/spdlog.h>

#include "tree_workload.h"

using namespace ubtrfs;
using namespace ubtrfs::test;

namespace {

struct ModelRun {
  uint64_t ops = 0;
  int max_height = 0;
  uint64_t max_items = 0;
};

ModelRun run_model(TreeEnv& env, TreeRoot& root, WorkloadConfig cfg, uint64_t seed, int batches, int batch_ops,
                   int commit_every) {
  Workload w(env, root, cfg, seed);
  ModelRun run;
  for (int b = 0; b < batches; ++b) {
    // Grow for a while, then shrink, so splits and merges both get their turn.
    const int phase = (b / 6) % 3;
    w.set_insert_pct(phase == 0 ? 70 : phase == 1 ? 45 : 15);
    TreeHandle h = env.handle();
    for (int i = 0; i < batch_ops; ++i) {
      auto e = w.step(h);
      if (!e.empty()) FAIL("batch " << b << " op " << i << ": " << e);
      if (std::getenv("UBTRFS_TEST_CHECK_EVERY_OP")) {
        auto err = env.check_tree(root);
        if (!err.empty()) FAIL("batch " << b << " op " << i << ": invariant: " << err);
        err = compare_with_model(root, w.model());
        if (!err.empty()) FAIL("batch " << b << " op " << i << ": model: " << err << " last op " << w.last_op());
      }
    }
    h.end_handle();
    TreeShape shape;
    auto err = env.check_tree(root, &shape);
    if (!err.empty()) FAIL("batch " << b << ": invariant: " << err);
    err = compare_with_model(root, w.model());
    if (!err.empty()) FAIL("batch " << b << ": model: " << err);
    REQUIRE(shape.items == w.model().size());
    run.max_height = std::max(run.max_height, shape.height);
    run.max_items = std::max<uint64_t>(run.max_items, shape.items);
    if ((b + 1) % commit_every == 0) {
      auto st = env.commit();
      if (!st) FAIL("commit: " << st.error().message);
    }
  }
  run.ops = w.counts().total();
  return run;
}

}  // namespace

TEST_CASE("random inserts deletes and lookups match a std::map model in a deep 4k-node tree", "[ctree][model]") {
  const auto t0 = std::chrono::steady_clock::now();
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
  }
  WorkloadConfig cfg;
  cfg.objectids = 8000;
  const int batches = static_cast<int>(96 * stress_scale());
  auto run = run_model(env, root, cfg, 42, batches, 4000, 3);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN("model: ops=" << run.ops << " max_height=" << run.max_height << " max_items=" << run.max_items
                     << " cows=" << env.stats.cows() << " secs=" << secs);
  CHECK(run.max_height >= 3);
}

TEST_CASE("small items only build a tree of at least three levels and shrink it back", "[ctree][model]") {
  TreeEnv env(4096);
  TreeRoot root(env.ctx, kUuidTreeObjectid);
  {
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
  }
  WorkloadConfig cfg;
  cfg.objectids = 30000;
  cfg.big_items = false;
  auto run = run_model(env, root, cfg, 7, static_cast<int>(36 * stress_scale()), 4000, 2);
  WARN("model small items: ops=" << run.ops << " max_height=" << run.max_height << " max_items=" << run.max_items);
  CHECK(run.max_height >= 3);
  // Delete everything: the tree collapses back to a root leaf.
  Workload w(env, root, cfg, 1);
  TreeHandle h = env.handle();
  std::vector<Key> keys;
  {
    Path p;
    REQUIRE(search_slot(nullptr, root, kMinKey, p, 0, false));
    bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
    while (valid) {
      keys.push_back(p.leaf().item_key(p.slots[0]));
      valid = *next_item(root, p);
    }
  }
  for (const Key& k : keys) REQUIRE(delete_item(h, root, k));
  h.end_handle();
  TreeShape shape;
  REQUIRE(env.check_tree(root, &shape) == "");
  CHECK(shape.items == 0);
  CHECK(shape.height == 1);
  REQUIRE(env.commit());
}
