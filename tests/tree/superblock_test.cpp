// Superblock validation, feature gating, mirror writing, and the sys_chunk_array/chunk map path.
#include <catch2/catch.hpp>

#include <cstring>

#include "io/block_device.h"
#include "io/checksum.h"
#include "tree/chunk_map.h"
#include "tree/superblock.h"

using namespace ubtrfs;

namespace {

constexpr uint64_t kDevSize = 80ull << 20;  // holds mirrors 0 and 1

// A minimal valid superblock: one SYSTEM|DUP chunk in the sys array.
Superblock make_super(io::CsumType csum = io::CsumType::kCrc32c) {
  Superblock sb;
  std::memset(&sb, 0, sizeof(sb));
  for (int i = 0; i < 16; ++i) sb.fsid[i] = static_cast<uint8_t>(0xA0 + i);
  sb.bytenr = kSuperInfoOffset;
  sb.flags = kHeaderFlagWritten;
  sb.magic = kSuperMagic;
  sb.generation = 6;
  sb.root = 30588928;
  sb.chunk_root = 22036480;
  sb.total_bytes = kDevSize;
  sb.bytes_used = 147456;
  sb.root_dir_objectid = kRootTreeDirObjectid;
  sb.num_devices = 1;
  sb.sectorsize = 4096;
  sb.nodesize = 16384;
  sb.leafsize = 16384;
  sb.stripesize = 4096;
  sb.chunk_root_generation = 6;
  sb.incompat_flags = 0x341;
  sb.compat_ro_flags = 0x3;
  sb.csum_type = static_cast<uint16_t>(csum);
  sb.dev_item.devid = 1;
  std::memcpy(sb.dev_item.fsid, sb.fsid, 16);
  DiskKey key;
  key.set(Key{kFirstChunkTreeObjectid, kChunkItemKey, 22020096});
  ChunkItem c;
  std::memset(&c, 0, sizeof(c));
  c.length = 8ull << 20;
  c.owner = kExtentTreeObjectid;
  c.stripe_len = kStripeLen;
  c.type = kBlockGroupSystem | kBlockGroupDup;
  c.io_align = 65536;
  c.io_width = 65536;
  c.sector_size = 4096;
  c.num_stripes = 2;
  c.sub_stripes = 1;
  Stripe s[2];
  std::memset(s, 0, sizeof(s));
  s[0].devid = 1;
  s[0].offset = 22020096;
  s[1].devid = 1;
  s[1].offset = 30408704;
  uint8_t* p = sb.sys_chunk_array;
  store(p, key);
  store(p + 17, c);
  store(p + 17 + 48, s[0]);
  store(p + 17 + 48 + 32, s[1]);
  sb.sys_chunk_array_size = 17 + 48 + 64;
  csum_superblock(sb);
  return sb;
}

std::string validate_msg(const Superblock& sb, uint64_t dev_size = kDevSize) {
  auto st = validate_superblock(sb, kSuperInfoOffset, dev_size);
  return st ? std::string("ok") : st.error().message;
}

}  // namespace

TEST_CASE("superblock validation accepts a well-formed superblock for both checksum types") {
  CHECK(validate_msg(make_super(io::CsumType::kCrc32c)) == "ok");
  CHECK(validate_msg(make_super(io::CsumType::kXxhash64)) == "ok");
}

TEST_CASE("superblock validation names what is wrong") {
  auto sb = make_super();
  SECTION("bad magic is 'not a btrfs filesystem' with EINVAL") {
    sb.magic = 0x1234;
    csum_superblock(sb);
    auto st = validate_superblock(sb, kSuperInfoOffset, kDevSize);
    REQUIRE_FALSE(st);
    CHECK(st.error().err == EINVAL);
    CHECK_THAT(st.error().message, Catch::Contains("not a btrfs filesystem"));
  }
  SECTION("unfinished mkfs magic is refused") {
    sb.magic = kSuperMagicUnfinished;
    csum_superblock(sb);
    CHECK_THAT(validate_msg(sb), Catch::Contains("unfinished mkfs"));
  }
  SECTION("a flipped byte breaks the checksum") {
    sb.label[3] ^= 1;
    CHECK_THAT(validate_msg(sb), Catch::Contains("superblock checksum mismatch"));
  }
  SECTION("bytenr must be the copy's own offset") {
    sb.bytenr = 4096;
    csum_superblock(sb);
    CHECK_THAT(validate_msg(sb), Catch::Contains("super offset mismatch"));
  }
  SECTION("leafsize must equal nodesize") {
    sb.leafsize = 4096;
    csum_superblock(sb);
    CHECK_THAT(validate_msg(sb), Catch::Contains("invalid leafsize"));
  }
  SECTION("nodesize must be a power of two in range") {
    sb.nodesize = 12288;
    sb.leafsize = 12288;
    csum_superblock(sb);
    CHECK_THAT(validate_msg(sb), Catch::Contains("invalid nodesize 12288"));
  }
  SECTION("a truncated image is detected from total_bytes") {
    CHECK_THAT(validate_msg(sb, kDevSize - 4096), Catch::Contains("truncated image"));
  }
  SECTION("a sha256 or blake2 superblock is verified with its own checksum, and a stale one refused") {
    for (uint16_t type : {uint16_t{2}, uint16_t{3}}) {
      sb.csum_type = type;
      csum_superblock(sb);
      CHECK(validate_superblock(sb, kSuperInfoOffset, kDevSize));
      sb.generation = sb.generation.get() + 1;  // changed after the checksum
      auto st = validate_superblock(sb, kSuperInfoOffset, kDevSize);
      REQUIRE_FALSE(st);
      CHECK_THAT(st.error().message, Catch::Contains(type == 2 ? "sha256" : "blake2"));
    }
  }
  SECTION("an unknown checksum type is refused, naming it") {
    sb.csum_type = 7;
    auto st = validate_superblock(sb, kSuperInfoOffset, kDevSize);
    REQUIRE_FALSE(st);
    CHECK_THAT(st.error().message, Catch::Contains("unknown checksum type 7"));
  }
  SECTION("unknown super flags are refused") {
    sb.flags = sb.flags.get() | (1ull << 20);
    csum_superblock(sb);
    CHECK_THAT(validate_msg(sb), Catch::Contains("unsupported super flags 0x100000"));
  }
}

TEST_CASE("feature gate refuses unknown and unsupported incompat bits, and rw with unknown compat_ro") {
  auto sb = make_super();
  CHECK(check_features(sb, true));
  sb.incompat_flags = 0x341 | 0x100000;
  auto st = check_features(sb, false);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EOPNOTSUPP);
  CHECK_THAT(st.error().message, Catch::Contains("unknown incompat features 0x100000"));
  sb.incompat_flags = 0x341 | kIncompatRaid56;
  CHECK_THAT(check_features(sb, false).error().message, Catch::Contains("RAID56"));
  sb.incompat_flags = 0x341;
  sb.compat_ro_flags = 0x3 | 0x400;
  CHECK(check_features(sb, false));
  auto rw = check_features(sb, true);
  REQUIRE_FALSE(rw);
  CHECK(rw.error().err == EROFS);
  CHECK_THAT(rw.error().message, Catch::Contains("0x400"));
}

TEST_CASE("mixed_block_groups_open_only_with_nodesize_equal_to_sectorsize") {
  auto sb = make_super();
  sb.incompat_flags = sb.incompat_flags.get() | kIncompatMixedGroups;
  sb.sectorsize = 4096;
  sb.nodesize = 4096;
  sb.leafsize = 4096;
  CHECK(check_features(sb, true));
  sb.nodesize = 16384;
  sb.leafsize = 16384;
  auto st = check_features(sb, false);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EUCLEAN);
  CHECK_THAT(st.error().message, Catch::Contains("mixed block groups with nodesize 16384 != sectorsize 4096"));
}

TEST_CASE("superblock mirrors are written only where they fit, each with its own bytenr and checksum") {
  io::MemoryDevice dev(kDevSize);
  auto sb = make_super();
  REQUIRE(write_superblocks(dev, sb));
  for (int m = 0; m < 2; ++m) {
    auto raw = read_superblock_raw(dev, m);
    REQUIRE(raw);
    CHECK(raw->bytenr.get() == super_offset(m));
    CHECK(validate_superblock(*raw, super_offset(m), kDevSize));
  }
  CHECK_FALSE(read_superblock_raw(dev, 2));  // 256 GiB copy does not fit
  auto primary = read_superblock(dev);
  REQUIRE(primary);
  CHECK(primary->generation.get() == 6);
}

TEST_CASE("sys_chunk_array loads into the chunk map and DUP maps to two copies") {
  auto sb = make_super();
  ChunkMap map;
  REQUIRE(map.load_sys_chunk_array(sb));
  auto copies = map.map(22020096 + 16384, 16384);
  REQUIRE(copies);
  REQUIRE(copies->size() == 2);
  CHECK((*copies)[0] == 22020096 + 16384);
  CHECK((*copies)[1] == 30408704 + 16384);
  CHECK_FALSE(map.map(22020096 + (8ull << 20) - 4096, 16384));  // crosses the chunk end
  CHECK_FALSE(map.map(4096, 4096));                              // unmapped
  CHECK(map.logical_end() == 22020096 + (8ull << 20));
}

TEST_CASE("chunk map refuses overlaps, RAID profiles and non-system chunks in the sys array") {
  ChunkMap map;
  ChunkMapping a{1 << 20, 4 << 20, kBlockGroupMetadata, {ChunkStripe{1, 1 << 20, {}}}};
  REQUIRE(map.add(a));
  ChunkMapping overlap{3 << 20, 4 << 20, kBlockGroupData, {ChunkStripe{1, 9 << 20, {}}}};
  CHECK_FALSE(map.add(overlap));
  ChunkMapping raid1{16 << 20, 4 << 20, kBlockGroupData | kBlockGroupRaid1,
                     {ChunkStripe{1, 16 << 20, {}}, ChunkStripe{1, 20 << 20, {}}}};
  auto st = map.add(raid1);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EOPNOTSUPP);

  auto sb = make_super();
  // Turn the sys array chunk into a METADATA chunk: the kernel refuses it ("invalid chunk type").
  auto c = load<ChunkItem>(sb.sys_chunk_array + 17);
  c.type = kBlockGroupMetadata | kBlockGroupDup;
  store(sb.sys_chunk_array + 17, c);
  ChunkMap m2;
  auto bad = m2.load_sys_chunk_array(sb);
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("invalid chunk type"));
}
