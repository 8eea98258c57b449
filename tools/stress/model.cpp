// Model: the errno-exact model of a worker's tree (see model.h for the rules and invariants).
#include "tools/stress/model.h"

#include <sys/xattr.h>

#include <cerrno>
#include <functional>

namespace ubtrfs::stress {

const char* node_type_name(NodeType t) {
  switch (t) {
    case NodeType::kFile: return "file";
    case NodeType::kDir: return "dir";
    case NodeType::kSymlink: return "symlink";
  }
  return "?";
}

Model::Model(uint32_t root_mode) {
  const InodeId root = add_inode(NodeType::kDir, root_mode);
  inodes_.at(root).parent = root;
}

InodeId Model::add_inode(NodeType type, uint32_t mode) {
  const InodeId id = next_id_++;
  Inode& ino = inodes_[id];
  ino.type = type;
  ino.mode = mode & 07777;
  ino.nlink = 1;
  return id;
}

std::string Model::join(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty()) out += '/';
  out += name;
  return out;
}

std::optional<InodeId> Model::lookup(std::string_view path) const {
  InodeId cur = kRootId;
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view comp = path.substr(pos, slash - pos);
    pos = slash + 1;
    if (comp.empty()) continue;
    const Inode& dir = inodes_.at(cur);
    if (dir.type != NodeType::kDir) return std::nullopt;
    auto it = dir.children.find(std::string(comp));
    if (it == dir.children.end()) return std::nullopt;
    cur = it->second;
  }
  return cur;
}

int Model::resolve_parent(std::string_view path, Parent* out) const {
  const size_t slash = path.rfind('/');
  const std::string_view dir = slash == std::string_view::npos ? std::string_view{} : path.substr(0, slash);
  out->name = std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
  const auto id = lookup(dir);
  if (!id) return ENOENT;
  if (inodes_.at(*id).type != NodeType::kDir) return ENOTDIR;
  out->dir = *id;
  return 0;
}

bool Model::is_ancestor(InodeId ancestor, InodeId dir) const {
  for (InodeId cur = dir;; cur = inodes_.at(cur).parent) {
    if (cur == ancestor) return true;
    if (cur == kRootId) return false;
  }
}

void Model::drop_link(InodeId id) {
  Inode& ino = inodes_.at(id);
  if (ino.type == NodeType::kDir || --ino.nlink == 0) inodes_.erase(id);
}

int Model::create(std::string_view path, uint32_t mode) {
  Parent p;
  if (int err = resolve_parent(path, &p)) return err;
  auto& children = inodes_.at(p.dir).children;
  if (children.contains(p.name)) return EEXIST;
  children.emplace(p.name, add_inode(NodeType::kFile, mode));
  touch();
  return 0;
}

int Model::mkdir(std::string_view path, uint32_t mode) {
  Parent p;
  if (int err = resolve_parent(path, &p)) return err;
  if (inodes_.at(p.dir).children.contains(p.name)) return EEXIST;
  const InodeId id = add_inode(NodeType::kDir, mode);
  inodes_.at(id).parent = p.dir;
  inodes_.at(p.dir).children.emplace(p.name, id);
  touch();
  return 0;
}

int Model::symlink(std::string_view path, std::string_view target) {
  Parent p;
  if (int err = resolve_parent(path, &p)) return err;
  if (inodes_.at(p.dir).children.contains(p.name)) return EEXIST;
  const InodeId id = add_inode(NodeType::kSymlink, 0777);
  inodes_.at(id).target = std::string(target);
  inodes_.at(p.dir).children.emplace(p.name, id);
  touch();
  return 0;
}

int Model::link(std::string_view old_path, std::string_view new_path) {
  const auto src = lookup(old_path);
  if (!src) return ENOENT;
  if (inodes_.at(*src).type == NodeType::kDir) return EPERM;
  Parent p;
  if (int err = resolve_parent(new_path, &p)) return err;
  if (inodes_.at(p.dir).children.contains(p.name)) return EEXIST;
  inodes_.at(p.dir).children.emplace(p.name, *src);
  ++inodes_.at(*src).nlink;
  touch();
  return 0;
}

int Model::unlink(std::string_view path) {
  Parent p;
  if (int err = resolve_parent(path, &p)) return err;
  auto& children = inodes_.at(p.dir).children;
  auto it = children.find(p.name);
  if (it == children.end()) return ENOENT;
  if (inodes_.at(it->second).type == NodeType::kDir) return EISDIR;
  const InodeId id = it->second;
  children.erase(it);
  drop_link(id);
  touch();
  return 0;
}

int Model::rmdir(std::string_view path) {
  if (path.empty()) return EBUSY;
  Parent p;
  if (int err = resolve_parent(path, &p)) return err;
  auto& children = inodes_.at(p.dir).children;
  auto it = children.find(p.name);
  if (it == children.end()) return ENOENT;
  const Inode& victim = inodes_.at(it->second);
  if (victim.type != NodeType::kDir) return ENOTDIR;
  if (!victim.children.empty()) return ENOTEMPTY;
  const InodeId id = it->second;
  children.erase(it);
  drop_link(id);
  touch();
  return 0;
}

int Model::rename(std::string_view old_path, std::string_view new_path) {
  Parent from, to;
  if (int err = resolve_parent(old_path, &from)) return err;
  if (int err = resolve_parent(new_path, &to)) return err;
  auto& src_children = inodes_.at(from.dir).children;
  auto src_it = src_children.find(from.name);
  if (src_it == src_children.end()) return ENOENT;
  const InodeId src = src_it->second;
  const bool src_is_dir = inodes_.at(src).type == NodeType::kDir;
  // The VFS "trap" checks come before any type check: moving a directory below itself is
  // EINVAL, replacing an ancestor of the source is ENOTEMPTY.
  if (src_is_dir && is_ancestor(src, to.dir)) return from.dir == to.dir && from.name == to.name ? 0 : EINVAL;
  auto& dst_children = inodes_.at(to.dir).children;
  auto dst_it = dst_children.find(to.name);
  std::optional<InodeId> dst;
  if (dst_it != dst_children.end()) dst = dst_it->second;
  if (dst && inodes_.at(*dst).type == NodeType::kDir && is_ancestor(*dst, from.dir)) return ENOTEMPTY;
  if (dst) {
    if (*dst == src) return 0;  // same inode (same name or two hard links): nothing happens
    const Inode& d = inodes_.at(*dst);
    if (src_is_dir) {
      if (d.type != NodeType::kDir) return ENOTDIR;
      if (!d.children.empty()) return ENOTEMPTY;
    } else if (d.type == NodeType::kDir) {
      return EISDIR;
    }
  }
  src_children.erase(src_it);
  if (dst) {
    inodes_.at(to.dir).children.erase(to.name);
    drop_link(*dst);
  }
  inodes_.at(to.dir).children.emplace(to.name, src);
  if (src_is_dir) inodes_.at(src).parent = to.dir;
  touch();
  return 0;
}

int Model::setxattr(InodeId id, const std::string& name, const std::string& value, int flags) {
  auto& xattrs = inodes_.at(id).xattrs;
  const bool present = xattrs.contains(name);
  if ((flags & XATTR_CREATE) && present) return EEXIST;
  if ((flags & XATTR_REPLACE) && !present) return ENODATA;
  xattrs[name] = value;
  return 0;
}

int Model::removexattr(InodeId id, const std::string& name) {
  return inodes_.at(id).xattrs.erase(name) ? 0 : ENODATA;
}

const std::vector<Entry>& Model::entries() const {
  if (entries_valid_) return entries_;
  entries_.clear();
  std::function<void(const std::string&, InodeId)> walk = [&](const std::string& path, InodeId id) {
    const Inode& ino = inodes_.at(id);
    entries_.push_back(Entry{path, id, ino.type});
    if (ino.type != NodeType::kDir) return;
    for (const auto& [name, child] : ino.children) walk(join(path, name), child);
  };
  walk("", kRootId);
  entries_valid_ = true;
  return entries_;
}

uint64_t Model::allocated_bytes() const {
  uint64_t total = 0;
  for (const auto& [id, ino] : inodes_) {
    if (ino.type == NodeType::kFile) total += ino.content.allocated();
  }
  return total;
}

}  // namespace ubtrfs::stress
