// FsState and its reader (fs_state.h).
#include "tests/crash/fs_state.h"

#include <fmt/format.h>

#include <vector>

namespace ubtrfs::crash {

std::string parent_of(const std::string& p) {
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? "" : p.substr(0, slash);
}

namespace {

std::string summary(const InodeState& st) {
  if (st.dir) return "dir";
  std::string s = fmt::format("file size {} hash {:016x}", st.data.size(), std::hash<std::string>{}(st.data));
  for (const auto& [k, v] : st.xattrs) s += fmt::format(" {}={}", k, v);
  return s;
}

Status walk(fs::Filesystem& fs, uint64_t dir_ino, const std::string& prefix, FsState& out, int depth) {
  if (depth > 32) return fail(ELOOP, "directory nesting deeper than 32 at {}", prefix);
  std::vector<std::string> names;
  auto st = fs.readdir(dir_ino, 0, false, [&](const fs::DirEntryOut& e) {
    if (e.name != "." && e.name != "..") names.emplace_back(e.name);
    return true;
  });
  if (!st) return fail(st.error().err, "readdir '{}': {}", prefix, st.error().message);
  for (const std::string& name : names) {
    const std::string path = prefix.empty() ? name : prefix + "/" + name;
    auto attr = fs.lookup(dir_ino, name);
    if (!attr) return fail(attr.error().err, "lookup '{}': {}", path, attr.error().message);
    const uint64_t ino = attr->st_ino;
    Status result;
    out.names[path] = ino;
    if (!out.inodes.contains(ino)) {
      InodeState node;
      node.dir = S_ISDIR(attr->st_mode);
      if (!node.dir) {
        node.data.resize(static_cast<size_t>(attr->st_size));
        std::span<uint8_t> buf(reinterpret_cast<uint8_t*>(node.data.data()), node.data.size());
        size_t got = 0;
        while (result && got < buf.size()) {
          auto n = fs.read(ino, got, buf.subspan(got), /*update_atime=*/false);
          if (!n) result = fail(n.error().err, "read '{}' at {}: {}", path, got, n.error().message);
          else if (*n == 0) result = fail(EIO, "read '{}': short at {} of size {}", path, got, buf.size());
          else got += *n;
        }
      }
      if (result) {
        auto list = fs.listxattr(ino);
        if (!list) result = fail(list.error().err, "listxattr '{}': {}", path, list.error().message);
        else
          for (const std::string& x : *list) {
            if (x.rfind("user.", 0) != 0) continue;
            auto v = fs.getxattr(ino, x);
            if (!v) {
              result = fail(v.error().err, "getxattr '{}' {}: {}", path, x, v.error().message);
              break;
            }
            node.xattrs[x] = std::string(v->begin(), v->end());
          }
      }
      out.inodes[ino] = std::move(node);
      if (result && out.inodes[ino].dir) result = walk(fs, ino, path, out, depth + 1);
    }
    fs.forget(ino, 1);
    if (!result) return result;
  }
  return {};
}

}  // namespace

const InodeState* FsState::at(const std::string& path) const {
  auto it = names.find(path);
  if (it == names.end()) return nullptr;
  auto in = inodes.find(it->second);
  return in == inodes.end() ? nullptr : &in->second;
}

std::map<std::string, uint64_t> FsState::entries(const std::string& dir) const {
  std::map<std::string, uint64_t> out;
  for (const auto& [p, ino] : names)
    if (parent_of(p) == dir) out[dir.empty() ? p : p.substr(dir.size() + 1)] = ino;
  return out;
}

std::vector<std::string> FsState::paths_of(uint64_t ino) const {
  std::vector<std::string> out;
  for (const auto& [p, i] : names)
    if (i == ino) out.push_back(p);
  return out;
}

std::string FsState::object_view(uint64_t ino, bool data_only) const {
  if (ino == kRootIno) {
    std::string s = "dir:";
    for (const auto& [n, i] : entries("")) s += fmt::format(" {}={}", n, i);
    return s;
  }
  auto it = inodes.find(ino);
  const auto paths = paths_of(ino);
  if (it == inodes.end() || paths.empty()) return "absent";
  if (it->second.dir) {
    std::string s = "dir:";
    for (const auto& [n, i] : entries(paths.front())) s += fmt::format(" {}={}", n, i);
    return s;
  }
  std::string s = "file:" + it->second.data;
  if (!data_only)
    for (const auto& [k, v] : it->second.xattrs) s += "\n" + k + "=" + v;
  return s;
}

std::string FsState::describe() const {
  std::string s;
  for (const auto& [p, ino] : names) {
    auto it = inodes.find(ino);
    s += fmt::format("  {} ino {} {}\n", p, ino, it == inodes.end() ? "?" : summary(it->second));
  }
  return s.empty() ? "  (empty)\n" : s;
}

Result<FsState> read_fs_state(fs::Filesystem& fs) {
  FsState out;
  UBTRFS_TRY_STATUS(walk(fs, kRootIno, "", out, 0));
  return out;
}

std::string state_diff(const FsState& want, const FsState& have) {
  std::vector<std::string> diffs;
  for (const auto& [p, ino] : want.names) {
    auto it = have.names.find(p);
    if (it == have.names.end()) diffs.push_back(fmt::format("'{}' missing", p));
    else if (it->second != ino) diffs.push_back(fmt::format("'{}' is ino {}, want {}", p, it->second, ino));
    else if (const InodeState *w = want.at(p), *h = have.at(p); w && h && !(*w == *h))
      diffs.push_back(fmt::format("'{}': have {}, want {}", p, summary(*h), summary(*w)));
  }
  for (const auto& [p, ino] : have.names)
    if (!want.names.contains(p)) diffs.push_back(fmt::format("'{}' (ino {}) should not exist", p, ino));
  std::string s;
  for (size_t i = 0; i < diffs.size() && i < 6; ++i) s += (i ? "; " : "") + diffs[i];
  if (diffs.size() > 6) s += fmt::format("; and {} more", diffs.size() - 6);
  return s.empty() ? "identical" : s;
}

}  // namespace ubtrfs::crash
