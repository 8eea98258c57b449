// Log tree replay (fs/tree_log_replay.h) on images whose log this test writes itself, the way an
// fsync before a crash leaves it: a committed baseline made through Filesystem, then log blocks of
// generation G + 1 (owner TREE_LOG) written into free space, a log root tree naming the log of
// subvolume 5, and a superblock pointing at it, the generation unchanged. The kernel-made logs are
// tested end to end by tests/oracle/log_replay_kernel_image_test.sh; here each hard rule gets a
// test named after it.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "fs/csum_tree.h"
#include "fs/dir_item.h"
#include "fs/file_extent.h"
#include "fs/filesystem.h"
#include "fs/inode.h"
#include "fs/tree_log_replay.h"
#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"
#include "tree/ctree.h"
#include "tree/format.h"
#include "tree/superblock.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
namespace stdfs = std::filesystem;

namespace {

using test::bytes;
using test::bytes_of;
using test::device_options;
using test::fresh_image;
using test::mkfs_binary;
using test::mount_device;
using test::must;

constexpr uint64_t kReplayImageSize = 256ull << 20;

// How the log writer opens `dev`: read-only when `ro`, no writeback thread.
OpenOptions open_options(io::BlockDevice& dev, bool ro) {
  OpenOptions o = device_options(dev);
  o.read_only = ro;
  o.writeback.enabled = false;
  return o;
}

// `n` bytes seed * 31 + 7 i + i / 512: the data of the baseline and of the log.
std::vector<uint8_t> replay_pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed * 31 + i * 7 + (i >> 9));
  return v;
}

// The whole content of inode `ino` (a failure FAILs).
std::vector<uint8_t> read_or_fail(Filesystem& f, uint64_t ino) {
  auto st = must(f.getattr(ino), "getattr");
  std::vector<uint8_t> out(st.st_size);
  auto n = must(f.read(ino, 0, out, false), "read");
  out.resize(n);
  return out;
}

// Writes a log tree into an image as a kernel fsync would leave it (see the file comment).
class LogWriter {
 public:
  // first_block: put the first log block (the log tree's leaf) there instead of in free space.
  explicit LogWriter(io::BlockDevice& dev, std::optional<uint64_t> first_block = std::nullopt) {
    fs_ = must(FsInfo::open(open_options(dev, false)), "open for the log writer");
    alloc_.first_block = first_block;
    gen_ = fs_->super().generation.get();
    h_.transid = gen_ + 1;
    h_.allocator = &alloc_;
    alloc_.fs = fs_.get();
    alloc_.blocks = &blocks;
    log_ = std::make_unique<TreeRoot>(fs_->tree_ctx(), kTreeLogObjectid);
    must(create_empty_tree(h_, *log_), "create log tree");
  }
  FsInfo& fs() { return *fs_; }
  TreeRoot& subvol() { return *must(fs_->fs_root(kFsTreeObjectid), "fs root")->tree; }
  uint64_t transid() const { return h_.transid; }

  void item(const Key& k, std::span<const uint8_t> body) { must(insert_item(h_, *log_, k, body), "log item"); }
  // The inode as the subvolume has it, with changes, logged in full (generation != 0).
  InodeItem current_inode(uint64_t ino) { return must(read_inode_item(subvol(), ino), "read inode"); }
  void inode(uint64_t ino, const InodeItem& ii) { item(Key{ino, kInodeItemKey, 0}, bytes_of(ii)); }
  void inode_ref(uint64_t ino, uint64_t parent, uint64_t index, std::string_view name) {
    std::vector<uint8_t> body(sizeof(InodeRef) + name.size());
    InodeRef r{};
    r.index = index;
    r.name_len = static_cast<uint16_t>(name.size());
    std::memcpy(body.data(), &r, sizeof(r));
    std::memcpy(body.data() + sizeof(r), name.data(), name.size());
    item(Key{ino, kInodeRefKey, parent}, body);
  }
  void dir_log_range(uint64_t dir, uint64_t start, uint64_t end) {
    Le<uint64_t> e;
    e = end;
    item(Key{dir, kDirLogIndexKey, start}, bytes_of(e));
  }
  // New data in free DATA space (an extent the extent tree does not have) and its checksums.
  uint64_t new_data(const std::vector<uint8_t>& data) {
    for (auto* bg : fs_->block_groups().of_type(kBlockGroupData)) {
      auto at = bg->reserve_extent(data.size(), fs_->params().sectorsize, 0, 0);
      if (!at) continue;
      for (uint64_t phys : must(fs_->chunk_map().map(*at, data.size()), "map data"))
        must(fs_->device().write(phys, data), "write data");
      item(Key{kExtentCsumObjectid, kExtentCsumKey, *at}, compute_data_csums(fs_->params(), data));
      new_extents.emplace_back(*at, data.size());
      return *at;
    }
    FAIL("no data space");
    return 0;
  }
  void extent(uint64_t ino, uint64_t file_off, uint64_t disk, uint64_t disk_len, uint64_t off, uint64_t len) {
    auto fe = make_file_extent(h_.transid, kFileExtentReg, disk, disk_len, off, len, disk_len);
    item(Key{ino, kExtentDataKey, file_off}, bytes_of(fe));
  }
  void inline_extent(uint64_t ino, std::string_view data) {
    must(insert_inline_extent(h_, *log_, ino, h_.transid, bytes(data)), "inline extent");
  }

  // Writes the log blocks, a log root tree naming the log of subvolume 5 and the superblock.
  // Returns the log root tree's bytenr.
  uint64_t finish() {
    TreeRoot roots(fs_->tree_ctx(), kTreeLogObjectid);
    must(create_empty_tree(h_, roots), "create log root tree");
    RootItem ri{};
    EbRef top = log_->node();
    ri.bytenr = top->start();
    ri.level = static_cast<uint8_t>(top->level());
    ri.generation = h_.transid;
    ri.generation_v2 = h_.transid;
    must(insert_item(h_, roots, Key{kTreeLogObjectid, kRootItemKey, kFsTreeObjectid}, bytes_of(ri)), "log root item");
    must(fs_->cache().write_dirty(), "write log blocks");
    must(fs_->device().flush(), "flush");
    Superblock sb = fs_->super();
    sb.log_root = roots.node()->start();
    sb.log_root_level = static_cast<uint8_t>(roots.node()->level());
    must(write_superblocks(fs_->device(), sb), "write super");
    const uint64_t at = roots.node()->start();
    log_.reset();
    fs_.reset();
    return at;
  }

  std::vector<uint64_t> blocks;
  std::vector<std::pair<uint64_t, uint64_t>> new_extents;

 private:
  // Log blocks come from free metadata space and get no extent items (as the kernel's).
  struct Alloc final : TreeBlockAllocator {
    FsInfo* fs = nullptr;
    std::vector<uint64_t>* blocks = nullptr;
    std::optional<uint64_t> first_block;
    Result<uint64_t> alloc_tree_block(TreeHandle&, uint64_t, int, uint64_t) override {
      const uint32_t ns = fs->params().nodesize;
      if (first_block) {
        const uint64_t at = *first_block;
        first_block.reset();
        blocks->push_back(at);
        return at;
      }
      for (auto* bg : fs->block_groups().of_type(kBlockGroupMetadata))
        if (auto at = bg->reserve_extent(ns, ns, 0, 64 << 10)) {
          blocks->push_back(*at);
          return *at;
        }
      return fail(ENOSPC, "no metadata space for a log block");
    }
    void free_tree_block(TreeHandle&, uint64_t, uint64_t, uint64_t, bool) override {}
  };
  std::unique_ptr<FsInfo> fs_;
  uint64_t gen_ = 0;
  Alloc alloc_;
  TreeHandle h_;
  std::unique_ptr<TreeRoot> log_;
};

// The baseline every test starts from: d/a (X), d/b and d/b2 (Y, two names), f (64 KiB).
struct Baseline {
  uint64_t d = 0, x = 0, y = 0, f = 0;  // objectids (= FUSE numbers in subvolume 5)
  std::vector<uint8_t> f_data = replay_pattern(65536, 3);
};

Baseline make_baseline(io::BlockDevice& dev) {
  Baseline b;
  auto f = must(mount_device(dev, false), "mount baseline");
  b.d = must(f->mkdir(1, "d", S_IFDIR | 0755, Caller{}), "mkdir").st_ino;
  b.x = must(f->create(b.d, "a", S_IFREG | 0644, Caller{}), "create a").st_ino;
  must(f->write(b.x, 0, bytes("old-a")), "write a");
  b.y = must(f->create(b.d, "b", S_IFREG | 0644, Caller{}), "create b").st_ino;
  must(f->write(b.y, 0, bytes("bee")), "write b");
  must(f->link(b.y, b.d, "b2"), "link b2");
  b.f = must(f->create(1, "f", S_IFREG | 0644, Caller{}), "create f").st_ino;
  must(f->write(b.f, 0, b.f_data), "write f");
  must(f->unmount(), "unmount baseline");
  return b;
}

// The log of the rules below: a new inode Z takes the name d/a from X (conflicting name); Y is
// logged with only its name "b" (link count fixup: b2 goes); f gets 8 KiB of new data at 16 KiB
// (extent drop over range); the subvolume root is logged with its ".." ref.
constexpr uint64_t kZ = 300;
struct WrittenLog {
  uint64_t log_root = 0;
  std::vector<uint64_t> blocks;
  std::vector<std::pair<uint64_t, uint64_t>> new_extents;
  std::vector<uint8_t> new_f;  // f as the log says it is
};

WrittenLog write_log(io::BlockDevice& dev, const Baseline& b) {
  LogWriter w(dev);
  WrittenLog out;
  InodeItem root = w.current_inode(kFirstFreeObjectid);
  w.inode(kFirstFreeObjectid, root);
  w.inode_ref(kFirstFreeObjectid, kFirstFreeObjectid, 0, "..");
  InodeItem y = w.current_inode(b.y);
  y.nlink = 2;  // stale on purpose: replay recomputes it from the names
  w.inode(b.y, y);
  const uint64_t b_index = *must(find_inode_ref(w.subvol(), b.y, b.d, "b"), "index of b");
  w.inode_ref(b.y, b.d, b_index, "b");
  InodeItem f = w.current_inode(b.f);
  w.inode(b.f, f);
  const auto data = replay_pattern(8192, 9);
  const uint64_t disk = w.new_data(data);
  w.extent(b.f, 16384, disk, 8192, 0, 8192);
  InodeItem z = y;
  z.generation = w.transid();
  z.transid = w.transid();
  z.nlink = 1;
  z.size = 5;
  z.nbytes = 0;
  z.mode = S_IFREG | 0600;
  w.inode(kZ, z);
  w.inode_ref(kZ, b.d, 20, "a");
  w.inline_extent(kZ, "new-a");
  out.new_extents = w.new_extents;
  out.log_root = w.finish();
  out.blocks = w.blocks;
  out.new_f = b.f_data;
  std::copy(data.begin(), data.end(), out.new_f.begin() + 16384);
  return out;
}

}  // namespace

TEST_CASE("log replay: conflicting name, link count fixup, extent drop over range, root '..' ref",
          "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  const WrittenLog log = write_log(*mem, b);
  {
    auto f = must(mount_device(*mem, false), "mount with replay");
    REQUIRE_FALSE(f->read_only());
    // Conflicting name: d/a is now Z with Z's data; X lost its only name and was evicted.
    auto a = must(f->lookup(b.d, "a"), "lookup d/a");
    CHECK(a.st_ino == kZ);
    CHECK(a.st_nlink == 1);
    CHECK((a.st_mode & 07777) == 0600);
    const auto za = read_or_fail(*f, kZ);
    CHECK(std::string(za.begin(), za.end()) == "new-a");
    CHECK(f->getattr(b.x).error().err == ENOENT);
    // Link count fixup: Y keeps only the logged name.
    CHECK(must(f->lookup(b.d, "b"), "lookup d/b").st_nlink == 1);
    CHECK(f->lookup(b.d, "b2").error().err == ENOENT);
    // Directory size = twice the sum of its names: "a" and "b".
    CHECK(must(f->getattr(b.d), "getattr d").st_size == 4);
    // Extent drop over range: old data around the new 8 KiB; nbytes as the extents hold.
    auto fs = must(f->getattr(b.f), "getattr f");
    CHECK(fs.st_size == 65536);
    CHECK(fs.st_blocks == 65536 / 512 + 8192 / 512 - 8192 / 512);
    CHECK(read_or_fail(*f, b.f) == log.new_f);
    // The root's ".." ref named no entry.
    auto& info = f->info();
    TreeRoot& subvol = *must(info.fs_root(kFsTreeObjectid), "fs root")->tree;
    CHECK_FALSE(must(lookup_dir_entry(subvol, kFirstFreeObjectid, ".."), "lookup ..").has_value());
    // The logged extent got its extent item; the superblock has no log.
    CHECK(info.super().log_root.get() == 0);
    CHECK(must(lookup_item(*info.extent_root().tree,
                           Key{log.new_extents[0].first, kExtentItemKey, log.new_extents[0].second}),
               "extent item")
              .has_value());
    // New inodes and names after the replay do not collide with the replayed ones (the objectid
    // and dir index counters are seeded after replay).
    auto later = must(f->create(b.d, "later", S_IFREG | 0644, Caller{}), "create after replay");
    CHECK(later.st_ino > kZ);
    CHECK(*must(find_inode_ref(subvol, later.st_ino, b.d, "later"), "index of later") > 20);
    must(f->unmount(), "unmount after replay");
  }
  // Mounted again: no log, same content.
  auto f = must(mount_device(*mem, true), "remount ro");
  CHECK(f->info().super().log_root.get() == 0);
  CHECK(read_or_fail(*f, b.f) == log.new_f);
  CHECK(must(f->lookup(b.d, "a"), "lookup d/a").st_ino == kZ);
  // btrfs check on what replay wrote, when it is installed.
  if (std::system("command -v btrfs >/dev/null 2>&1") == 0 && geteuid() == 0) {
    io::testing::TempFile img(kReplayImageSize);
    {
      std::ofstream out(img.path(), std::ios::binary);
      out.write(reinterpret_cast<const char*>(mem->bytes().data()), static_cast<std::streamsize>(kReplayImageSize));
    }
    for (const char* mode : {"original", "lowmem"})
      CHECK(std::system(fmt::format("btrfs check --mode={} {} >/dev/null 2>&1", mode, img.path()).c_str()) == 0);
  }
}

TEST_CASE("log replay: log blocks and new data extents are excluded from allocation before replay",
          "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  const WrittenLog log = write_log(*mem, b);
  REQUIRE(log.blocks.size() >= 2);
  REQUIRE(log.new_extents.size() == 1);
  // A bare FsInfo does not replay: it may not open the image read-write.
  CHECK(FsInfo::open(open_options(*mem, false)).error().err == EROFS);
  OpenOptions o = open_options(*mem, false);
  o.replays_log = true;
  auto fs = must(FsInfo::open(o), "open");
  REQUIRE(fs->log_replay_pending());
  const LoadedLog loaded = must(load_log_trees(*fs), "load log");
  CHECK(std::set<uint64_t>(loaded.blocks.begin(), loaded.blocks.end()) ==
        std::set<uint64_t>(log.blocks.begin(), log.blocks.end()));
  CHECK(loaded.new_extents == log.new_extents);
  // The log blocks are free space in the committed state: without the exclusion an allocation
  // could land on them.
  const uint32_t ns = fs->params().nodesize;
  for (uint64_t blk : log.blocks) {
    auto* bg = fs->block_groups().find(blk);
    REQUIRE(bg != nullptr);
    CHECK_FALSE(bg->is_reserved(blk, ns));
  }
  must(exclude_log_extents(*fs, loaded), "exclude");
  for (uint64_t blk : log.blocks) CHECK(fs->block_groups().find(blk)->is_reserved(blk, ns));
  // Everything the allocator can still hand out misses the log.
  std::set<uint64_t> got;
  for (auto* bg : fs->block_groups().of_type(kBlockGroupMetadata))
    while (auto at = bg->reserve_extent(ns, ns, 0, 64 << 10)) got.insert(*at);
  CHECK(got.size() > 10);
  for (uint64_t blk : log.blocks) CHECK(got.count(blk) == 0);
  const auto [ext, ext_len] = log.new_extents[0];
  bool overlap = false;
  size_t data_allocs = 0;
  for (auto* bg : fs->block_groups().of_type(kBlockGroupData))
    while (auto at = bg->reserve_extent(4096, 4096, 0, 0)) {
      ++data_allocs;
      overlap |= *at < ext + ext_len && ext < *at + 4096;
    }
  CHECK(data_allocs > 100);
  CHECK_FALSE(overlap);
  // A second exclusion of the same log fails (the ranges are no longer free) and changes nothing.
  auto again = exclude_log_extents(*fs, loaded);
  REQUIRE_FALSE(again);
  CHECK_THAT(again.error().message, Catch::Contains("overlaps allocated space"));
}

TEST_CASE("log replay: a corrupt log block or item refuses the mount and leaves the image untouched",
          "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  SECTION("bad checksum in the log root block") {
    const WrittenLog log = write_log(*mem, b);
    {
      auto fs = must(FsInfo::open(open_options(*mem, true)), "open ro");
      for (uint64_t phys : must(fs->chunk_map().map(log.log_root, 4096), "map")) mem->bytes()[phys + 200] ^= 0x40;
    }
    const auto before = mem->bytes();
    auto f = mount_device(*mem, false);
    REQUIRE_FALSE(f);
    CHECK_THAT(f.error().message, Catch::Contains(fmt::format("log tree block {}", log.log_root)));
    CHECK(mem->bytes() == before);
  }
  SECTION("a DIR_LOG_INDEX range that ends before it starts") {
    {
      LogWriter w(*mem);
      w.inode(b.d, w.current_inode(b.d));
      w.dir_log_range(b.d, 5, 1);
      w.finish();
    }
    const auto before = mem->bytes();
    auto f = mount_device(*mem, false);
    REQUIRE_FALSE(f);
    CHECK(f.error().err == EUCLEAN);
    CHECK_THAT(f.error().message, Catch::Contains(fmt::format("[{} 72 5]", b.d)) && Catch::Contains("dir log range"));
    CHECK(mem->bytes() == before);
  }
}

TEST_CASE("log replay: a read-only mount ignores the log without writing; nologreplay refuses read-write",
          "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  write_log(*mem, b);
  const auto before = mem->bytes();
  {
    auto f = must(mount_device(*mem, true), "mount ro");
    CHECK(must(f->lookup(b.d, "a"), "lookup d/a").st_ino == b.x);  // the committed state
    CHECK(must(f->lookup(b.d, "b2"), "lookup d/b2").st_ino == b.y);
    CHECK(read_or_fail(*f, b.f) == b.f_data);
    must(f->unmount(), "unmount ro");
  }
  CHECK(mem->bytes() == before);
  auto f = mount_device(*mem, false, /*nologreplay=*/true);
  REQUIRE_FALSE(f);
  CHECK(f.error().err == EROFS);
  CHECK_THAT(f.error().message, Catch::Contains("nologreplay"));
  CHECK(mem->bytes() == before);
}

TEST_CASE("log replay: a crash at any write of the replay leaves an image that replays again", "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  const WrittenLog log = write_log(*mem, b);
  const auto crashed_before = mem->bytes();
  // How many writes one whole replay (mount + unmount) makes.
  uint64_t total = 0;
  {
    io::MemoryDevice copy(kReplayImageSize);
    copy.bytes() = crashed_before;
    io::FaultInjectingDevice dev(copy);
    {
      auto f = must(mount_device(dev, false), "replay");
      must(f->unmount(), "unmount");
    }
    total = dev.writes();
  }
  REQUIRE(total > 4);
  for (uint64_t cut = 1; cut < total; cut += std::max<uint64_t>(1, total / 12)) {
    CAPTURE(cut, total);
    io::MemoryDevice copy(kReplayImageSize);
    copy.bytes() = crashed_before;
    {
      io::FaultInjectingDevice dev(copy);
      dev.drop_writes_after(cut);  // the power goes after `cut` writes
      auto f = mount_device(dev, false);
      if (f) (void)(*f)->unmount();
    }
    auto f = must(mount_device(copy, false), "replay after the crash");
    CHECK(must(f->lookup(b.d, "a"), "lookup d/a").st_ino == kZ);
    CHECK(f->lookup(b.d, "b2").error().err == ENOENT);
    CHECK(read_or_fail(*f, b.f) == log.new_f);
    must(f->unmount(), "unmount");
  }
}

TEST_CASE("log replay: a directory deleted by a logged range takes its whole subtree with it", "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  {
    // The root directory logged after `rm -rf d`: its whole index range is logged, holding only f.
    LogWriter w(*mem);
    w.inode(kFirstFreeObjectid, w.current_inode(kFirstFreeObjectid));
    w.dir_log_range(kFirstFreeObjectid, 0, ~0ull);
    const uint64_t f_index = *must(find_inode_ref(w.subvol(), b.f, kFirstFreeObjectid, "f"), "index of f");
    DirEntryRecord e;
    e.name = "f";
    e.location = Key{b.f, kInodeItemKey, 0};
    e.type = kFtRegFile;
    e.transid = w.transid();
    std::vector<uint8_t> body;
    append_dir_entry(body, e);
    w.item(Key{kFirstFreeObjectid, kDirIndexKey, f_index}, body);
    w.finish();
  }
  auto f = must(mount_device(*mem, false), "mount with replay");
  CHECK(f->lookup(1, "d").error().err == ENOENT);
  CHECK(f->getattr(b.d).error().err == ENOENT);  // evicted, with everything below it
  CHECK(f->getattr(b.x).error().err == ENOENT);
  CHECK(f->getattr(b.y).error().err == ENOENT);
  CHECK(read_or_fail(*f, b.f) == b.f_data);
  CHECK(must(f->getattr(1), "getattr root").st_size == 2);  // "f" only
  must(f->unmount(), "unmount");
  if (std::system("command -v btrfs >/dev/null 2>&1") == 0 && geteuid() == 0) {
    io::testing::TempFile img(kReplayImageSize);
    {
      std::ofstream out(img.path(), std::ios::binary);
      out.write(reinterpret_cast<const char*>(mem->bytes().data()), static_cast<std::streamsize>(kReplayImageSize));
    }
    CHECK(std::system(fmt::format("btrfs check {} >/dev/null 2>&1", img.path()).c_str()) == 0);
  }
}

TEST_CASE("log replay: a log block over allocated space is refused by the mount and reported by fsck",
          "[tree_log_replay]") {
  auto mem = fresh_image("", kReplayImageSize);
  REQUIRE(mem != nullptr);
  const Baseline b = make_baseline(*mem);
  uint64_t data_at = 0;
  {
    auto fs = must(FsInfo::open(open_options(*mem, true)), "open ro");
    TreeRoot& subvol = *must(fs->fs_root(kFsTreeObjectid), "fs root")->tree;
    auto exts = must(find_file_extents(subvol, fs->params(), b.f, 0, UINT64_MAX), "extents of f");
    REQUIRE_FALSE(exts.empty());
    data_at = exts[0].disk_bytenr;  // f's data extent: allocated, with an extent item
  }
  uint64_t leaf = 0;
  {
    LogWriter w(*mem, data_at);
    w.inode(b.f, w.current_inode(b.f));
    w.finish();
    leaf = w.blocks.at(0);
  }
  REQUIRE(leaf == data_at);
  const auto before = mem->bytes();
  auto f = mount_device(*mem, false);
  REQUIRE_FALSE(f);
  CHECK_THAT(f.error().message, Catch::Contains(fmt::format("log block {}", leaf)) &&
                                    Catch::Contains("overlaps allocated space"));
  CHECK(mem->bytes() == before);
  // fsck.ubtrfs names the overlap.
  std::string fsck = mkfs_binary();
  if (!fsck.empty()) fsck = (stdfs::path(fsck).parent_path().parent_path() / "fsck/fsck.ubtrfs").string();
  if (!fsck.empty() && stdfs::exists(fsck)) {
    io::testing::TempFile img(kReplayImageSize);
    {
      std::ofstream out(img.path(), std::ios::binary);
      out.write(reinterpret_cast<const char*>(mem->bytes().data()), static_cast<std::streamsize>(kReplayImageSize));
    }
    io::testing::TempFile report(0);
    const int rc = std::system(fmt::format("{} {} >{} 2>&1", fsck, img.path(), report.path()).c_str());
    std::ifstream in(report.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(rc != 0);
    CHECK_THAT(text, Catch::Contains("log-overlap") &&
                         Catch::Contains(fmt::format("log tree block {} overlaps allocated extent", leaf)));
  } else {
    if (test::oracles_required()) FAIL("fsck.ubtrfs not built: UBTRFS_REQUIRE_ORACLES=1");
    WARN("fsck.ubtrfs not built: the fsck half of this test is skipped");
  }
}
