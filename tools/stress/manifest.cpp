// Manifest walk, file format and comparison (see manifest.h for the format).
#include "tools/stress/manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <utility>

#include <fmt/format.h>

namespace ubtrfs::stress {

namespace {

std::string escape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x21 || c > 0x7e || c == '\\' || c == '#' || c == '=') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

const char* type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "chardev";
  if (S_ISBLK(m)) return "blockdev";
  return "unknown";
}

class Walker {
 public:
  Walker(std::string root, std::vector<std::string>* lines) : root_(std::move(root)), lines_(lines) {}

  bool walk(const std::string& rel, std::string* error) {
    const std::string path = rel.empty() ? root_ : root_ + "/" + rel;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0) return fail(error, "lstat", path);
    std::string line = rel.empty() ? "." : escape(rel);
    line += fmt::format("\ttype={}\tmode={:o}\tuid={}\tgid={}\tsize={}\tnlink={}\tmtime={}.{:09}\tctime={}.{:09}",
                        type_name(st.st_mode), st.st_mode & 07777, st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                        st.st_mtim.tv_sec, st.st_mtim.tv_nsec, st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
      line += fmt::format("\trdev={}:{}", major(st.st_rdev), minor(st.st_rdev));
    }
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      const ssize_t n = readlink(path.c_str(), target.data(), target.size());
      if (n < 0) return fail(error, "readlink", path);
      target.resize(static_cast<size_t>(n));
      line += "\ttarget=" + escape(target);
    }
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      auto [it, inserted] = first_name_.emplace(std::make_pair(st.st_dev, st.st_ino), line.substr(0, line.find('\t')));
      line += "\thardlink=" + it->second;
    }
    std::string xattrs;
    if (!xattr_summary(path, &xattrs, error)) return false;
    if (!xattrs.empty()) line += "\txattrs=" + xattrs;
    if (S_ISREG(st.st_mode)) {
      uint64_t hash = 0;
      if (!hash_file(path, &hash, error)) return false;
      line += fmt::format("\tdata={:016x}", hash);
    }
    lines_->push_back(std::move(line));
    if (!S_ISDIR(st.st_mode)) return true;

    std::vector<std::string> names;
    DIR* d = opendir(path.c_str());
    if (!d) return fail(error, "opendir", path);
    errno = 0;
    while (dirent* de = readdir(d)) {
      if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) names.emplace_back(de->d_name);
    }
    const int err = errno;
    closedir(d);
    if (err != 0) {
      errno = err;
      return fail(error, "readdir", path);
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      if (!walk(rel.empty() ? name : rel + "/" + name, error)) return false;
    }
    return true;
  }

 private:
  static bool fail(std::string* error, const char* what, const std::string& path) {
    *error = fmt::format("{} {}: {}", what, path, strerror(errno));
    return false;
  }

  static bool xattr_summary(const std::string& path, std::string* out, std::string* error) {
    ssize_t len = llistxattr(path.c_str(), nullptr, 0);
    if (len < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)) return true;
    if (len < 0) return fail(error, "listxattr", path);
    std::string list(static_cast<size_t>(len), '\0');
    len = llistxattr(path.c_str(), list.data(), list.size());
    if (len < 0) return fail(error, "listxattr", path);
    list.resize(static_cast<size_t>(len));
    std::vector<std::string> names;
    for (size_t pos = 0; pos < list.size();) {
      const size_t end = std::min(list.find('\0', pos), list.size());
      if (end > pos) names.push_back(list.substr(pos, end - pos));
      pos = end + 1;
    }
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      ssize_t vlen = lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
      if (vlen < 0) return fail(error, "getxattr", path + " " + name);
      std::string value(static_cast<size_t>(vlen), '\0');
      vlen = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
      if (vlen < 0) return fail(error, "getxattr", path + " " + name);
      value.resize(static_cast<size_t>(vlen));
      if (!out->empty()) *out += ',';
      *out += fmt::format("{}:{}:{:016x}", escape(name), value.size(), XXH64(value.data(), value.size(), 0));
    }
    return true;
  }

  static bool hash_file(const std::string& path, uint64_t* hash, std::string* error) {
    const int fd = open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail(error, "open", path);
    std::unique_ptr<XXH64_state_t, decltype(&XXH64_freeState)> state(XXH64_createState(), XXH64_freeState);
    XXH64_reset(state.get(), 0);
    std::vector<char> buf(1 << 20);
    for (;;) {
      const ssize_t n = read(fd, buf.data(), buf.size());
      if (n < 0) {
        const int err = errno;
        close(fd);
        errno = err;
        return fail(error, "read", path);
      }
      if (n == 0) break;
      XXH64_update(state.get(), buf.data(), static_cast<size_t>(n));
    }
    close(fd);
    *hash = XXH64_digest(state.get());
    return true;
  }

  std::string root_;
  std::vector<std::string>* lines_;
  std::map<std::pair<dev_t, ino_t>, std::string> first_name_;
};

// "path\tk=v\tk=v" -> (path, ordered fields).
std::pair<std::string, std::vector<std::pair<std::string, std::string>>> split_line(const std::string& line) {
  std::vector<std::pair<std::string, std::string>> fields;
  size_t tab = line.find('\t');
  std::string path = line.substr(0, tab);
  while (tab != std::string::npos) {
    const size_t next = line.find('\t', tab + 1);
    const std::string field = line.substr(tab + 1, next == std::string::npos ? std::string::npos : next - tab - 1);
    const size_t eq = field.find('=');
    fields.emplace_back(field.substr(0, eq), eq == std::string::npos ? "" : field.substr(eq + 1));
    tab = next;
  }
  return {path, fields};
}

}  // namespace

bool build_manifest(const std::string& dir, std::vector<std::string>* lines, std::string* error) {
  lines->clear();
  Walker walker(dir, lines);
  return walker.walk("", error);
}

bool write_manifest(const std::string& file, const std::vector<std::string>& lines, std::string* error) {
  std::ofstream out(file, std::ios::trunc);
  if (!out) {
    *error = fmt::format("cannot write {}: {}", file, strerror(errno));
    return false;
  }
  out << "# ubtrfs-stress manifest v1: " << lines.size() << " entries\n";
  for (const auto& line : lines) out << line << '\n';
  out.close();
  if (!out) {
    *error = fmt::format("cannot write {}", file);
    return false;
  }
  return true;
}

bool read_manifest(const std::string& file, std::vector<std::string>* lines, std::string* error) {
  std::ifstream in(file);
  if (!in) {
    *error = fmt::format("cannot read {}: {}", file, strerror(errno));
    return false;
  }
  lines->clear();
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] != '#') lines->push_back(line);
  }
  return true;
}

std::vector<std::string> compare_manifests(const std::vector<std::string>& expected,
                                           const std::vector<std::string>& actual) {
  using Fields = std::vector<std::pair<std::string, std::string>>;
  std::map<std::string, Fields> want, got;
  for (const auto& l : expected) want.insert(split_line(l));
  for (const auto& l : actual) got.insert(split_line(l));
  std::vector<std::string> diffs;
  for (const auto& [path, fields] : want) {
    auto it = got.find(path);
    if (it == got.end()) {
      diffs.push_back(fmt::format("missing: {}", path));
      continue;
    }
    std::map<std::string, std::string> a(it->second.begin(), it->second.end());
    std::map<std::string, std::string> e(fields.begin(), fields.end());
    std::vector<std::string> parts;
    for (const auto& [k, v] : e) {
      auto ai = a.find(k);
      if (ai == a.end()) {
        parts.push_back(fmt::format("{} {} -> (none)", k, v));
      } else if (ai->second != v) {
        parts.push_back(fmt::format("{} {} -> {}", k, v, ai->second));
      }
    }
    for (const auto& [k, v] : a) {
      if (!e.contains(k)) parts.push_back(fmt::format("{} (none) -> {}", k, v));
    }
    if (!parts.empty()) diffs.push_back(fmt::format("differs: {}: {}", path, fmt::join(parts, "; ")));
  }
  for (const auto& [path, fields] : got) {
    if (!want.contains(path)) diffs.push_back(fmt::format("unexpected: {}", path));
  }
  return diffs;
}

}  // namespace ubtrfs::stress
