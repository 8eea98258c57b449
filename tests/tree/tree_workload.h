// A randomized workload over one tree with a std::map model of the keys it owns: inserts (single and
// batched), deletes, lookups, extends and truncates, with every result checked against the model.
// Used single-threaded (the model is the whole tree) and by each thread of the concurrent tests
// (the model is the thread's key partition: objectid % nthreads == tid).
#pragma once

#include <random>

#include "tree_test_env.h"

namespace ubtrfs::test {

inline constexpr uint8_t kTestItemType = kStringItemKey;  // opaque to the tree checker

struct WorkloadConfig {
  uint64_t objectids = 20000;  // key space per partition
  uint64_t offsets = 16;
  int insert_pct = 50;         // the rest is split among the other operations
  bool big_items = true;
  uint32_t nthreads = 1;
  uint32_t tid = 0;
};

struct OpCounts {
  uint64_t inserts = 0, deletes = 0, lookups = 0, extends = 0, truncates = 0, batches = 0, misses = 0;
  uint64_t total() const { return inserts + deletes + lookups + extends + truncates + batches + misses; }
};

class Workload {
 public:
  Workload(TreeEnv& env, TreeRoot& root, WorkloadConfig cfg, uint64_t seed)
      : env_(env), root_(root), cfg_(cfg), rng_(seed) {}

  std::map<Key, std::vector<uint8_t>>& model() { return model_; }
  const OpCounts& counts() const { return counts_; }

  // One random operation with handle `h`. Returns "" or a description of the failure.
  std::string step(TreeHandle& h) {
    const int r = pct();
    const int rest = 100 - cfg_.insert_pct;
    if (r < cfg_.insert_pct) return do_insert(h);
    const int x = (r - cfg_.insert_pct) * 100 / std::max(rest, 1);
    if (x < 55) return do_delete(h);
    if (x < 70) return do_lookup();
    if (x < 80) return do_extend(h);
    if (x < 90) return do_truncate(h);
    return do_batch(h);
  }

  void set_insert_pct(int p) { cfg_.insert_pct = p; }
  const std::string& last_op() const { return last_op_; }

 private:
  int pct() { return static_cast<int>(rng_() % 100); }
  Key random_key() {
    uint64_t o = rng_() % cfg_.objectids;
    return Key{o * cfg_.nthreads + cfg_.tid, kTestItemType, rng_() % cfg_.offsets};
  }
  uint32_t random_size() {
    const uint32_t max = max_item_size(env_.fs.nodesize);
    const int r = pct();
    if (r < 80) return static_cast<uint32_t>(rng_() % 301);
    if (r < 95 || !cfg_.big_items) return static_cast<uint32_t>(300 + rng_() % 700);
    return std::min<uint32_t>(max, static_cast<uint32_t>(1000 + rng_() % 2900));
  }
  // A random key present in the model, or false.
  bool pick_existing(Key& k) {
    if (model_.empty()) return false;
    auto it = model_.lower_bound(random_key());
    if (it == model_.end()) it = model_.begin();
    k = it->first;
    return true;
  }

  std::string do_insert(TreeHandle& h) {
    Key k = random_key();
    last_op_ = "insert " + key_tuple_str(k);
    auto v = make_value(k, random_size(), static_cast<uint32_t>(rng_()));
    std::string pre;
    if (model_.count(k) && std::getenv("UBTRFS_TEST_CHECK_EVERY_OP")) {
      auto r = lookup_item(root_, k);
      pre = fmt::format(" (lookup before: {}, size {} new size {})", r && r->has_value(), model_[k].size(), v.size());
    }
    auto st = insert_item(h, root_, k, v);
    if (model_.count(k)) {
      if (st) return "insert of existing " + key_tuple_str(k) + " succeeded" + pre;
      ++counts_.misses;
      if (st || st.error().err != EEXIST) return "insert of existing " + key_tuple_str(k) + " did not fail with EEXIST";
      return "";
    }
    if (!st) return "insert " + key_tuple_str(k) + ": " + st.error().message;
    model_[k] = std::move(v);
    ++counts_.inserts;
    return "";
  }

  std::string do_delete(TreeHandle& h) {
    Key k;
    if (pct() < 8 || !pick_existing(k)) {
      k = random_key();
      if (model_.count(k)) return "";
      auto st = delete_item(h, root_, k);
      ++counts_.misses;
      if (st || st.error().err != ENOENT) return "delete of missing " + key_tuple_str(k) + " did not fail with ENOENT";
      return "";
    }
    last_op_ = "delete " + key_tuple_str(k);
    auto st = delete_item(h, root_, k);
    if (!st) return "delete " + key_tuple_str(k) + ": " + st.error().message;
    model_.erase(k);
    ++counts_.deletes;
    return "";
  }

  std::string do_lookup() {
    Key k = random_key();
    if (pct() < 50) pick_existing(k);
    auto r = lookup_item(root_, k);
    if (!r) return "lookup " + key_tuple_str(k) + ": " + r.error().message;
    auto it = model_.find(k);
    ++counts_.lookups;
    if (it == model_.end()) return r->has_value() ? "lookup found deleted key " + key_tuple_str(k) : "";
    if (!r->has_value()) return "lookup lost key " + key_tuple_str(k);
    if (**r != it->second) return "lookup data mismatch at " + key_tuple_str(k);
    return "";
  }

  std::string do_extend(TreeHandle& h) {
    Key k;
    if (!pick_existing(k)) return "";
    auto& v = model_[k];
    const uint32_t max = max_item_size(env_.fs.nodesize);
    if (v.size() >= max) return "";
    const uint32_t extra = std::min<uint32_t>(max - static_cast<uint32_t>(v.size()), 1 + static_cast<uint32_t>(rng_() % 400));
    last_op_ = fmt::format("extend {} by {}", key_tuple_str(k), extra);
    Path p;
    p.search_for_extension = true;
    auto r = search_slot(&h, root_, k, p, static_cast<int>(extra), true);
    if (!r) return "extend search " + key_tuple_str(k) + ": " + r.error().message;
    if (*r != 0) return "extend: key vanished " + key_tuple_str(k);
    extend_item(root_, p, extra);
    auto d = p.leaf().item_data(p.slots[0]);
    const size_t old = v.size();
    for (size_t i = old; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i * 7 + k.offset);
    v.resize(d.size());
    for (size_t i = old; i < d.size(); ++i) v[i] = static_cast<uint8_t>(i * 7 + k.offset);
    ++counts_.extends;
    return "";
  }

  std::string do_truncate(TreeHandle& h) {
    Key k;
    if (!pick_existing(k)) return "";
    auto& v = model_[k];
    if (v.empty()) return "";
    const uint32_t new_size = static_cast<uint32_t>(rng_() % v.size());
    const bool from_end = pct() < 50;
    last_op_ = fmt::format("truncate {} to {} from_end {}", key_tuple_str(k), new_size, from_end);
    Path p;
    auto r = search_slot(&h, root_, k, p, 0, true);
    if (!r) return "truncate search " + key_tuple_str(k) + ": " + r.error().message;
    if (*r != 0) return "truncate: key vanished " + key_tuple_str(k);
    truncate_item(root_, p, new_size, from_end);
    if (from_end) v.resize(new_size);
    else v.erase(v.begin(), v.begin() + static_cast<long>(v.size() - new_size));
    ++counts_.truncates;
    return "";
  }

  std::string do_batch(TreeHandle& h) {
    Key k = random_key();
    k.offset = k.offset % (cfg_.offsets > 3 ? cfg_.offsets - 3 : 1);
    std::vector<Key> keys;
    std::vector<uint32_t> sizes;
    for (int i = 0; i < 3; ++i) {
      Key ki{k.objectid, k.type, k.offset + i};
      if (model_.count(ki)) return "";
      keys.push_back(ki);
      sizes.push_back(static_cast<uint32_t>(rng_() % 200));
    }
    Path p;
    last_op_ = "batch " + key_tuple_str(k);
    auto st = insert_empty_items(h, root_, p, keys, sizes);
    if (!st) return "batch insert at " + key_tuple_str(k) + ": " + st.error().message;
    for (int i = 0; i < 3; ++i) {
      auto v = make_value(keys[i], sizes[i], 77);
      auto d = p.leaf().item_data(p.slots[0] + i);
      std::copy(v.begin(), v.end(), d.begin());
      model_[keys[i]] = std::move(v);
    }
    ++counts_.batches;
    return "";
  }

  TreeEnv& env_;
  TreeRoot& root_;
  WorkloadConfig cfg_;
  std::mt19937_64 rng_;
  std::map<Key, std::vector<uint8_t>> model_;
  OpCounts counts_;
  std::string last_op_;
};

}  // namespace ubtrfs::test
