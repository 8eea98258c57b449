// Finding a ubtrfs mount and reading its daemon; see mount_client.h.
#include "tools/inspect/mount_client.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace ubtrfs::inspect {

namespace {

constexpr std::string_view kFsType = "fuse.ubtrfs";

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        std::all_of(s.begin() + i + 1, s.begin() + i + 4, [](char c) { return c >= '0' && c <= '7'; })) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> split_spaces(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < line.size()) {
    size_t end = line.find(' ', pos);
    if (end == std::string_view::npos) end = line.size();
    if (end > pos) out.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

bool has_option(std::string_view list, std::string_view name) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string_view::npos) end = list.size();
    if (list.substr(pos, end - pos) == name) return true;
    pos = end + 1;
  }
  return false;
}

std::string option_value(std::string_view list, std::string_view name) {
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string_view::npos) end = list.size();
    std::string_view opt = list.substr(pos, end - pos);
    if (opt.size() > name.size() && opt.starts_with(name) && opt[name.size()] == '=')
      return std::string(opt.substr(name.size() + 1));
    pos = end + 1;
  }
  return "";
}

std::string read_mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// PATH made absolute without touching the filesystem (the caller may not be allowed to).
std::string lexical_absolute(const std::string& path) {
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).lexically_normal().string();
  if (ec) abs = path;
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  return abs;
}

std::string real_or_lexical(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : lexical_absolute(path);
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  std::vector<MountEntry> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const auto f = split_spaces(text.substr(pos, end - pos));
    pos = end + 1;
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    auto sep = std::find(f.begin(), f.end(), std::string_view("-"));
    if (f.size() < 6 || sep == f.end() || sep - f.begin() < 6 || f.end() - sep < 3) continue;
    MountEntry m;
    const std::string dev(f[2]);
    if (std::sscanf(dev.c_str(), "%u:%u", &m.major, &m.minor) != 2) continue;
    m.mount_point = unescape(f[4]);
    m.fstype = unescape(sep[1]);
    m.source = unescape(sep[2]);
    m.super_options = f.end() - sep > 3 ? std::string(sep[3]) : std::string();
    out.push_back(std::move(m));
  }
  return out;
}

std::optional<MountEntry> mount_covering(const std::vector<MountEntry>& mounts, const std::string& path) {
  const MountEntry* best = nullptr;
  for (const auto& m : mounts) {
    const std::string& mp = m.mount_point;
    const bool covers = mp == "/" || path == mp || (path.size() > mp.size() && path.starts_with(mp) && path[mp.size()] == '/');
    if (covers && (!best || mp.size() >= best->mount_point.size())) best = &m;
  }
  if (!best) return std::nullopt;
  return *best;
}

namespace {

// The ubtrfs mount `path` is on, or the one-line error saying why it is not one.
Result<MountEntry> ubtrfs_mount_of(const std::string& path) {
  const auto mounts = parse_mountinfo(read_mountinfo());
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      // A FUSE mount without allow_other refuses every other user, stat included.
      auto m = mount_covering(mounts, lexical_absolute(path));
      if (m && m->fstype == kFsType && !has_option(m->super_options, "allow_other")) {
        const std::string owner = option_value(m->super_options, "user_id");
        return fail(EACCES, "{}: permission denied: the ubtrfs mount on {} was made without allow_other, only uid {} "
                            "may use it",
                    path, m->mount_point, owner.empty() ? "of its owner" : owner);
      }
    }
    return fail(err, "{}: {}", path, strerror(err));
  }
  if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
    return fail(EINVAL, "{}: not a ubtrfs mount (not a directory or regular file)", path);

  // Its mount: by device number (covering the real path when bind mounts share the device),
  // else by path (btrfs subvolumes have device numbers of their own).
  const std::string real = real_or_lexical(path);
  std::vector<MountEntry> same_dev;
  for (const auto& m : mounts)
    if (m.major == major(st.st_dev) && m.minor == minor(st.st_dev)) same_dev.push_back(m);
  std::optional<MountEntry> mount = mount_covering(same_dev, real);
  if (!mount && !same_dev.empty()) mount = same_dev.back();
  if (!mount) mount = mount_covering(mounts, real);
  if (!mount) return fail(ENODEV, "{}: not a ubtrfs mount (no entry in /proc/self/mountinfo)", path);
  if (mount->fstype != kFsType)
    return fail(ENOTTY, "{}: not a ubtrfs mount ({} on {})", path, mount->fstype, mount->mount_point);
  return *mount;
}

}  // namespace

Status request_shutdown(const std::string& path, uint32_t flags) {
  const MountEntry mount = UBTRFS_TRY(ubtrfs_mount_of(path));
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return fail(errno, "{}: cannot open: {}", path, strerror(errno));
  int rc;
  do rc = ioctl(fd, control::kIocShutdown, &flags);
  while (rc < 0 && errno == EINTR);
  const int err = rc < 0 ? errno : 0;
  close(fd);
  if (err == ENOTTY || err == ENOSYS)
    return fail(ENOTTY, "{}: the ubtrfs daemon on {} does not answer the shutdown ioctl (an older daemon?)", path,
                mount.mount_point);
  if (err == EPERM) return fail(EPERM, "{}: shutting the filesystem down needs root", path);
  if (err != 0) return fail(err, "{}: shutdown of the ubtrfs daemon on {}: {}", path, mount.mount_point, strerror(err));
  return {};
}

Result<std::string> read_live_payload(const std::string& path, control::Payload payload) {
  const MountEntry mount = UBTRFS_TRY(ubtrfs_mount_of(path));
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return fail(errno, "{}: cannot open: {}", path, strerror(errno));
  auto transport = [fd](control::Message& msg) -> Status {
    int rc;
    do rc = ioctl(fd, control::kIocControlRead, &msg);
    while (rc < 0 && errno == EINTR);
    if (rc < 0) return fail(errno, "{}", strerror(errno));
    return {};
  };
  auto r = control::read_payload(payload, transport);
  close(fd);
  if (r) return r;
  const Error& e = r.error();
  const std::string what = control::payload_name(static_cast<uint32_t>(payload));
  if (e.err == ENOTTY || e.err == ENOSYS)
    return fail(ENOTTY, "{}: the ubtrfs daemon on {} does not answer the control ioctl (an older daemon?)", path,
                mount.mount_point);
  if (e.err == EPROTO)
    return fail(EPROTO, "{}: reading {} from the ubtrfs daemon on {}: protocol mismatch: {}", path, what,
                mount.mount_point, e.message);
  return fail(e.err, "{}: reading {} from the ubtrfs daemon on {}: {}", path, what, mount.mount_point, e.message);
}

}  // namespace ubtrfs::inspect
