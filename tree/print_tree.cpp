// Tree printer implementation; see print_tree.h for the output form and the never-fail invariant.
//
// Every body decoder first checks that the body holds the fixed part it is about to load and falls
// back to print_raw otherwise; variable parts (names, inline refs, stripes) are walked with the
// remaining length checked before each step.
#include "tree/print_tree.h"

#include <ctime>
#include <iterator>

#include <fmt/format.h>

#include "io/checksum.h"

namespace ubtrfs {

namespace {

template <class... Args>
void ap(std::string& out, fmt::format_string<Args...> f, Args&&... args) {
  fmt::format_to(std::back_inserter(out), f, std::forward<Args>(args)...);
}

void print_raw(std::string& out, std::span<const uint8_t> body) {
  for (size_t i = 0; i < body.size(); i += 16) {
    out += "\t\t";
    ap(out, "{:08x} ", i);
    for (size_t j = i; j < i + 16 && j < body.size(); ++j) ap(out, " {:02x}", body[j]);
    out += '\n';
  }
}

std::string qgroup_str(uint64_t v) { return fmt::format("{}/{}", v >> 48, v & ((1ull << 48) - 1)); }

std::string printable(const uint8_t* p, size_t n) {
  std::string s(reinterpret_cast<const char*>(p), n);
  return s;
}

std::string timespec_str(const Timespec& t) {
  const uint64_t sec = t.sec;
  std::time_t tt = static_cast<std::time_t>(sec);
  std::tm tm{};
  char buf[64] = "";
  if (localtime_r(&tt, &tm)) std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return fmt::format("{}.{} ({})", sec, t.nsec.get(), buf);
}

std::string inode_flags_str(uint64_t flags) {
  static constexpr struct {
    uint64_t bit;
    const char* name;
  } kNames[] = {{kInodeNodatasum, "NODATASUM"}, {kInodeNodatacow, "NODATACOW"}, {kInodeReadonly, "READONLY"},
                {kInodeNocompress, "NOCOMPRESS"}, {kInodePrealloc, "PREALLOC"},  {kInodeSync, "SYNC"},
                {kInodeImmutable, "IMMUTABLE"}, {kInodeAppend, "APPEND"},        {kInodeNodump, "NODUMP"},
                {kInodeNoatime, "NOATIME"},     {kInodeDirsync, "DIRSYNC"},      {kInodeCompress, "COMPRESS"},
                {kInodeRootItemInit, "ROOT_ITEM_INIT"}};
  std::string s;
  for (const auto& n : kNames)
    if (flags & n.bit) {
      if (!s.empty()) s += '|';
      s += n.name;
    }
  return s.empty() ? "none" : s;
}

void print_inode_item(std::string& out, const InodeItem& ii) {
  ap(out, "\t\tgeneration {} transid {} size {} nbytes {}\n", ii.generation.get(), ii.transid.get(), ii.size.get(),
     ii.nbytes.get());
  ap(out, "\t\tblock group {} mode {:o} links {} uid {} gid {} rdev {}\n", ii.block_group.get(), ii.mode.get(),
     ii.nlink.get(), ii.uid.get(), ii.gid.get(), ii.rdev.get());
  ap(out, "\t\tsequence {} flags 0x{:x}({})\n", ii.sequence.get(), ii.flags.get(), inode_flags_str(ii.flags));
  ap(out, "\t\tatime {}\n", timespec_str(ii.atime));
  ap(out, "\t\tctime {}\n", timespec_str(ii.ctime));
  ap(out, "\t\tmtime {}\n", timespec_str(ii.mtime));
  ap(out, "\t\totime {}\n", timespec_str(ii.otime));
}

const char* dir_type_str(uint8_t t) {
  static const char* kNames[] = {nullptr, "FILE", "DIR", "CHRDEV", "BLKDEV", "FIFO", "SOCK", "SYMLINK", "XATTR"};
  return t < std::size(kNames) ? kNames[t] : nullptr;
}

void print_dir_item(std::string& out, std::span<const uint8_t> body) {
  size_t pos = 0;
  while (pos < body.size()) {
    if (body.size() - pos < sizeof(DirItem)) {
      print_raw(out, body.subspan(pos));
      return;
    }
    const auto di = load<DirItem>(body.data() + pos);
    const char* tn = dir_type_str(di.type);
    ap(out, "\t\tlocation {} type {}\n", key_str(di.location.cpu()),
       tn ? std::string(tn) : fmt::format("DIR_ITEM.{}", di.type));
    ap(out, "\t\ttransid {} data_len {} name_len {}\n", di.transid.get(), di.data_len.get(), di.name_len.get());
    const size_t rest = body.size() - pos - sizeof(DirItem);
    const size_t nl = std::min<size_t>(di.name_len, rest);
    ap(out, "\t\tname: {}\n", printable(body.data() + pos + sizeof(DirItem), nl));
    const size_t dl = std::min<size_t>(di.data_len, rest - nl);
    if (di.data_len.get()) ap(out, "\t\tdata {}\n", printable(body.data() + pos + sizeof(DirItem) + nl, dl));
    pos += sizeof(DirItem) + nl + dl;
    if (nl < di.name_len || dl < di.data_len) return;
  }
}

void print_inode_refs(std::string& out, std::span<const uint8_t> body, bool extref) {
  size_t pos = 0;
  const size_t hdr = extref ? sizeof(InodeExtref) : sizeof(InodeRef);
  while (pos < body.size()) {
    if (body.size() - pos < hdr) {
      print_raw(out, body.subspan(pos));
      return;
    }
    uint16_t nl;
    if (extref) {
      const auto r = load<InodeExtref>(body.data() + pos);
      nl = r.name_len;
      ap(out, "\t\tindex {} parent {} namelen {} ", r.index.get(), r.parent_objectid.get(), nl);
    } else {
      const auto r = load<InodeRef>(body.data() + pos);
      nl = r.name_len;
      ap(out, "\t\tindex {} namelen {} ", r.index.get(), nl);
    }
    const size_t n = std::min<size_t>(nl, body.size() - pos - hdr);
    ap(out, "name: {}\n", printable(body.data() + pos + hdr, n));
    pos += hdr + n;
  }
}

void print_root_item(std::string& out, std::span<const uint8_t> body) {
  const RootItem ri = load_root_item(body);
  ap(out, "\t\tgeneration {} root_dirid {} bytenr {} byte_limit {} bytes_used {}\n", ri.generation.get(),
     ri.root_dirid.get(), ri.bytenr.get(), ri.byte_limit.get(), ri.bytes_used.get());
  ap(out, "\t\tlast_snapshot {} flags 0x{:x}({}) refs {}\n", ri.last_snapshot.get(), ri.flags.get(),
     (ri.flags.get() & kRootSubvolRdonly) ? "RDONLY" : "none", ri.refs.get());
  ap(out, "\t\tdrop_progress {} drop_level {}\n", key_str(ri.drop_progress.cpu()), ri.drop_level);
  ap(out, "\t\tlevel {} generation_v2 {}\n", ri.level, ri.generation_v2.get());
  if (body.size() >= sizeof(RootItem) && ri.generation.get() == ri.generation_v2.get()) {
    ap(out, "\t\tuuid {}\n", uuid_str(ri.uuid));
    ap(out, "\t\tparent_uuid {}\n", uuid_str(ri.parent_uuid));
    ap(out, "\t\treceived_uuid {}\n", uuid_str(ri.received_uuid));
    ap(out, "\t\tctransid {} otransid {} stransid {} rtransid {}\n", ri.ctransid.get(), ri.otransid.get(),
       ri.stransid.get(), ri.rtransid.get());
    ap(out, "\t\tctime {}\n", timespec_str(ri.ctime));
    ap(out, "\t\totime {}\n", timespec_str(ri.otime));
    ap(out, "\t\tstime {}\n", timespec_str(ri.stime));
    ap(out, "\t\trtime {}\n", timespec_str(ri.rtime));
  }
}

std::string extent_flags_str(uint64_t flags) {
  std::string s;
  if (flags & kExtentFlagData) s = "DATA";
  if (flags & kExtentFlagTreeBlock) s += s.empty() ? "TREE_BLOCK" : "|TREE_BLOCK";
  if (flags & kBlockFlagFullBackref) s += "|FULL_BACKREF";
  return s;
}

void print_extent_item(std::string& out, const Key& key, std::span<const uint8_t> body) {
  if (body.size() < sizeof(ExtentItem)) {
    print_raw(out, body);
    return;
  }
  const auto ei = load<ExtentItem>(body.data());
  ap(out, "\t\trefs {} gen {} flags {}\n", ei.refs.get(), ei.generation.get(), extent_flags_str(ei.flags));
  size_t pos = sizeof(ExtentItem);
  if (key.type == kMetadataItemKey) {
    ap(out, "\t\ttree block skinny level {}\n", key.offset);
  } else if (ei.flags.get() & kExtentFlagTreeBlock) {
    if (body.size() - pos < sizeof(TreeBlockInfo)) {
      print_raw(out, body.subspan(pos));
      return;
    }
    const auto info = load<TreeBlockInfo>(body.data() + pos);
    ap(out, "\t\ttree block {} level {}\n", key_str(info.key.cpu()), info.level);
    pos += sizeof(TreeBlockInfo);
  }
  while (pos < body.size()) {
    const uint8_t type = body[pos];
    const size_t sz = extent_inline_ref_size(type);
    if (sz == 0 || sz > body.size() - pos) {
      print_raw(out, body.subspan(pos));
      return;
    }
    const uint8_t* p = body.data() + pos + 1;
    switch (type) {
      case kTreeBlockRefKey:
        ap(out, "\t\ttree block backref root {}\n", objectid_str(load<le64>(p), 0));
        break;
      case kSharedBlockRefKey:
        ap(out, "\t\tshared block backref parent {}\n", load<le64>(p).get());
        break;
      case kExtentOwnerRefKey:
        ap(out, "\t\textent owner root {}\n", load<le64>(p).get());
        break;
      case kExtentDataRefKey: {
        const auto d = load<ExtentDataRef>(p);
        ap(out, "\t\textent data backref root {} objectid {} offset {} count {}\n", objectid_str(d.root, 0),
           d.objectid.get(), d.offset.get(), d.count.get());
        break;
      }
      case kSharedDataRefKey:
        ap(out, "\t\tshared data backref parent {} count {}\n", load<le64>(p).get(), load<le32>(p + 8).get());
        break;
    }
    pos += sz;
  }
}

const char* compress_str(uint8_t c) {
  switch (c) {
    case kCompressNone: return "none";
    case kCompressZlib: return "zlib";
    case kCompressLzo: return "lzo";
    case kCompressZstd: return "zstd";
    default: return nullptr;
  }
}

void print_file_extent(std::string& out, std::span<const uint8_t> body) {
  if (body.size() < kFileExtentInlineDataStart) {
    print_raw(out, body);
    return;
  }
  FileExtentItem fi{};
  std::memcpy(&fi, body.data(), std::min(body.size(), sizeof(FileExtentItem)));
  const char* ts = fi.type == kFileExtentInline ? "inline"
                   : fi.type == kFileExtentReg  ? "regular"
                   : fi.type == kFileExtentPrealloc ? "prealloc"
                                                    : "unknown";
  const char* cn = compress_str(fi.compression);
  const std::string cs = cn ? std::string(cn) : fmt::format("UNKNOWN.{}", fi.compression);
  ap(out, "\t\tgeneration {} type {} ({})\n", fi.generation.get(), fi.type, ts);
  if (fi.type == kFileExtentInline) {
    ap(out, "\t\tinline extent data size {} ram_bytes {} compression {} ({})\n",
       body.size() - kFileExtentInlineDataStart, fi.ram_bytes.get(), fi.compression, cs);
    return;
  }
  if (body.size() < sizeof(FileExtentItem)) {
    print_raw(out, body.subspan(kFileExtentInlineDataStart));
    return;
  }
  if (fi.type == kFileExtentPrealloc) {
    ap(out, "\t\tprealloc data disk byte {} nr {}\n", fi.disk_bytenr.get(), fi.disk_num_bytes.get());
    ap(out, "\t\tprealloc data offset {} nr {}\n", fi.offset.get(), fi.num_bytes.get());
    return;
  }
  ap(out, "\t\textent data disk byte {} nr {}\n", fi.disk_bytenr.get(), fi.disk_num_bytes.get());
  ap(out, "\t\textent data offset {} nr {} ram {}\n", fi.offset.get(), fi.num_bytes.get(), fi.ram_bytes.get());
  ap(out, "\t\textent compression {} ({})\n", fi.compression, cs);
}

void print_dev_item(std::string& out, const DevItem& d) {
  ap(out, "\t\tdevid {} total_bytes {} bytes_used {}\n", d.devid.get(), d.total_bytes.get(), d.bytes_used.get());
  ap(out, "\t\tio_align {} io_width {} sector_size {} type {}\n", d.io_align.get(), d.io_width.get(),
     d.sector_size.get(), d.type.get());
  ap(out, "\t\tgeneration {} start_offset {} dev_group {}\n", d.generation.get(), d.start_offset.get(),
     d.dev_group.get());
  ap(out, "\t\tseek_speed {} bandwidth {}\n", d.seek_speed, d.bandwidth);
  ap(out, "\t\tuuid {}\n", uuid_str(d.uuid));
  ap(out, "\t\tfsid {}\n", uuid_str(d.fsid));
}

template <class T>
bool fits(std::string& out, std::span<const uint8_t> body) {
  if (body.size() >= sizeof(T)) return true;
  print_raw(out, body);
  return false;
}

}  // namespace

std::string objectid_str(uint64_t objectid, uint8_t type) {
  switch (type) {
    case kPersistentItemKey:
      return objectid == kDevStatsObjectid ? "DEV_STATS" : std::to_string(objectid);
    case kDevExtentKey:
      return std::to_string(objectid);
    case kQgroupRelationKey:
      return qgroup_str(objectid);
    case kUuidKeySubvol:
    case kUuidKeyReceivedSubvol:
      return fmt::format("0x{:016x}", objectid);
  }
  switch (objectid) {
    case kRootTreeObjectid: return type == kDevItemKey ? "DEV_ITEMS" : "ROOT_TREE";
    case kExtentTreeObjectid: return "EXTENT_TREE";
    case kChunkTreeObjectid: return "CHUNK_TREE";
    case kDevTreeObjectid: return "DEV_TREE";
    case kFsTreeObjectid: return "FS_TREE";
    case kRootTreeDirObjectid: return "ROOT_TREE_DIR";
    case kCsumTreeObjectid: return "CSUM_TREE";
    case kBalanceObjectid: return "BALANCE";
    case kOrphanObjectid: return "ORPHAN";
    case kTreeLogObjectid: return "TREE_LOG";
    case kTreeLogFixupObjectid: return "LOG_FIXUP";
    case kTreeRelocObjectid: return "TREE_RELOC";
    case kDataRelocTreeObjectid: return "DATA_RELOC_TREE";
    case kExtentCsumObjectid: return "EXTENT_CSUM";
    case kFreeSpaceObjectid: return "FREE_SPACE";
    case kFreeInoObjectid: return "FREE_INO";
    case kQuotaTreeObjectid: return "QUOTA_TREE";
    case kUuidTreeObjectid: return "UUID_TREE";
    case kFreeSpaceTreeObjectid: return "FREE_SPACE_TREE";
    case kMultipleObjectid: return "MULTIPLE";
    case kBlockGroupTreeObjectid: return "BLOCK_GROUP_TREE";
    case ~0ull: return "-1";
    case kFirstChunkTreeObjectid:
      if (type == kChunkItemKey) return "FIRST_CHUNK_TREE";
      [[fallthrough]];
    default:
      return std::to_string(objectid);
  }
}

std::string key_type_str(uint64_t objectid, uint8_t type) {
  if (type == 0 && objectid == kFreeSpaceObjectid) return "UNTYPED";
  switch (type) {
    case kInodeItemKey: return "INODE_ITEM";
    case kInodeRefKey: return "INODE_REF";
    case kInodeExtrefKey: return "INODE_EXTREF";
    case kDirItemKey: return "DIR_ITEM";
    case kDirIndexKey: return "DIR_INDEX";
    case kDirLogItemKey: return "DIR_LOG_ITEM";
    case kDirLogIndexKey: return "DIR_LOG_INDEX";
    case kXattrItemKey: return "XATTR_ITEM";
    case kVerityDescItemKey: return "VERITY_DESC_ITEM";
    case kVerityMerkleItemKey: return "VERITY_MERKLE_ITEM";
    case kOrphanItemKey: return "ORPHAN_ITEM";
    case kRootItemKey: return "ROOT_ITEM";
    case kRootRefKey: return "ROOT_REF";
    case kRootBackrefKey: return "ROOT_BACKREF";
    case kExtentItemKey: return "EXTENT_ITEM";
    case kMetadataItemKey: return "METADATA_ITEM";
    case kTreeBlockRefKey: return "TREE_BLOCK_REF";
    case kSharedBlockRefKey: return "SHARED_BLOCK_REF";
    case kExtentDataRefKey: return "EXTENT_DATA_REF";
    case kSharedDataRefKey: return "SHARED_DATA_REF";
    case 180: return "EXTENT_REF_V0";
    case 120: return "CSUM_ITEM";
    case kExtentCsumKey: return "EXTENT_CSUM";
    case kExtentDataKey: return "EXTENT_DATA";
    case kBlockGroupItemKey: return "BLOCK_GROUP_ITEM";
    case kFreeSpaceInfoKey: return "FREE_SPACE_INFO";
    case kFreeSpaceExtentKey: return "FREE_SPACE_EXTENT";
    case kFreeSpaceBitmapKey: return "FREE_SPACE_BITMAP";
    case kChunkItemKey: return "CHUNK_ITEM";
    case kDevItemKey: return "DEV_ITEM";
    case kDevExtentKey: return "DEV_EXTENT";
    case kTemporaryItemKey: return "TEMPORARY_ITEM";
    case kDevReplaceKey: return "DEV_REPLACE";
    case kStringItemKey: return "STRING_ITEM";
    case kQgroupStatusKey: return "QGROUP_STATUS";
    case kQgroupRelationKey: return "QGROUP_RELATION";
    case kQgroupInfoKey: return "QGROUP_INFO";
    case kQgroupLimitKey: return "QGROUP_LIMIT";
    case kPersistentItemKey: return "PERSISTENT_ITEM";
    case kUuidKeySubvol: return "UUID_KEY_SUBVOL";
    case kUuidKeyReceivedSubvol: return "UUID_KEY_RECEIVED_SUBVOL";
    default: return fmt::format("UNKNOWN.{}", type);
  }
}

std::string key_tuple_str(const Key& k) { return fmt::format("({} {} {})", k.objectid, k.type, k.offset); }

std::string key_str(const Key& k) {
  std::string s = "key (" + objectid_str(k.objectid, k.type) + " " + key_type_str(k.objectid, k.type) + " ";
  switch (k.type) {
    case kQgroupRelationKey:
    case kQgroupInfoKey:
    case kQgroupLimitKey:
      s += qgroup_str(k.offset);
      break;
    case kUuidKeySubvol:
    case kUuidKeyReceivedSubvol:
      s += fmt::format("0x{:016x}", k.offset);
      break;
    case kRootItemKey:
      s += k.objectid == kTreeRelocObjectid ? objectid_str(k.offset, k.type) : std::to_string(k.offset);
      break;
    default:
      s += k.offset == ~0ull ? std::string("-1") : std::to_string(k.offset);
  }
  return s + ")";
}

std::string uuid_str(const uint8_t* u) {
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                     u[15]);
}

std::string bg_flags_str(uint64_t flags) {
  std::string s;
  auto add = [&](const char* n) {
    if (!s.empty()) s += '|';
    s += n;
  };
  if (flags & kBlockGroupData) add("DATA");
  if (flags & kBlockGroupMetadata) add("METADATA");
  if (flags & kBlockGroupSystem) add("SYSTEM");
  const uint64_t profile = flags & kBlockGroupProfileMask;
  static constexpr struct {
    uint64_t bit;
    const char* name;
  } kProfiles[] = {{kBlockGroupRaid0, "RAID0"},     {kBlockGroupRaid1, "RAID1"},     {kBlockGroupDup, "DUP"},
                   {kBlockGroupRaid10, "RAID10"},   {kBlockGroupRaid5, "RAID5"},     {kBlockGroupRaid6, "RAID6"},
                   {kBlockGroupRaid1c3, "RAID1C3"}, {kBlockGroupRaid1c4, "RAID1C4"}};
  if (profile) {
    const char* name = nullptr;
    for (const auto& p : kProfiles)
      if (profile == p.bit) name = p.name;
    add(name ? name : fmt::format("UNKNOWN.0x{:x}", profile).c_str());
  } else {
    add("single");  // btrfs-progs 6.2 spells the bit-less profile out
  }
  return s;
}

void print_chunk_item(std::string& out, std::span<const uint8_t> body) {
  if (body.size() < sizeof(ChunkItem)) {
    print_raw(out, body);
    return;
  }
  const auto c = load<ChunkItem>(body.data());
  ap(out, "\t\tlength {} owner {} stripe_len {} type {}\n", c.length.get(), c.owner.get(), c.stripe_len.get(),
     bg_flags_str(c.type));
  ap(out, "\t\tio_align {} io_width {} sector_size {}\n", c.io_align.get(), c.io_width.get(), c.sector_size.get());
  ap(out, "\t\tnum_stripes {} sub_stripes {}\n", c.num_stripes.get(), c.sub_stripes.get());
  for (uint32_t i = 0; i < c.num_stripes.get(); ++i) {
    const size_t off = sizeof(ChunkItem) + static_cast<size_t>(i) * sizeof(Stripe);
    if (off + sizeof(Stripe) > body.size()) {
      ap(out, "\t\t\tstripe {} invalid\n", i);
      break;
    }
    const auto s = load<Stripe>(body.data() + off);
    ap(out, "\t\t\tstripe {} devid {} offset {}\n", i, s.devid.get(), s.offset.get());
    ap(out, "\t\t\tdev_uuid {}\n", uuid_str(s.dev_uuid));
  }
}

void print_item_body(std::string& out, const FsParams& fs, const Key& key, std::span<const uint8_t> body) {
  switch (key.type) {
    case kInodeItemKey:
      if (fits<InodeItem>(out, body)) print_inode_item(out, load<InodeItem>(body.data()));
      return;
    case kInodeRefKey:
      return print_inode_refs(out, body, false);
    case kInodeExtrefKey:
      return print_inode_refs(out, body, true);
    case kDirItemKey:
    case kDirIndexKey:
    case kXattrItemKey:
      return print_dir_item(out, body);
    case kDirLogItemKey:
    case kDirLogIndexKey:
      if (fits<le64>(out, body)) ap(out, "\t\tdir log end {}\n", load<le64>(body.data()).get());
      return;
    case kOrphanItemKey:
      out += "\t\torphan item\n";
      return;
    case kRootItemKey:
      if (body.size() >= kRootItemLegacySize) print_root_item(out, body);
      else print_raw(out, body);
      return;
    case kRootRefKey:
    case kRootBackrefKey: {
      if (!fits<RootRef>(out, body)) return;
      const auto r = load<RootRef>(body.data());
      const size_t n = std::min<size_t>(r.name_len, body.size() - sizeof(RootRef));
      ap(out, "\t\troot {} key dirid {} sequence {} name {}\n", key.type == kRootRefKey ? "ref" : "backref",
         r.dirid.get(), r.sequence.get(), printable(body.data() + sizeof(RootRef), n));
      return;
    }
    case kExtentItemKey:
    case kMetadataItemKey:
      return print_extent_item(out, key, body);
    case kTreeBlockRefKey:
      out += "\t\ttree block backref\n";
      return;
    case kSharedBlockRefKey:
      out += "\t\tshared block backref\n";
      return;
    case kExtentDataRefKey:
      for (size_t pos = 0; pos + sizeof(ExtentDataRef) <= body.size(); pos += sizeof(ExtentDataRef)) {
        const auto d = load<ExtentDataRef>(body.data() + pos);
        ap(out, "\t\textent data backref root {} objectid {} offset {} count {}\n", objectid_str(d.root, 0),
           d.objectid.get(), d.offset.get(), d.count.get());
      }
      return;
    case kSharedDataRefKey:
      if (fits<SharedDataRef>(out, body)) ap(out, "\t\tshared data backref count {}\n", load<le32>(body.data()).get());
      return;
    case kExtentCsumKey: {
      const size_t cs = fs.csum_size();
      const uint64_t len = cs ? body.size() / cs * fs.sectorsize : 0;
      ap(out, "\t\trange start {} end {} length {}\n", key.offset, key.offset + len, len);
      return;
    }
    case kExtentDataKey:
      return print_file_extent(out, body);
    case kBlockGroupItemKey:
      if (fits<BlockGroupItem>(out, body)) {
        const auto bg = load<BlockGroupItem>(body.data());
        ap(out, "\t\tblock group used {} chunk_objectid {} flags {}\n", bg.used.get(), bg.chunk_objectid.get(),
           bg_flags_str(bg.flags));
      }
      return;
    case kFreeSpaceInfoKey:
      if (fits<FreeSpaceInfo>(out, body)) {
        const auto fi = load<FreeSpaceInfo>(body.data());
        ap(out, "\t\tfree space info extent count {} flags {}\n", fi.extent_count.get(), fi.flags.get());
      }
      return;
    case kFreeSpaceExtentKey:
      out += "\t\tfree space extent\n";
      return;
    case kFreeSpaceBitmapKey:
      out += "\t\tfree space bitmap\n";
      return;
    case kChunkItemKey:
      return print_chunk_item(out, body);
    case kDevItemKey:
      if (fits<DevItem>(out, body)) print_dev_item(out, load<DevItem>(body.data()));
      return;
    case kDevExtentKey:
      if (fits<DevExtent>(out, body)) {
        const auto de = load<DevExtent>(body.data());
        ap(out, "\t\tdev extent chunk_tree {}\n", de.chunk_tree.get());
        ap(out, "\t\tchunk_objectid {} chunk_offset {} length {}\n", de.chunk_objectid.get(), de.chunk_offset.get(),
           de.length.get());
        ap(out, "\t\tchunk_tree_uuid {}\n", uuid_str(de.chunk_tree_uuid));
      }
      return;
    case kPersistentItemKey:
      ap(out, "\t\tpersistent item objectid {} offset {}\n", objectid_str(key.objectid, key.type), key.offset);
      if (key.objectid == kDevStatsObjectid && body.size() >= sizeof(DevStatsItem)) {
        const auto s = load<DevStatsItem>(body.data());
        out += "\t\tdevice stats\n";
        ap(out, "\t\twrite_errs {} read_errs {} flush_errs {} corruption_errs {} generation {}\n",
           s.values[0].get(), s.values[1].get(), s.values[2].get(), s.values[3].get(), s.values[4].get());
        if (body.size() > sizeof(DevStatsItem)) print_raw(out, body.subspan(sizeof(DevStatsItem)));
      } else {
        print_raw(out, body);
      }
      return;
    case kTemporaryItemKey:
      ap(out, "\t\ttemporary item objectid {} offset {}\n", objectid_str(key.objectid, key.type), key.offset);
      print_raw(out, body);
      return;
    case kQgroupStatusKey:
      if (body.size() >= 32) {
        const uint64_t flags = load<le64>(body.data() + 16);
        std::string fs_str = (flags & 1) ? "ON" : "OFF";
        if (flags & 2) fs_str += "|SCANNING";
        if (flags & 4) fs_str += "|INCONSISTENT";
        ap(out, "\t\tversion {} generation {} flags {} scan {}\n", load<le64>(body.data()).get(),
           load<le64>(body.data() + 8).get(), fs_str, load<le64>(body.data() + 24).get());
      } else {
        print_raw(out, body);
      }
      return;
    case kQgroupInfoKey:
      if (body.size() >= 40) {
        auto v = [&](int i) { return load<le64>(body.data() + 8 * i).get(); };
        ap(out, "\t\tgeneration {}\n\t\treferenced {} referenced_compressed {}\n", v(0), v(1), v(2));
        ap(out, "\t\texclusive {} exclusive_compressed {}\n", v(3), v(4));
      } else {
        print_raw(out, body);
      }
      return;
    case kQgroupLimitKey:
      if (body.size() >= 40) {
        auto v = [&](int i) { return static_cast<int64_t>(load<le64>(body.data() + 8 * i).get()); };
        ap(out, "\t\tflags {:x}\n\t\tmax_referenced {} max_exclusive {}\n", static_cast<uint64_t>(v(0)), v(1), v(2));
        ap(out, "\t\trsv_referenced {} rsv_exclusive {}\n", v(3), v(4));
      } else {
        print_raw(out, body);
      }
      return;
    case kQgroupRelationKey:
      return;
    case kUuidKeySubvol:
    case kUuidKeyReceivedSubvol:
      if (body.size() % 8) {
        ap(out, "\t\tuuid item with illegal size {}\n", body.size());
        return;
      }
      for (size_t pos = 0; pos < body.size(); pos += 8) ap(out, "\t\tsubvol_id {}\n", load<le64>(body.data() + pos).get());
      return;
    case kStringItemKey:
      ap(out, "\t\titem data {}\n", printable(body.data(), body.size()));
      return;
    default:
      print_raw(out, body);
  }
}

void print_tree_block(std::string& out, const FsParams& fs, std::span<const uint8_t> block) {
  if (block.size() < sizeof(Header)) {
    ap(out, "tree block too small ({} bytes)\n", block.size());
    return;
  }
  const auto h = load<Header>(block.data());
  const uint32_t n = h.nritems;
  const uint64_t flags = h.flags.get() & ((1ull << kBackrefRevShift) - 1);
  const uint64_t rev = h.flags.get() >> kBackrefRevShift;
  std::string fl;
  if (flags & kHeaderFlagWritten) fl = "WRITTEN";
  if (flags & kHeaderFlagReloc) fl += fl.empty() ? "RELOC" : "|RELOC";
  const uint32_t size = static_cast<uint32_t>(block.size());
  if (h.level) {
    const uint32_t max = nodeptrs_per_block(size);
    ap(out, "node {} level {} items {} free space {} generation {} owner {}\n", h.bytenr.get(), h.level, n,
       n <= max ? max - n : 0, h.generation.get(), objectid_str(h.owner, 0));
  } else {
    int64_t used = static_cast<int64_t>(n) * sizeof(Item);
    for (uint32_t i = 0; i < n; ++i) {
      const size_t off = sizeof(Header) + static_cast<size_t>(i) * sizeof(Item);
      if (off + sizeof(Item) > block.size()) break;
      used += load<Item>(block.data() + off).size.get();
    }
    ap(out, "leaf {} items {} free space {} generation {} owner {}\n", h.bytenr.get(), n,
       static_cast<int64_t>(leaf_data_size(size)) - used, h.generation.get(), objectid_str(h.owner, 0));
  }
  ap(out, "{} {} flags 0x{:x}({}) backref revision {}\n", h.level ? "node" : "leaf", h.bytenr.get(), flags, fl, rev);
  ap(out, "fs uuid {}\nchunk uuid {}\n", uuid_str(h.fsid), uuid_str(h.chunk_tree_uuid));

  if (h.level) {
    for (uint32_t i = 0; i < n; ++i) {
      const size_t off = sizeof(Header) + static_cast<size_t>(i) * sizeof(KeyPtr);
      if (off + sizeof(KeyPtr) > block.size()) {
        ap(out, "\tkey pointer {} lies outside the block\n", i);
        break;
      }
      const auto kp = load<KeyPtr>(block.data() + off);
      ap(out, "\t{} block {} gen {}\n", key_str(kp.key.cpu()), kp.blockptr.get(), kp.generation.get());
    }
    return;
  }
  for (uint32_t i = 0; i < n; ++i) {
    const size_t off = sizeof(Header) + static_cast<size_t>(i) * sizeof(Item);
    if (off + sizeof(Item) > block.size()) {
      ap(out, "\titem {} lies outside the block\n", i);
      break;
    }
    const auto it = load<Item>(block.data() + off);
    const Key k = it.key.cpu();
    ap(out, "\titem {} {} itemoff {} itemsize {}\n", i, key_str(k), it.offset.get(), it.size.get());
    const uint64_t start = sizeof(Header) + static_cast<uint64_t>(it.offset.get());
    if (start > block.size() || it.size.get() > block.size() - start) {
      out += "\t\titem data lies outside the block\n";
      continue;
    }
    print_item_body(out, fs, k, block.subspan(start, it.size.get()));
  }
}

}  // namespace ubtrfs
