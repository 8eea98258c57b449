// The root tree read through TREE_SEARCH / INO_LOOKUP; see subvolume_tree.h.
#include "tools/ctl/subvolume_tree.h"

#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "tools/ctl/ctl.h"

namespace ubtrfs::ctl {

namespace {

template <class T>
T read_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // little-endian hosts only, as the rest of ubtrfs
  return v;
}

}  // namespace

int open_dir(const std::string& path) {
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) != 0) {
    error(fmt::format("cannot access '{}': {}", path, std::strerror(errno)));
    return -1;
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    error(fmt::format("not a directory: {}", path));
    return -1;
  }
  return open_mount(path);
}

Status search_tree(int fd, uint64_t tree_id, uint64_t min_objectid, uint8_t min_type, uint64_t min_offset,
                   uint64_t max_objectid, uint8_t max_type, uint64_t max_offset,
                   const std::function<void(uint8_t, uint64_t, uint64_t, std::span<const uint8_t>)>& fn) {
  auto a = std::make_unique<btrfs_ioctl_search_args>();
  btrfs_ioctl_search_key& sk = a->key;
  sk.tree_id = tree_id;
  sk.min_objectid = min_objectid;
  sk.min_type = min_type;
  sk.min_offset = min_offset;
  sk.max_objectid = max_objectid;
  sk.max_type = max_type;
  sk.max_offset = max_offset;
  sk.max_transid = ~0ull;
  for (;;) {
    sk.nr_items = 4096;
    if (::ioctl(fd, BTRFS_IOC_TREE_SEARCH, a.get()) < 0) return fail(errno, "tree search: {}", std::strerror(errno));
    if (sk.nr_items == 0) return {};
    size_t off = 0;
    btrfs_ioctl_search_header h{};
    for (uint32_t i = 0; i < sk.nr_items; ++i) {
      std::memcpy(&h, a->buf + off, sizeof h);
      off += sizeof h;
      fn(static_cast<uint8_t>(h.type), h.objectid, h.offset,
         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(a->buf) + off, h.len));
      off += h.len;
    }
    // The key after the last one returned (all three fields carry into the next).
    sk.min_objectid = h.objectid;
    sk.min_type = h.type;
    sk.min_offset = h.offset + 1;
    if (sk.min_offset == 0) {
      if (++sk.min_type > 0xFF) {
        sk.min_type = 0;
        if (++sk.min_objectid == 0) return {};
      }
    }
    const auto before_max = [&] {
      if (sk.min_objectid != sk.max_objectid) return sk.min_objectid < sk.max_objectid;
      if (sk.min_type != sk.max_type) return sk.min_type < sk.max_type;
      return sk.min_offset <= sk.max_offset;
    };
    if (!before_max()) return {};
  }
}

Result<std::map<uint64_t, RootInfo>> read_roots(int fd) {
  std::map<uint64_t, RootInfo> roots;
  UBTRFS_TRY_STATUS(search_tree(
      fd, BTRFS_ROOT_TREE_OBJECTID, BTRFS_FS_TREE_OBJECTID, BTRFS_ROOT_ITEM_KEY, 0, BTRFS_LAST_FREE_OBJECTID,
      BTRFS_ROOT_BACKREF_KEY, ~0ull, [&](uint8_t type, uint64_t objectid, uint64_t offset, std::span<const uint8_t> d) {
        if (type == BTRFS_ROOT_BACKREF_KEY && d.size() >= sizeof(btrfs_root_ref)) {
          RootInfo& r = roots[objectid];
          r.id = objectid;
          r.ref_tree = offset;
          r.dir_id = read_le<uint64_t>(d.data() + offsetof(btrfs_root_ref, dirid));
          const uint16_t len = read_le<uint16_t>(d.data() + offsetof(btrfs_root_ref, name_len));
          r.name.assign(reinterpret_cast<const char*>(d.data()) + sizeof(btrfs_root_ref),
                        std::min<size_t>(len, d.size() - sizeof(btrfs_root_ref)));
        } else if (type == BTRFS_ROOT_ITEM_KEY &&
                   (objectid >= BTRFS_FIRST_FREE_OBJECTID || objectid == BTRFS_FS_TREE_OBJECTID) &&
                   d.size() >= offsetof(btrfs_root_item, generation_v2)) {
          RootInfo& r = roots[objectid];
          r.id = objectid;
          r.has_item = true;
          r.root_offset = offset;
          const uint8_t* p = d.data();
          r.gen = read_le<uint64_t>(p + offsetof(btrfs_root_item, generation));
          r.flags = read_le<uint64_t>(p + offsetof(btrfs_root_item, flags));
          if (d.size() >= sizeof(btrfs_root_item)) {
            r.ogen = read_le<uint64_t>(p + offsetof(btrfs_root_item, otransid));
            r.ctransid = read_le<uint64_t>(p + offsetof(btrfs_root_item, ctransid));
            r.stransid = read_le<uint64_t>(p + offsetof(btrfs_root_item, stransid));
            r.rtransid = read_le<uint64_t>(p + offsetof(btrfs_root_item, rtransid));
            r.otime = read_le<int64_t>(p + offsetof(btrfs_root_item, otime));
            r.ctime = read_le<int64_t>(p + offsetof(btrfs_root_item, ctime));
            r.stime = read_le<int64_t>(p + offsetof(btrfs_root_item, stime));
            r.rtime = read_le<int64_t>(p + offsetof(btrfs_root_item, rtime));
            std::memcpy(r.uuid, p + offsetof(btrfs_root_item, uuid), 16);
            std::memcpy(r.puuid, p + offsetof(btrfs_root_item, parent_uuid), 16);
            std::memcpy(r.ruuid, p + offsetof(btrfs_root_item, received_uuid), 16);
          }
        }
      }));
  return roots;
}

Result<std::string> ino_lookup(int fd, uint64_t treeid, uint64_t dirid, uint64_t* treeid_out) {
  auto a = std::make_unique<btrfs_ioctl_ino_lookup_args>();
  a->treeid = treeid;
  a->objectid = dirid;
  if (::ioctl(fd, BTRFS_IOC_INO_LOOKUP, a.get()) < 0) return fail(errno, "inode lookup: {}", std::strerror(errno));
  if (treeid_out) *treeid_out = a->treeid;
  return std::string(a->name, strnlen(a->name, sizeof a->name));
}

Result<uint64_t> subvolume_id_of(int fd) {
  uint64_t id = 0;
  UBTRFS_TRY(ino_lookup(fd, 0, BTRFS_FIRST_FREE_OBJECTID, &id));
  return id;
}

Result<std::string> subvolume_path(int fd, const std::map<uint64_t, RootInfo>& roots, uint64_t id) {
  std::string path;
  for (uint64_t cur = id, steps = 0; cur != BTRFS_FS_TREE_OBJECTID; ++steps) {
    auto it = roots.find(cur);
    if (it == roots.end() || it->second.ref_tree == 0 || steps > roots.size())
      return fail(ENOENT, "subvolume {} not found", id);
    const RootInfo& r = it->second;
    const std::string dir = UBTRFS_TRY(ino_lookup(fd, r.ref_tree, r.dir_id));
    path.insert(0, dir + r.name + (path.empty() ? "" : "/"));
    cur = r.ref_tree;
  }
  return path;
}

std::string uuid_text(const uint8_t* u) {
  bool null = true;
  for (int i = 0; i < 16; ++i) null = null && u[i] == 0;
  if (null) return "-";
  std::string s;
  for (int i = 0; i < 16; ++i) s += fmt::format("{}{:02x}", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", u[i]);
  return s;
}

}  // namespace ubtrfs::ctl
