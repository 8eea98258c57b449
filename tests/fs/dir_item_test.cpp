// DIR_ITEM / DIR_INDEX / INODE_REF / INODE_EXTREF items over an in-memory tree (fs/dir_item.h):
// the on-disk shapes FORMAT.md §3.4, §3.5 and §4 describe, hash collisions, extended refs.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <string>
#include <unordered_map>

#include "fs/dir_item.h"
#include "io/checksum.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;

namespace {

using test::FsTree;

// Two distinct names with the same name_hash, found by brute force over short strings.
std::pair<std::string, std::string> colliding_names(const std::string& prefix = "") {
  std::unordered_map<uint32_t, std::string> seen;
  const std::string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (size_t n = 0;; ++n) {
    s = prefix;
    for (size_t v = n; ; v /= alphabet.size()) {
      s += alphabet[v % alphabet.size()];
      if (v < alphabet.size()) break;
    }
    const auto h = static_cast<uint32_t>(io::name_hash(s));
    auto [it, inserted] = seen.emplace(h, s);
    if (!inserted && it->second != s) return {it->second, s};
  }
}

std::optional<std::vector<uint8_t>> item(TreeRoot& root, const Key& k) {
  auto r = lookup_item(root, k);
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("a name is a DIR_ITEM keyed by name_hash plus a DIR_INDEX keyed by index") {
  FsTree t;
  REQUIRE(insert_dir_entry(t.h, t.root, 256, "small.txt", Key{257, kInodeItemKey, 0}, kFtRegFile, 2));
  // FORMAT.md §4.1: name_hash("small.txt") = 474883676.
  auto di = item(t.root, Key{256, kDirItemKey, 474883676});
  REQUIRE(di);
  CHECK(di->size() == sizeof(DirItem) + 9);
  auto dx = item(t.root, Key{256, kDirIndexKey, 2});
  REQUIRE(dx);
  CHECK(*dx == *di);  // same single entry in both
  auto e = lookup_dir_entry(t.root, 256, "small.txt");
  REQUIRE(e);
  REQUIRE(e->has_value());
  CHECK((*e)->location == Key{257, kInodeItemKey, 0});
  CHECK((*e)->type == kFtRegFile);
  CHECK((*e)->transid == t.h.transid);
  CHECK((*e)->data.empty());
  auto hi = highest_dir_index(t.root, 256);
  REQUIRE(hi);
  CHECK(*hi == 2);

  auto dup = insert_dir_entry(t.h, t.root, 256, "small.txt", Key{258, kInodeItemKey, 0}, kFtRegFile, 3);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().err == EEXIST);

  REQUIRE(delete_dir_entry(t.h, t.root, 256, "small.txt", 2));
  CHECK_FALSE(item(t.root, Key{256, kDirItemKey, 474883676}));
  CHECK_FALSE(item(t.root, Key{256, kDirIndexKey, 2}));
  auto gone = lookup_dir_entry(t.root, 256, "small.txt");
  REQUIRE(gone);
  CHECK_FALSE(gone->has_value());
  auto missing = delete_dir_entry(t.h, t.root, 256, "small.txt", 2);
  REQUIRE_FALSE(missing);
  CHECK(missing.error().err == ENOENT);
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("names with the same name_hash share one DIR_ITEM, entries back to back") {
  FsTree t;
  const auto [a, b] = colliding_names();
  REQUIRE(a != b);
  REQUIRE(io::name_hash(a) == io::name_hash(b));
  const Key key{256, kDirItemKey, io::name_hash(a)};
  REQUIRE(insert_dir_entry(t.h, t.root, 256, a, Key{257, kInodeItemKey, 0}, kFtRegFile, 2));
  REQUIRE(insert_dir_entry(t.h, t.root, 256, b, Key{258, kInodeItemKey, 0}, kFtDir, 3));
  auto body = item(t.root, key);
  REQUIRE(body);
  CHECK(body->size() == 2 * sizeof(DirItem) + a.size() + b.size());
  auto entries = parse_dir_entries(*body, key);
  REQUIRE(entries);
  REQUIRE(entries->size() == 2);
  CHECK((*entries)[0].name == a);
  CHECK((*entries)[1].name == b);
  auto eb = lookup_dir_entry(t.root, 256, b);
  REQUIRE(eb);
  REQUIRE(eb->has_value());
  CHECK((*eb)->location.objectid == 258);
  CHECK((*eb)->type == kFtDir);

  // Removing the first name keeps the second in a shrunk item; removing both deletes the item.
  REQUIRE(delete_dir_entry(t.h, t.root, 256, a, 2));
  body = item(t.root, key);
  REQUIRE(body);
  CHECK(body->size() == sizeof(DirItem) + b.size());
  auto ea = lookup_dir_entry(t.root, 256, a);
  REQUIRE(ea);
  CHECK_FALSE(ea->has_value());
  REQUIRE(delete_dir_entry(t.h, t.root, 256, b, 3));
  CHECK_FALSE(item(t.root, key));
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("read_dir_index returns entries in index order from a start index") {
  FsTree t;
  for (uint64_t i = 2; i < 200; ++i)
    REQUIRE(insert_dir_entry(t.h, t.root, 256, "f" + std::to_string(i), Key{1000 + i, kInodeItemKey, 0}, kFtRegFile, i));
  REQUIRE(delete_dir_entry(t.h, t.root, 256, "f50", 50));
  auto all = read_dir_index(t.root, 256, 0, 1000);
  REQUIRE(all);
  REQUIRE(all->size() == 197);
  CHECK(all->front().index == 2);
  CHECK(all->back().index == 199);
  for (size_t i = 1; i < all->size(); ++i) CHECK((*all)[i - 1].index < (*all)[i].index);
  auto from = read_dir_index(t.root, 256, 50, 3);
  REQUIRE(from);
  REQUIRE(from->size() == 3);
  CHECK((*from)[0].index == 51);
  CHECK((*from)[0].entry.name == "f51");
  auto hi = highest_dir_index(t.root, 256);
  REQUIRE(hi);
  CHECK(*hi == 199);
  auto none = highest_dir_index(t.root, 999);
  REQUIRE(none);
  CHECK(*none == 0);
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("255-byte names are accepted in dir entries and refs") {
  FsTree t;
  const std::string longest(kNameLen, 'x');
  REQUIRE(insert_dir_entry(t.h, t.root, 256, longest, Key{257, kInodeItemKey, 0}, kFtRegFile, 2));
  REQUIRE(insert_inode_ref(t.h, t.root, 257, 256, longest, 2, true));
  auto e = lookup_dir_entry(t.root, 256, longest);
  REQUIRE(e);
  REQUIRE(e->has_value());
  CHECK((*e)->name == longest);
  auto idx = find_inode_ref(t.root, 257, 256, longest);
  REQUIRE(idx);
  REQUIRE(idx->has_value());
  CHECK(**idx == 2);
}

TEST_CASE("hard links in one directory share one INODE_REF item; past its limit they go to INODE_EXTREF") {
  FsTree t;
  // 4 KiB nodes: max item size 3970; 255-byte names take 265 bytes each, so 14 fit.
  const uint32_t limit = max_item_size(4096);
  t.add_inode(300, S_IFREG | 0644);
  auto name_of = [](int i) { return std::string(kNameLen - 3, 'n') + fmt::format("{:03}", i); };
  for (int i = 0; i < 20; ++i) REQUIRE(insert_inode_ref(t.h, t.root, 300, 256, name_of(i), 2 + i, true));
  auto ref = item(t.root, Key{300, kInodeRefKey, 256});
  REQUIRE(ref);
  const size_t per = sizeof(InodeRef) + kNameLen;
  CHECK(ref->size() == (limit / per) * per);
  auto refs = list_inode_refs(t.root, 300);
  REQUIRE(refs);
  REQUIRE(refs->size() == 20);
  size_t ext = 0;
  for (const auto& r : *refs) {
    CHECK(r.parent == 256);
    if (r.extref) {
      ++ext;
      auto body = item(t.root, Key{300, kInodeExtrefKey, io::extref_hash(256, r.name)});
      CHECK(body);
    }
  }
  CHECK(ext == 20 - limit / per);
  for (int i = 0; i < 20; ++i) {
    auto idx = find_inode_ref(t.root, 300, 256, name_of(i));
    REQUIRE(idx);
    REQUIRE(idx->has_value());
    CHECK(**idx == static_cast<uint64_t>(2 + i));
  }
  auto dup = insert_inode_ref(t.h, t.root, 300, 256, name_of(19), 99, true);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().err == EEXIST);

  // Without EXTENDED_IREF the full INODE_REF is the end: EMLINK.
  auto full = insert_inode_ref(t.h, t.root, 300, 256, name_of(77), 99, false);
  REQUIRE_FALSE(full);
  CHECK(full.error().err == EMLINK);

  // Deleting an extref name and a ref name returns their indexes and removes exactly them.
  auto i19 = delete_inode_ref(t.h, t.root, 300, 256, name_of(19));
  REQUIRE(i19);
  CHECK(*i19 == 21);
  CHECK_FALSE(item(t.root, Key{300, kInodeExtrefKey, io::extref_hash(256, name_of(19))}));
  auto i0 = delete_inode_ref(t.h, t.root, 300, 256, name_of(0));
  REQUIRE(i0);
  CHECK(*i0 == 2);
  auto after = list_inode_refs(t.root, 300);
  REQUIRE(after);
  CHECK(after->size() == 18);
  auto gone = delete_inode_ref(t.h, t.root, 300, 256, name_of(0));
  REQUIRE_FALSE(gone);
  CHECK(gone.error().err == ENOENT);
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("INODE_REF items of different parents are separate keys") {
  FsTree t;
  REQUIRE(insert_inode_ref(t.h, t.root, 400, 256, "a", 2, true));
  REQUIRE(insert_inode_ref(t.h, t.root, 400, 257, "a", 5, true));
  REQUIRE(insert_inode_ref(t.h, t.root, 400, 256, "b", 3, true));
  auto r256 = item(t.root, Key{400, kInodeRefKey, 256});
  auto r257 = item(t.root, Key{400, kInodeRefKey, 257});
  REQUIRE(r256);
  REQUIRE(r257);
  CHECK(r256->size() == 2 * (sizeof(InodeRef) + 1));
  CHECK(r257->size() == sizeof(InodeRef) + 1);
  auto idx = find_inode_ref(t.root, 400, 257, "a");
  REQUIRE(idx);
  CHECK(*idx == std::optional<uint64_t>(5));
}

TEST_CASE("colliding extref hashes share one INODE_EXTREF item") {
  FsTree t;
  // extref_hash(parent, name) == crc32c_raw(parent, name): two names that collide for parent 256,
  // the first pair a birthday search over hex numbers finds (0x39efc and 0x1206880: names of one
  // length never collide, CRC tells apart any two messages that differ in at most 32 bits). The
  // search took 20-30 s of every unit run; its result is checked here instead.
  const std::string a = "39efc", b = "1206880";
  REQUIRE(io::extref_hash(256, a) == io::extref_hash(256, b));
  // Fill the INODE_REF so further names become extrefs.
  const std::string filler(kNameLen, 'f');
  for (int i = 0; i < 14; ++i) REQUIRE(insert_inode_ref(t.h, t.root, 500, 256, filler.substr(0, 250) + std::to_string(10000 + i), 2 + i, true));
  const auto before = item(t.root, Key{500, kInodeRefKey, 256});
  REQUIRE(before);
  // The short names would still fit the INODE_REF: the first goes there only if room remains.
  const bool ref_has_room = before->size() + sizeof(InodeRef) + a.size() <= max_item_size(4096);
  REQUIRE(insert_inode_ref(t.h, t.root, 500, 256, a, 100, true));
  REQUIRE(insert_inode_ref(t.h, t.root, 500, 256, b, 101, true));
  if (!ref_has_room) {
    auto body = item(t.root, Key{500, kInodeExtrefKey, io::extref_hash(256, a)});
    REQUIRE(body);
    CHECK(body->size() == 2 * sizeof(InodeExtref) + a.size() + b.size());
  }
  auto ia = find_inode_ref(t.root, 500, 256, a);
  auto ib = find_inode_ref(t.root, 500, 256, b);
  REQUIRE(ia);
  REQUIRE(ib);
  CHECK(*ia == std::optional<uint64_t>(100));
  CHECK(*ib == std::optional<uint64_t>(101));
  auto da = delete_inode_ref(t.h, t.root, 500, 256, a);
  REQUIRE(da);
  CHECK(*da == 100);
  auto ib2 = find_inode_ref(t.root, 500, 256, b);
  REQUIRE(ib2);
  CHECK(*ib2 == std::optional<uint64_t>(101));
}

TEST_CASE("write_item_body grows, shrinks and deletes an item in place") {
  FsTree t;
  const Key k{600, kXattrItemKey, 1};
  std::vector<uint8_t> body(100, 0xAB);
  REQUIRE(write_item_body(t.h, t.root, k, body));
  body.resize(3000, 0xCD);
  REQUIRE(write_item_body(t.h, t.root, k, body));
  CHECK(item(t.root, k) == std::optional(body));
  body.resize(10);
  REQUIRE(write_item_body(t.h, t.root, k, body));
  CHECK(item(t.root, k) == std::optional(body));
  REQUIRE(write_item_body(t.h, t.root, k, {}));
  CHECK_FALSE(item(t.root, k));
  std::vector<uint8_t> huge(max_item_size(4096) + 1);
  auto r = write_item_body(t.h, t.root, k, huge);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == EOVERFLOW);
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("delete_items_of removes every item of one objectid and nothing else") {
  FsTree t;
  for (uint64_t obj : {700, 701, 702})
    for (uint64_t off = 0; off < 300; ++off)
      REQUIRE(insert_item(t.h, t.root, Key{obj, kStringItemKey, off}, std::vector<uint8_t>(40, 1)));
  REQUIRE(delete_items_of(t.h, t.root, 701));
  for (uint64_t obj : {700, 701, 702}) {
    auto present = lookup_item(t.root, Key{obj, kStringItemKey, 299});
    REQUIRE(present);
    CHECK(present->has_value() == (obj != 701));
  }
  CHECK(t.env.check_tree(t.root) == "");
}

TEST_CASE("corrupt dir item bodies are EUCLEAN, not crashes") {
  std::vector<uint8_t> body;
  DirEntryRecord e;
  e.name = "abc";
  e.type = kFtRegFile;
  append_dir_entry(body, e);
  body.pop_back();
  auto r = parse_dir_entries(body, Key{256, kDirItemKey, 1});
  REQUIRE_FALSE(r);
  CHECK(r.error().err == EUCLEAN);
  body.clear();
  e.type = 0;
  append_dir_entry(body, e);
  auto r2 = parse_dir_entries(body, Key{256, kDirItemKey, 1});
  REQUIRE_FALSE(r2);
  CHECK(r2.error().err == EUCLEAN);
}
