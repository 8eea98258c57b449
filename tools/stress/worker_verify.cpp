// Worker: the checks of the real tree against the model — stat and readdir operations, and
// verify_tree() at the end (see worker.h for the contract): every name, type, mode, size, link
// count, xattr, symlink target and byte.
//
// Invariants: a check changes nothing in the real tree; the only model state it writes is the
// inode number an inode is first seen with (real_ino), which every later sight must match. Each
// difference is reported through fail(); the final walk stops after kMaxReportedFailures of them.
#include "tools/stress/worker.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "tools/stress/worker_internal.h"

namespace ubtrfs::stress {

namespace {

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += fmt::format("{}{:02x}", i ? " " : "", p[i]);
  return out;
}

NodeType type_of_mode(mode_t m) {
  if (S_ISDIR(m)) return NodeType::kDir;
  if (S_ISLNK(m)) return NodeType::kSymlink;
  return NodeType::kFile;
}

const char* mode_type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "special";
}

constexpr uint64_t kMaxReportedFailures = 20;

}  // namespace

void Worker::do_stat() {
  const auto e = pick([](const Entry&) { return true; });
  count(OpKind::kStat);
  spdlog::debug("p{} op {} stat {}", opts_.id, op_no_, e->path);
  verify_entry(e->path, e->id, false);
}

void Worker::do_readdir() {
  const auto e = pick(is_dir);
  count(OpKind::kReaddir);
  spdlog::debug("p{} op {} readdir {}", opts_.id, op_no_, e->path);
  verify_dir_names(e->path, e->id);
}

bool Worker::verify_range(const std::string& rel, InodeId id, int fd, uint64_t off, uint64_t len) {
  buf_.resize(len);
  expected_.resize(len);
  uint64_t got = 0;
  while (got < len) {
    const ssize_t n = pread(fd, buf_.data() + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      fail(fmt::format("pread {} off {} len {}: {}", rel, off + got, len - got, strerror(errno)));
      return false;
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  stats_->bytes_read += got;
  const size_t want = model_.inode(id).content.read(off, expected_);
  if (memcmp(buf_.data(), expected_.data(), std::min<size_t>(got, want)) != 0) {
    size_t i = 0;
    while (buf_[i] == expected_[i]) ++i;
    size_t j = i;
    const size_t limit = std::min<size_t>(got, want);
    size_t differing = 0;
    for (; j < limit; ++j) differing += buf_[j] != expected_[j];
    const size_t show = std::min<size_t>(16, limit - i);
    fail(fmt::format("{}: content mismatch at offset {} (read off {} len {}; {} of the following {} bytes differ): "
                     "expected [{}] actual [{}]",
                     rel, off + i, off, len, differing, limit - i, hex_bytes(expected_.data() + i, show),
                     hex_bytes(buf_.data() + i, show)));
    return false;
  }
  if (got != want) {
    fail(fmt::format("{}: read off {} len {} returned {} bytes, expected {} (model size {})", rel, off, len, got,
                     want, model_.inode(id).content.size()));
    return false;
  }
  return true;
}

bool Worker::verify_xattrs(const std::string& rel, InodeId id) {
  const std::string path = abs_path(rel);
  const auto& want = model_.inode(id).xattrs;
  const ssize_t list_len = llistxattr(path.c_str(), nullptr, 0);
  if (list_len < 0) {
    fail(fmt::format("listxattr {}: {}", rel, strerror(errno)));
    return false;
  }
  std::string list(static_cast<size_t>(list_len), '\0');
  const ssize_t n = llistxattr(path.c_str(), list.data(), list.size());
  if (n < 0) {
    fail(fmt::format("listxattr {}: {}", rel, strerror(errno)));
    return false;
  }
  list.resize(static_cast<size_t>(n));
  std::set<std::string> names;
  for (size_t pos = 0; pos < list.size();) {
    const size_t end = list.find('\0', pos);
    std::string name = list.substr(pos, end - pos);
    pos = end == std::string::npos ? list.size() : end + 1;
    if (name.starts_with("user.")) names.insert(std::move(name));
  }
  std::set<std::string> want_names;
  for (const auto& [name, value] : want) want_names.insert(name);
  if (names != want_names) {
    fail(fmt::format("{}: xattr names [{}], expected [{}]", rel, fmt::join(names, ","), fmt::join(want_names, ",")));
    return false;
  }
  std::string value(4096, '\0');
  for (const auto& [name, expected] : want) {
    const ssize_t len = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (len < 0) {
      fail(fmt::format("getxattr {} {}: {}", rel, name, strerror(errno)));
      return false;
    }
    if (std::string_view(value.data(), static_cast<size_t>(len)) != expected) {
      const std::string_view got(value.data(), static_cast<size_t>(len));
      fail(fmt::format("{}: xattr {} has {} bytes [{}...], expected {} bytes [{}...]", rel, name, len,
                       hex_bytes(reinterpret_cast<const uint8_t*>(got.data()), std::min<size_t>(16, got.size())),
                       expected.size(),
                       hex_bytes(reinterpret_cast<const uint8_t*>(expected.data()),
                                 std::min<size_t>(16, expected.size()))));
      return false;
    }
  }
  return true;
}

bool Worker::verify_entry(const std::string& rel, InodeId id, bool full) {
  Inode& ino = model_.inode(id);
  struct stat st;
  if (fstatat(root_fd_, at_path(rel), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    fail(fmt::format("lstat {}: {}", rel, strerror(errno)));
    return false;
  }
  const std::string shown = rel.empty() ? "." : rel;
  if (!(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) || type_of_mode(st.st_mode) != ino.type) {
    fail(fmt::format("{}: type {}, expected {}", shown, mode_type_name(st.st_mode), node_type_name(ino.type)));
    return false;
  }
  if (ino.type != NodeType::kSymlink && (st.st_mode & 07777) != ino.mode) {
    fail(fmt::format("{}: mode {:o}, expected {:o}", shown, st.st_mode & 07777, ino.mode));
    return false;
  }
  if (ino.real_ino == 0) {
    ino.real_ino = st.st_ino;
  } else if (ino.real_ino != st.st_ino) {
    fail(fmt::format("{}: inode number {}, earlier {}", shown, st.st_ino, ino.real_ino));
    return false;
  }
  if (ino.type == NodeType::kFile) {
    if (static_cast<uint64_t>(st.st_size) != ino.content.size()) {
      fail(fmt::format("{}: size {}, expected {}", shown, st.st_size, ino.content.size()));
      return false;
    }
    if (st.st_nlink != ino.nlink) {
      fail(fmt::format("{}: nlink {}, expected {}", shown, st.st_nlink, ino.nlink));
      return false;
    }
  } else if (ino.type == NodeType::kSymlink) {
    std::string target(8192, '\0');
    const ssize_t n = readlinkat(root_fd_, rel.c_str(), target.data(), target.size());
    if (n < 0) {
      fail(fmt::format("readlink {}: {}", rel, strerror(errno)));
      return false;
    }
    target.resize(static_cast<size_t>(n));
    if (target != ino.target || static_cast<uint64_t>(st.st_size) != ino.target.size() || st.st_nlink != 1) {
      fail(fmt::format("{}: symlink target '{}' (size {}, nlink {}), expected '{}'", shown, target, st.st_size,
                       st.st_nlink, ino.target));
      return false;
    }
  }
  if (ino.type != NodeType::kSymlink && !verify_xattrs(rel, id)) return false;
  if (full && ino.type == NodeType::kFile) {
    const int fd = openat(root_fd_, rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      fail(fmt::format("open {}: {}", rel, strerror(errno)));
      return false;
    }
    const uint64_t size = ino.content.size();
    bool ok = true;
    // Whole file in 1 MiB pieces, and one piece past EOF that must read nothing.
    for (uint64_t off = 0; ok && off <= size; off += kMiB) ok = verify_range(rel, id, fd, off, kMiB);
    close(fd);
    if (!ok) return false;
  }
  return true;
}

bool Worker::verify_dir_names(const std::string& rel, InodeId id) {
  const int fd = openat(root_fd_, at_path(rel), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    fail(fmt::format("open dir {}: {}", rel, strerror(errno)));
    return false;
  }
  DIR* d = fdopendir(fd);
  if (!d) {
    close(fd);
    fail(fmt::format("fdopendir {}: {}", rel, strerror(errno)));
    return false;
  }
  std::map<std::string, unsigned char> seen;
  bool dup = false;
  errno = 0;
  while (dirent* de = readdir(d)) {
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    dup = dup || seen.contains(name);
    seen[name] = de->d_type;
  }
  const int err = errno;
  closedir(d);
  if (err != 0) {
    fail(fmt::format("readdir {}: {}", rel, strerror(err)));
    return false;
  }
  const auto& children = model_.inode(id).children;
  std::vector<std::string> missing, extra, wrong_type;
  for (const auto& [name, child] : children) {
    auto it = seen.find(name);
    if (it == seen.end()) {
      missing.push_back(name);
      continue;
    }
    const NodeType t = model_.inode(child).type;
    const unsigned char want = t == NodeType::kDir ? DT_DIR : t == NodeType::kSymlink ? DT_LNK : DT_REG;
    if (it->second != DT_UNKNOWN && it->second != want) wrong_type.push_back(name);
  }
  for (const auto& [name, type] : seen) {
    if (!children.contains(name)) extra.push_back(name);
  }
  if (dup || !missing.empty() || !extra.empty() || !wrong_type.empty()) {
    fail(fmt::format("readdir {}: missing [{}] unexpected [{}] wrong d_type [{}]{}", rel.empty() ? "." : rel,
                     fmt::join(missing, ","), fmt::join(extra, ","), fmt::join(wrong_type, ","),
                     dup ? " and duplicate names" : ""));
    return false;
  }
  return true;
}

bool Worker::verify_tree() {
  op_label_ = "final-verify";
  std::map<uint64_t, InodeId> by_ino;
  bool ok = true;
  for (const Entry& e : model_.entries()) {
    if (e.type == NodeType::kDir && !verify_dir_names(e.path, e.id)) ok = false;
    if (!verify_entry(e.path, e.id, true)) {
      ok = false;
      continue;
    }
    const uint64_t real = model_.inode(e.id).real_ino;
    auto [it, inserted] = by_ino.emplace(real, e.id);
    if (!inserted && it->second != e.id) {
      fail(fmt::format("{}: shares inode number {} with another name of a different model inode", e.path, real));
      ok = false;
    }
    // Keep going after a difference to list more of them, but not forever.
    if (stats_->failures >= kMaxReportedFailures) {
      spdlog::error("p{}: stopping the final verify after {} differences", opts_.id, stats_->failures);
      break;
    }
  }
  return ok && !failed_;
}

}  // namespace ubtrfs::stress
