// The model and the execution of workload operations (workload_model.h).
#include "tests/crash/workload_model.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <fmt/format.h>

#include <vector>

namespace ubtrfs::crash {
namespace {

constexpr uint32_t kFileMode = 0100644, kDirMode = 040755;

std::string base_of(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

const char* kind_name(OpKind k) {
  switch (k) {
    case OpKind::kCreat: return "creat";
    case OpKind::kWrite: return "write";
    case OpKind::kFalloc: return "falloc";
    case OpKind::kPunch: return "punch";
    case OpKind::kTruncate: return "truncate";
    case OpKind::kLink: return "link";
    case OpKind::kUnlink: return "unlink";
    case OpKind::kRename: return "rename";
    case OpKind::kMkdir: return "mkdir";
    case OpKind::kRmdir: return "rmdir";
    case OpKind::kSetxattr: return "setxattr";
    case OpKind::kFsync: return "fsync";
    case OpKind::kFdatasync: return "fdatasync";
    case OpKind::kFsyncDir: return "fsyncdir";
    case OpKind::kSync: return "sync";
  }
  return "?";
}

bool is_dir(const FsState& s, const std::string& p) {
  if (p.empty()) return true;
  const InodeState* n = s.at(p);
  return n && n->dir;
}
bool is_file(const FsState& s, const std::string& p) {
  const InodeState* n = s.at(p);
  return n && !n->dir;
}

// Drops the inode if no name reaches it any more.
void collect(FsState& s, uint64_t ino) {
  for (const auto& [p, i] : s.names)
    if (i == ino) return;
  s.inodes.erase(ino);
}

}  // namespace

std::string Op::text() const {
  switch (kind) {
    case OpKind::kWrite: return fmt::format("write {} {}+{} fill {}", path, off, len, fill);
    case OpKind::kFalloc: return fmt::format("falloc {} {}+{}{}", path, off, len, keep_size ? " keep_size" : "");
    case OpKind::kPunch: return fmt::format("punch {} {}+{}", path, off, len);
    case OpKind::kTruncate: return fmt::format("truncate {} {}", path, off);
    case OpKind::kLink:
    case OpKind::kRename: return fmt::format("{} {} {}", kind_name(kind), path, path2);
    case OpKind::kSetxattr: return fmt::format("setxattr {} {} fill {}", path, xname, fill);
    case OpKind::kSync: return "sync";
    default: return fmt::format("{} {}", kind_name(kind), path.empty() ? "/" : path);
  }
}

std::string pattern(const Op& op) {
  std::string s(op.len, '\0');
  for (uint64_t i = 0; i < op.len; ++i) s[i] = static_cast<char>((op.off + i) * 131 + op.fill * 17 + 1);
  return s;
}

int apply_to_model(FsState& s, const Op& op, uint64_t new_ino) {
  const std::string& p = op.path;
  switch (op.kind) {
    case OpKind::kCreat:
    case OpKind::kMkdir: {
      if (!is_dir(s, parent_of(p))) return ENOENT;
      if (s.names.contains(p)) return EEXIST;
      s.names[p] = new_ino;
      s.inodes[new_ino] = InodeState{op.kind == OpKind::kMkdir, {}, {}};
      return 0;
    }
    case OpKind::kWrite:
    case OpKind::kFalloc:
    case OpKind::kPunch:
    case OpKind::kTruncate: {
      if (!is_file(s, p)) return s.names.contains(p) ? EISDIR : ENOENT;
      std::string& d = s.inodes[s.names[p]].data;
      if (op.kind == OpKind::kWrite) {
        if (d.size() < op.off + op.len) d.resize(op.off + op.len, '\0');
        d.replace(op.off, op.len, pattern(op));
      } else if (op.kind == OpKind::kFalloc) {
        if (!op.keep_size && d.size() < op.off + op.len) d.resize(op.off + op.len, '\0');
      } else if (op.kind == OpKind::kPunch) {
        for (uint64_t i = op.off; i < op.off + op.len && i < d.size(); ++i) d[i] = '\0';
      } else {
        d.resize(op.off, '\0');
      }
      return 0;
    }
    case OpKind::kLink: {
      if (!s.names.contains(p)) return ENOENT;
      if (!is_file(s, p)) return EPERM;
      if (!is_dir(s, parent_of(op.path2))) return ENOENT;
      if (s.names.contains(op.path2)) return EEXIST;
      s.names[op.path2] = s.names[p];
      return 0;
    }
    case OpKind::kUnlink: {
      if (!s.names.contains(p)) return ENOENT;
      if (!is_file(s, p)) return EISDIR;
      const uint64_t ino = s.names[p];
      s.names.erase(p);
      collect(s, ino);
      return 0;
    }
    case OpKind::kRmdir: {
      if (!s.names.contains(p)) return ENOENT;
      if (!is_dir(s, p)) return ENOTDIR;
      if (!s.entries(p).empty()) return ENOTEMPTY;
      const uint64_t ino = s.names[p];
      s.names.erase(p);
      collect(s, ino);
      return 0;
    }
    case OpKind::kRename: {
      const std::string& q = op.path2;
      if (!s.names.contains(p)) return ENOENT;
      if (!is_dir(s, parent_of(q))) return ENOENT;
      const bool src_dir = is_dir(s, p);
      if (src_dir && (q == p || q.rfind(p + "/", 0) == 0)) return q == p ? 0 : EINVAL;
      if (s.names.contains(q)) {
        if (s.names[q] == s.names[p]) return 0;  // the same inode: nothing happens
        const bool dst_dir = is_dir(s, q);
        if (src_dir && !dst_dir) return ENOTDIR;
        if (!src_dir && dst_dir) return EISDIR;
        if (dst_dir && !s.entries(q).empty()) return ENOTEMPTY;
        const uint64_t old = s.names[q];
        s.names.erase(q);
        collect(s, old);
      }
      std::vector<std::pair<std::string, uint64_t>> moved;
      for (auto it = s.names.begin(); it != s.names.end();) {
        if (it->first == p || it->first.rfind(p + "/", 0) == 0) {
          moved.emplace_back(q + it->first.substr(p.size()), it->second);
          it = s.names.erase(it);
        } else {
          ++it;
        }
      }
      for (auto& [np, ino] : moved) s.names[np] = ino;
      return 0;
    }
    case OpKind::kSetxattr: {
      if (!s.names.contains(p)) return ENOENT;
      s.inodes[s.names[p]].xattrs[op.xname] = fmt::format("v{}", op.fill);
      return 0;
    }
    case OpKind::kFsync:
    case OpKind::kFdatasync: return s.names.contains(p) ? 0 : ENOENT;
    case OpKind::kFsyncDir: return is_dir(s, p) ? 0 : ENOENT;
    case OpKind::kSync: return 0;
  }
  return EINVAL;
}

namespace {

// Looks `path` up component by component; the caller forgets the returned inode once.
Result<uint64_t> resolve(fs::Filesystem& fs, const std::string& path) {
  uint64_t ino = kRootIno;
  bool held = false;
  size_t pos = 0;
  while (pos < path.size()) {
    const size_t slash = path.find('/', pos);
    const std::string part = path.substr(pos, slash == std::string::npos ? std::string::npos : slash - pos);
    auto st = fs.lookup(ino, part);
    if (held) fs.forget(ino, 1);
    if (!st) return fail(st.error().err, "lookup '{}' in '{}': {}", part, path, st.error().message);
    ino = st->st_ino;
    held = true;
    pos = slash == std::string::npos ? path.size() : slash + 1;
  }
  return ino;
}

// An inode number held for the duration of one op (forgotten on scope exit; the root is never).
struct Held {
  fs::Filesystem& fs;
  uint64_t ino;
  ~Held() {
    if (ino != kRootIno) fs.forget(ino, 1);
  }
};

}  // namespace

Status execute_op(fs::Filesystem& fs, const Op& op, uint64_t* new_ino) {
  const std::string& p = op.path;
  auto parent = resolve(fs, parent_of(p));
  if (!parent) return fail(parent.error());
  Held dir{fs, *parent};
  const std::string name = base_of(p);
  switch (op.kind) {
    case OpKind::kCreat:
    case OpKind::kMkdir: {
      auto st = op.kind == OpKind::kCreat ? fs.create(dir.ino, name, kFileMode, fs::Caller{})
                                          : fs.mkdir(dir.ino, name, kDirMode, fs::Caller{});
      if (!st) return fail(st.error());
      if (new_ino) *new_ino = st->st_ino;
      fs.forget(st->st_ino, 1);
      return {};
    }
    case OpKind::kUnlink: return fs.unlink(dir.ino, name);
    case OpKind::kRmdir: return fs.rmdir(dir.ino, name);
    case OpKind::kRename:
    case OpKind::kLink: {
      auto to = resolve(fs, parent_of(op.path2));
      if (!to) return fail(to.error());
      Held todir{fs, *to};
      if (op.kind == OpKind::kRename) return fs.rename(dir.ino, name, todir.ino, base_of(op.path2), 0);
      auto src = resolve(fs, p);
      if (!src) return fail(src.error());
      Held s{fs, *src};
      auto st = fs.link(s.ino, todir.ino, base_of(op.path2));
      if (!st) return fail(st.error());
      fs.forget(st->st_ino, 1);
      return {};
    }
    case OpKind::kSync: return fs.info().transactions().commit(fs::CommitCause::kRequested);
    default: break;
  }
  auto target = p.empty() ? Result<uint64_t>(kRootIno) : resolve(fs, p);
  if (!target) return fail(target.error());
  Held t{fs, *target};
  switch (op.kind) {
    case OpKind::kWrite: {
      const std::string bytes = pattern(op);
      auto n = fs.write(t.ino, op.off, std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
      if (!n) return fail(n.error());
      if (*n != bytes.size()) return fail(EIO, "short write of {}: {} of {}", p, *n, bytes.size());
      return {};
    }
    case OpKind::kFalloc: return fs.fallocate(t.ino, op.keep_size ? FALLOC_FL_KEEP_SIZE : 0, op.off, op.len);
    case OpKind::kPunch: return fs.fallocate(t.ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op.off, op.len);
    case OpKind::kTruncate: {
      fs::SetAttr a;
      a.size = op.off;
      auto st = fs.setattr(t.ino, a, fs::Caller{});
      return st ? Status{} : fail(st.error());
    }
    case OpKind::kSetxattr: {
      const std::string v = fmt::format("v{}", op.fill);
      return fs.setxattr(t.ino, op.xname, std::span(reinterpret_cast<const uint8_t*>(v.data()), v.size()), 0);
    }
    case OpKind::kFsync: return fs.fsync(t.ino, false);
    case OpKind::kFdatasync: return fs.fsync(t.ino, true);
    case OpKind::kFsyncDir: return fs.fsyncdir(t.ino, false);
    default: return fail(EINVAL, "op {} not executable", op.text());
  }
}

}  // namespace ubtrfs::crash
