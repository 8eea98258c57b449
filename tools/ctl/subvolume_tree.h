// The root tree as ubtrfs-ctl's subvolume commands read it: through BTRFS_IOC_TREE_SEARCH and
// BTRFS_IOC_INO_LOOKUP on a descriptor of the mount, the two fixed-size ioctls btrfs-progs and
// libbtrfsutil read it with on kernel btrfs (tools/daemon/ioctl.cpp serves them). Paging follows
// the kernel's contract: the range is lexicographic on whole keys and a call returns at most as many
// items as fit the 3992-byte buffer, so the next call starts after the last key returned.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>

#include "io/status.h"

namespace ubtrfs::ctl {

// One subvolume as the root tree describes it (ROOT_ITEM and ROOT_BACKREF).
struct RootInfo {
  uint64_t id = 0;
  uint64_t root_offset = 0;  // the ROOT_ITEM key's offset: a snapshot's creation transid, else 0
  uint64_t gen = 0, ogen = 0, flags = 0;
  int64_t otime = 0;
  uint8_t uuid[16]{}, puuid[16]{}, ruuid[16]{};
  uint64_t ctransid = 0, stransid = 0, rtransid = 0;
  int64_t ctime = 0, stime = 0, rtime = 0;
  bool has_item = false;
  // ROOT_BACKREF: the subvolume holding its name (0: none, i.e. deleted or FS_TREE), the directory.
  uint64_t ref_tree = 0, dir_id = 0;
  std::string name;
};

// btrfs-progs' btrfs_open_dir: a descriptor of directory `path` on a ubtrfs mount, or -1 after
// its error ("cannot access 'P': ...", the mount check's, "not a directory: P").
int open_dir(const std::string& path);
// Calls `fn(type, objectid, offset, data)` for every item of tree `tree_id` in [min, max].
// Errors: the ioctl's errno.
[[nodiscard]] Status search_tree(int fd, uint64_t tree_id, uint64_t min_objectid, uint8_t min_type,
                                 uint64_t min_offset, uint64_t max_objectid, uint8_t max_type, uint64_t max_offset,
                                 const std::function<void(uint8_t, uint64_t, uint64_t, std::span<const uint8_t>)>& fn);
// Every subvolume with a ROOT_ITEM or a ROOT_BACKREF (FS_TREE included), by id.
[[nodiscard]] Result<std::map<uint64_t, RootInfo>> read_roots(int fd);
// INO_LOOKUP: the path of directory `dirid` inside subvolume `treeid` ("" for its root, else
// "a/b/"); treeid 0: the subvolume of fd, returned in `treeid_out` when given.
[[nodiscard]] Result<std::string> ino_lookup(int fd, uint64_t treeid, uint64_t dirid, uint64_t* treeid_out = nullptr);
// The subvolume of the descriptor (INO_LOOKUP with tree id 0), as btrfs-progs' lookup_path_rootid.
[[nodiscard]] Result<uint64_t> subvolume_id_of(int fd);
// The path of subvolume `id` from FS_TREE ("" for 5), as libbtrfsutil's btrfs_util_subvolume_path.
// Errors: ENOENT (deleted or unknown).
[[nodiscard]] Result<std::string> subvolume_path(int fd, const std::map<uint64_t, RootInfo>& roots, uint64_t id);
// "01234567-89ab-..." or "-" for the null uuid.
std::string uuid_text(const uint8_t* u);

}  // namespace ubtrfs::ctl
