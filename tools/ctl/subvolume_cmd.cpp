// ubtrfs-ctl subvolume ... (btrfs-progs cmds/subvolume.c): the same arguments, messages and exit
// codes, through the btrfs ioctls the daemon serves (tools/daemon/ioctl.cpp) on a directory of the
// ubtrfs mount — the same calls btrfs-progs makes on kernel btrfs once past its statfs check.
//
// create DST: BTRFS_IOC_SUBVOL_CREATE on the directory holding DST, named by DST's last component
// (trailing slashes dropped: "a/" creates "./a", as btrfs-progs' basename/dirname split does).
// get-default: the root tree's "default" DIR_ITEM (TREE_SEARCH), then that subvolume's line as
// `list` prints it. set-default [ID] PATH: BTRFS_IOC_DEFAULT_SUBVOL with ID, or with PATH's
// subvolume when PATH is a subvolume's root directory (SUBVOL_GETFLAGS answers EINVAL elsewhere:
// btrfs-progs asks st_ino == 256, which FUSE inode numbers are not). show: the ROOT_ITEM and back
// reference of PATH's subvolume (or -r ID), in libbtrfsutil's words. delete [-c|-C] PATH...:
// BTRFS_IOC_SNAP_DESTROY on each PATH's parent (a failing PATH makes the exit code 1 and the next
// is still tried, as in btrfs-progs); the default subvolume is refused before the ioctl; -C commits
// after each, -c once at the end (START_SYNC + WAIT_SYNC, SYNC). -i ID PATH: SNAP_DESTROY_V2 by id.
// snapshot [-r] SRC DST: BTRFS_IOC_SNAP_CREATE_V2 on DST's directory (DST itself when it is one,
// the snapshot then named after SRC) with a descriptor of SRC, which the daemon takes from this
// process (tools/daemon/caller_fd.h).
// property get|set PATH ro [true|false]: SUBVOL_GETFLAGS / SETFLAGS, btrfs property's words.
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "tools/ctl/ctl.h"
#include "tools/ctl/subvolume_tree.h"

namespace ubtrfs::ctl {

namespace {

// DST split as btrfs-progs splits it (dirname / basename of the path without trailing slashes).
struct SplitPath {
  std::string dir, name;
};
SplitPath split_path(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return {".", p};
  if (slash == 0) return {"/", p.substr(1)};
  return {p.substr(0, slash), p.substr(slash + 1)};
}

// btrfs-progs' test_issubvolname: not empty, no '/', not "." or "..".
bool is_subvol_name(const std::string& n) { return !n.empty() && n.find('/') == std::string::npos && n != "." && n != ".."; }

}  // namespace

int subvolume_create(const std::string& dst) {
  // btrfs-progs' order: an existing DST first ("d/.." exists), then the name's validity.
  struct stat st;
  if (::stat(dst.c_str(), &st) == 0) return error(fmt::format("target path already exists: {}", dst));
  if (errno != ENOENT) return error(fmt::format("cannot access {}: {}", dst, std::strerror(errno)));
  const SplitPath sp = split_path(dst);
  if (!is_subvol_name(sp.name)) return error(fmt::format("invalid subvolume name: {}", sp.name));
  if (sp.name.size() > BTRFS_VOL_NAME_MAX) return error(fmt::format("subvolume name too long: {}", sp.name));
  struct stat dst_st;
  if (::stat(sp.dir.c_str(), &dst_st) != 0)
    return error(fmt::format("cannot access '{}': {}", sp.dir, std::strerror(errno)));
  if (!S_ISDIR(dst_st.st_mode)) return error(fmt::format("'{}' is not a directory", sp.dir));
  const int fd = open_mount(sp.dir);
  if (fd < 0) return kExitFail;
  std::printf("Create subvolume '%s/%s'\n", sp.dir.c_str(), sp.name.c_str());
  btrfs_ioctl_vol_args args{};
  std::memcpy(args.name, sp.name.data(), sp.name.size());
  const int rc = ::ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, &args);
  const int err = errno;
  ::close(fd);
  if (rc < 0) return error(fmt::format("cannot create subvolume: {}", std::strerror(err)));
  return kExitOk;
}

namespace {

// An open descriptor of `path` on a ubtrfs mount, closed on scope exit (-1 after the error).
struct MountFd {
  explicit MountFd(const std::string& path) : fd(open_dir(path)) {}
  ~MountFd() {
    if (fd >= 0) ::close(fd);
  }
  int fd;
};

// libbtrfsutil's btrfs_util_is_subvolume_fd: the root directory of a subvolume.
bool is_subvolume_root(int fd) {
  uint64_t flags = 0;
  return ::ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) == 0;
}

// The "default" DIR_ITEM of the root tree's directory 6 (btrfs_util_get_default_subvolume_fd).
Result<uint64_t> default_subvolume(int fd) {
  std::optional<uint64_t> id;
  UBTRFS_TRY_STATUS(search_tree(fd, BTRFS_ROOT_TREE_OBJECTID, BTRFS_ROOT_TREE_DIR_OBJECTID, BTRFS_DIR_ITEM_KEY, 0,
                                BTRFS_ROOT_TREE_DIR_OBJECTID, BTRFS_DIR_ITEM_KEY, ~0ull,
                                [&](uint8_t type, uint64_t, uint64_t, std::span<const uint8_t> d) {
                                  if (id || type != BTRFS_DIR_ITEM_KEY || d.size() < sizeof(btrfs_dir_item)) return;
                                  btrfs_dir_item di;
                                  std::memcpy(&di, d.data(), sizeof di);
                                  const std::string_view name(reinterpret_cast<const char*>(d.data()) + sizeof di,
                                                              std::min<size_t>(static_cast<uint16_t>(di.name_len), d.size() - sizeof di));
                                  if (name == "default") id = static_cast<uint64_t>(di.location.objectid);
                                }));
  if (!id) return fail(ENOENT, "no default subvolume item");
  return *id;
}

std::string time_text(int64_t sec) {
  if (!sec) return "-";
  const time_t t = sec;
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[128];
  strftime(buf, sizeof buf, "%Y-%m-%d %X %z", &tm);
  return buf;
}

}  // namespace

int subvolume_get_default(const std::string& path) {
  MountFd m(path);
  if (m.fd < 0) return kExitFail;
  auto id = default_subvolume(m.fd);
  if (!id) return error(fmt::format("Could not search B-tree: {}", std::strerror(id.error().err)));
  if (*id == BTRFS_FS_TREE_OBJECTID) {
    std::printf("ID 5 (FS_TREE)\n");
    return kExitOk;
  }
  auto roots = read_roots(m.fd);
  if (!roots) return error(fmt::format("Could not search B-tree: {}", std::strerror(roots.error().err)));
  auto it = roots->find(*id);
  if (it == roots->end() || !it->second.has_item) return error("Subvolume not found: No such file or directory");
  auto p = subvolume_path(m.fd, *roots, *id);
  if (!p) return error(fmt::format("Subvolume not found: {}", std::strerror(p.error().err)));
  std::printf("ID %llu gen %llu top level %llu path %s\n", static_cast<unsigned long long>(*id),
              static_cast<unsigned long long>(it->second.gen), static_cast<unsigned long long>(it->second.ref_tree),
              p->c_str());
  return kExitOk;
}

int subvolume_set_default(const std::string* id_arg, const std::string& path) {
  uint64_t id = 0;
  if (id_arg) {
    char* end = nullptr;
    errno = 0;
    id = std::strtoull(id_arg->c_str(), &end, 10);
    if (errno || end == id_arg->c_str() || *end) return error(fmt::format("invalid numeric value: {}", *id_arg));
    if (id == 0) id = BTRFS_FS_TREE_OBJECTID;  // btrfs-progs sets the toplevel explicitly
  }
  MountFd m(path);
  if (m.fd < 0) return kExitFail;
  if (!id_arg) {
    if (!is_subvolume_root(m.fd)) return error("Not a Btrfs subvolume: Invalid argument");
    auto sid = subvolume_id_of(m.fd);
    if (!sid) return error(fmt::format("Could not lookup inode: {}", std::strerror(sid.error().err)));
    id = *sid;
  }
  if (::ioctl(m.fd, BTRFS_IOC_DEFAULT_SUBVOL, &id) < 0)
    return error(fmt::format("Could not set default subvolume: {}", std::strerror(errno)));
  return kExitOk;
}

int subvolume_show(const std::string& path, const std::string* rootid_arg) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) return error(fmt::format("cannot find real path for '{}': {}", path, std::strerror(errno)));
  const std::string full = real;
  std::free(real);
  MountFd m(full);
  if (m.fd < 0) return error(fmt::format("can't access '{}'", full));
  uint64_t id = 0;
  if (rootid_arg) {
    id = std::strtoull(rootid_arg->c_str(), nullptr, 10);
    if ((id < BTRFS_FIRST_FREE_OBJECTID && id != BTRFS_FS_TREE_OBJECTID) || id > BTRFS_LAST_FREE_OBJECTID)
      return error("Subvolume not found: No such file or directory");
  } else {
    if (!is_subvolume_root(m.fd)) return error("Not a Btrfs subvolume: Invalid argument");
    auto sid = subvolume_id_of(m.fd);
    if (!sid) return error(fmt::format("Could not lookup inode: {}", std::strerror(sid.error().err)));
    id = *sid;
  }
  auto roots = read_roots(m.fd);
  if (!roots) return error(fmt::format("Could not search B-tree: {}", std::strerror(roots.error().err)));
  auto it = roots->find(id);
  if (it == roots->end() || !it->second.has_item) return error("Subvolume not found: No such file or directory");
  const RootInfo& r = it->second;
  std::string spath;
  if (id != BTRFS_FS_TREE_OBJECTID) {
    auto p = subvolume_path(m.fd, *roots, id);
    if (!p) return error(fmt::format("Subvolume not found: {}", std::strerror(p.error().err)));
    spath = *p;
  }
  const std::string created = time_text(r.otime);
  std::string out;
  out += fmt::format("{}\n", id == BTRFS_FS_TREE_OBJECTID ? "/" : spath);
  out += fmt::format("\tName: \t\t\t{}\n",
                     id == BTRFS_FS_TREE_OBJECTID ? "<FS_TREE>" : spath.substr(spath.rfind('/') + 1));
  out += fmt::format("\tUUID: \t\t\t{}\n", uuid_text(r.uuid));
  out += fmt::format("\tParent UUID: \t\t{}\n", uuid_text(r.puuid));
  out += fmt::format("\tReceived UUID: \t\t{}\n", uuid_text(r.ruuid));
  out += fmt::format("\tCreation time: \t\t{}\n", created);
  out += fmt::format("\tSubvolume ID: \t\t{}\n", id);
  out += fmt::format("\tGeneration: \t\t{}\n", r.gen);
  out += fmt::format("\tGen at creation: \t{}\n", r.ogen);
  out += fmt::format("\tParent ID: \t\t{}\n", r.ref_tree);
  out += fmt::format("\tTop level ID: \t\t{}\n", r.ref_tree);
  out += fmt::format("\tFlags: \t\t\t{}\n", (r.flags & BTRFS_ROOT_SUBVOL_RDONLY) ? "readonly" : "-");
  out += fmt::format("\tSend transid: \t\t{}\n", r.stransid);
  // btrfs-progs 6.2 prints the creation time here (its time buffer is filled for the send time
  // only after the line); kept, so that scripts parsing the output see the same.
  out += fmt::format("\tSend time: \t\t{}\n", created);
  out += fmt::format("\tReceive transid: \t{}\n", r.rtransid);
  out += fmt::format("\tReceive time: \t\t{}\n", time_text(r.rtime));
  out += "\tSnapshot(s):\n";
  for (const auto& [oid, o] : *roots) {
    if (!o.has_item || oid == id || std::memcmp(o.puuid, r.uuid, 16) != 0) continue;
    auto p = subvolume_path(m.fd, *roots, oid);
    if (p) out += fmt::format("\t\t\t\t{}\n", *p);
  }
  std::fputs(out.c_str(), stdout);
  return kExitOk;
}

namespace {

int warning(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "WARNING: %s\n", message.c_str());
  return kExitFail;
}

// btrfs-progs' wait_for_commit: START_SYNC, then WAIT_SYNC of the transaction it named.
bool wait_for_commit(int fd) {
  uint64_t transid = 0;
  if (::ioctl(fd, BTRFS_IOC_START_SYNC, &transid) < 0) return false;
  return ::ioctl(fd, BTRFS_IOC_WAIT_SYNC, &transid) == 0;
}

}  // namespace

int subvolume_delete(const SubvolumeDeleteArgs& a) {
  int ret = kExitOk;
  int last_fd = -1;
  if (a.subvolid && a.paths.size() != 1) {
    std::fprintf(stderr, "btrfs subvolume delete: exactly 1 argument expected, %zu given\n", a.paths.size());
    return kExitFail;
  }
  for (size_t i = 0; i < a.paths.size(); ++i) {
    const std::string& path = a.paths[i];
    const bool commit_now = a.commit_each || (a.commit_after && i + 1 == a.paths.size());
    const char* mode = commit_now ? "commit" : "no-commit";
    struct statfs sfs;
    if (::statfs(path.c_str(), &sfs) != 0) {
      ret = error(fmt::format("Could not statfs: {}", std::strerror(errno)));
      continue;
    }
    {
      MountFd probe(path);
      if (probe.fd < 0) {
        ret = kExitFail;
        continue;
      }
      if (!is_subvolume_root(probe.fd)) {
        ret = error("Not a Btrfs subvolume: Invalid argument");
        continue;
      }
    }
    char* real = ::realpath(path.c_str(), nullptr);
    if (!real) {
      ret = error(fmt::format("cannot find real path for '{}': {}", path, std::strerror(errno)));
      continue;
    }
    const SplitPath sp = split_path(real);
    std::free(real);
    const std::string dir = a.subvolid ? path : sp.dir;
    const int fd = open_dir(dir);
    if (fd < 0) {
      ret = kExitFail;
      continue;
    }
    if (last_fd >= 0) ::close(last_fd);
    last_fd = fd;
    uint64_t default_id = 0;
    if (auto d = default_subvolume(fd))
      default_id = *d;
    else if (::geteuid() != 0)
      warning(fmt::format("cannot read default subvolume id: {}", std::strerror(d.error().err)));
    uint64_t target = a.subvolid;
    std::string shown = sp.dir + "/" + sp.name;
    if (!target) {
      MountFd t(path);
      auto id = t.fd >= 0 ? subvolume_id_of(t.fd) : Result<uint64_t>(fail(EIO, "open"));
      if (!id) {
        ret = kExitFail;
        continue;
      }
      target = *id;
    } else {
      auto roots = read_roots(fd);
      auto sub = roots ? subvolume_path(fd, *roots, target) : Result<std::string>(fail(ENOENT, "no roots"));
      shown = sub ? path + "/" + *sub : fmt::format("subvolid={}", target);
    }
    if (target == default_id) {
      ret = warning(fmt::format("not deleting default subvolume id {} '{}'", default_id, shown));
      continue;
    }
    std::printf("Delete subvolume (%s): %s\n", mode,
                shown.rfind("subvolid=", 0) == 0 ? shown.c_str() : fmt::format("'{}'", shown).c_str());
    int rc;
    if (a.subvolid) {
      btrfs_ioctl_vol_args_v2 args{};
      args.flags = BTRFS_SUBVOL_SPEC_BY_ID;
      args.subvolid = target;
      rc = ::ioctl(fd, BTRFS_IOC_SNAP_DESTROY_V2, &args);
    } else {
      btrfs_ioctl_vol_args args{};
      std::memcpy(args.name, sp.name.data(), std::min(sp.name.size(), sizeof args.name - 1));
      rc = ::ioctl(fd, BTRFS_IOC_SNAP_DESTROY, &args);
    }
    if (rc < 0) {
      const int err = errno;
      ret = error(fmt::format("Could not destroy subvolume/snapshot: {}", std::strerror(err)));
      if (err == EPERM) warning("deletion failed with EPERM, you don't have permissions or send may be in progress");
      continue;
    }
    if (a.commit_each && !wait_for_commit(fd))
      ret = error(fmt::format("unable to wait for commit after '{}': {}", path, std::strerror(errno)));
  }
  if (a.commit_after && last_fd >= 0 && !wait_for_commit(last_fd))
    ret = error(fmt::format("unable to do final sync after deletion: {}", std::strerror(errno)));
  if (last_fd >= 0) ::close(last_fd);
  return ret;
}

int subvolume_snapshot(const std::string& src, const std::string& dst, bool readonly) {
  struct statfs sfs;
  if (::statfs(src.c_str(), &sfs) != 0) return error(fmt::format("Could not statfs: {}", std::strerror(errno)));
  {
    MountFd probe(src);
    if (probe.fd < 0) return kExitFail;
    if (!is_subvolume_root(probe.fd)) return error("Not a Btrfs subvolume: Invalid argument");
  }
  std::string dir, name;
  struct stat st;
  if (::stat(dst.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return error(fmt::format("'{}' exists and it is not a directory", dst));
    dir = dst;
    name = split_path(src).name;
  } else if (errno != ENOENT) {
    return error(fmt::format("cannot access {}: {}", dst, std::strerror(errno)));
  } else {
    const SplitPath sp = split_path(dst);
    dir = sp.dir;
    name = sp.name;
  }
  if (!is_subvol_name(name)) return error(fmt::format("invalid snapshot name '{}'", name));
  if (name.size() > BTRFS_VOL_NAME_MAX) return error(fmt::format("snapshot name too long '{}'", name));
  MountFd dfd(dir);
  if (dfd.fd < 0) return kExitFail;
  MountFd sfd(src);
  if (sfd.fd < 0) return kExitFail;
  btrfs_ioctl_vol_args_v2 args{};
  if (readonly) args.flags |= BTRFS_SUBVOL_RDONLY;
  std::printf("Create a %ssnapshot of '%s' in '%s/%s'\n", readonly ? "readonly " : "", src.c_str(), dir.c_str(),
              name.c_str());
  args.fd = sfd.fd;
  std::memcpy(args.name, name.data(), std::min(name.size(), sizeof args.name - 1));
  if (::ioctl(dfd.fd, BTRFS_IOC_SNAP_CREATE_V2, &args) < 0)
    return error(fmt::format("cannot snapshot '{}': {}", src, std::strerror(errno)));
  return kExitOk;
}

int property_ro(const std::string& path, const std::string* value) {
  bool ro = false;
  if (value) {
    if (*value == "true")
      ro = true;
    else if (*value != "false")
      return error(fmt::format("invalid value for property: {}", *value));
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return error(fmt::format("cannot access '{}': {}", path, std::strerror(errno)));
  const int fd = open_mount(path);
  if (fd < 0) return kExitFail;
  uint64_t flags = 0;
  const bool subvol = S_ISDIR(st.st_mode) && ::ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) == 0;
  if (!subvol) {
    ::close(fd);
    return error("object is not compatible with property: ro");
  }
  int ret = kExitOk;
  if (!value) {
    std::printf("ro=%s\n", (flags & BTRFS_SUBVOL_RDONLY) ? "true" : "false");
  } else if (ro != bool(flags & BTRFS_SUBVOL_RDONLY)) {
    flags = ro ? (flags | BTRFS_SUBVOL_RDONLY) : (flags & ~static_cast<uint64_t>(BTRFS_SUBVOL_RDONLY));
    if (::ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) < 0)
      ret = error(fmt::format("Could not set subvolume flags: {}", std::strerror(errno)));
  }
  ::close(fd);
  return ret;
}

}  // namespace ubtrfs::ctl
