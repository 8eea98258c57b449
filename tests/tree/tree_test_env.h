// Test scaffolding for the tree layer: an in-memory filesystem with one identity-mapped METADATA
// chunk, a test tree-block allocator, a commit that writes every dirty buffer (WB_SYNC_ALL), a
// whole-tree invariant walk, and a std::map model for randomized tests.
//
// The allocator follows KERNEL.md §7.1: a freed block that was written, or that belongs to an older
// transaction, is reusable only after commit; a never-written block of the running transaction is
// reusable at once. Double allocation and double free are test failures.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "tree/tree_checker.h"
#include "tree/buffer_cache.h"
#include "tree/chunk_map.h"
#include "tree/ctree.h"
#include "tree/fs_params.h"
#include "tree/print_tree.h"
#include "tree/tree_block_allocator.h"
#include "tree/tree_root.h"
#include "tree/tree_stats.h"

namespace ubtrfs::test {

// Multiplier for randomized test sizes: UBTRFS_STRESS_SCALE=10 runs ten times longer.
// Sanitizer builds run a quarter of it (they are 5-15x slower).
inline double stress_scale() {
  const char* s = std::getenv("UBTRFS_STRESS_SCALE");
  double scale = s ? std::max(0.01, std::atof(s)) : 1.0;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  scale *= 0.25;
#endif
  return scale;
}

class TestAllocator final : public TreeBlockAllocator {
 public:
  TestAllocator(uint64_t start, uint64_t len, uint32_t nodesize) : next_(start), end_(start + len), nodesize_(nodesize) {}

  Result<uint64_t> alloc_tree_block(TreeHandle&, uint64_t, int, uint64_t) override {
    std::lock_guard g(mu_);
    uint64_t b;
    if (!free_now_.empty()) {
      b = free_now_.back();
      free_now_.pop_back();
    } else if (next_ + nodesize_ <= end_) {
      b = next_;
      next_ += nodesize_;
    } else {
      return fail(ENOSPC, "test allocator out of tree blocks");
    }
    if (!in_use_.insert(b).second) errors_.push_back("double allocation of " + std::to_string(b));
    return b;
  }

  void free_tree_block(TreeHandle& h, uint64_t, uint64_t bytenr, uint64_t generation, bool written) override {
    std::lock_guard g(mu_);
    if (in_use_.erase(bytenr) != 1) errors_.push_back("free of unallocated block " + std::to_string(bytenr));
    if (generation == h.transid && !written) {
      free_now_.push_back(bytenr);
      ++freed_at_once_;
    } else {
      pinned_.push_back(bytenr);
      ++freed_pinned_;
    }
  }

  // Transaction committed: pinned blocks become reusable.
  void unpin_all() {
    std::lock_guard g(mu_);
    free_now_.insert(free_now_.end(), pinned_.begin(), pinned_.end());
    pinned_.clear();
  }

  size_t in_use() const {
    std::lock_guard g(mu_);
    return in_use_.size();
  }
  std::set<uint64_t> in_use_set() const {
    std::lock_guard g(mu_);
    return in_use_;
  }
  std::vector<std::string> errors() const {
    std::lock_guard g(mu_);
    return errors_;
  }
  uint64_t freed_at_once() const {
    std::lock_guard g(mu_);
    return freed_at_once_;
  }
  uint64_t freed_pinned() const {
    std::lock_guard g(mu_);
    return freed_pinned_;
  }

 private:
  mutable std::mutex mu_;
  uint64_t next_, end_;
  uint32_t nodesize_;
  std::vector<uint64_t> free_now_, pinned_;
  std::set<uint64_t> in_use_;
  std::vector<std::string> errors_;
  uint64_t freed_at_once_ = 0, freed_pinned_ = 0;
};

struct TreeShape {
  int height = 0;  // root level + 1
  uint64_t items = 0, leaves = 0, nodes = 0;
};

// A filesystem in memory: device, chunk map, cache, stats, allocator, running transid.
class TreeEnv {
 public:
  static constexpr uint64_t kChunkStart = 1 << 20;

  // `record_writes`: the fault-injecting device keeps a copy of every write (write_log()).
  explicit TreeEnv(uint32_t nodesize = 4096, uint64_t budget = 64 << 20, uint64_t chunk_len = 96 << 20,
                   bool record_writes = false);

  TreeHandle handle() {
    TreeHandle h;
    h.transid = transid_;
    h.allocator = &alloc_;
    h.cow_overwrite = cow_overwrite;
    h.wb_inhibit = wb_inhibit;
    h.wb_hold_recopied = wb_hold_recopied;
    return h;
  }
  uint64_t transid() const { return transid_; }
  // Commit: WB_SYNC_ALL write-out, super generation = transid, unpin, next transid.
  // REQUIRES: no tree operation running.
  Status commit();

  // Whole-tree invariant walk (REQUIRES: quiesced). Returns "" or the first violation.
  std::string check_tree(TreeRoot& root, TreeShape* shape = nullptr);

  FsParams fs;
  io::MemoryDevice mem;
  io::FaultInjectingDevice dev;  // over `mem`: EIO on command, the write log
  ChunkMap map;
  BufferCache cache;
  TreeStats stats;
  TreeContext ctx;
  TestAllocator alloc_;
  bool cow_overwrite = false;
  bool wb_inhibit = false;
  bool wb_hold_recopied = false;  // fix 2's transaction scope (with wb_inhibit)

 private:
  uint64_t transid_ = 1;
};

// The key of the small synthetic trees: (o, STRING_ITEM, 0).
inline Key key(uint64_t o) { return Key{o, kStringItemKey, 0}; }

// Deterministic item bodies: the model stores them, the tree must return them.
std::vector<uint8_t> make_value(const Key& k, uint32_t size, uint32_t salt);

// Forward (and backward) scan of the whole tree compared with `model` (keys and data).
// Returns "" or the first difference.
std::string compare_with_model(TreeRoot& root, const std::map<Key, std::vector<uint8_t>>& model);

// ---- implementation (header-only: the test glob compiles *_test.cpp files only) ------------------

inline std::vector<uint8_t> make_value(const Key& k, uint32_t size, uint32_t salt) {
  std::vector<uint8_t> v(size);
  uint64_t x = k.objectid * 0x9E3779B97F4A7C15ull ^ k.offset * 0xC2B2AE3D27D4EB4Full ^ salt;
  for (uint32_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<uint8_t>(x);
  }
  return v;
}

inline TreeEnv::TreeEnv(uint32_t nodesize, uint64_t budget, uint64_t chunk_len, bool record_writes)
    : fs([&] {
        FsParams p;
        p.nodesize = nodesize;
        p.sectorsize = 4096;
        for (int i = 0; i < 16; ++i) {
          p.fsid[i] = static_cast<uint8_t>(0xA0 + i);
          p.chunk_tree_uuid[i] = static_cast<uint8_t>(0x30 + i);
        }
        p.incompat_flags = kIncompatMixedBackref | kIncompatSkinnyMetadata | kIncompatNoHoles;
        p.super_generation = 0;
        return p;
      }()),
      mem(kChunkStart + chunk_len),
      dev(mem, record_writes),
      cache(dev, map, fs, budget),
      ctx{fs, cache, stats},
      alloc_(kChunkStart, chunk_len, nodesize) {
  ChunkMapping m;
  m.logical = kChunkStart;
  m.length = chunk_len;
  m.type = kBlockGroupMetadata;
  m.stripes.push_back(ChunkStripe{1, kChunkStart, {}});
  auto st = map.add(m);
  if (!st) std::abort();
}

inline Status TreeEnv::commit() {
  UBTRFS_TRY_STATUS(cache.write_dirty());
  UBTRFS_TRY_STATUS(dev.flush());
  cache.set_super_generation(transid_);
  alloc_.unpin_all();
  ++transid_;
  return {};
}

namespace detail {

struct Walker {
  TreeEnv& env;
  TreeRoot& root;
  TreeShape shape;
  bool have_prev = false;
  Key prev{};
  std::string err;

  bool fail_with(std::string e) {
    if (err.empty()) err = std::move(e);
    return false;
  }

  bool walk(const EbRef& eb, int level, bool is_root) {
    const ExtentBuffer& b = *eb;
    if (b.level() != level) return fail_with(fmt::format("block {} level {} expected {}", b.start(), b.level(), level));
    if (b.bytenr() != b.start()) return fail_with(fmt::format("block {} header bytenr {}", b.start(), b.bytenr()));
    if (b.owner() != root.objectid()) return fail_with(fmt::format("block {} owner {}", b.start(), b.owner()));
    if ((b.header_flags() >> kBackrefRevShift) != kMixedBackrefRev)
      return fail_with(fmt::format("block {} backref rev {}", b.start(), b.header_flags() >> kBackrefRevShift));
    if (std::memcmp(b.header().fsid, env.fs.fsid.data(), 16) != 0) return fail_with(fmt::format("block {} fsid", b.start()));
    if (std::memcmp(b.header().chunk_tree_uuid, env.fs.chunk_tree_uuid.data(), 16) != 0)
      return fail_with(fmt::format("block {} chunk tree uuid", b.start()));
    if (b.generation() > env.transid()) return fail_with(fmt::format("block {} generation {} > transid", b.start(), b.generation()));
    if (b.generation() < env.transid() && b.dirty())
      return fail_with(fmt::format("block {} of generation {} modified in transaction {} without COW", b.start(),
                                   b.generation(), env.transid()));
    if (b.stale()) return fail_with(fmt::format("block {} reachable but stale", b.start()));
    FsParams p = env.fs;
    p.super_generation = env.transid();
    if (level == 0) {
      if (b.nritems() == 0 && !is_root) return fail_with(fmt::format("empty non-root leaf {}", b.start()));
      if (auto st = check_leaf(p, b.bytes()); !st) return fail_with("check_leaf: " + st.error().message);
      ++shape.leaves;
      for (int i = 0; i < static_cast<int>(b.nritems()); ++i) {
        Key k = b.item_key(i);
        if (have_prev && !(prev < k))
          return fail_with(fmt::format("key order: {} after {} in leaf {}", key_tuple_str(k), key_tuple_str(prev), b.start()));
        prev = k;
        have_prev = true;
        ++shape.items;
      }
      return true;
    }
    if (b.nritems() == 0) return fail_with(fmt::format("empty node {}", b.start()));
    if (auto st = check_node(p, b.bytes()); !st) return fail_with("check_node: " + st.error().message);
    ++shape.nodes;
    for (int i = 0; i < static_cast<int>(b.nritems()); ++i) {
      TreeBlockExpect ex;
      ex.bytenr = b.node_blockptr(i);
      auto child = env.cache.find(ex.bytenr);
      if (!child) {
        ex.level = static_cast<uint8_t>(level - 1);
        ex.generation = b.node_ptr_generation(i);
        ex.first_key = b.node_key(i);
        auto rd = env.cache.read(ex);
        if (!rd) return fail_with("read child: " + rd.error().message);
        child = *rd;
      }
      if (child->generation() != b.node_ptr_generation(i))
        return fail_with(fmt::format("node {} slot {} ptr generation {} != child {} generation {}", b.start(), i,
                                     b.node_ptr_generation(i), child->start(), child->generation()));
      if (child->nritems() > 0 && child->first_key() != b.node_key(i))
        return fail_with(fmt::format("node {} slot {} key {} != child {} first key {}", b.start(), i,
                                     key_tuple_str(b.node_key(i)), child->start(), key_tuple_str(child->first_key())));
      if (child->nritems() == 0) return fail_with(fmt::format("node {} slot {} child {} is empty", b.start(), i, child->start()));
      if (!walk(child, level - 1, false)) return false;
    }
    return true;
  }
};

}  // namespace detail

inline std::string TreeEnv::check_tree(TreeRoot& root, TreeShape* shape) {
  for (auto& e : alloc_.errors()) return "allocator: " + e;
  detail::Walker w{*this, root};
  EbRef r = root.node();
  w.shape.height = r->level() + 1;
  w.walk(r, r->level(), true);
  if (shape) *shape = w.shape;
  return w.err;
}

inline std::string compare_with_model(TreeRoot& root, const std::map<Key, std::vector<uint8_t>>& model) {
  // Forward.
  {
    Path p;
    auto r = search_slot(nullptr, root, kMinKey, p, 0, false);
    if (!r) return "search: " + r.error().message;
    bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
    if (!valid && p.leaf().nritems() > 0) {
      auto n = next_leaf(root, p);
      if (!n) return "next_leaf: " + n.error().message;
      valid = *n;
    }
    auto it = model.begin();
    while (valid) {
      Key k = p.leaf().item_key(p.slots[0]);
      if (it == model.end()) return "tree has extra key " + key_tuple_str(k);
      if (k != it->first) return "forward: tree key " + key_tuple_str(k) + " model key " + key_tuple_str(it->first);
      auto d = p.leaf().item_data(p.slots[0]);
      if (d.size() != it->second.size() || !std::equal(d.begin(), d.end(), it->second.begin()))
        return "data mismatch at " + key_tuple_str(k);
      ++it;
      auto n = next_item(root, p);
      if (!n) return "next_item: " + n.error().message;
      valid = *n;
    }
    if (it != model.end()) return "tree lacks key " + key_tuple_str(it->first);
  }
  // Backward.
  {
    Path p;
    auto r = search_slot(nullptr, root, kMaxKey, p, 0, false);
    if (!r) return "search: " + r.error().message;
    bool valid = true;
    if (*r == 0) {
    } else if (p.slots[0] > 0) {
      --p.slots[0];
    } else if (p.leaf().nritems() == 0) {
      valid = false;
    } else {
      auto n = prev_leaf(root, p);
      if (!n) return "prev_leaf: " + n.error().message;
      valid = *n;
    }
    auto it = model.rbegin();
    while (valid) {
      Key k = p.leaf().item_key(p.slots[0]);
      if (it == model.rend()) return "backward: tree has extra key " + key_tuple_str(k);
      if (k != it->first) return "backward: tree key " + key_tuple_str(k) + " model key " + key_tuple_str(it->first);
      ++it;
      auto n = prev_item(root, p);
      if (!n) return "prev_item: " + n.error().message;
      valid = *n;
    }
    if (it != model.rend()) return "backward: tree lacks key " + key_tuple_str(it->first);
  }
  return "";
}

}  // namespace ubtrfs::test
