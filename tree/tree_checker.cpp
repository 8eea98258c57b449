// Tree checker: every tree block is validated here before anything looks inside it (the userspace
// counterpart of the kernel's tree-checker.c; facts from FORMAT.md §2 and §3).
//
// What it owns: the structural rules of a tree block (checksum, header, item/pointer layout, key
// order) and the per-item body rules of the common item types. Nothing else in the codebase may
// trust a byte of a tree block that has not passed check_tree_block (read boundary) or
// check_leaf/check_node (write boundary).
//
// Invariants of the implementation:
//  - Every byte access is bounds-checked against the block span before the load; all arithmetic on
//    on-disk values is done in 64 bits so a hostile u32 cannot wrap. Any byte pattern yields either
//    success or an EUCLEAN Error — never a crash, an assert, or undefined behaviour (a fuzz test
//    flips bytes of valid blocks under ASan/UBSan to hold us to this).
//  - Structure is checked before bodies: the body checks may assume that item i's data lies inside
//    the leaf data area.
//  - Messages follow the kernel's wording so they grep alike: "corrupt leaf: root=R block=B slot=S,
//    <reason>" for leaves, "corrupt node: ..." for nodes, "bad tree block B: <reason>" for header
//    mismatches, "checksum verify failed on B wanted X found Y level L" and "parent transid verify
//    failed on B wanted X found Y". Keys print as (objectid type offset), numbers in decimal.
//
// Entry points: check_tree_block (read time: checksum + expectations + structure + bodies),
// check_leaf / check_node (structure + bodies, no checksum, used before a write).
#include "tree/tree_checker.h"

#include <bit>
#include <cstring>
#include <string>

#include "io/checksum.h"
#include "tree/chunk_map.h"
#include "tree/print_tree.h"

namespace ubtrfs {

namespace {

constexpr uint64_t kSeqMax = ~0ull;
constexpr uint64_t kRootSubvolDead = 1ull << 48;
constexpr uint32_t kSifmt = 0170000;
constexpr uint64_t kInodeFlagsKnown = kInodeNodatasum | kInodeNodatacow | kInodeReadonly | kInodeNocompress |
                                      kInodePrealloc | kInodeSync | kInodeImmutable | kInodeAppend | kInodeNodump |
                                      kInodeNoatime | kInodeDirsync | kInodeCompress | kInodeRootItemInit;
constexpr uint64_t kInodeRoFlagsKnown = 0x1;  // VERITY
constexpr uint32_t kXattrNameMax = 255;

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string s = "0x";
  for (size_t i = 0; i < n; ++i) s += fmt::format("{:02x}", p[i]);
  return s;
}

// Subvolume trees (FS_TREE and ids 256..LAST_FREE): the trees whose blocks may carry any subvolume
// id as owner (snapshots share blocks) and whose inode items follow the ino ordering rules.
bool is_fstree(uint64_t id) {
  return id == kFsTreeObjectid || (static_cast<int64_t>(id) >= static_cast<int64_t>(kFirstFreeObjectid) &&
                                   (id >> 48) == 0);  // qgroup level bits must be zero
}

// Bounds-checked view of one block.
class BlockView {
 public:
  explicit BlockView(std::span<const uint8_t> b) : b_(b) {}
  size_t size() const { return b_.size(); }
  const uint8_t* data() const { return b_.data(); }
  bool in(uint64_t off, uint64_t len) const { return off <= b_.size() && len <= b_.size() - off; }
  template <class T>
  T get(uint64_t off) const {  // REQUIRES: in(off, sizeof(T))
    return load<T>(b_.data() + off);
  }
  Header header() const { return load<Header>(b_.data()); }

 private:
  std::span<const uint8_t> b_;
};

// ---- leaf checking -------------------------------------------------------------------------------

class LeafChecker {
 public:
  LeafChecker(const FsParams& fs, std::span<const uint8_t> block)
      : fs_(fs), v_(block), h_(v_.header()), owner_(h_.owner), bytenr_(h_.bytenr) {}

  Status run();

 private:
  template <class... Args>
  std::unexpected<Error> err(int slot, fmt::format_string<Args...> f, Args&&... args) const {
    return fail(EUCLEAN, "corrupt leaf: root={} block={} slot={}, {}", owner_, bytenr_, slot,
                fmt::format(f, std::forward<Args>(args)...));
  }
  template <class... Args>
  std::unexpected<Error> item_err(int slot, const Key& k, fmt::format_string<Args...> f, Args&&... args) const {
    return fail(EUCLEAN, "corrupt leaf: root={} block={} slot={} key {}, {}", owner_, bytenr_, slot, key_tuple_str(k),
                fmt::format(f, std::forward<Args>(args)...));
  }

  Item item(int slot) const { return v_.get<Item>(sizeof(Header) + static_cast<uint64_t>(slot) * sizeof(Item)); }
  // Absolute offset of the item's data in the block.
  uint64_t data_start(const Item& it) const { return sizeof(Header) + static_cast<uint64_t>(it.offset.get()); }

  Status check_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_prev_ino(int slot, const Key& k);
  Status check_inode_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_inode_ref(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_inode_extref(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_dir_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_file_extent(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_csum_item(int slot, const Key& k, uint32_t size);
  Status check_root_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_root_ref(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_extent_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_keyed_ref(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_block_group_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_chunk(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_dev_item(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_dev_extent(int slot, const Key& k, uint64_t off, uint32_t size);
  Status check_free_space(int slot, const Key& k, uint32_t size);
  Status check_uuid_item(int slot, const Key& k, uint32_t size);

  const FsParams& fs_;
  BlockView v_;
  Header h_;
  uint64_t owner_;
  uint64_t bytenr_;
  // State carried between slots for the cross-item rules.
  Key prev_key_{};
  std::optional<uint64_t> prev_csum_end_;        // end of the previous EXTENT_CSUM item
  std::optional<Key> prev_file_extent_key_;     // previous EXTENT_DATA item and its end
  uint64_t prev_file_extent_end_ = 0;
  std::optional<Key> prev_dev_extent_key_;
  uint64_t prev_dev_extent_len_ = 0;
};

Status LeafChecker::run() {
  const uint32_t nritems = h_.nritems;
  const uint32_t data_size = leaf_data_size(static_cast<uint32_t>(v_.size()));

  if (h_.level != 0) return err(0, "invalid level for leaf, have {} expect 0", h_.level);

  if (nritems == 0) {
    // These trees always hold at least one item (FORMAT.md §2.3); an empty leaf is corruption.
    if (owner_ == kRootTreeObjectid || owner_ == kChunkTreeObjectid || owner_ == kDevTreeObjectid ||
        owner_ == kFsTreeObjectid || owner_ == kDataRelocTreeObjectid ||
        (owner_ == kExtentTreeObjectid && !(fs_.incompat_flags & kIncompatExtentTreeV2)))
      return err(0, "invalid root, root {} must never be empty", owner_);
    if (owner_ == 0) return err(0, "invalid owner, root 0 is not defined");
    return {};
  }
  if (static_cast<uint64_t>(nritems) * sizeof(Item) > data_size)
    return err(0, "invalid nritems, have {} max {} items fit in the leaf", nritems, data_size / sizeof(Item));

  for (uint32_t i = 0; i < nritems; ++i) {
    const int slot = static_cast<int>(i);
    const Item it = item(slot);
    const Key k = it.key.cpu();

    if (slot > 0 && !(prev_key_ < k))
      return err(slot, "bad key order, prev {} current {}", key_tuple_str(prev_key_), key_tuple_str(k));

    // Item data is packed from the end of the block downwards with no gaps and no overlap.
    const uint64_t expect_end = slot == 0 ? data_size : item(slot - 1).offset.get();
    const uint64_t end = static_cast<uint64_t>(it.offset.get()) + it.size.get();
    if (end != expect_end) return err(slot, "unexpected item end, have {} expect {}", end, expect_end);
    if (end > data_size) return err(slot, "slot end outside of leaf, have {} expect range [0, {}]", end, data_size);
    const uint64_t header_end = sizeof(Header) + static_cast<uint64_t>(slot + 1) * sizeof(Item);
    if (header_end > data_start(it))
      return err(slot, "slot overlaps with its data, item end {} data start {}", header_end, data_start(it));

    UBTRFS_TRY_STATUS(check_item(slot, k, data_start(it), it.size.get()));
    prev_key_ = k;
  }
  return {};
}

Status LeafChecker::check_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  switch (k.type) {
    case kInodeItemKey:
      return check_inode_item(slot, k, off, size);
    case kInodeRefKey:
      return check_inode_ref(slot, k, off, size);
    case kInodeExtrefKey:
      return check_inode_extref(slot, k, off, size);
    case kDirItemKey:
    case kDirIndexKey:
    case kXattrItemKey:
      return check_dir_item(slot, k, off, size);
    case kExtentDataKey:
      return check_file_extent(slot, k, off, size);
    case kExtentCsumKey:
      return check_csum_item(slot, k, size);
    case kRootItemKey:
      return check_root_item(slot, k, off, size);
    case kRootRefKey:
    case kRootBackrefKey:
      return check_root_ref(slot, k, off, size);
    case kExtentItemKey:
    case kMetadataItemKey:
      return check_extent_item(slot, k, off, size);
    case kTreeBlockRefKey:
    case kSharedBlockRefKey:
    case kExtentDataRefKey:
    case kSharedDataRefKey:
      return check_keyed_ref(slot, k, off, size);
    case kBlockGroupItemKey:
      return check_block_group_item(slot, k, off, size);
    case kChunkItemKey:
      return check_chunk(slot, k, off, size);
    case kDevItemKey:
      return check_dev_item(slot, k, off, size);
    case kDevExtentKey:
      return check_dev_extent(slot, k, off, size);
    case kFreeSpaceInfoKey:
    case kFreeSpaceExtentKey:
    case kFreeSpaceBitmapKey:
      return check_free_space(slot, k, size);
    case kUuidKeySubvol:
    case kUuidKeyReceivedSubvol:
      return check_uuid_item(slot, k, size);
    default:
      return {};  // unknown or unchecked types are accepted as opaque bytes
  }
}

// Inode-related items of a subvolume tree must follow an item of the same inode in the leaf
// (or start it): the kernel's check_prev_ino.
Status LeafChecker::check_prev_ino(int slot, const Key& k) {
  if (slot == 0 || !is_fstree(owner_)) return {};
  if (prev_key_.objectid == k.objectid) return {};
  return item_err(slot, k, "invalid previous key objectid, have {} expect {}", prev_key_.objectid, k.objectid);
}

Status LeafChecker::check_inode_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  const bool valid_ino = (k.objectid >= kFirstFreeObjectid && k.objectid <= kLastFreeObjectid) ||
                         k.objectid == kRootTreeDirObjectid || k.objectid == kFreeInoObjectid;
  if (!valid_ino)
    return item_err(slot, k, "invalid key objectid: has {} expect {} or [{}, {}] or {}", k.objectid,
                    kRootTreeDirObjectid, kFirstFreeObjectid, kLastFreeObjectid, kFreeInoObjectid);
  if (k.offset != 0) return item_err(slot, k, "invalid key offset: has {} expect 0", k.offset);
  if (size != sizeof(InodeItem)) return item_err(slot, k, "invalid item size: has {} expect {}", size, sizeof(InodeItem));
  const auto ii = v_.get<InodeItem>(off);
  const uint64_t max_gen = fs_.super_generation + 1;
  if (ii.generation.get() > max_gen)
    return item_err(slot, k, "invalid inode generation: has {} expect (0, {}]", ii.generation.get(), max_gen);
  if (ii.transid.get() > max_gen)
    return item_err(slot, k, "invalid inode transid: has {} expect [0, {}]", ii.transid.get(), max_gen);
  const uint32_t mode = ii.mode;
  switch (mode & kSifmt) {
    case 0140000: case 0120000: case 0100000: case 060000: case 040000: case 020000: case 010000:
      break;
    default:
      return item_err(slot, k, "invalid mode: has 0{:o} expect valid S_IF* bit(s)", mode);
  }
  if ((mode & kSifmt) == 040000 && ii.nlink.get() > 1)
    return item_err(slot, k, "invalid nlink: has {} expect no more than 1 for dir", ii.nlink.get());
  const uint64_t flags = ii.flags;
  if ((flags & 0xffffffffull) & ~kInodeFlagsKnown)
    return item_err(slot, k, "unknown incompat flags detected: 0x{:x}", (flags & 0xffffffffull) & ~kInodeFlagsKnown);
  if ((flags >> 32) & ~kInodeRoFlagsKnown)
    return item_err(slot, k, "unknown ro-compat flags detected: 0x{:x}", (flags >> 32) & ~kInodeRoFlagsKnown);
  return {};
}

Status LeafChecker::check_inode_ref(int slot, const Key& k, uint64_t off, uint32_t size) {
  UBTRFS_TRY_STATUS(check_prev_ino(slot, k));
  uint64_t pos = 0;
  while (pos < size) {
    if (size - pos < sizeof(InodeRef))
      return item_err(slot, k, "inode ref overflow, ptr {} end {} namelen {}", pos, size, sizeof(InodeRef));
    const auto r = v_.get<InodeRef>(off + pos);
    const uint64_t len = sizeof(InodeRef) + r.name_len.get();
    if (len > size - pos)
      return item_err(slot, k, "inode ref overflow, ptr {} end {} namelen {}", pos, size, r.name_len.get());
    pos += len;
  }
  return {};
}

Status LeafChecker::check_inode_extref(int slot, const Key& k, uint64_t off, uint32_t size) {
  UBTRFS_TRY_STATUS(check_prev_ino(slot, k));
  uint64_t pos = 0;
  while (pos < size) {
    if (size - pos < sizeof(InodeExtref))
      return item_err(slot, k, "inode extref overflow, ptr {} end {} namelen {}", pos, size, sizeof(InodeExtref));
    const auto r = v_.get<InodeExtref>(off + pos);
    const uint64_t len = sizeof(InodeExtref) + r.name_len.get();
    if (len > size - pos)
      return item_err(slot, k, "inode extref overflow, ptr {} end {} namelen {}", pos, size, r.name_len.get());
    pos += len;
  }
  return {};
}

Status LeafChecker::check_dir_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  UBTRFS_TRY_STATUS(check_prev_ino(slot, k));
  const uint32_t max_xattr = max_item_size(static_cast<uint32_t>(v_.size())) - sizeof(DirItem);
  uint64_t pos = 0;
  int entries = 0;
  while (pos < size) {
    if (size - pos < sizeof(DirItem))
      return item_err(slot, k, "dir item too small, have {} expect {}", size - pos, sizeof(DirItem));
    const auto di = v_.get<DirItem>(off + pos);
    const uint8_t type = di.type & ~kFtEncrypted;
    const Key loc = di.location.cpu();
    if (k.type != kXattrItemKey) {
      if (loc.type != kInodeItemKey && loc.type != kRootItemKey)
        return item_err(slot, k, "invalid location key type, have {} expect {} or {}", loc.type, kInodeItemKey,
                        kRootItemKey);
    }
    if (type <= kFtUnknown || type >= kFtMax)
      return item_err(slot, k, "invalid dir item type, have {} expect (0, {})", type, kFtMax);
    if (k.type == kXattrItemKey && type != kFtXattr)
      return item_err(slot, k, "invalid dir item type for XATTR key, have {} expect {}", type, kFtXattr);
    if (type == kFtXattr && k.type != kXattrItemKey)
      return item_err(slot, k, "xattr dir type found for non-XATTR key");
    const uint32_t name_len = di.name_len;
    const uint32_t data_len = di.data_len;
    const uint32_t name_max = type == kFtXattr ? kXattrNameMax : kNameLen;
    if (name_len > name_max) return item_err(slot, k, "dir item name len too long, have {} max {}", name_len, name_max);
    if (name_len == 0) return item_err(slot, k, "dir item name len is zero");
    if (static_cast<uint64_t>(name_len) + data_len > max_xattr)
      return item_err(slot, k, "dir item name and data len too long, have {} max {}",
                      static_cast<uint64_t>(name_len) + data_len, max_xattr);
    if (data_len && type != kFtXattr)
      return item_err(slot, k, "dir item with invalid data len, have {} expect 0", data_len);
    const uint64_t total = sizeof(DirItem) + static_cast<uint64_t>(name_len) + data_len;
    if (total > size - pos) return item_err(slot, k, "dir item data too long, have {} expect {}", total, size - pos);
    if (k.type == kDirItemKey || k.type == kXattrItemKey) {
      std::string_view name(reinterpret_cast<const char*>(v_.data() + off + pos + sizeof(DirItem)), name_len);
      const uint64_t h = io::name_hash(name);
      if (h != k.offset)
        return item_err(slot, k, "name hash mismatch with key, have 0x{:016x} expect 0x{:016x}", h, k.offset);
    }
    ++entries;
    pos += total;
  }
  if (k.type == kDirIndexKey && entries > 1)
    return item_err(slot, k, "dir index item holds {} entries, expect 1", entries);
  return {};
}

Status LeafChecker::check_file_extent(int slot, const Key& k, uint64_t off, uint32_t size) {
  const uint32_t ss = fs_.sectorsize;
  if (k.offset % ss)
    return item_err(slot, k, "unaligned file_offset for file extent, have {} should be aligned to {}", k.offset, ss);
  UBTRFS_TRY_STATUS(check_prev_ino(slot, k));
  if (size < kFileExtentInlineDataStart)
    return item_err(slot, k, "invalid item size, have {} expect [{}, {})", size, kFileExtentInlineDataStart,
                    max_item_size(static_cast<uint32_t>(v_.size())));
  // Only the first 21 bytes are guaranteed to exist for inline extents.
  FileExtentItem fi{};
  std::memcpy(&fi, v_.data() + off, std::min<size_t>(size, sizeof(FileExtentItem)));
  if (fi.type > kFileExtentPrealloc)
    return item_err(slot, k, "invalid type for file extent, have {} expect range [0, {}]", fi.type,
                    static_cast<int>(kFileExtentPrealloc));
  if (fi.compression > kCompressZstd)
    return item_err(slot, k, "invalid compression for file extent, have {} expect range [0, {}]", fi.compression,
                    static_cast<int>(kCompressZstd));
  if (fi.encryption != 0)
    return item_err(slot, k, "invalid encryption for file extent, have {} expect 0", fi.encryption);

  uint64_t extent_end = 0;
  if (fi.type == kFileExtentInline) {
    if (k.offset != 0)
      return item_err(slot, k, "invalid file_offset for inline file extent, have {} expect 0", k.offset);
    if (fi.other_encoding.get() != 0)
      return item_err(slot, k, "invalid other_encoding for inline file extent, have {}", fi.other_encoding.get());
    if (fi.compression == kCompressNone && size - kFileExtentInlineDataStart != fi.ram_bytes.get())
      return item_err(slot, k, "invalid ram_bytes for uncompressed inline extent, have {} expect {}",
                      size - kFileExtentInlineDataStart, fi.ram_bytes.get());
    extent_end = (fi.ram_bytes.get() + ss - 1) / ss * ss;  // only used for ordering; overflow is harmless
  } else {
    if (size != sizeof(FileExtentItem))
      return item_err(slot, k, "invalid item size for reg/prealloc file extent, have {} expect {}", size,
                      sizeof(FileExtentItem));
    struct Field {
      const char* name;
      uint64_t v;
    };
    const Field fields[] = {{"ram_bytes", fi.ram_bytes}, {"disk_bytenr", fi.disk_bytenr},
                            {"disk_num_bytes", fi.disk_num_bytes}, {"offset", fi.offset}, {"num_bytes", fi.num_bytes}};
    for (const auto& f : fields)
      if (f.v % ss)
        return item_err(slot, k, "invalid {} for file extent, have {}, should be aligned to {}", f.name, f.v, ss);
    // A compressed extent holds at most 128 KiB of data compressed into at most 128 KiB
    // (BTRFS_MAX_UNCOMPRESSED, BTRFS_MAX_COMPRESSED): readers allocate these sizes.
    constexpr uint64_t kMaxCompressedExtent = 128 * 1024;
    if (fi.compression && fi.disk_bytenr.get() &&
        (fi.disk_num_bytes.get() > kMaxCompressedExtent || fi.ram_bytes.get() > kMaxCompressedExtent))
      return item_err(slot, k, "invalid compressed file extent, disk_num_bytes {} ram_bytes {}, max {}",
                      fi.disk_num_bytes.get(), fi.ram_bytes.get(), kMaxCompressedExtent);
    if (fi.type == kFileExtentPrealloc && (fi.compression || fi.other_encoding.get()))
      return item_err(slot, k, "invalid prealloc file extent, compression {} other_encoding {}", fi.compression,
                      fi.other_encoding.get());
    if (fi.num_bytes.get() > ~0ull - k.offset)
      return item_err(slot, k, "extent end overflow, have file offset {} extent num bytes {}", k.offset,
                      fi.num_bytes.get());
    extent_end = k.offset + fi.num_bytes.get();
  }
  if (prev_file_extent_key_ && prev_file_extent_key_->objectid == k.objectid && prev_file_extent_end_ > k.offset)
    return item_err(slot, k, "file extent end range ({}) goes beyond start offset ({}) of the next file extent",
                    prev_file_extent_end_, k.offset);
  prev_file_extent_key_ = k;
  prev_file_extent_end_ = extent_end;
  return {};
}

Status LeafChecker::check_csum_item(int slot, const Key& k, uint32_t size) {
  const uint32_t ss = fs_.sectorsize;
  const size_t cs = fs_.csum_size();
  if (k.objectid != kExtentCsumObjectid)
    return item_err(slot, k, "invalid key objectid for csum item, have {} expect {}", k.objectid, kExtentCsumObjectid);
  if (k.offset % ss)
    return item_err(slot, k, "unaligned key offset for csum item, have {} should be aligned to {}", k.offset, ss);
  if (cs == 0 || size % cs)
    return item_err(slot, k, "unaligned item size for csum item, have {} should be aligned to {}", size, cs);
  if (prev_csum_end_ && *prev_csum_end_ > k.offset)
    return item_err(slot, k, "csum end range ({}) goes beyond the start range ({}) of the next csum item",
                    *prev_csum_end_, k.offset);
  prev_csum_end_ = k.offset + static_cast<uint64_t>(size / cs) * ss;
  return {};
}

Status LeafChecker::check_root_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (k.objectid == 0) return item_err(slot, k, "invalid root id 0");
  if (size != sizeof(RootItem) && size != kRootItemLegacySize)
    return item_err(slot, k, "invalid root item size, have {} expect {} or {}", size, sizeof(RootItem),
                    kRootItemLegacySize);
  const RootItem ri = load_root_item({v_.data() + off, size});
  const uint64_t max_gen = fs_.super_generation + 1;
  if (ri.generation.get() > max_gen)
    return item_err(slot, k, "invalid root generation, have {} expect (0, {}]", ri.generation.get(), max_gen);
  if (size == sizeof(RootItem) && ri.generation_v2.get() > max_gen)
    return item_err(slot, k, "invalid root v2 generation, have {} expect (0, {}]", ri.generation_v2.get(), max_gen);
  if (ri.bytenr.get() % fs_.sectorsize)
    return item_err(slot, k, "invalid root bytenr, have {} expect to be aligned to {}", ri.bytenr.get(),
                    fs_.sectorsize);
  if (ri.level >= kMaxLevel)
    return item_err(slot, k, "invalid root level, have {} expect [0, {}]", ri.level, kMaxLevel - 1);
  if (ri.drop_level >= kMaxLevel)
    return item_err(slot, k, "invalid root drop_level, have {} expect [0, {}]", ri.drop_level, kMaxLevel - 1);
  if (ri.flags.get() & ~(kRootSubvolRdonly | kRootSubvolDead))
    return item_err(slot, k, "invalid root flags, have 0x{:x} expect mask 0x{:x}", ri.flags.get(),
                    kRootSubvolRdonly | kRootSubvolDead);
  return {};
}

Status LeafChecker::check_root_ref(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (size < sizeof(RootRef))
    return item_err(slot, k, "invalid root ref item size, have {} expect at least {}", size, sizeof(RootRef));
  const auto r = v_.get<RootRef>(off);
  if (sizeof(RootRef) + static_cast<uint64_t>(r.name_len.get()) != size)
    return item_err(slot, k, "invalid root ref item size, have {} expect {}", size, sizeof(RootRef) + r.name_len.get());
  return {};
}

Status LeafChecker::check_extent_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  const uint32_t ss = fs_.sectorsize;
  const bool metadata = k.type == kMetadataItemKey;
  if (metadata && !fs_.skinny_metadata())
    return item_err(slot, k, "invalid key type, METADATA_ITEM type invalid when SKINNY_METADATA feature disabled");
  if (k.objectid % ss)
    return item_err(slot, k, "invalid key objectid, have {} expect to be aligned to {}", k.objectid, ss);
  if (!metadata && k.offset == 0) return item_err(slot, k, "invalid extent length, have 0");
  if (metadata && k.offset >= static_cast<uint64_t>(kMaxLevel))
    return item_err(slot, k, "invalid tree level, have {} expect [0, {}]", k.offset, kMaxLevel - 1);
  if (size < sizeof(ExtentItem))
    return item_err(slot, k, "invalid extent item size, have {} expect at least {}", size, sizeof(ExtentItem));
  const auto ei = v_.get<ExtentItem>(off);
  const uint64_t flags = ei.flags;
  const uint64_t known = kExtentFlagData | kExtentFlagTreeBlock | kBlockFlagFullBackref;
  if (flags & ~known)
    return item_err(slot, k, "invalid extent flag, have 0x{:x} expect valid bits 0x{:x}", flags, known);
  const bool is_data = flags & kExtentFlagData;
  const bool is_tree = flags & kExtentFlagTreeBlock;
  if (is_data == is_tree)
    return item_err(slot, k, "invalid extent flag, have 0x{:x} expect exactly one of DATA or TREE_BLOCK", flags);
  if (is_data && metadata) return item_err(slot, k, "invalid extent flag, METADATA_ITEM with DATA flag");
  if (is_data && (flags & kBlockFlagFullBackref))
    return item_err(slot, k, "invalid extent flag, FULL_BACKREF set for data extent");
  if (is_tree && !metadata && k.offset != fs_.nodesize)
    return item_err(slot, k, "invalid extent length, have {} expect {}", k.offset, fs_.nodesize);
  if (ei.generation.get() > fs_.super_generation + 1)
    return item_err(slot, k, "invalid generation, have {} expect (0, {}]", ei.generation.get(),
                    fs_.super_generation + 1);

  uint64_t pos = sizeof(ExtentItem);
  if (is_tree && !metadata) {
    if (size - pos < sizeof(TreeBlockInfo))
      return item_err(slot, k, "invalid extent item size, have {} expect at least {}", size,
                      sizeof(ExtentItem) + sizeof(TreeBlockInfo));
    const auto info = v_.get<TreeBlockInfo>(off + pos);
    if (info.level >= kMaxLevel)
      return item_err(slot, k, "invalid tree block level, have {} expect [0, {}]", info.level, kMaxLevel - 1);
    pos += sizeof(TreeBlockInfo);
  }

  uint64_t total_refs = 0;
  int prev_type = -1;
  uint64_t prev_seq = kSeqMax;
  while (pos < size) {
    const uint8_t type = v_.get<uint8_t>(off + pos);
    const size_t rsz = extent_inline_ref_size(type);
    if (rsz == 0) return item_err(slot, k, "unknown inline ref type: {}", type);
    if (rsz > size - pos)
      return item_err(slot, k, "inline ref item overflows extent item, ptr {} end {}", pos + rsz, size);
    uint64_t seq = 0;
    const uint8_t* p = v_.data() + off + pos + 1;
    switch (type) {
      case kExtentOwnerRefKey:
        if (pos != sizeof(ExtentItem) + ((is_tree && !metadata) ? sizeof(TreeBlockInfo) : 0))
          return item_err(slot, k, "extent owner ref must be the first inline ref");
        seq = load<le64>(p);
        break;
      case kTreeBlockRefKey:
        if (!is_tree) return item_err(slot, k, "tree block ref in a data extent");
        seq = load<le64>(p);
        total_refs += 1;
        break;
      case kSharedBlockRefKey:
        if (!is_tree) return item_err(slot, k, "shared block ref in a data extent");
        seq = load<le64>(p);
        if (seq % ss)
          return item_err(slot, k, "invalid tree parent bytenr, have {} expect aligned to {}", seq, ss);
        total_refs += 1;
        break;
      case kExtentDataRefKey: {
        if (!is_data) return item_err(slot, k, "extent data ref in a tree block extent");
        const auto dref = load<ExtentDataRef>(p);
        seq = io::extent_data_ref_hash(dref.root, dref.objectid, dref.offset);
        total_refs += dref.count.get();
        break;
      }
      case kSharedDataRefKey: {
        if (!is_data) return item_err(slot, k, "shared data ref in a tree block extent");
        seq = load<le64>(p);
        if (seq % ss)
          return item_err(slot, k, "invalid data parent bytenr, have {} expect aligned to {}", seq, ss);
        total_refs += load<le32>(p + 8).get();
        break;
      }
    }
    // Sorted by type ascending, then by sequence descending (FORMAT.md §3.9).
    if (type < prev_type || (type == prev_type && seq > prev_seq))
      return item_err(slot, k, "inline ref out-of-order: has type {} seq 0x{:x}, prev type {} seq 0x{:x}", type, seq,
                      prev_type, prev_seq);
    prev_type = type;
    prev_seq = seq;
    pos += rsz;
  }
  if (ei.refs.get() < total_refs)
    return item_err(slot, k, "invalid extent refs, have {} expect >= inline {}", ei.refs.get(), total_refs);
  return {};
}

Status LeafChecker::check_keyed_ref(int slot, const Key& k, uint64_t off, uint32_t size) {
  const uint32_t ss = fs_.sectorsize;
  if (k.objectid % ss)
    return item_err(slot, k, "invalid key objectid, have {} expect to be aligned to {}", k.objectid, ss);
  switch (k.type) {
    case kTreeBlockRefKey:
    case kSharedBlockRefKey:
      if (size != 0) return item_err(slot, k, "invalid item size, have {} expect 0 for key type {}", size, k.type);
      if (k.type == kSharedBlockRefKey && k.offset % ss)
        return item_err(slot, k, "invalid tree parent bytenr, have {} expect aligned to {}", k.offset, ss);
      return {};
    case kSharedDataRefKey:
      if (size != sizeof(SharedDataRef))
        return item_err(slot, k, "invalid item size, have {} expect {} for key type {}", size, sizeof(SharedDataRef),
                        k.type);
      if (k.offset % ss)
        return item_err(slot, k, "invalid data parent bytenr, have {} expect aligned to {}", k.offset, ss);
      return {};
    default: {  // EXTENT_DATA_REF: one or more records whose hash must equal the key offset
      if (size == 0 || size % sizeof(ExtentDataRef))
        return item_err(slot, k, "invalid item size, have {} expect aligned to {}", size, sizeof(ExtentDataRef));
      for (uint64_t pos = 0; pos < size; pos += sizeof(ExtentDataRef)) {
        const auto d = v_.get<ExtentDataRef>(off + pos);
        const uint64_t h = io::extent_data_ref_hash(d.root, d.objectid, d.offset);
        if (h != k.offset)
          return item_err(slot, k, "invalid extent data backref hash, item has 0x{:016x} key has 0x{:016x}", h,
                          k.offset);
      }
      return {};
    }
  }
}

Status LeafChecker::check_block_group_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (k.offset == 0) return item_err(slot, k, "invalid block group size 0");
  if (size != sizeof(BlockGroupItem))
    return item_err(slot, k, "invalid item size, have {} expect {}", size, sizeof(BlockGroupItem));
  const auto bg = v_.get<BlockGroupItem>(off);
  if (bg.chunk_objectid.get() != kFirstChunkTreeObjectid)
    return item_err(slot, k, "invalid block group chunk objectid, have {} expect {}", bg.chunk_objectid.get(),
                    kFirstChunkTreeObjectid);
  if (bg.used.get() > k.offset)
    return item_err(slot, k, "invalid block group used, have {} expect [0, {}]", bg.used.get(), k.offset);
  const uint64_t flags = bg.flags;
  if (std::popcount(flags & kBlockGroupProfileMask) > 1)
    return item_err(slot, k, "invalid profile flags, have 0x{:x} ({} bits set) expect no more than 1 bit set",
                    flags & kBlockGroupProfileMask, std::popcount(flags & kBlockGroupProfileMask));
  const uint64_t t = flags & kBlockGroupTypeMask;
  if (t != kBlockGroupData && t != kBlockGroupMetadata && t != kBlockGroupSystem &&
      t != (kBlockGroupData | kBlockGroupMetadata))
    return item_err(slot, k, "invalid type, have 0x{:x} ({} bits set) expect either 0x{:x}, 0x{:x}, 0x{:x} or 0x{:x}",
                    t, std::popcount(t), kBlockGroupData, kBlockGroupMetadata, kBlockGroupSystem,
                    kBlockGroupData | kBlockGroupMetadata);
  return {};
}

Status LeafChecker::check_chunk(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (k.objectid != kFirstChunkTreeObjectid)
    return item_err(slot, k, "invalid chunk item key objectid, have {} expect {}", k.objectid, kFirstChunkTreeObjectid);
  auto st = check_chunk_item(k.offset, std::span<const uint8_t>(v_.data() + off, size), fs_.sectorsize);
  if (!st) return item_err(slot, k, "{}", st.error().message);
  return {};
}

Status LeafChecker::check_dev_item(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (k.objectid != kDevItemsObjectid)
    return item_err(slot, k, "invalid objectid: has={} expect={}", k.objectid, kDevItemsObjectid);
  if (size != sizeof(DevItem)) return item_err(slot, k, "invalid item size: has {} expect {}", size, sizeof(DevItem));
  const auto d = v_.get<DevItem>(off);
  if (d.devid.get() != k.offset)
    return item_err(slot, k, "devid mismatch: key has={} item has={}", k.offset, d.devid.get());
  if (d.bytes_used.get() > d.total_bytes.get())
    return item_err(slot, k, "invalid bytes_used: have {} expect [0, {}]", d.bytes_used.get(), d.total_bytes.get());
  return {};
}

Status LeafChecker::check_dev_extent(int slot, const Key& k, uint64_t off, uint32_t size) {
  if (size != sizeof(DevExtent))
    return item_err(slot, k, "invalid dev extent item size, have {} expect {}", size, sizeof(DevExtent));
  if (k.offset % kStripeLen)
    return item_err(slot, k, "invalid dev extent key.offset, has {} not aligned to {}", k.offset, kStripeLen);
  const auto de = v_.get<DevExtent>(off);
  if (de.chunk_tree.get() != kChunkTreeObjectid)
    return item_err(slot, k, "invalid dev extent chunk_tree, have {} expect {}", de.chunk_tree.get(),
                    kChunkTreeObjectid);
  if (de.chunk_objectid.get() != kFirstChunkTreeObjectid)
    return item_err(slot, k, "invalid dev extent chunk_objectid, have {} expect {}", de.chunk_objectid.get(),
                    kFirstChunkTreeObjectid);
  if (prev_dev_extent_key_ && prev_dev_extent_key_->objectid == k.objectid &&
      prev_dev_extent_key_->offset + prev_dev_extent_len_ > k.offset)
    return item_err(slot, k, "dev extent overlap, prev offset {} len {} current offset {}",
                    prev_dev_extent_key_->offset, prev_dev_extent_len_, k.offset);
  prev_dev_extent_key_ = k;
  prev_dev_extent_len_ = de.length;
  return {};
}

Status LeafChecker::check_free_space(int slot, const Key& k, uint32_t size) {
  if (k.offset == 0) return item_err(slot, k, "invalid free space range length 0");
  switch (k.type) {
    case kFreeSpaceInfoKey:
      if (size != sizeof(FreeSpaceInfo))
        return item_err(slot, k, "invalid free space info item size, have {} expect {}", size, sizeof(FreeSpaceInfo));
      return {};
    case kFreeSpaceExtentKey:
      if (size != 0) return item_err(slot, k, "invalid free space extent item size, have {} expect 0", size);
      return {};
    default: {
      const uint64_t bits = k.offset / fs_.sectorsize;
      const uint64_t want = (bits + 7) / 8;
      if (k.offset % fs_.sectorsize || size != want)
        return item_err(slot, k, "invalid free space bitmap item size, have {} expect {}", size, want);
      return {};
    }
  }
}

Status LeafChecker::check_uuid_item(int slot, const Key& k, uint32_t size) {
  if (size == 0 || size % sizeof(uint64_t))
    return item_err(slot, k, "invalid uuid item size, have {} expect a non-zero multiple of 8", size);
  return {};
}

// ---- node checking -------------------------------------------------------------------------------

Status check_node_impl(const FsParams& fs, std::span<const uint8_t> block) {
  BlockView v(block);
  const Header h = v.header();
  const uint64_t owner = h.owner;
  const uint64_t bytenr = h.bytenr;
  const uint32_t nritems = h.nritems;
  const uint32_t max = nodeptrs_per_block(static_cast<uint32_t>(block.size()));
  if (h.level == 0 || h.level >= kMaxLevel)
    return fail(EUCLEAN, "corrupt node: root={} block={} slot=0, invalid level for node, have {} expect [1, {}]",
                owner, bytenr, h.level, kMaxLevel - 1);
  if (nritems == 0 || nritems > max)
    return fail(EUCLEAN, "corrupt node: root={} block={} slot=0, invalid nritems, have {} should be in range [1, {}]",
                owner, bytenr, nritems, max);
  Key prev{};
  for (uint32_t i = 0; i < nritems; ++i) {
    const auto kp = v.get<KeyPtr>(sizeof(Header) + static_cast<uint64_t>(i) * sizeof(KeyPtr));
    const Key k = kp.key.cpu();
    const uint64_t ptr = kp.blockptr;
    if (ptr == 0)
      return fail(EUCLEAN, "corrupt node: root={} block={} slot={}, invalid NULL node pointer", owner, bytenr, i);
    if (ptr % fs.sectorsize)
      return fail(EUCLEAN, "corrupt node: root={} block={} slot={}, unaligned pointer, have {} should be aligned to {}",
                  owner, bytenr, i, ptr, fs.sectorsize);
    if (kp.generation.get() > fs.super_generation + 1)
      return fail(EUCLEAN, "corrupt node: root={} block={} slot={}, invalid generation, have {} expect (0, {}]", owner,
                  bytenr, i, kp.generation.get(), fs.super_generation + 1);
    if (i > 0 && !(prev < k))
      return fail(EUCLEAN, "corrupt node: root={} block={} slot={}, bad key order, prev {} current {}", owner, bytenr,
                  i, key_tuple_str(prev), key_tuple_str(k));
    prev = k;
  }
  return {};
}

Status check_size(const FsParams& fs, std::span<const uint8_t> block) {
  if (block.size() != fs.nodesize || block.size() < sizeof(Header) + sizeof(KeyPtr))
    return fail(EUCLEAN, "bad tree block: size {} does not match nodesize {}", block.size(), fs.nodesize);
  return {};
}

}  // namespace

Status check_leaf(const FsParams& fs, std::span<const uint8_t> block) {
  UBTRFS_TRY_STATUS(check_size(fs, block));
  return LeafChecker(fs, block).run();
}

Status check_node(const FsParams& fs, std::span<const uint8_t> block) {
  UBTRFS_TRY_STATUS(check_size(fs, block));
  return check_node_impl(fs, block);
}

Status check_tree_block(const FsParams& fs, std::span<const uint8_t> block, const TreeBlockExpect& expect) {
  UBTRFS_TRY_STATUS(check_size(fs, block));
  BlockView v(block);
  const Header h = v.header();
  const uint64_t bytenr = h.bytenr;

  const auto ctype = static_cast<uint16_t>(fs.csum_type);
  if (!io::csum_supported(ctype))
    return fail(EOPNOTSUPP, "checksum type {} is not supported", io::csum_name(ctype));
  const size_t cs = fs.csum_size();
  const auto found = io::compute_csum(fs.csum_type, block.subspan(io::kCsumFieldSize));
  if (std::memcmp(block.data(), found.data(), cs) != 0)
    return fail(EUCLEAN, "checksum verify failed on {} wanted {} found {} level {}", expect.bytenr,
                hex_bytes(block.data(), cs), hex_bytes(found.data(), cs), h.level);

  if (bytenr != expect.bytenr)
    return fail(EUCLEAN, "bad tree block {}: bytenr mismatch, have {}", expect.bytenr, bytenr);
  if (std::memcmp(h.fsid, fs.fsid.data(), 16) != 0)
    return fail(EUCLEAN, "bad tree block {}: fsid mismatch, want {} have {}", bytenr, hex_bytes(fs.fsid.data(), 16),
                hex_bytes(h.fsid, 16));
  if (h.level >= kMaxLevel)
    return fail(EUCLEAN, "bad tree block {}: invalid level {}, expect [0, {}]", bytenr, h.level, kMaxLevel - 1);
  if (expect.level && h.level != *expect.level)
    return fail(EUCLEAN, "bad tree block {}: level mismatch, want {} have {}", bytenr, *expect.level, h.level);
  const uint64_t rev = h.flags.get() >> kBackrefRevShift;
  if (rev != kMixedBackrefRev)
    return fail(EUCLEAN, "bad tree block {}: unsupported backref revision {}, expect {}", bytenr, rev,
                kMixedBackrefRev);
  if (expect.generation && h.generation.get() != *expect.generation)
    return fail(EUCLEAN, "parent transid verify failed on {} wanted {} found {}", bytenr, *expect.generation,
                h.generation.get());
  if (h.generation.get() > fs.super_generation + 1)
    return fail(EUCLEAN, "bad tree block {}: generation {} is newer than super generation {} + 1", bytenr,
                h.generation.get(), fs.super_generation);
  if (expect.owner) {
    const uint64_t want = *expect.owner;
    const uint64_t have = h.owner;
    const char* kind = h.level == 0 ? "leaf" : "node";
    if (is_fstree(want)) {
      if (!is_fstree(have) && have != kTreeRelocObjectid)
        return fail(EUCLEAN, "corrupt {}: root={} block={} owner mismatch, have {} expect [{}, {}]", kind, want, bytenr,
                    have, kFirstFreeObjectid, kLastFreeObjectid);
    } else if (have != want) {
      return fail(EUCLEAN, "corrupt {}: root={} block={} owner mismatch, have {} expect {}", kind, want, bytenr, have,
                  want);
    }
  }

  if (h.level == 0)
    UBTRFS_TRY_STATUS(LeafChecker(fs, block).run());
  else
    UBTRFS_TRY_STATUS(check_node_impl(fs, block));

  if (expect.first_key && h.nritems.get() > 0) {
    const Key have = load<DiskKey>(block.data() + sizeof(Header)).cpu();  // Item and KeyPtr both start with the key
    if (have != *expect.first_key)
      return fail(EUCLEAN, "tree first key mismatch detected, bytenr={} key expected={} has={}", bytenr,
                  key_tuple_str(*expect.first_key), key_tuple_str(have));
  }
  return {};
}

}  // namespace ubtrfs
