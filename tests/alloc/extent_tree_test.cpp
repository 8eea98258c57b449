// run_delayed_refs over an in-memory extent tree (TreeEnv): item layouts (skinny and not), inline
// refs overflowing into keyed refs, kernel-style existing items, refusals, a randomized model run
// across transactions, and the codec against the kernel-written reference images.
#include <filesystem>
#include <random>

#include <catch2/catch.hpp>
#include <unistd.h>

#include "../tree/tree_test_env.h"
#include "alloc/extent_tree.h"
#include "io/checksum.h"
#include "tree/fs_reader.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;

#define REQUIRE_GOOD(expr)                                            \
  do {                                                                \
    auto&& r_ = (expr);                                               \
    if (!r_) FAIL(#expr << " failed: " << r_.error().message);        \
  } while (0)

namespace {

struct SpaceEvent {
  uint64_t bytenr, len;
  bool is_data;
  bool operator==(const SpaceEvent&) const = default;
};

class RecordingSpace final : public ExtentSpace {
 public:
  Status extent_inserted(TreeHandle&, uint64_t b, uint64_t l, bool d) override {
    inserted.push_back({b, l, d});
    return {};
  }
  Status extent_deleted(TreeHandle&, uint64_t b, uint64_t l, bool d) override {
    deleted.push_back({b, l, d});
    return {};
  }
  Status extent_cancelled(TreeHandle&, uint64_t b, uint64_t l, bool d) override {
    cancelled.push_back({b, l, d});
    return {};
  }
  void clear() {
    inserted.clear();
    deleted.clear();
    cancelled.clear();
  }
  std::vector<SpaceEvent> inserted, deleted, cancelled;
};

struct ExtentTreeEnv {
  test::TreeEnv env;
  TreeRoot root{env.ctx, kExtentTreeObjectid};
  RecordingSpace space;
  DelayedRefs refs;

  explicit ExtentTreeEnv(bool skinny = true, uint32_t nodesize = 4096) : env(nodesize) {
    if (!skinny) env.fs.incompat_flags &= ~kIncompatSkinnyMetadata;
    TreeHandle h = env.handle();
    REQUIRE(create_empty_tree(h, root));
  }
  Result<RunRefsStats> run() {
    auto heads = refs.take_all();
    TreeHandle h = env.handle();
    auto r = run_delayed_refs(h, root, env.fs, heads, space);
    h.end_handle();
    return r;
  }
  std::optional<std::vector<uint8_t>> item(const Key& k) {
    auto r = lookup_item(root, k);
    REQUIRE(r);
    return *r;
  }
  // Every item of the tree, in key order.
  std::map<Key, std::vector<uint8_t>> all_items() {
    std::map<Key, std::vector<uint8_t>> out;
    Path p;
    REQUIRE(search_slot(nullptr, root, kMinKey, p, 0, false));
    bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
    while (valid) {
      auto d = p.leaf().item_data(p.slots[0]);
      out.emplace(p.leaf().item_key(p.slots[0]), std::vector<uint8_t>(d.begin(), d.end()));
      auto n = next_item(root, p);
      REQUIRE(n);
      valid = *n;
    }
    return out;
  }
};

std::vector<uint8_t> le(std::initializer_list<std::pair<uint64_t, int>> fields) {
  std::vector<uint8_t> out;
  for (auto [v, n] : fields)
    for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
  return out;
}

ExtentItemBody parse_ok(const Key& k, const std::vector<uint8_t>& d) {
  auto b = parse_extent_item(k, d);
  if (!b) FAIL("parse " << k.objectid << ": " << b.error().message);
  return *b;
}

}  // namespace

TEST_CASE("a new tree block gets a skinny METADATA_ITEM with one inline TREE_BLOCK_REF") {
  ExtentTreeEnv t;
  REQUIRE(t.refs.add_tree_ref(30425088, 4096, 5, 1, +1, true, t.env.transid()));
  auto st = t.run();
  REQUIRE_GOOD(st);
  CHECK(st->inserted == 1);
  auto body = t.item(Key{30425088, kMetadataItemKey, 1});
  REQUIRE(body);
  // refs 1, generation = the allocating transid, flags TREE_BLOCK, {176, root 5}: 33 bytes.
  auto expect = le({{1, 8}, {t.env.transid(), 8}, {kExtentFlagTreeBlock, 8}, {kTreeBlockRefKey, 1}, {5, 8}});
  CHECK(*body == expect);
  REQUIRE(t.space.inserted == std::vector<SpaceEvent>{{30425088, 4096, false}});
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("without skinny metadata a tree block gets an EXTENT_ITEM with tree_block_info of its cached first key") {
  ExtentTreeEnv t(false);
  const Key first{7, 1, 9};
  {
    TreeHandle h = t.env.handle();
    REQUIRE(insert_item(h, t.root, first, std::vector<uint8_t>(4, 0)));
  }
  // The extent tree's own root leaf is cached and holds `first`: record it as a new block.
  const uint64_t block = t.root.node()->start();
  const uint64_t uncached = 1ull << 40;
  REQUIRE(t.refs.add_tree_ref(block, 4096, 2, 0, +1, true, t.env.transid()));
  REQUIRE(t.refs.add_tree_ref(uncached, 4096, 5, 1, +1, true, t.env.transid()));
  REQUIRE_GOOD(t.run());
  const Key bk{block, kExtentItemKey, 4096};
  auto body = t.item(bk);
  REQUIRE(body);
  REQUIRE(body->size() == 51);  // FORMAT.md 3.9: 24 + 18 + 9
  auto parsed = parse_ok(bk, *body);
  CHECK(parsed.has_block_info);
  CHECK(parsed.block_level == 0);
  CHECK(parsed.block_key == first);
  CHECK(parsed.flags == kExtentFlagTreeBlock);
  REQUIRE(parsed.inline_refs.size() == 1);
  CHECK(parsed.inline_refs[0].type == kTreeBlockRefKey);
  CHECK(parsed.inline_refs[0].offset == 2);
  CHECK(encode_extent_item(parsed) == *body);
  // A block the cache does not hold: zero key, its level from the ref.
  const Key uk{uncached, kExtentItemKey, 4096};
  auto ub = t.item(uk);
  REQUIRE(ub);
  auto up = parse_ok(uk, *ub);
  CHECK(up.block_key == Key{});
  CHECK(up.block_level == 1);
  CHECK_FALSE(t.item(Key{uncached, kMetadataItemKey, 1}));
  {
    TreeHandle h = t.env.handle();  // the planted key is not valid in an extent tree: remove it
    REQUIRE(delete_item(h, t.root, first));
  }
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("inline data refs are ordered by descending hash like the kernel (FORMAT.md 3.9 example)") {
  ExtentTreeEnv t;
  REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 257, 0, +1, true, 1));
  REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 258, 0, +1, false, 1));
  REQUIRE_GOOD(t.run());
  auto body = t.item(Key{13631488, kExtentItemKey, 4096});
  REQUIRE(body);
  auto p = parse_ok(Key{13631488, kExtentItemKey, 4096}, *body);
  CHECK(p.refs == 2);
  CHECK(p.flags == kExtentFlagData);
  REQUIRE(p.inline_refs.size() == 2);
  CHECK(p.inline_refs[0].objectid == 258);  // hash 0x0dfb591fbbf5f519 > 0x0dfb591fa80d95ea
  CHECK(p.inline_refs[1].objectid == 257);
  CHECK(io::extent_data_ref_hash(5, 258, 0) == 0x0dfb591fbbf5f519ull);
  CHECK(body->size() == 24 + 2 * 29);
}

TEST_CASE("data refs overflow the inline budget into keyed refs, which never move back inline") {
  ExtentTreeEnv t;  // nodesize 4096: max extent item 224 bytes, so 6 inline data refs
  REQUIRE(max_extent_item_size(4096) == 224);
  REQUIRE(max_extent_item_size(16384) == 992);
  const uint64_t b = 20 << 20;
  const Key ik{b, kExtentItemKey, 8192};
  for (uint64_t ino = 257; ino < 265; ++ino)
    REQUIRE(t.refs.add_data_ref(b, 8192, 5, ino, 0, +1, ino == 257, 1));
  REQUIRE_GOOD(t.run());
  auto p = parse_ok(ik, *t.item(ik));
  CHECK(p.refs == 8);
  CHECK(p.inline_refs.size() == 6);
  auto items = t.all_items();
  int keyed = 0;
  for (const auto& [k, d] : items) {
    if (k.objectid != b || k.type != kExtentDataRefKey) continue;
    ++keyed;
    auto r = parse_keyed_backref(k, d);
    REQUIRE_GOOD(r);
    CHECK(k.offset == io::extent_data_ref_hash(r->root, r->objectid, r->data_offset));
    CHECK(r->count == 1);
  }
  CHECK(keyed == 2);
  REQUIRE(t.env.commit());

  // Drop one inline ref: room inline again, but a keyed ref exists, so a new ref goes keyed.
  const uint64_t inline_ino = p.inline_refs[0].objectid;
  REQUIRE(t.refs.add_data_ref(b, 8192, 5, inline_ino, 0, -1, false, 2));
  REQUIRE(t.refs.add_data_ref(b, 8192, 5, 300, 4096, +1, false, 2));
  REQUIRE_GOOD(t.run());
  p = parse_ok(ik, *t.item(ik));
  CHECK(p.refs == 8);
  CHECK(p.inline_refs.size() == 5);
  CHECK(t.item(Key{b, kExtentDataRefKey, io::extent_data_ref_hash(5, 300, 4096)}));
  REQUIRE(t.env.commit());

  // Drop every keyed ref: the keyed items go, nothing moves back inline.
  std::vector<uint64_t> keyed_inos;
  for (const auto& [k, d] : t.all_items())
    if (k.objectid == b && k.type == kExtentDataRefKey) keyed_inos.push_back(parse_keyed_backref(k, d)->objectid);
  REQUIRE(keyed_inos.size() == 3);
  for (uint64_t ino : keyed_inos) REQUIRE(t.refs.add_data_ref(b, 8192, 5, ino, ino == 300 ? 4096 : 0, -1, false, 3));
  auto st = t.run();
  REQUIRE_GOOD(st);
  CHECK(st->updated == 1);
  p = parse_ok(ik, *t.item(ik));
  CHECK(p.refs == 5);
  CHECK(p.inline_refs.size() == 5);
  for (const auto& [k, d] : t.all_items()) CHECK_FALSE((k.objectid == b && k.type == kExtentDataRefKey));
  // The last five drops delete the item.
  for (const auto& r : p.inline_refs) REQUIRE(t.refs.add_data_ref(b, 8192, r.root, r.objectid, r.data_offset, -1, false, 3));
  st = t.run();
  REQUIRE_GOOD(st);
  CHECK(st->deleted == 1);
  CHECK_FALSE(t.item(ik));
  CHECK(t.space.deleted == std::vector<SpaceEvent>{{b, 8192, true}});
  CHECK(t.all_items().empty());
}

TEST_CASE("a keyed data ref whose hash key is taken by another ref probes to the next offset") {
  ExtentTreeEnv t;
  const uint64_t b = 40 << 20;
  REQUIRE(t.refs.add_data_ref(b, 4096, 5, 257, 0, +1, true, 1));
  REQUIRE_GOOD(t.run());
  // Plant a colliding keyed ref (another owner at our ref's hash), as a kernel image could hold.
  const uint64_t hash = io::extent_data_ref_hash(5, 999, 0);
  ExtentBackref other{kExtentDataRefKey, 0, 7, 7, 7, 1};
  {
    TreeHandle h = t.env.handle();
    REQUIRE(insert_item(h, t.root, Key{b, kExtentDataRefKey, hash}, encode_keyed_backref(other)));
    // ... and account for it in the item's refs.
    auto body = parse_ok(Key{b, kExtentItemKey, 4096}, *t.item(Key{b, kExtentItemKey, 4096}));
    body.refs = 2;
    REQUIRE(delete_item(h, t.root, Key{b, kExtentItemKey, 4096}));
    REQUIRE(insert_item(h, t.root, Key{b, kExtentItemKey, 4096}, encode_extent_item(body)));
  }
  REQUIRE(t.refs.add_data_ref(b, 4096, 5, 999, 0, +2, false, 1));
  REQUIRE_GOOD(t.run());
  auto probed = t.item(Key{b, kExtentDataRefKey, hash + 1});
  REQUIRE(probed);
  auto r = parse_keyed_backref(Key{b, kExtentDataRefKey, hash + 1}, *probed);
  REQUIRE_GOOD(r);
  CHECK(r->objectid == 999);
  CHECK(r->count == 2);
  // Dropping finds it past the colliding one; the other owner's ref is untouched.
  REQUIRE(t.refs.add_data_ref(b, 4096, 5, 999, 0, -2, false, 1));
  REQUIRE_GOOD(t.run());
  CHECK_FALSE(t.item(Key{b, kExtentDataRefKey, hash + 1}));
  CHECK(t.item(Key{b, kExtentDataRefKey, hash}));
  CHECK(parse_ok(Key{b, kExtentItemKey, 4096}, *t.item(Key{b, kExtentItemKey, 4096})).refs == 2);
}

TEST_CASE("existing shared refs are kept and counted when ubtrfs changes other refs of the extent") {
  ExtentTreeEnv t;
  const uint64_t b = 50 << 20;
  const Key ik{b, kExtentItemKey, 4096};
  ExtentItemBody body;
  body.refs = 3;
  body.generation = 1;
  body.flags = kExtentFlagData;
  ExtentBackref data_ref{kExtentDataRefKey, 0, 5, 257, 0, 1};
  ExtentBackref shared{kSharedDataRefKey, 30425088, 0, 0, 0, 2};
  body.inline_refs = {data_ref, shared};
  {
    TreeHandle h = t.env.handle();
    REQUIRE(insert_item(h, t.root, ik, encode_extent_item(body)));
  }
  REQUIRE(t.refs.add_data_ref(b, 4096, 5, 257, 0, +1, false, 2));
  REQUIRE(t.refs.add_data_ref(b, 4096, 256, 257, 0, +1, false, 2));
  REQUIRE_GOOD(t.run());
  auto p = parse_ok(ik, *t.item(ik));
  CHECK(p.refs == 5);
  REQUIRE(p.inline_refs.size() == 3);
  CHECK(p.inline_refs[2].type == kSharedDataRefKey);
  CHECK(p.inline_refs[2].count == 2);
  for (size_t i = 0; i < p.inline_refs.size(); ++i)
    CHECK(inline_insert_position({p.inline_refs.begin(), p.inline_refs.begin() + static_cast<long>(i)},
                                 p.inline_refs[i]) == i);
  // Dropping our refs leaves the shared ones: the item stays.
  REQUIRE(t.refs.add_data_ref(b, 4096, 5, 257, 0, -2, false, 2));
  REQUIRE(t.refs.add_data_ref(b, 4096, 256, 257, 0, -1, false, 2));
  REQUIRE_GOOD(t.run());
  p = parse_ok(ik, *t.item(ik));
  CHECK(p.refs == 2);
  REQUIRE(p.inline_refs.size() == 1);
  CHECK(p.inline_refs[0].type == kSharedDataRefKey);
}

TEST_CASE("a new extent whose refs all cancel never touches the tree") {
  ExtentTreeEnv t;
  REQUIRE(t.refs.add_tree_ref(30425088, 4096, 5, 0, +1, true, 1));
  REQUIRE(t.refs.add_tree_ref(30425088, 4096, 5, 0, -1, false, 1));
  REQUIRE(t.refs.add_data_ref(13631488, 8192, 5, 257, 0, +1, true, 1));
  REQUIRE(t.refs.add_data_ref(13631488, 8192, 5, 257, 0, -1, false, 1));
  const uint64_t gen_before = t.root.node()->generation();
  auto st = t.run();
  REQUIRE_GOOD(st);
  CHECK(st->cancelled == 2);
  CHECK(st->inserted == 0);
  CHECK(t.space.cancelled == std::vector<SpaceEvent>{{13631488, 8192, true}, {30425088, 4096, false}});
  CHECK(t.all_items().empty());
  CHECK(t.root.node()->generation() == gen_before);
}

TEST_CASE("refs that disagree with the extent tree are refused with EUCLEAN naming the extent") {
  ExtentTreeEnv t;
  REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 257, 0, +1, true, 1));
  REQUIRE(t.refs.add_tree_ref(30425088, 4096, 5, 0, +1, true, 1));
  REQUIRE_GOOD(t.run());
  auto items_before = t.all_items();

  SECTION("drop of a ref the extent does not have") {
    REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 258, 0, -1, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EUCLEAN);
    CHECK_THAT(r.error().message, Catch::Contains("13631488") && Catch::Contains("ino 258") &&
                                      Catch::Contains("does not exist"));
  }
  SECTION("drop of more refs than the ref's count") {
    REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 257, 0, -2, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EUCLEAN);
  }
  SECTION("drop of a tree block ref of another root") {
    REQUIRE(t.refs.add_tree_ref(30425088, 4096, 7, 0, -1, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("30425088") && Catch::Contains("TREE_BLOCK_REF root 7"));
  }
  SECTION("a second ref of the same root on a tree block") {
    REQUIRE(t.refs.add_tree_ref(30425088, 4096, 5, 0, +1, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EUCLEAN);
  }
  SECTION("a new allocation where an extent item already exists") {
    REQUIRE(t.refs.add_data_ref(13631488, 4096, 5, 300, 0, +1, true, 2));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("already has"));
  }
  SECTION("a drop on an extent without an item") {
    REQUIRE(t.refs.add_data_ref(99 << 20, 4096, 5, 257, 0, -1, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains(std::to_string(99ull << 20)) && Catch::Contains("no extent item"));
  }
  SECTION("a tree ref on a data extent") {
    REQUIRE(t.refs.add_tree_ref(13631488, 4096, 5, 0, -1, false, 1));
    auto r = t.run();
    REQUIRE_FALSE(r);
    CHECK_THAT(r.error().message, Catch::Contains("flags"));
  }
  // Refusals are detected before any byte changes.
  CHECK(t.all_items() == items_before);
}

// ---- randomized model ---------------------------------------------------------------------------

namespace {

struct ModelExtent {
  bool is_data = false;
  uint64_t len = 0;
  int level = 0;
  uint64_t generation = 0;
  std::map<std::tuple<uint64_t, uint64_t, uint64_t>, uint64_t> refs;  // (root, ino|0, offset|0) -> count
};

// Compares the whole extent tree with the model; returns "" or the first difference.
std::string compare_extents(ExtentTreeEnv& t, const std::map<uint64_t, ModelExtent>& model, bool skinny) {
  struct Seen {
    std::optional<ExtentItemBody> body;
    Key key{};
    std::map<std::tuple<uint64_t, uint64_t, uint64_t>, uint64_t> refs;
  };
  std::map<uint64_t, Seen> seen;
  for (const auto& [k, d] : t.all_items()) {
    Seen& s = seen[k.objectid];
    if (k.type == kExtentItemKey || k.type == kMetadataItemKey) {
      auto b = parse_extent_item(k, d);
      if (!b) return b.error().message;
      if (encode_extent_item(*b) != d) return fmt::format("extent {} does not re-encode identically", k.objectid);
      if (d.size() >= max_extent_item_size(t.env.fs.nodesize))
        return fmt::format("extent {} item of {} bytes exceeds the inline budget", k.objectid, d.size());
      for (size_t i = 0; i < b->inline_refs.size(); ++i) {
        const auto& r = b->inline_refs[i];
        if (inline_insert_position({b->inline_refs.begin(), b->inline_refs.begin() + static_cast<long>(i)}, r) != i)
          return fmt::format("extent {}: inline ref {} out of order", k.objectid, i);
        s.refs[r.type == kExtentDataRefKey ? std::tuple{r.root, r.objectid, r.data_offset}
                                           : std::tuple{r.offset, uint64_t{0}, uint64_t{0}}] += r.count;
      }
      s.body = *b;
      s.key = k;
    } else {
      auto r = parse_keyed_backref(k, d);
      if (!r) return r.error().message;
      if (k.type == kExtentDataRefKey && k.offset < io::extent_data_ref_hash(r->root, r->objectid, r->data_offset))
        return fmt::format("keyed ref {} {} below its hash", k.objectid, k.offset);
      s.refs[k.type == kExtentDataRefKey ? std::tuple{r->root, r->objectid, r->data_offset}
                                         : std::tuple{r->offset, uint64_t{0}, uint64_t{0}}] += r->count;
    }
  }
  for (const auto& [b, s] : seen)
    if (!model.contains(b)) return fmt::format("tree has extent {} the model lacks", b);
  for (const auto& [b, m] : model) {
    auto it = seen.find(b);
    if (it == seen.end() || !it->second.body) return fmt::format("tree lacks extent {}", b);
    const Seen& s = it->second;
    Key want = m.is_data ? Key{b, kExtentItemKey, m.len}
               : skinny  ? Key{b, kMetadataItemKey, static_cast<uint64_t>(m.level)}
                         : Key{b, kExtentItemKey, m.len};
    if (s.key != want) return fmt::format("extent {} has key ({} {} {})", b, s.key.objectid, s.key.type, s.key.offset);
    uint64_t sum = 0;
    for (auto [r, c] : m.refs) sum += c;
    if (s.body->refs != sum) return fmt::format("extent {} refs {} != {}", b, s.body->refs, sum);
    if (s.body->generation != m.generation) return fmt::format("extent {} generation {}", b, s.body->generation);
    if (s.body->flags != (m.is_data ? kExtentFlagData : kExtentFlagTreeBlock))
      return fmt::format("extent {} flags {}", b, s.body->flags);
    if (!m.is_data && !skinny && s.body->block_level != m.level) return fmt::format("extent {} level", b);
    if (s.refs != m.refs) return fmt::format("extent {} backrefs differ from the model", b);
  }
  return "";
}

void random_model_run(bool skinny, uint64_t seed) {
  ExtentTreeEnv t(skinny);
  std::mt19937_64 rng(seed);
  std::map<uint64_t, ModelExtent> model;
  uint64_t next_bytenr = 1 << 20;
  const int transactions = std::max(3, static_cast<int>(12 * test::stress_scale()));
  uint64_t max_keyed_seen = 0;
  for (int tx = 0; tx < transactions; ++tx) {
    const uint64_t transid = t.env.transid();
    std::map<uint64_t, ModelExtent> next = model;
    std::vector<SpaceEvent> want_ins, want_del, want_cancel;
    std::map<uint64_t, bool> fresh;  // new extents of this transaction -> is_data
    for (int op = 0; op < 60; ++op) {
      const int kind = static_cast<int>(rng() % 10);
      if (kind < 2) {  // new tree block
        uint64_t b = next_bytenr;
        next_bytenr += 4096;
        int level = static_cast<int>(rng() % 3);
        uint64_t root = 5 + rng() % 3;
        REQUIRE(t.refs.add_tree_ref(b, 4096, root, level, +1, true, transid));
        ModelExtent m{false, 4096, level, transid, {{{root, 0, 0}, 1}}};
        next[b] = m;
        fresh[b] = false;
      } else if (kind < 4) {  // new data extent with 1..10 refs
        uint64_t b = next_bytenr;
        uint64_t len = 4096 * (1 + rng() % 4);
        next_bytenr += len;
        ModelExtent m{true, len, 0, transid, {}};
        int n = 1 + static_cast<int>(rng() % 10);
        for (int i = 0; i < n; ++i) {
          uint64_t root = 5 + rng() % 2, ino = 257 + rng() % 6, off = 4096 * (rng() % 3);
          REQUIRE(t.refs.add_data_ref(b, len, root, ino, off, +1, i == 0, transid));
          m.refs[{root, ino, off}] += 1;
        }
        next[b] = m;
        fresh[b] = true;
      } else if (!next.empty()) {  // change a ref of some extent (old or new)
        auto it = next.begin();
        std::advance(it, static_cast<long>(rng() % next.size()));
        const uint64_t b = it->first;
        ModelExtent& m = it->second;
        if (m.refs.empty()) continue;  // dropped to zero already this transaction
        const bool is_new = fresh.contains(b);
        const bool drop = rng() % 2;
        if (m.is_data) {
          if (drop) {
            auto r = m.refs.begin();
            std::advance(r, static_cast<long>(rng() % m.refs.size()));
            auto [root, ino, off] = r->first;
            REQUIRE(t.refs.add_data_ref(b, m.len, root, ino, off, -1, false, transid));
            if (--r->second == 0) m.refs.erase(r);
          } else {
            uint64_t root = 5 + rng() % 2, ino = 257 + rng() % 8, off = 4096 * (rng() % 3);
            REQUIRE(t.refs.add_data_ref(b, m.len, root, ino, off, +1, false, transid));
            m.refs[{root, ino, off}] += 1;
          }
        } else {
          if (drop) {
            auto r = m.refs.begin();
            std::advance(r, static_cast<long>(rng() % m.refs.size()));
            REQUIRE(t.refs.add_tree_ref(b, 4096, std::get<0>(r->first), m.level, -1, false, transid));
            m.refs.erase(r);
          } else {
            uint64_t root = 5 + rng() % 6;  // a snapshot-like second owner
            if (m.refs.contains({root, 0, 0})) continue;
            REQUIRE(t.refs.add_tree_ref(b, 4096, root, m.level, +1, false, transid));
            m.refs[{root, 0, 0}] = 1;
          }
        }
        (void)is_new;
      }
    }
    // Expected space consequences, from the net effect of this transaction.
    for (const auto& [b, m] : next) {
      const bool existed = model.contains(b);
      if (!existed && m.refs.empty()) want_cancel.push_back({b, m.len, m.is_data});
      if (!existed && !m.refs.empty()) want_ins.push_back({b, m.len, m.is_data});
      if (existed && m.refs.empty()) want_del.push_back({b, m.len, m.is_data});
    }
    for (auto it = next.begin(); it != next.end();)
      it = it->second.refs.empty() ? next.erase(it) : std::next(it);
    t.space.clear();
    auto st = t.run();
    REQUIRE_GOOD(st);
    model = std::move(next);
    INFO("seed " << seed << " transaction " << tx);
    CHECK(t.space.inserted == want_ins);
    CHECK(t.space.deleted == want_del);
    CHECK(t.space.cancelled == want_cancel);
    REQUIRE(compare_extents(t, model, skinny) == "");
    REQUIRE(t.env.check_tree(t.root) == "");
    for (const auto& [k, d] : t.all_items())
      if (k.type == kExtentDataRefKey) ++max_keyed_seen;
    REQUIRE(t.env.commit());
  }
  CHECK(max_keyed_seen > 0);  // the run did overflow into keyed refs
}

}  // namespace

TEST_CASE("random ref changes across transactions match a model of expected refs (skinny metadata)") {
  for (uint64_t seed : {1, 2, 3}) random_model_run(true, seed);
}

TEST_CASE("random ref changes across transactions match a model of expected refs (no skinny metadata)") {
  for (uint64_t seed : {11, 12}) random_model_run(false, seed);
}

// ---- kernel-written images -----------------------------------------------------------------------

namespace {

std::filesystem::path reference_images_dir() {
  if (const char* src = std::getenv("UBTRFS_SRC")) return std::filesystem::path(src) / "images";
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "images";
}

std::string decompress_reference_image(const std::filesystem::path& zst) {
  const auto out = std::filesystem::temp_directory_path() /
                   fmt::format("ubtrfs-extent-tree-test-{}-{}.img", zst.parent_path().filename().string(), getpid());
  const std::string cmd = fmt::format("zstd -d -q -f --long=27 '{}' -o '{}'", zst.string(), out.string());
  REQUIRE(std::system(cmd.c_str()) == 0);
  return out.string();
}

}  // namespace

TEST_CASE("extent items and keyed backrefs of kernel-written images parse and re-encode byte for byte",
          "[images]") {
  std::vector<std::filesystem::path> zsts;
  for (const auto& e : std::filesystem::directory_iterator(reference_images_dir()))
    if (std::filesystem::exists(e.path() / "image.zst")) zsts.push_back(e.path() / "image.zst");
  std::sort(zsts.begin(), zsts.end());
  REQUIRE(zsts.size() >= 2);
  uint64_t data_items = 0, tree_items = 0, multi_ref_items = 0, keyed = 0;
  for (const auto& zst : zsts) {
    INFO("image " << zst);
    const std::string img = decompress_reference_image(zst);
    auto rd = FsReader::open_path(img);
    REQUIRE_GOOD(rd);
    const FsParams& fs = (*rd)->params();
    auto root = (*rd)->find_root(kExtentTreeObjectid);
    REQUIRE_GOOD(root);
    auto st = (*rd)->for_each_item(*root, [&](const Key& k, std::span<const uint8_t> d) -> Status {
      std::vector<uint8_t> bytes(d.begin(), d.end());
      if (k.type == kExtentItemKey || k.type == kMetadataItemKey) {
        auto b = UBTRFS_TRY(parse_extent_item(k, d));
        if (encode_extent_item(b) != bytes) return fail(EUCLEAN, "extent {} re-encodes differently", k.objectid);
        if (d.size() >= max_extent_item_size(fs.nodesize)) return fail(EUCLEAN, "extent {} over budget", k.objectid);
        uint64_t sum = 0;
        for (size_t i = 0; i < b.inline_refs.size(); ++i) {
          sum += b.inline_refs[i].count;
          std::vector<ExtentBackref> before(b.inline_refs.begin(), b.inline_refs.begin() + static_cast<long>(i));
          if (inline_insert_position(before, b.inline_refs[i]) != i)
            return fail(EUCLEAN, "extent {}: kernel order differs from ours at ref {}", k.objectid, i);
        }
        if (b.flags & kExtentFlagData) {
          ++data_items;
          if (k.type != kExtentItemKey) return fail(EUCLEAN, "data extent {} not an EXTENT_ITEM", k.objectid);
        } else {
          ++tree_items;
          if (fs.skinny_metadata() != (k.type == kMetadataItemKey))
            return fail(EUCLEAN, "tree extent {} form disagrees with skinny_metadata", k.objectid);
          if (k.type == kMetadataItemKey && bytes.size() != 33)
            return fail(EUCLEAN, "metadata item {} is {} bytes", k.objectid, bytes.size());
        }
        if (b.inline_refs.size() > 1 || sum > 1) ++multi_ref_items;
        if (sum > b.refs) return fail(EUCLEAN, "extent {} inline sum above refs", k.objectid);
      } else if (k.type == kTreeBlockRefKey || k.type == kExtentDataRefKey || k.type == kSharedBlockRefKey ||
                 k.type == kSharedDataRefKey) {
        auto r = UBTRFS_TRY(parse_keyed_backref(k, d));
        if (encode_keyed_backref(r) != bytes) return fail(EUCLEAN, "keyed ref {} re-encodes differently", k.objectid);
        ++keyed;
      }
      return {};
    });
    REQUIRE_GOOD(st);
    std::filesystem::remove(img);
  }
  CHECK(data_items > 10);
  CHECK(tree_items > 10);
  CHECK(multi_ref_items > 0);  // the hard links / bookends share extents: multi-ref items were seen
  INFO("keyed refs seen: " << keyed);
}

TEST_CASE("run_delayed_refs writes the same data extent item bytes the kernel wrote", "[images]") {
  // images/001: dump-tree shows item (14680064 EXTENT_ITEM 262144) "refs 3 gen 8 flags DATA,
  // extent data backref root FS_TREE objectid 298 offset 0 count 3" (a file with bookend extents).
  const auto zst = reference_images_dir() / "001-basic-crc32c-dup" / "image.zst";
  REQUIRE(std::filesystem::exists(zst));
  const std::string img = decompress_reference_image(zst);
  auto rd = FsReader::open_path(img);
  REQUIRE_GOOD(rd);
  auto root = (*rd)->find_root(kExtentTreeObjectid);
  REQUIRE_GOOD(root);
  const Key want{14680064, kExtentItemKey, 262144};
  std::optional<std::vector<uint8_t>> kernel;
  REQUIRE_GOOD((*rd)->for_each_item(*root, [&](const Key& k, std::span<const uint8_t> d) -> Status {
    if (k == want) kernel.emplace(d.begin(), d.end());
    return {};
  }));
  std::filesystem::remove(img);
  REQUIRE(kernel);
  REQUIRE(kernel->size() == 53);

  ExtentTreeEnv t(true, (*rd)->params().nodesize);
  REQUIRE(t.refs.add_data_ref(14680064, 262144, kFsTreeObjectid, 298, 0, +1, true, 8));
  REQUIRE(t.refs.add_data_ref(14680064, 262144, kFsTreeObjectid, 298, 0, +2, false, 8));
  REQUIRE_GOOD(t.run());
  auto ours = t.item(want);
  REQUIRE(ours);
  CHECK(*ours == *kernel);
}
