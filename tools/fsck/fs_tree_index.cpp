// FsTreeIndex construction; see fs_tree_index.h. Item bodies come from leaves that passed the tree
// checker, but every length is still checked before it is used.
#include "tools/fsck/fs_tree_index.h"

#include "tree/print_tree.h"

namespace ubtrfs::fsck {

namespace {

void parse_dir_entries(const ItemView& it, std::vector<DirEntry>& out, uint64_t& name_bytes) {
  size_t pos = 0;
  while (pos + sizeof(DirItem) <= it.body.size()) {
    const auto di = load<DirItem>(it.body.data() + pos);
    const size_t nl = di.name_len;
    const size_t dl = di.data_len;
    if (pos + sizeof(DirItem) + nl + dl > it.body.size()) break;
    DirEntry e;
    e.dir = it.key.objectid;
    e.key = it.key;
    e.name.assign(reinterpret_cast<const char*>(it.body.data() + pos + sizeof(DirItem)), nl);
    e.location = di.location.cpu();
    e.type = di.type;
    name_bytes += nl;
    out.push_back(std::move(e));
    pos += sizeof(DirItem) + nl + dl;
  }
}

}  // namespace

FsTreeIndex index_fs_tree(const Context& ctx, const TreeInfo& t) {
  FsTreeIndex idx;
  idx.tree = t.id;
  for (const auto& it : ctx.items(t)) {
    const Key& k = it.key;
    if (k.objectid == kOrphanObjectid && k.type == kOrphanItemKey) {
      idx.orphans.insert(k.offset);
      continue;
    }
    if (k.objectid < kFirstFreeObjectid || k.objectid > kLastFreeObjectid) continue;
    InodeRecord& r = idx.inodes[k.objectid];
    if (r.item_types.empty()) r.first_key = k;
    r.item_types.insert(k.type);
    switch (k.type) {
      case kInodeItemKey:
        if (it.body.size() >= sizeof(InodeItem)) r.item = load<InodeItem>(it.body.data());
        break;
      case kInodeRefKey: {
        size_t pos = 0;
        while (pos + sizeof(InodeRef) <= it.body.size()) {
          const auto ref = load<InodeRef>(it.body.data() + pos);
          const size_t nl = ref.name_len;
          if (pos + sizeof(InodeRef) + nl > it.body.size()) break;
          r.names.push_back(NameRef{
              k.offset, ref.index,
              std::string(reinterpret_cast<const char*>(it.body.data() + pos + sizeof(InodeRef)), nl), false, k});
          pos += sizeof(InodeRef) + nl;
        }
        break;
      }
      case kInodeExtrefKey: {
        size_t pos = 0;
        while (pos + sizeof(InodeExtref) <= it.body.size()) {
          const auto ref = load<InodeExtref>(it.body.data() + pos);
          const size_t nl = ref.name_len;
          if (pos + sizeof(InodeExtref) + nl > it.body.size()) break;
          r.names.push_back(NameRef{
              ref.parent_objectid, ref.index,
              std::string(reinterpret_cast<const char*>(it.body.data() + pos + sizeof(InodeExtref)), nl), true, k});
          pos += sizeof(InodeExtref) + nl;
        }
        break;
      }
      case kDirItemKey:
        parse_dir_entries(it, idx.dir_items, r.dir_name_bytes);
        break;
      case kDirIndexKey:
        parse_dir_entries(it, idx.dir_indexes, r.dir_name_bytes);
        break;
      case kExtentDataKey: {
        if (it.body.size() < kFileExtentInlineDataStart) break;
        FileExtentRef f;
        f.key = k;
        const auto* p = it.body.data();
        f.ram_bytes = load<le64>(p + offsetof(FileExtentItem, ram_bytes));
        f.compression = p[offsetof(FileExtentItem, compression)];
        f.type = p[offsetof(FileExtentItem, type)];
        if (f.type != kFileExtentInline) {
          if (it.body.size() < sizeof(FileExtentItem)) break;
          const auto fe = load<FileExtentItem>(p);
          f.disk_bytenr = fe.disk_bytenr;
          f.disk_num_bytes = fe.disk_num_bytes;
          f.offset = fe.offset;
          f.num_bytes = fe.num_bytes;
        }
        r.extents.push_back(f);
        break;
      }
      default:
        break;
    }
  }
  return idx;
}

uint8_t file_type_of_mode(uint32_t mode) {
  switch (mode & 0170000) {
    case 0100000:
      return kFtRegFile;
    case 0040000:
      return kFtDir;
    case 0020000:
      return kFtChrdev;
    case 0060000:
      return kFtBlkdev;
    case 0010000:
      return kFtFifo;
    case 0140000:
      return kFtSock;
    case 0120000:
      return kFtSymlink;
    default:
      return kFtUnknown;
  }
}

bool is_dir_mode(uint32_t mode) { return (mode & 0170000) == 0040000; }

std::string type_names(const std::set<uint8_t>& types) {
  std::string s;
  for (uint8_t t : types) s += (s.empty() ? "" : ",") + key_type_str(0, t);
  return s;
}

}  // namespace ubtrfs::fsck
