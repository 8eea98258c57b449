// The btrfs on-disk format, described once (STYLE.md §3; facts from ../shared/docs/FORMAT.md).
//
// Every structure is little-endian and packed. Fields are Le<T> wrappers (alignment 1, so no padding
// can appear and the structs may be overlaid on any byte offset of a block); byte order is converted
// in Le<T> only. Each struct has static_asserts on its size and on the offsets that FORMAT.md gives.
// Variable-length bodies (names, inline data, stripes, inline refs) follow their fixed part and are
// read with the helpers of the owning code, never by pointer arithmetic spread around.
#pragma once

#include <bit>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace ubtrfs {

template <class T>
struct Le {
  uint8_t bytes[sizeof(T)];

  constexpr T get() const {
    T v{};
    for (size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v | (static_cast<T>(bytes[i]) << (8 * i)));
    return v;
  }
  constexpr void set(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
  }
  constexpr operator T() const { return get(); }
  constexpr Le& operator=(T v) {
    set(v);
    return *this;
  }
};
using le16 = Le<uint16_t>;
using le32 = Le<uint32_t>;
using le64 = Le<uint64_t>;
static_assert(sizeof(le64) == 8 && alignof(le64) == 1);

// The little-endian value at byte `off` of a raw item body, for bodies parsed field by field before
// they are known to hold a whole struct. REQUIRES: off + sizeof(value) <= d.size().
inline uint64_t get_le64(std::span<const uint8_t> d, size_t off) {
  le64 v;
  std::memcpy(v.bytes, d.data() + off, sizeof v);
  return v.get();
}
inline uint32_t get_le32(std::span<const uint8_t> d, size_t off) {
  le32 v;
  std::memcpy(v.bytes, d.data() + off, sizeof v);
  return v.get();
}

using Uuid = uint8_t[16];

// ---- objectids (FORMAT.md §3.1) -------------------------------------------------------------------
inline constexpr uint64_t kRootTreeObjectid = 1;
inline constexpr uint64_t kExtentTreeObjectid = 2;
inline constexpr uint64_t kChunkTreeObjectid = 3;
inline constexpr uint64_t kDevTreeObjectid = 4;
inline constexpr uint64_t kFsTreeObjectid = 5;
inline constexpr uint64_t kRootTreeDirObjectid = 6;
inline constexpr uint64_t kCsumTreeObjectid = 7;
inline constexpr uint64_t kQuotaTreeObjectid = 8;
inline constexpr uint64_t kUuidTreeObjectid = 9;
inline constexpr uint64_t kFreeSpaceTreeObjectid = 10;
inline constexpr uint64_t kBlockGroupTreeObjectid = 11;
inline constexpr uint64_t kRaidStripeTreeObjectid = 12;
inline constexpr uint64_t kRemapTreeObjectid = 13;
inline constexpr uint64_t kDevStatsObjectid = 0;
inline constexpr uint64_t kDevItemsObjectid = 1;
inline constexpr uint64_t kBalanceObjectid = static_cast<uint64_t>(-4);
inline constexpr uint64_t kOrphanObjectid = static_cast<uint64_t>(-5);
inline constexpr uint64_t kTreeLogObjectid = static_cast<uint64_t>(-6);
inline constexpr uint64_t kTreeLogFixupObjectid = static_cast<uint64_t>(-7);
inline constexpr uint64_t kTreeRelocObjectid = static_cast<uint64_t>(-8);
inline constexpr uint64_t kDataRelocTreeObjectid = static_cast<uint64_t>(-9);
inline constexpr uint64_t kExtentCsumObjectid = static_cast<uint64_t>(-10);
inline constexpr uint64_t kFreeSpaceObjectid = static_cast<uint64_t>(-11);
inline constexpr uint64_t kFreeInoObjectid = static_cast<uint64_t>(-12);
inline constexpr uint64_t kCsumChangeObjectid = static_cast<uint64_t>(-13);
inline constexpr uint64_t kMultipleObjectid = static_cast<uint64_t>(-255);
inline constexpr uint64_t kFirstFreeObjectid = 256;
inline constexpr uint64_t kLastFreeObjectid = static_cast<uint64_t>(-256);
inline constexpr uint64_t kFirstChunkTreeObjectid = 256;
inline constexpr uint64_t kFirstSubvolObjectid = 256;

// ---- item types (FORMAT.md §3.2) ------------------------------------------------------------------
enum ItemType : uint8_t {
  kInodeItemKey = 1,
  kInodeRefKey = 12,
  kInodeExtrefKey = 13,
  kXattrItemKey = 24,
  kVerityDescItemKey = 36,
  kVerityMerkleItemKey = 37,
  kOrphanItemKey = 48,
  kDirLogItemKey = 60,
  kDirLogIndexKey = 72,
  kDirItemKey = 84,
  kDirIndexKey = 96,
  kExtentDataKey = 108,
  kExtentCsumKey = 128,
  kRootItemKey = 132,
  kRootBackrefKey = 144,
  kRootRefKey = 156,
  kExtentItemKey = 168,
  kMetadataItemKey = 169,
  kExtentOwnerRefKey = 172,
  kTreeBlockRefKey = 176,
  kExtentDataRefKey = 178,
  kSharedBlockRefKey = 182,
  kSharedDataRefKey = 184,
  kBlockGroupItemKey = 192,
  kFreeSpaceInfoKey = 198,
  kFreeSpaceExtentKey = 199,
  kFreeSpaceBitmapKey = 200,
  kDevExtentKey = 204,
  kDevItemKey = 216,
  kChunkItemKey = 228,
  kRaidStripeKey = 230,
  kQgroupStatusKey = 240,
  kQgroupInfoKey = 242,
  kQgroupLimitKey = 244,
  kQgroupRelationKey = 246,
  kTemporaryItemKey = 248,  // BALANCE item
  kPersistentItemKey = 249, // DEV_STATS item
  kDevReplaceKey = 250,
  kUuidKeySubvol = 251,
  kUuidKeyReceivedSubvol = 252,
  kStringItemKey = 253,
};

// ---- keys (FORMAT.md §2.2) ------------------------------------------------------------------------
// Key is the CPU form; DiskKey the on-disk form. Order: objectid, type, offset, all unsigned.
struct Key {
  uint64_t objectid = 0;
  uint8_t type = 0;
  uint64_t offset = 0;
  constexpr auto operator<=>(const Key&) const = default;
};
inline constexpr Key kMinKey{0, 0, 0};
inline constexpr Key kMaxKey{~0ull, 0xFF, ~0ull};

struct DiskKey {
  le64 objectid;
  uint8_t type;
  le64 offset;

  constexpr Key cpu() const { return Key{objectid.get(), type, offset.get()}; }
  constexpr void set(const Key& k) {
    objectid = k.objectid;
    type = k.type;
    offset = k.offset;
  }
};
static_assert(sizeof(DiskKey) == 17);
static_assert(offsetof(DiskKey, offset) == 9);

// ---- tree blocks (FORMAT.md §2) -------------------------------------------------------------------
inline constexpr uint64_t kHeaderFlagWritten = 1ull << 0;
inline constexpr uint64_t kHeaderFlagReloc = 1ull << 1;
inline constexpr uint64_t kBackrefRevShift = 56;
inline constexpr uint64_t kMixedBackrefRev = 1;
inline constexpr int kMaxLevel = 8;

struct Header {
  uint8_t csum[32];
  Uuid fsid;
  le64 bytenr;
  le64 flags;  // bit0 WRITTEN, bit1 RELOC, top byte = backref revision (must be 1)
  Uuid chunk_tree_uuid;
  le64 generation;
  le64 owner;
  le32 nritems;
  uint8_t level;
};
static_assert(sizeof(Header) == 101);
static_assert(offsetof(Header, fsid) == 0x20);
static_assert(offsetof(Header, bytenr) == 0x30);
static_assert(offsetof(Header, flags) == 0x38);
static_assert(offsetof(Header, chunk_tree_uuid) == 0x40);
static_assert(offsetof(Header, generation) == 0x50);
static_assert(offsetof(Header, owner) == 0x58);
static_assert(offsetof(Header, nritems) == 0x60);
static_assert(offsetof(Header, level) == 0x64);

// Leaf item header; data offset is relative to the end of the Header.
struct Item {
  DiskKey key;
  le32 offset;
  le32 size;
};
static_assert(sizeof(Item) == 25);
static_assert(offsetof(Item, offset) == 17 && offsetof(Item, size) == 21);

// Node key pointer.
struct KeyPtr {
  DiskKey key;
  le64 blockptr;
  le64 generation;
};
static_assert(sizeof(KeyPtr) == 33);
static_assert(offsetof(KeyPtr, blockptr) == 17 && offsetof(KeyPtr, generation) == 25);

constexpr uint32_t leaf_data_size(uint32_t nodesize) { return nodesize - sizeof(Header); }
constexpr uint32_t nodeptrs_per_block(uint32_t nodesize) { return (nodesize - sizeof(Header)) / sizeof(KeyPtr); }
constexpr uint32_t max_item_size(uint32_t nodesize) { return leaf_data_size(nodesize) - sizeof(Item); }
static_assert(nodeptrs_per_block(16384) == 493 && nodeptrs_per_block(4096) == 121 &&
              nodeptrs_per_block(65536) == 1982);

// ---- chunk and device items (FORMAT.md §3.10) -----------------------------------------------------
struct DevItem {
  le64 devid;
  le64 total_bytes;
  le64 bytes_used;
  le32 io_align;
  le32 io_width;
  le32 sector_size;
  le64 type;
  le64 generation;
  le64 start_offset;
  le32 dev_group;
  uint8_t seek_speed;
  uint8_t bandwidth;
  Uuid uuid;
  Uuid fsid;
};
static_assert(sizeof(DevItem) == 98);
static_assert(offsetof(DevItem, type) == 36 && offsetof(DevItem, dev_group) == 60 &&
              offsetof(DevItem, uuid) == 66 && offsetof(DevItem, fsid) == 82);

struct Stripe {
  le64 devid;
  le64 offset;
  Uuid dev_uuid;
};
static_assert(sizeof(Stripe) == 32);

// Followed by num_stripes Stripe records (item size 48 + 32 n).
struct ChunkItem {
  le64 length;
  le64 owner;
  le64 stripe_len;
  le64 type;
  le32 io_align;
  le32 io_width;
  le32 sector_size;
  le16 num_stripes;
  le16 sub_stripes;
};
static_assert(sizeof(ChunkItem) == 48);
static_assert(offsetof(ChunkItem, type) == 24 && offsetof(ChunkItem, num_stripes) == 44);
constexpr size_t chunk_item_size(size_t num_stripes) { return sizeof(ChunkItem) + num_stripes * sizeof(Stripe); }

struct DevExtent {
  le64 chunk_tree;
  le64 chunk_objectid;
  le64 chunk_offset;
  le64 length;
  Uuid chunk_tree_uuid;
};
static_assert(sizeof(DevExtent) == 48);

inline constexpr uint64_t kStripeLen = 65536;

// Block group / chunk type flags (FORMAT.md §3.10).
inline constexpr uint64_t kBlockGroupData = 0x1;
inline constexpr uint64_t kBlockGroupSystem = 0x2;
inline constexpr uint64_t kBlockGroupMetadata = 0x4;
inline constexpr uint64_t kBlockGroupRaid0 = 0x8;
inline constexpr uint64_t kBlockGroupRaid1 = 0x10;
inline constexpr uint64_t kBlockGroupDup = 0x20;
inline constexpr uint64_t kBlockGroupRaid10 = 0x40;
inline constexpr uint64_t kBlockGroupRaid5 = 0x80;
inline constexpr uint64_t kBlockGroupRaid6 = 0x100;
inline constexpr uint64_t kBlockGroupRaid1c3 = 0x200;
inline constexpr uint64_t kBlockGroupRaid1c4 = 0x400;
inline constexpr uint64_t kBlockGroupTypeMask = kBlockGroupData | kBlockGroupSystem | kBlockGroupMetadata;
inline constexpr uint64_t kBlockGroupProfileMask = kBlockGroupRaid0 | kBlockGroupRaid1 | kBlockGroupDup |
                                                   kBlockGroupRaid10 | kBlockGroupRaid5 | kBlockGroupRaid6 |
                                                   kBlockGroupRaid1c3 | kBlockGroupRaid1c4;

struct BlockGroupItem {
  le64 used;
  le64 chunk_objectid;
  le64 flags;
};
static_assert(sizeof(BlockGroupItem) == 24);

// ---- superblock (FORMAT.md §1) --------------------------------------------------------------------
inline constexpr uint64_t kSuperMagic = 0x4D5F53665248425Full;         // "_BHRfS_M"
inline constexpr uint64_t kSuperMagicUnfinished = 0x4D5F536652484221ull; // "!BHRfS_M", mkfs in progress
inline constexpr uint64_t kSuperInfoOffset = 65536;
inline constexpr uint32_t kSuperInfoSize = 4096;
inline constexpr int kSuperMirrorMax = 3;
inline constexpr uint32_t kSystemChunkArraySize = 2048;
inline constexpr uint32_t kLabelSize = 256;
inline constexpr int kNumBackupRoots = 4;
inline constexpr uint64_t kReserved1MForSuper = 1024 * 1024;

// Physical offset of superblock copy `mirror` (0, 1, 2): 64 KiB, 64 MiB, 256 GiB.
constexpr uint64_t super_offset(int mirror) {
  return mirror == 0 ? kSuperInfoOffset : (16 * 1024ull) << (12 * mirror);
}
static_assert(super_offset(1) == 67108864ull && super_offset(2) == 274877906944ull);

struct RootBackup {
  le64 tree_root;
  le64 tree_root_gen;
  le64 chunk_root;
  le64 chunk_root_gen;
  le64 extent_root;
  le64 extent_root_gen;
  le64 fs_root;
  le64 fs_root_gen;
  le64 dev_root;
  le64 dev_root_gen;
  le64 csum_root;
  le64 csum_root_gen;
  le64 total_bytes;
  le64 bytes_used;
  le64 num_devices;
  le64 unused_64[4];
  uint8_t tree_root_level;
  uint8_t chunk_root_level;
  uint8_t extent_root_level;
  uint8_t fs_root_level;
  uint8_t dev_root_level;
  uint8_t csum_root_level;
  uint8_t unused_8[10];
};
static_assert(sizeof(RootBackup) == 168);
static_assert(offsetof(RootBackup, total_bytes) == 96 && offsetof(RootBackup, tree_root_level) == 152);

struct Superblock {
  uint8_t csum[32];
  Uuid fsid;
  le64 bytenr;
  le64 flags;
  le64 magic;
  le64 generation;
  le64 root;
  le64 chunk_root;
  le64 log_root;
  le64 log_root_transid;
  le64 total_bytes;
  le64 bytes_used;
  le64 root_dir_objectid;
  le64 num_devices;
  le32 sectorsize;
  le32 nodesize;
  le32 leafsize;
  le32 stripesize;
  le32 sys_chunk_array_size;
  le64 chunk_root_generation;
  le64 compat_flags;
  le64 compat_ro_flags;
  le64 incompat_flags;
  le16 csum_type;
  uint8_t root_level;
  uint8_t chunk_root_level;
  uint8_t log_root_level;
  DevItem dev_item;
  char label[kLabelSize];
  le64 cache_generation;
  le64 uuid_tree_generation;
  Uuid metadata_uuid;
  le64 nr_global_roots;
  le64 remap_root;
  le64 remap_root_generation;
  uint8_t remap_root_level;
  uint8_t reserved[199];
  uint8_t sys_chunk_array[kSystemChunkArraySize];
  RootBackup super_roots[kNumBackupRoots];
  uint8_t padding[565];
};
static_assert(sizeof(Superblock) == kSuperInfoSize);
static_assert(offsetof(Superblock, fsid) == 0x20);
static_assert(offsetof(Superblock, bytenr) == 0x30);
static_assert(offsetof(Superblock, magic) == 0x40);
static_assert(offsetof(Superblock, generation) == 0x48);
static_assert(offsetof(Superblock, root) == 0x50);
static_assert(offsetof(Superblock, log_root) == 0x60);
static_assert(offsetof(Superblock, total_bytes) == 0x70);
static_assert(offsetof(Superblock, num_devices) == 0x88);
static_assert(offsetof(Superblock, sectorsize) == 0x90);
static_assert(offsetof(Superblock, sys_chunk_array_size) == 0xA0);
static_assert(offsetof(Superblock, chunk_root_generation) == 0xA4);
static_assert(offsetof(Superblock, compat_flags) == 0xAC);
static_assert(offsetof(Superblock, compat_ro_flags) == 0xB4);
static_assert(offsetof(Superblock, incompat_flags) == 0xBC);
static_assert(offsetof(Superblock, csum_type) == 0xC4);
static_assert(offsetof(Superblock, root_level) == 0xC6);
static_assert(offsetof(Superblock, dev_item) == 0xC9);
static_assert(offsetof(Superblock, label) == 0x12B);
static_assert(offsetof(Superblock, cache_generation) == 0x22B);
static_assert(offsetof(Superblock, uuid_tree_generation) == 0x233);
static_assert(offsetof(Superblock, metadata_uuid) == 0x23B);
static_assert(offsetof(Superblock, nr_global_roots) == 0x24B);
static_assert(offsetof(Superblock, remap_root) == 0x253);
static_assert(offsetof(Superblock, reserved) == 0x264);
static_assert(offsetof(Superblock, sys_chunk_array) == 0x32B);
static_assert(offsetof(Superblock, super_roots) == 0xB2B);
static_assert(offsetof(Superblock, padding) == 0xDCB);

// Super flags (FORMAT.md §1.4).
inline constexpr uint64_t kSuperFlagError = 1ull << 2;
inline constexpr uint64_t kSuperFlagSeeding = 1ull << 32;
inline constexpr uint64_t kSuperFlagMetadump = 1ull << 33;
inline constexpr uint64_t kSuperFlagMetadumpV2 = 1ull << 34;
inline constexpr uint64_t kSuperFlagChangingFsid = 1ull << 35;
inline constexpr uint64_t kSuperFlagChangingFsidV2 = 1ull << 36;

// Feature flags (FORMAT.md §1.5).
inline constexpr uint64_t kCompatRoFreeSpaceTree = 0x1;
inline constexpr uint64_t kCompatRoFreeSpaceTreeValid = 0x2;
inline constexpr uint64_t kCompatRoVerity = 0x4;
inline constexpr uint64_t kCompatRoBlockGroupTree = 0x8;

inline constexpr uint64_t kIncompatMixedBackref = 0x1;
inline constexpr uint64_t kIncompatDefaultSubvol = 0x2;
inline constexpr uint64_t kIncompatMixedGroups = 0x4;
inline constexpr uint64_t kIncompatCompressLzo = 0x8;
inline constexpr uint64_t kIncompatCompressZstd = 0x10;
inline constexpr uint64_t kIncompatBigMetadata = 0x20;
inline constexpr uint64_t kIncompatExtendedIref = 0x40;
inline constexpr uint64_t kIncompatRaid56 = 0x80;
inline constexpr uint64_t kIncompatSkinnyMetadata = 0x100;
inline constexpr uint64_t kIncompatNoHoles = 0x200;
inline constexpr uint64_t kIncompatMetadataUuid = 0x400;
inline constexpr uint64_t kIncompatRaid1c34 = 0x800;
inline constexpr uint64_t kIncompatZoned = 0x1000;
inline constexpr uint64_t kIncompatExtentTreeV2 = 0x2000;
inline constexpr uint64_t kIncompatRaidStripeTree = 0x4000;
inline constexpr uint64_t kIncompatSimpleQuota = 0x10000;
inline constexpr uint64_t kIncompatRemapTree = 0x20000;

// Every incompat bit this codebase knows the meaning of (reading may still refuse some of them).
inline constexpr uint64_t kIncompatKnown =
    kIncompatMixedBackref | kIncompatDefaultSubvol | kIncompatMixedGroups | kIncompatCompressLzo |
    kIncompatCompressZstd | kIncompatBigMetadata | kIncompatExtendedIref | kIncompatRaid56 |
    kIncompatSkinnyMetadata | kIncompatNoHoles | kIncompatMetadataUuid | kIncompatRaid1c34 | kIncompatZoned |
    kIncompatExtentTreeV2 | kIncompatRaidStripeTree | kIncompatSimpleQuota | kIncompatRemapTree;

// ---- inodes (FORMAT.md §3.3–3.6) ------------------------------------------------------------------
struct Timespec {
  le64 sec;
  le32 nsec;
};
static_assert(sizeof(Timespec) == 12);

inline constexpr uint64_t kInodeNodatasum = 0x1;
inline constexpr uint64_t kInodeNodatacow = 0x2;
inline constexpr uint64_t kInodeReadonly = 0x4;
inline constexpr uint64_t kInodeNocompress = 0x8;
inline constexpr uint64_t kInodePrealloc = 0x10;
inline constexpr uint64_t kInodeSync = 0x20;
inline constexpr uint64_t kInodeImmutable = 0x40;
inline constexpr uint64_t kInodeAppend = 0x80;
inline constexpr uint64_t kInodeNodump = 0x100;
inline constexpr uint64_t kInodeNoatime = 0x200;
inline constexpr uint64_t kInodeDirsync = 0x400;
inline constexpr uint64_t kInodeCompress = 0x800;
inline constexpr uint64_t kInodeRootItemInit = 0x80000000;

struct InodeItem {
  le64 generation;
  le64 transid;
  le64 size;
  le64 nbytes;
  le64 block_group;
  le32 nlink;
  le32 uid;
  le32 gid;
  le32 mode;
  le64 rdev;
  le64 flags;
  le64 sequence;
  le64 reserved[4];
  Timespec atime;
  Timespec ctime;
  Timespec mtime;
  Timespec otime;
};
static_assert(sizeof(InodeItem) == 160);
static_assert(offsetof(InodeItem, nlink) == 40 && offsetof(InodeItem, mode) == 52 &&
              offsetof(InodeItem, rdev) == 56 && offsetof(InodeItem, flags) == 64 &&
              offsetof(InodeItem, atime) == 112 && offsetof(InodeItem, otime) == 148);

// Followed by name_len bytes of name; an item holds one or more of these back to back.
struct InodeRef {
  le64 index;
  le16 name_len;
};
static_assert(sizeof(InodeRef) == 10);

struct InodeExtref {
  le64 parent_objectid;
  le64 index;
  le16 name_len;
};
static_assert(sizeof(InodeExtref) == 18);

// Directory entry / xattr header; followed by name_len bytes of name and data_len bytes of value.
struct DirItem {
  DiskKey location;
  le64 transid;
  le16 data_len;
  le16 name_len;
  uint8_t type;
};
static_assert(sizeof(DirItem) == 30);
static_assert(offsetof(DirItem, transid) == 17 && offsetof(DirItem, type) == 29);

enum FileType : uint8_t {
  kFtUnknown = 0,
  kFtRegFile = 1,
  kFtDir = 2,
  kFtChrdev = 3,
  kFtBlkdev = 4,
  kFtFifo = 5,
  kFtSock = 6,
  kFtSymlink = 7,
  kFtXattr = 8,
  kFtMax = 9,
};
inline constexpr uint8_t kFtEncrypted = 0x80;
inline constexpr uint32_t kNameLen = 255;
inline constexpr uint32_t kLinkMax = 65535;

// ---- file extents (FORMAT.md §3.7) ----------------------------------------------------------------
enum FileExtentType : uint8_t { kFileExtentInline = 0, kFileExtentReg = 1, kFileExtentPrealloc = 2 };
enum Compression : uint8_t { kCompressNone = 0, kCompressZlib = 1, kCompressLzo = 2, kCompressZstd = 3 };

struct FileExtentItem {
  le64 generation;
  le64 ram_bytes;
  uint8_t compression;
  uint8_t encryption;
  le16 other_encoding;
  uint8_t type;
  // Inline extents end here (data follows at offsetof(disk_bytenr)); REG/PREALLOC continue:
  le64 disk_bytenr;
  le64 disk_num_bytes;
  le64 offset;
  le64 num_bytes;
};
static_assert(sizeof(FileExtentItem) == 53);
static_assert(offsetof(FileExtentItem, type) == 20 && offsetof(FileExtentItem, disk_bytenr) == 21 &&
              offsetof(FileExtentItem, num_bytes) == 45);
inline constexpr size_t kFileExtentInlineDataStart = offsetof(FileExtentItem, disk_bytenr);

// ---- extent tree (FORMAT.md §3.9) -----------------------------------------------------------------
inline constexpr uint64_t kExtentFlagData = 0x1;
inline constexpr uint64_t kExtentFlagTreeBlock = 0x2;
inline constexpr uint64_t kBlockFlagFullBackref = 0x100;

struct ExtentItem {
  le64 refs;
  le64 generation;
  le64 flags;
};
static_assert(sizeof(ExtentItem) == 24);

// Non-skinny tree-block EXTENT_ITEM: ExtentItem, then this, then inline refs.
struct TreeBlockInfo {
  DiskKey key;
  uint8_t level;
};
static_assert(sizeof(TreeBlockInfo) == 18);

// Inline ref: a type byte, then for TREE_BLOCK/SHARED_BLOCK/SHARED_DATA/OWNER a u64 offset; for
// EXTENT_DATA_REF the ExtentDataRef itself starts where `offset` would be; SHARED_DATA adds a u32
// count after the offset.
struct ExtentInlineRef {
  uint8_t type;
  le64 offset;
};
static_assert(sizeof(ExtentInlineRef) == 9);

struct ExtentDataRef {
  le64 root;
  le64 objectid;
  le64 offset;
  le32 count;
};
static_assert(sizeof(ExtentDataRef) == 28);

struct SharedDataRef {
  le32 count;
};
static_assert(sizeof(SharedDataRef) == 4);

// Size of one inline ref of the given type, type byte included; 0 for an unknown type.
constexpr size_t extent_inline_ref_size(uint8_t type) {
  switch (type) {
    case kTreeBlockRefKey:
    case kSharedBlockRefKey:
    case kExtentOwnerRefKey:
      return sizeof(ExtentInlineRef);
    case kSharedDataRefKey:
      return sizeof(ExtentInlineRef) + sizeof(SharedDataRef);
    case kExtentDataRefKey:
      return 1 + sizeof(ExtentDataRef);
    default:
      return 0;
  }
}
static_assert(extent_inline_ref_size(kExtentDataRefKey) == 29 && extent_inline_ref_size(kSharedDataRefKey) == 13);

// ---- free space tree (FORMAT.md §3.12) ------------------------------------------------------------
inline constexpr uint32_t kFreeSpaceUsingBitmaps = 0x1;
struct FreeSpaceInfo {
  le32 extent_count;
  le32 flags;
};
static_assert(sizeof(FreeSpaceInfo) == 8);

// ---- root tree (FORMAT.md §3.13) ------------------------------------------------------------------
inline constexpr uint64_t kRootSubvolRdonly = 0x1;

struct RootItem {
  InodeItem inode;
  le64 generation;
  le64 root_dirid;
  le64 bytenr;
  le64 byte_limit;
  le64 bytes_used;
  le64 last_snapshot;
  le64 flags;
  le32 refs;
  DiskKey drop_progress;
  uint8_t drop_level;
  uint8_t level;
  le64 generation_v2;
  Uuid uuid;
  Uuid parent_uuid;
  Uuid received_uuid;
  le64 ctransid;
  le64 otransid;
  le64 stransid;
  le64 rtransid;
  Timespec ctime;
  Timespec otime;
  Timespec stime;
  Timespec rtime;
  le64 reserved[8];
};
static_assert(sizeof(RootItem) == 439);
static_assert(offsetof(RootItem, generation) == 160 && offsetof(RootItem, bytenr) == 176 &&
              offsetof(RootItem, refs) == 216 && offsetof(RootItem, drop_progress) == 220 &&
              offsetof(RootItem, level) == 238 && offsetof(RootItem, generation_v2) == 239 &&
              offsetof(RootItem, uuid) == 247 && offsetof(RootItem, ctransid) == 295 &&
              offsetof(RootItem, ctime) == 327 && offsetof(RootItem, reserved) == 375);
inline constexpr size_t kRootItemLegacySize = offsetof(RootItem, generation_v2);  // 239

// A ROOT_ITEM body as a RootItem: the bytes it has, the rest zero (an item of the legacy 239 bytes
// has no generation_v2, uuids or times: btrfs_read_root_item treats them as zero). The size
// itself is the tree checker's to judge.
inline RootItem load_root_item(std::span<const uint8_t> body) {
  RootItem ri{};
  std::memcpy(&ri, body.data(), body.size() < sizeof ri ? body.size() : sizeof ri);
  return ri;
}

// Body of ROOT_REF and ROOT_BACKREF; followed by the name.
struct RootRef {
  le64 dirid;
  le64 sequence;
  le16 name_len;
};
static_assert(sizeof(RootRef) == 18);

// DEV_STATS persistent item: write, read, flush, corruption, generation error counters.
inline constexpr int kDevStatValuesMax = 5;
struct DevStatsItem {
  le64 values[kDevStatValuesMax];
};
static_assert(sizeof(DevStatsItem) == 40);

// Quota tree (objectid 8) items, all at objectid 0 (RELATION: objectid member, offset parent).
// A qgroup id is level << 48 | id (0/<subvolume id> for every subvolume).
// QGROUP_STATUS (0, 240, 0): 32 bytes; 40 with enable_gen (kernels that know simple quotas write
// 40 for every mode).
inline constexpr uint64_t kQgroupStatusVersion = 1;
inline constexpr uint64_t kQgroupStatusFlagOn = 1ull << 0;
inline constexpr uint64_t kQgroupStatusFlagRescan = 1ull << 1;
inline constexpr uint64_t kQgroupStatusFlagInconsistent = 1ull << 2;
inline constexpr uint64_t kQgroupStatusFlagSimpleMode = 1ull << 3;
struct QgroupStatusItem {
  le64 version;
  le64 generation;  // the transaction that last wrote the counters; another one means inconsistent
  le64 flags;
  le64 rescan;      // with RESCAN: the extent bytenr the rescan has reached
};
static_assert(sizeof(QgroupStatusItem) == 32);
static_assert(offsetof(QgroupStatusItem, rescan) == 24);

// QGROUP_INFO (0, 242, qgroupid): the counters.
struct QgroupInfoItem {
  le64 generation;
  le64 referenced;
  le64 referenced_compressed;
  le64 exclusive;
  le64 exclusive_compressed;
};
static_assert(sizeof(QgroupInfoItem) == 40);

// QGROUP_LIMIT (0, 244, qgroupid).
struct QgroupLimitItem {
  le64 flags;
  le64 max_referenced;
  le64 max_exclusive;
  le64 rsv_referenced;
  le64 rsv_exclusive;
};
static_assert(sizeof(QgroupLimitItem) == 40);

// ---- helpers --------------------------------------------------------------------------------------
// Read/write a POD on-disk struct at an arbitrary byte position (no alignment assumptions).
template <class T>
inline T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T>
inline void store(uint8_t* p, const T& v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace ubtrfs
