// Unit tests of the mkfs library (tools/mkfs/mkfs.h): the layout policy for several sizes, the
// minimum-size refusal, superblock-mirror exclusion, the free space tree and superblock contents,
// and the interrupted-mkfs property: whatever prefix of mkfs's writes reaches the disk, every
// superblock copy that validates describes a complete filesystem (LevelDB fault_injection_test idea).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <set>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "tools/mkfs/leaf_builder.h"
#include "tools/mkfs/mkfs.h"
#include "tree/block_io.h"
#include "tree/chunk_map.h"
#include "tree/superblock.h"
#include "tree/tree_checker.h"

using namespace ubtrfs;
using namespace ubtrfs::mkfs;

namespace {

struct LeafItem {
  Key key;
  std::vector<uint8_t> body;
};

std::vector<LeafItem> leaf_items(std::span<const uint8_t> block) {
  auto h = load<Header>(block.data());
  std::vector<LeafItem> out;
  for (uint32_t i = 0; i < h.nritems.get(); ++i) {
    auto it = load<Item>(block.data() + sizeof(Header) + i * sizeof(Item));
    const uint8_t* p = block.data() + sizeof(Header) + it.offset.get();
    out.push_back({it.key.cpu(), std::vector<uint8_t>(p, p + it.size.get())});
  }
  return out;
}

MkfsConfig fixed_config(uint64_t fsid_byte) {
  MkfsConfig c;
  UuidBytes u{};
  u.fill(static_cast<uint8_t>(fsid_byte));
  c.fsid = u;
  u.fill(0x22);
  c.dev_uuid = u;
  u.fill(0x33);
  c.chunk_tree_uuid = u;
  u.fill(0x44);
  c.fs_tree_uuid = u;
  c.now_sec = 1700000000;
  return c;
}

FsParams params_of(const Superblock& sb) {
  FsParams fs = FsParams::from_super(sb);
  return fs;
}

// Reads every copy of the tree block at `bytenr` and checks checksum, header and structure.
Status check_block_all_copies(io::BlockDevice& dev, const ChunkMap& map, const FsParams& fs, uint64_t bytenr,
                              uint64_t generation, uint64_t owner, std::vector<uint8_t>* first_copy) {
  auto copies = UBTRFS_TRY(map.map(bytenr, fs.nodesize));
  for (uint64_t phys : copies) {
    std::vector<uint8_t> block(fs.nodesize);
    UBTRFS_TRY_STATUS(dev.read(phys, block));
    TreeBlockExpect e;
    e.bytenr = bytenr;
    e.generation = generation;
    e.owner = owner;
    e.level = 0;
    UBTRFS_TRY_STATUS(check_tree_block(fs, block, e));
    if (first_copy && first_copy->empty()) *first_copy = block;
  }
  return {};
}

// A superblock is "complete" when the chunk tree and every tree of the root tree can be read, on every
// copy, with the generation the super and root items promise.
Status check_complete(io::BlockDevice& dev, const Superblock& sb) {
  const FsParams fs = params_of(sb);
  ChunkMap map;
  UBTRFS_TRY_STATUS(map.load_sys_chunk_array(sb));
  std::vector<uint8_t> chunk_leaf;
  UBTRFS_TRY_STATUS(check_block_all_copies(dev, map, fs, sb.chunk_root, sb.chunk_root_generation,
                                           kChunkTreeObjectid, &chunk_leaf));
  for (const auto& it : leaf_items(chunk_leaf))
    if (it.key.type == kChunkItemKey) UBTRFS_TRY_STATUS(map.add_chunk_item(it.key.offset, it.body));
  std::vector<uint8_t> root_leaf;
  UBTRFS_TRY_STATUS(check_block_all_copies(dev, map, fs, sb.root, sb.generation, kRootTreeObjectid, &root_leaf));
  int roots = 0;
  for (const auto& it : leaf_items(root_leaf)) {
    if (it.key.type != kRootItemKey) continue;
    auto ri = load<RootItem>(it.body.data());
    UBTRFS_TRY_STATUS(check_block_all_copies(dev, map, fs, ri.bytenr, ri.generation, it.key.objectid, nullptr));
    ++roots;
  }
  if (roots != 7) return fail(EUCLEAN, "root tree has {} root items, expected 7", roots);
  return {};
}

std::vector<Range> physical_ranges(const ChunkPlan& c) {
  std::vector<Range> out;
  for (uint64_t p : c.physical) out.push_back({p, c.length});
  return out;
}

}  // namespace

TEST_CASE("metadata chunk size follows the mkfs.btrfs policy", "[mkfs]") {
  CHECK(metadata_chunk_size(128 * kMiB, Profile::kDup) == 32 * kMiB);
  CHECK(metadata_chunk_size(1 * kGiB, Profile::kDup) == 53673984);  // mkfs.btrfs 6.2: 51.19 MiB
  CHECK(metadata_chunk_size(8 * kGiB, Profile::kDup) == 256 * kMiB);
  CHECK(metadata_chunk_size(16 * kGiB, Profile::kDup) == 256 * kMiB);
  CHECK(metadata_chunk_size(50 * kGiB, Profile::kDup) == 256 * kMiB);
  CHECK(metadata_chunk_size(64 * kGiB, Profile::kDup) == 1 * kGiB);
  CHECK(metadata_chunk_size(1 * kGiB, Profile::kSingle) == 107347968);
  CHECK(metadata_chunk_size(100 * kMiB, Profile::kSingle) == 32 * kMiB);
  for (uint64_t s : {100 * kMiB, 777 * kMiB + 4096, 3 * kGiB + 12345})
    CHECK(metadata_chunk_size(s, Profile::kDup) % kStripeLen == 0);
}

TEST_CASE("layout is sound for several sizes and profiles", "[mkfs]") {
  for (Profile p : {Profile::kSingle, Profile::kDup}) {
    for (uint64_t size : {minimum_fs_size(p), 128 * kMiB, 940 * kMiB, 1 * kGiB, 16 * kGiB, 64 * kGiB, 300 * kGiB}) {
      for (uint32_t nodesize : {4096u, 16384u, 65536u}) {
        CAPTURE(size, nodesize, p == Profile::kDup);
        MkfsConfig c;
        c.nodesize = nodesize;
        c.metadata_profile = p;
        auto l = compute_layout(c, size);
        REQUIRE(l);
        CHECK(l->total_bytes == size);
        const size_t copies = p == Profile::kDup ? 2 : 1;
        CHECK(l->system.physical.size() == copies);
        CHECK(l->metadata.physical.size() == copies);
        CHECK(l->data.physical.size() == 1);
        CHECK(l->system.type == (kBlockGroupSystem | (copies == 2 ? kBlockGroupDup : 0)));
        CHECK(l->metadata.type == (kBlockGroupMetadata | (copies == 2 ? kBlockGroupDup : 0)));
        CHECK(l->data.type == kBlockGroupData);
        CHECK(l->metadata.length == metadata_chunk_size(size, p));
        // Physical copies: inside [1 MiB, size), pairwise disjoint.
        std::vector<Range> phys;
        for (const ChunkPlan* ch : l->chunks())
          for (const Range& r : physical_ranges(*ch)) phys.push_back(r);
        for (size_t i = 0; i < phys.size(); ++i) {
          CHECK(phys[i].start >= kReserved1MForSuper);
          CHECK(phys[i].end() <= size);
          for (size_t j = i + 1; j < phys.size(); ++j) CHECK_FALSE(phys[i].overlaps(phys[j]));
        }
        // Logical ranges disjoint.
        auto chunks = l->chunks();
        for (size_t i = 0; i < chunks.size(); ++i)
          for (size_t j = i + 1; j < chunks.size(); ++j)
            CHECK_FALSE((Range{chunks[i]->logical, chunks[i]->length}.overlaps({chunks[j]->logical, chunks[j]->length})));
        CHECK(l->dev_bytes_used() == (kSystemChunkSize + l->metadata.length) * copies + kDataChunkSize);
        // Tree blocks: 9, in the right chunk, aligned, not crossing a stripe, no copy on a mirror.
        REQUIRE(l->tree_bytenr.size() == 9);
        std::set<uint64_t> seen;
        for (const auto& [id, bytenr] : l->tree_bytenr) {
          const ChunkPlan& ch = id == kChunkTreeObjectid ? l->system : l->metadata;
          CHECK(seen.insert(bytenr).second);
          CHECK(bytenr >= ch.logical);
          CHECK(bytenr + nodesize <= ch.logical + ch.length);
          CHECK((bytenr - ch.logical) % nodesize == 0);
          CHECK((bytenr - ch.logical) / kStripeLen == (bytenr - ch.logical + nodesize - 1) / kStripeLen);
          for (uint64_t p0 : ch.physical) {
            const Range copy{p0 + (bytenr - ch.logical), nodesize};
            for (int m = 0; m < kSuperMirrorMax; ++m)
              CHECK_FALSE(copy.overlaps({super_offset(m), kSuperInfoSize}));
          }
        }
      }
    }
  }
}

TEST_CASE("a device below the layout minimum is refused with the minimum in the message", "[mkfs]") {
  for (Profile p : {Profile::kSingle, Profile::kDup}) {
    const uint64_t min = minimum_fs_size(p);
    CHECK(min == (p == Profile::kDup ? 89 * kMiB : 49 * kMiB));
    MkfsConfig c;
    c.metadata_profile = p;
    auto small = compute_layout(c, min - 4096);
    REQUIRE_FALSE(small);
    CHECK(small.error().err == ENOSPC);
    CHECK_THAT(small.error().message, Catch::Contains(std::to_string(min)));
    CHECK(compute_layout(c, min));
    // A device larger than the filesystem size: only fs_size counts.
    c.fs_size = min - 4096;
    CHECK_FALSE(compute_layout(c, 1 * kGiB));
    c.fs_size = 2 * kGiB;
    CHECK_FALSE(compute_layout(c, 1 * kGiB));  // fs larger than the device
  }
  io::MemoryDevice dev(80 * kMiB);
  auto r = make_btrfs(dev, fixed_config(1));
  REQUIRE_FALSE(r);
  CHECK(std::all_of(dev.bytes().begin(), dev.bytes().end(), [](uint8_t b) { return b == 0; }));
}

TEST_CASE("bad node and sector sizes are refused", "[mkfs]") {
  MkfsConfig c;
  c.nodesize = 8192 + 4096;
  CHECK_FALSE(compute_layout(c, 1 * kGiB));
  c.nodesize = 131072;
  CHECK_FALSE(compute_layout(c, 1 * kGiB));
  c.nodesize = 2048;
  CHECK_FALSE(compute_layout(c, 1 * kGiB));
  c.nodesize = 16384;
  c.sectorsize = 8192;
  auto r = compute_layout(c, 1 * kGiB);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message, Catch::Contains("only 4096"));
}

TEST_CASE("superblock mirrors are excluded from chunks and tree blocks move around them", "[mkfs]") {
  // 940 MiB, DUP: the metadata chunk is 47 MiB per copy at 17 MiB, so copy 2 starts at exactly 64 MiB.
  MkfsConfig c;
  auto l = compute_layout(c, 940 * kMiB);
  REQUIRE(l);
  REQUIRE(l->metadata.physical.size() == 2);
  CHECK(l->metadata.physical[1] == super_offset(1));
  REQUIRE(l->metadata.excluded.size() == 1);
  CHECK(l->metadata.excluded[0] == (Range{l->metadata.logical, kStripeLen}));
  CHECK(l->tree_bytenr.at(kRootTreeObjectid) == l->metadata.logical + kStripeLen);

  // 128 MiB DUP: 64 MiB falls inside the second metadata copy, not at its start.
  auto l2 = compute_layout(c, 128 * kMiB);
  REQUIRE(l2);
  REQUIRE(l2->metadata.excluded.size() == 1);
  const uint64_t rel = super_offset(1) - l2->metadata.physical[1];
  CHECK(l2->metadata.excluded[0] == (Range{l2->metadata.logical + rel / kStripeLen * kStripeLen, kStripeLen}));
  CHECK(l2->system.excluded.empty());
  CHECK(l2->data.excluded.empty());

  // Synthetic chunk covering the 256 GiB mirror at an unaligned relative offset of its stripe.
  ChunkPlan big;
  big.logical = 5 * kGiB;
  big.length = 1 * kGiB;
  big.physical = {super_offset(2) - 100 * kMiB - 4096 * 3};
  auto ex = super_mirror_exclusions(big);
  REQUIRE(ex.size() == 1);
  const uint64_t r2 = super_offset(2) - big.physical[0];
  CHECK(ex[0] == (Range{big.logical + r2 / kStripeLen * kStripeLen, kStripeLen}));
  CHECK(ex[0].start <= big.logical + r2);
  CHECK(ex[0].end() >= big.logical + r2 + kSuperInfoSize);

  // Placement skips the excluded stripe.
  ChunkPlan small;
  small.logical = 1 * kMiB;
  small.length = 256 * 1024;
  small.physical = {super_offset(1) - 64 * 1024};
  small.excluded = super_mirror_exclusions(small);
  auto blocks = place_tree_blocks(small, 8, 16384);
  REQUIRE(blocks);
  for (uint64_t b : *blocks) CHECK_FALSE((Range{b, 16384}.overlaps(small.excluded[0])));
  CHECK((*blocks)[4] == small.logical + 2 * kStripeLen);
  CHECK_FALSE(place_tree_blocks(small, 13, 16384));  // only 12 slots remain
}

TEST_CASE("free space tree lists exactly the free runs of each block group", "[mkfs]") {
  for (uint64_t size : {128 * kMiB, 940 * kMiB}) {
    for (uint32_t nodesize : {4096u, 65536u}) {
      CAPTURE(size, nodesize);
      io::MemoryDevice dev(size);
      MkfsConfig c = fixed_config(7);
      c.nodesize = nodesize;
      auto r = make_btrfs(dev, c);
      REQUIRE(r);
      const Layout& l = r->layout;
      auto items = leaf_items(r->leaves.at(kFreeSpaceTreeObjectid));
      // Used ranges per chunk from the layout.
      size_t pos = 0;
      for (const ChunkPlan* ch : l.chunks()) {
        REQUIRE(pos < items.size());
        CHECK(items[pos].key == (Key{ch->logical, kFreeSpaceInfoKey, ch->length}));
        auto info = load<FreeSpaceInfo>(items[pos].body.data());
        CHECK(info.flags.get() == 0);
        ++pos;
        uint64_t free_bytes = 0;
        uint64_t prev_end = 0;
        uint32_t count = 0;
        while (pos < items.size() && items[pos].key.type == kFreeSpaceExtentKey) {
          const Range run{items[pos].key.objectid, items[pos].key.offset};
          CHECK(run.start >= ch->logical);
          CHECK(run.end() <= ch->logical + ch->length);
          CHECK(run.start != prev_end);  // maximal: never adjacent to the previous run
          CHECK(items[pos].body.empty());
          for (const auto& [id, b] : l.tree_bytenr) CHECK_FALSE(run.overlaps({b, nodesize}));
          prev_end = run.end();
          free_bytes += run.length;
          ++count;
          ++pos;
        }
        CHECK(count == info.extent_count.get());
        uint64_t used = 0;
        for (const auto& [id, b] : l.tree_bytenr)
          if (b >= ch->logical && b < ch->logical + ch->length) used += nodesize;
        CHECK(free_bytes + used == ch->length);
      }
      CHECK(pos == items.size());  // nothing but the three block groups: no stale entries
    }
  }
}

TEST_CASE("extent tree accounts every tree block and block group exactly", "[mkfs]") {
  io::MemoryDevice dev(256 * kMiB);
  auto r = make_btrfs(dev, fixed_config(9));
  REQUIRE(r);
  const Layout& l = r->layout;
  std::map<uint64_t, uint64_t> used;
  std::set<uint64_t> metadata_items;
  for (const auto& it : leaf_items(r->leaves.at(kExtentTreeObjectid))) {
    if (it.key.type == kBlockGroupItemKey) {
      auto bg = load<BlockGroupItem>(it.body.data());
      used[it.key.objectid] = bg.used;
      CHECK(bg.chunk_objectid.get() == kFirstChunkTreeObjectid);
    } else {
      REQUIRE(it.key.type == kMetadataItemKey);
      REQUIRE(it.body.size() == 33);
      auto e = load<ExtentItem>(it.body.data());
      auto ref = load<ExtentInlineRef>(it.body.data() + sizeof(ExtentItem));
      CHECK(e.refs.get() == 1);
      CHECK(e.flags.get() == kExtentFlagTreeBlock);
      CHECK(ref.type == kTreeBlockRefKey);
      CHECK(l.tree_bytenr.at(ref.offset.get()) == it.key.objectid);
      metadata_items.insert(it.key.objectid);
    }
  }
  CHECK(metadata_items.size() == 9);
  CHECK(used.at(l.system.logical) == l.nodesize);
  CHECK(used.at(l.metadata.logical) == 8ull * l.nodesize);
  CHECK(used.at(l.data.logical) == 0);
  CHECK(r->super.bytes_used.get() == 9ull * l.nodesize);
}

// Mixed block groups (mkfs.ubtrfs --mixed): one DATA|METADATA chunk beside a 4 MiB system chunk,
// the MIXED_GROUPS incompat bit, nodesize == sectorsize, and down to 16 MiB.
TEST_CASE("mixed_block_groups_layout_has_one_data_and_metadata_chunk_and_needs_nodesize_equal_to_sectorsize",
          "[mkfs]") {
  for (Profile p : {Profile::kSingle, Profile::kDup}) {
    const uint64_t copies = p == Profile::kDup ? 2 : 1;
    CHECK(minimum_fs_size(p, true) == 16 * kMiB);
    for (uint64_t size : {16 * kMiB, 25 * kMiB, 64 * kMiB, 300 * kMiB}) {
      MkfsConfig c = fixed_config(5);
      c.mixed = true;
      c.nodesize = 4096;
      c.metadata_profile = p;
      c.fs_size = size;
      io::MemoryDevice dev(size);
      auto r = make_btrfs(dev, c);
      REQUIRE(r);
      const Layout& l = r->layout;
      CHECK(l.mixed);
      REQUIRE(l.chunks().size() == 2);
      const uint64_t dup = copies == 2 ? kBlockGroupDup : 0;
      CHECK(l.system.type == (kBlockGroupSystem | dup));
      CHECK(l.system.length == kMixedSystemChunkSize);
      CHECK(l.metadata.type == (kBlockGroupData | kBlockGroupMetadata | dup));
      CHECK(l.metadata.physical.size() == copies);
      // 10 % of the device, within [1 MiB, 8 MiB] per copy and what is left, in 64 KiB units.
      CHECK(l.metadata.length % kStripeLen == 0);
      CHECK(l.metadata.length >= kMinMixedChunkSize);
      CHECK(l.metadata.length <= std::min(kMaxMixedChunkSize, std::max(size / 10, kMinMixedChunkSize)));
      CHECK(l.dev_bytes_used() == (kMixedSystemChunkSize + l.metadata.length) * copies);
      CHECK(kReserved1MForSuper + l.dev_bytes_used() <= size);
      CHECK((r->super.incompat_flags.get() & kIncompatMixedGroups) != 0);
      CHECK((r->super.incompat_flags.get() & kIncompatBigMetadata) == 0);
      CHECK(r->super.nodesize.get() == 4096);
      // The image reads back through the same validation the daemon's mount uses.
      auto sb = read_superblock(dev);
      REQUIRE(sb);
      CHECK(check_features(*sb, true));
      // The block group item is DATA|METADATA and holds the eight non-chunk tree blocks.
      bool found = false;
      for (const auto& it : leaf_items(r->leaves.at(kExtentTreeObjectid)))
        if (it.key.type == kBlockGroupItemKey && it.key.objectid == l.metadata.logical) {
          const auto bg = load<BlockGroupItem>(it.body.data());
          CHECK(bg.flags.get() == l.metadata.type);
          CHECK(bg.used.get() == 8ull * l.nodesize);
          found = true;
        }
      CHECK(found);
    }
    MkfsConfig c;
    c.mixed = true;
    c.metadata_profile = p;
    c.nodesize = 16384;
    auto bad = compute_layout(c, 64 * kMiB);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().err == EINVAL);
    CHECK_THAT(bad.error().message, Catch::Contains("nodesize equal to sectorsize"));
    c.nodesize = 4096;
    auto small = compute_layout(c, 16 * kMiB - 4096);
    REQUIRE_FALSE(small);
    CHECK(small.error().err == ENOSPC);
    CHECK_THAT(small.error().message, Catch::Contains(std::to_string(16 * kMiB)));
  }
}

// mkfs.ubtrfs -O block-group-tree: compat_ro BLOCK_GROUP_TREE, a ninth tree leaf (11) with a
// ROOT_ITEM, every BLOCK_GROUP_ITEM there and none in the extent tree, which accounts the new leaf.
TEST_CASE("block_group_items_live_in_the_block_group_tree_when_it_exists", "[mkfs]") {
  io::MemoryDevice dev(256 * kMiB);
  MkfsConfig c = fixed_config(11);
  c.block_group_tree = true;
  auto r = make_btrfs(dev, c);
  REQUIRE(r);
  const Layout& l = r->layout;
  CHECK(r->super.compat_ro_flags.get() ==
        (kCompatRoFreeSpaceTree | kCompatRoFreeSpaceTreeValid | kCompatRoBlockGroupTree));
  REQUIRE(l.tree_bytenr.contains(kBlockGroupTreeObjectid));
  CHECK(l.tree_bytenr.size() == 10);
  std::set<uint64_t> groups;
  for (const auto& it : leaf_items(r->leaves.at(kBlockGroupTreeObjectid))) {
    REQUIRE(it.key.type == kBlockGroupItemKey);
    groups.insert(it.key.objectid);
  }
  CHECK(groups == std::set<uint64_t>{l.system.logical, l.metadata.logical, l.data.logical});
  size_t metadata_items = 0;
  for (const auto& it : leaf_items(r->leaves.at(kExtentTreeObjectid))) {
    CHECK(it.key.type != kBlockGroupItemKey);
    if (it.key.type == kMetadataItemKey) metadata_items++;
  }
  CHECK(metadata_items == 10);
  bool root_item = false;
  for (const auto& it : leaf_items(r->leaves.at(kRootTreeObjectid)))
    if (it.key == Key{kBlockGroupTreeObjectid, kRootItemKey, 0}) {
      root_item = true;
      CHECK(load<RootItem>(it.body.data()).bytenr.get() == l.tree_bytenr.at(kBlockGroupTreeObjectid));
    }
  CHECK(root_item);
  auto sb = read_superblock(dev);
  REQUIRE(sb);
  CHECK(check_features(*sb, true));  // the daemon opens it read-write
}

TEST_CASE("a_small_device_gets_mixed_block_groups", "[mkfs]") {
  MkfsConfig c;  // the defaults: DUP metadata, 16 KiB nodes
  auto m = small_device_config(c, 25 * kMiB, false, false);
  REQUIRE(m);
  CHECK(m->mixed);
  CHECK(m->nodesize == 4096);
  CHECK(m->metadata_profile == Profile::kSingle);  // mkfs.btrfs --mixed's default
  CHECK(compute_layout(*m, 25 * kMiB));
  m = small_device_config(c, 25 * kMiB, false, /*profile_given=*/true);
  REQUIRE(m);
  CHECK(m->metadata_profile == Profile::kDup);
  CHECK_FALSE(small_device_config(c, 89 * kMiB, false, false));              // separate groups fit
  CHECK_FALSE(small_device_config(c, 16 * kMiB - 4096, false, false));       // nothing fits
  CHECK_FALSE(small_device_config(c, 25 * kMiB, /*nodesize_given=*/true, false));  // 16 KiB asked for
  c.nodesize = 4096;
  CHECK(small_device_config(c, 25 * kMiB, true, false));                     // 4 KiB asked for
  c.metadata_profile = Profile::kSingle;
  CHECK(small_device_config(c, 48 * kMiB, false, true));
  CHECK_FALSE(small_device_config(c, 49 * kMiB, false, true));               // single: 49 MiB fits
  c.mixed = true;
  CHECK_FALSE(small_device_config(c, 25 * kMiB, false, false));              // already mixed
}

TEST_CASE("superblock fields", "[mkfs]") {
  for (auto csum : {io::CsumType::kCrc32c, io::CsumType::kXxhash64}) {
    for (Profile p : {Profile::kSingle, Profile::kDup}) {
      io::MemoryDevice dev(128 * kMiB);
      MkfsConfig c = fixed_config(5);
      c.csum_type = csum;
      c.metadata_profile = p;
      c.label = "hello";
      auto r = make_btrfs(dev, c);
      REQUIRE(r);
      const Layout& l = r->layout;
      for (int mirror = 0; mirror < 2; ++mirror) {
        auto sb = read_superblock_raw(dev, mirror);
        REQUIRE(sb);
        CHECK(verify_superblock_csum(*sb));
        REQUIRE(validate_superblock(*sb, super_offset(mirror), dev.size()));
        CHECK(sb->bytenr.get() == super_offset(mirror));
        CHECK(sb->magic.get() == kSuperMagic);
        CHECK(sb->flags.get() == kHeaderFlagWritten);
        CHECK(sb->generation.get() == kInitialGeneration);
        CHECK(sb->chunk_root_generation.get() == kInitialGeneration);
        CHECK(sb->uuid_tree_generation.get() == kInitialGeneration);
        CHECK(sb->cache_generation.get() == 0);
        CHECK(sb->root.get() == l.tree_bytenr.at(kRootTreeObjectid));
        CHECK(sb->chunk_root.get() == l.tree_bytenr.at(kChunkTreeObjectid));
        CHECK(sb->total_bytes.get() == 128 * kMiB);
        CHECK(sb->bytes_used.get() == 9ull * 16384);
        CHECK(sb->root_dir_objectid.get() == kRootTreeDirObjectid);
        CHECK(sb->num_devices.get() == 1);
        CHECK(sb->nodesize.get() == 16384);
        CHECK(sb->leafsize.get() == 16384);
        CHECK(sb->sectorsize.get() == 4096);
        CHECK(sb->stripesize.get() == 4096);
        CHECK(sb->sys_chunk_array_size.get() == 17 + (p == Profile::kDup ? 112 : 80));
        CHECK(sb->incompat_flags.get() == 0x361);
        CHECK(sb->compat_ro_flags.get() == 0x3);
        CHECK(sb->csum_type.get() == static_cast<uint16_t>(csum));
        CHECK(std::string(sb->label) == "hello");
        CHECK(sb->dev_item.bytes_used.get() == l.dev_bytes_used());
        CHECK(sb->dev_item.total_bytes.get() == 128 * kMiB);
        CHECK(std::memcmp(sb->dev_item.fsid, sb->fsid, 16) == 0);
        CHECK(std::memcmp(sb->fsid, c.fsid->data(), 16) == 0);
        const RootBackup& b = sb->super_roots[0];
        CHECK(b.tree_root.get() == sb->root.get());
        CHECK(b.tree_root_gen.get() == sb->generation.get());
        CHECK(b.chunk_root.get() == sb->chunk_root.get());
        CHECK(b.extent_root.get() == l.tree_bytenr.at(kExtentTreeObjectid));
        CHECK(b.fs_root.get() == l.tree_bytenr.at(kFsTreeObjectid));
        CHECK(b.dev_root.get() == l.tree_bytenr.at(kDevTreeObjectid));
        CHECK(b.csum_root.get() == l.tree_bytenr.at(kCsumTreeObjectid));
        CHECK(b.bytes_used.get() == sb->bytes_used.get());
        CHECK(b.total_bytes.get() == sb->total_bytes.get());
        CHECK(b.num_devices.get() == 1);
        CHECK(sb->super_roots[1].tree_root.get() == 0);
        CHECK(check_complete(dev, *sb));
      }
      // 4 KiB nodes: no BIG_METADATA.
      io::MemoryDevice dev4(128 * kMiB);
      c.nodesize = 4096;
      auto r4 = make_btrfs(dev4, c);
      REQUIRE(r4);
      CHECK(r4->super.incompat_flags.get() == 0x341);
    }
  }
}

TEST_CASE("mirrors beyond the filesystem size are not written", "[mkfs]") {
  io::MemoryDevice dev(128 * kMiB);
  MkfsConfig c = fixed_config(3);
  c.fs_size = 60 * kMiB;
  c.metadata_profile = Profile::kSingle;  // 49 MiB minimum
  auto r = make_btrfs(dev, c);
  REQUIRE(r);
  CHECK(r->super.total_bytes.get() == 60 * kMiB);
  auto sb1 = read_superblock_raw(dev, 1);
  REQUIRE(sb1);
  CHECK(sb1->magic.get() != kSuperMagic);
  auto sb0 = read_superblock(dev);
  REQUIRE(sb0);
  CHECK(check_complete(dev, *sb0));
}

TEST_CASE("leaf builder refuses overflow and duplicates", "[mkfs]") {
  FsParams fs;
  fs.nodesize = 4096;
  LeafBuilder b(kFsTreeObjectid, 1 * kMiB);
  b.add(Key{256, kInodeItemKey, 0}, Bytes(160));
  b.add(Key{256, kInodeItemKey, 0}, Bytes(160));
  auto dup = b.build(fs, 1);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().err == EEXIST);
  LeafBuilder big(kFsTreeObjectid, 1 * kMiB);
  for (uint64_t i = 0; i < 30; ++i) big.add(Key{256 + i, kInodeItemKey, 0}, Bytes(160));
  auto over = big.build(fs, 1);
  REQUIRE_FALSE(over);
  CHECK(over.error().err == EFBIG);
  // Items come out sorted and packed with no gaps.
  LeafBuilder ok(kFsTreeObjectid, 1 * kMiB);
  ok.add(Key{257, kInodeItemKey, 0}, Bytes(7, 1));
  ok.add(Key{256, kInodeItemKey, 0}, Bytes(5, 2));
  auto blk = ok.build(fs, 1);
  REQUIRE(blk);
  auto items = leaf_items(*blk);
  REQUIRE(items.size() == 2);
  CHECK(items[0].key.objectid == 256);
  auto i0 = load<Item>(blk->data() + sizeof(Header));
  CHECK(i0.offset.get() + i0.size.get() == leaf_data_size(4096));
}

TEST_CASE("every leaf passes the tree checker for all node sizes and checksums", "[mkfs]") {
  for (uint32_t nodesize : {4096u, 8192u, 16384u, 32768u, 65536u}) {
    for (auto csum : {io::CsumType::kCrc32c, io::CsumType::kXxhash64}) {
      CAPTURE(nodesize);
      io::MemoryDevice dev(128 * kMiB);
      MkfsConfig c = fixed_config(4);
      c.nodesize = nodesize;
      c.csum_type = csum;
      auto r = make_btrfs(dev, c);
      REQUIRE(r);
      auto sb = read_superblock(dev);
      REQUIRE(sb);
      CHECK(check_complete(dev, *sb));
      // Root tree contents (FORMAT.md §4.6).
      auto items = leaf_items(r->leaves.at(kRootTreeObjectid));
      std::set<std::tuple<uint64_t, uint8_t, uint64_t>> keys;
      for (const auto& it : items) keys.insert({it.key.objectid, it.key.type, it.key.offset});
      CHECK(keys.count({kRootTreeDirObjectid, kDirItemKey, io::name_hash("default")}));
      CHECK(keys.count({kFsTreeObjectid, kInodeRefKey, kRootTreeDirObjectid}));
      CHECK(keys.count({kRootTreeDirObjectid, kInodeRefKey, kRootTreeDirObjectid}));
      CHECK(keys.count({kDataRelocTreeObjectid, kRootItemKey, 0}));
      CHECK(leaf_items(r->leaves.at(kCsumTreeObjectid)).empty());
      CHECK(leaf_items(r->leaves.at(kUuidTreeObjectid)).size() == 1);
    }
  }
}

// The interrupted-mkfs property. The device first holds an older filesystem (so the test also covers
// "the old one must not come back half-overwritten"); then mkfs runs on a fault-injecting wrapper that
// loses every write after the N-th (and, in a second pass, tears the N-th write in half). For every N,
// every superblock copy that validates must describe a complete filesystem: either the untouched old
// one or the complete new one.
TEST_CASE("an interrupted mkfs never leaves an incomplete filesystem that looks valid", "[mkfs][crash]") {
  const uint64_t size = 96 * kMiB;  // mirror 1 at 64 MiB fits
  io::MemoryDevice base(size);
  REQUIRE(make_btrfs(base, fixed_config(0xA1)));
  const MkfsConfig next = fixed_config(0xB2);

  // Count the writes of an uninterrupted run.
  uint64_t total_writes = 0;
  {
    io::MemoryDevice scratch(size);
    scratch.bytes() = base.bytes();
    io::FaultInjectingDevice f(scratch);
    REQUIRE(make_btrfs(f, next));
    total_writes = f.writes();
  }
  REQUIRE(total_writes > 10);

  int old_valid = 0, new_valid = 0;
  for (int tear = 0; tear < 2; ++tear) {
    for (uint64_t n = 0; n <= total_writes; ++n) {
      CAPTURE(n, tear);
      io::MemoryDevice dev(size);
      dev.bytes() = base.bytes();
      io::FaultInjectingDevice f(dev);
      if (tear && n > 0) {
        f.tear_write(n, 2048);
        f.drop_writes_after(n);
      } else {
        f.drop_writes_after(n);
      }
      auto r = make_btrfs(f, next);
      REQUIRE(r);  // the lost writes are silent, as after a power cut
      for (int mirror = 0; mirror < 2; ++mirror) {
        auto sb = read_superblock_raw(dev, mirror);
        REQUIRE(sb);
        if (sb->magic.get() != kSuperMagic || !verify_superblock_csum(*sb)) continue;
        if (!validate_superblock(*sb, super_offset(mirror), dev.size())) continue;
        auto complete = check_complete(dev, *sb);
        INFO("mirror " << mirror << ": " << (complete ? std::string("complete") : complete.error().message));
        CHECK(complete);
        if (sb->fsid[0] == 0xA1) ++old_valid;
        if (sb->fsid[0] == 0xB2) ++new_valid;
      }
    }
  }
  CHECK(new_valid > 0);  // the complete runs at the end
  CHECK(old_valid > 0);  // n == 0: nothing happened yet
}

TEST_CASE("sizes parse and print as mkfs.btrfs users expect", "[mkfs]") {
  CHECK(parse_size("128M").value() == 128 * kMiB);
  CHECK(parse_size("1G").value() == kGiB);
  CHECK(parse_size("16g").value() == 16 * kGiB);
  CHECK(parse_size("64KiB").value() == 65536);
  CHECK(parse_size("4096").value() == 4096);
  CHECK(parse_size("2TB").value() == 2048 * kGiB);
  CHECK_FALSE(parse_size("12Q"));
  CHECK_FALSE(parse_size("M"));
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("-5"));
  CHECK_FALSE(parse_size("99999999999999999999"));
  CHECK_FALSE(parse_size("20000000000E"));
  CHECK(pretty_size(53673984) == "51.19MiB");
  CHECK(pretty_size(256 * kMiB) == "256.00MiB");
  CHECK(pretty_size(16 * kGiB) == "16.00GiB");
  CHECK(pretty_size(512) == "512.00B");
}
