// ubtrfs-ctl subvolume ... (btrfs-progs cmds/subvolume.c): the same arguments, messages and exit
// codes, through the btrfs ioctls the daemon serves (tools/daemon/ioctl.cpp) on a directory of the
// ubtrfs mount — the same calls btrfs-progs makes on kernel btrfs once past its statfs check.
//
// create DST: BTRFS_IOC_SUBVOL_CREATE on the directory holding DST, named by DST's last component
// (trailing slashes dropped: "a/" creates "./a", as btrfs-progs' basename/dirname split does).
#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <fmt/format.h>

#include "tools/ctl/ctl.h"

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

}  // namespace ubtrfs::ctl
