// Checks before a mount by a user who is not root; see user_mount.h.
#include "tools/daemon/user_mount.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/nbd_device.h"

namespace ubtrfs::daemon {

bool fuse_conf_allows_other(std::string_view text) {
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.remove_suffix(1);
    if (line == "user_allow_other") return true;
  }
  return false;
}

Status check_user_mount(const UserMountCheck& c) {
  // The image first: it is what the user named, and the only check that applies to root too
  // (access() is true for root whatever the mode, except for execute). An NBD URI is no file:
  // the server decides who may connect and whether writes are allowed (io/nbd_device.h).
  const bool nbd = io::is_nbd_uri(c.source);
  if (!nbd && access(c.source.c_str(), R_OK) != 0) {
    const int err = errno;
    struct stat st {};
    const bool blockdev = stat(c.source.c_str(), &st) == 0 && S_ISBLK(st.st_mode);
    return fail(err, "cannot mount {}: {} for uid {}{}", c.source, strerror(err), c.uid,
                blockdev ? "; a block device needs read and write access (usually the group disk) or root"
                         : "");
  }
  if (!nbd && !c.read_only && access(c.source.c_str(), W_OK) != 0) {
    const int err = errno;
    return fail(err, "cannot mount {}: it is not writable by uid {} ({}); mount it with -o ro", c.source, c.uid,
                strerror(err));
  }
  if (c.uid == 0) return {};
  if (access(c.fuse_device.c_str(), R_OK | W_OK) != 0) {
    const int err = errno;
    struct stat st {};
    const std::string mode = stat(c.fuse_device.c_str(), &st) == 0
                                 ? fmt::format("mode {:04o}", st.st_mode & 07777)
                                 : std::string(strerror(err));
    return fail(err, "cannot mount {}: {} is not readable and writable by uid {} ({}); a user's FUSE mount needs it "
                "0666 (chmod 0666 {} as root), or mount as root", c.source, c.fuse_device, c.uid, mode,
                c.fuse_device);
  }
  if (c.allow_other) {
    std::ifstream in(c.fuse_conf);
    std::stringstream text;
    text << in.rdbuf();
    if (!fuse_conf_allows_other(text.str()))
      return fail(EPERM, "cannot mount {}: allow_other by a user needs a line 'user_allow_other' in {} (root "
                  "adds it), or mount without allow_other", c.source, c.fuse_conf);
  }
  struct stat mst {};
  if (stat(c.mountpoint.c_str(), &mst) == 0 && mst.st_uid != c.uid && access(c.mountpoint.c_str(), W_OK) != 0)
    return fail(EACCES, "cannot mount {} on {}: uid {} neither owns nor may write the mount point (fusermount3 "
                "requires one of them)", c.source, c.mountpoint, c.uid);
  return {};
}

}  // namespace ubtrfs::daemon
