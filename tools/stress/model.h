// The in-memory model of one stress worker's directory tree.
//
// Owns: the inodes a worker has created (type, permission bits, link count, xattrs, symlink
// target, file contents as a FileContent) and the directory entries that name them. Paths are
// relative to the worker's root, '/'-separated, "" being the root itself.
//
// Every namespace operation returns the errno Linux returns for the same call on the same tree
// (0 on success) and changes the model only on success, so a worker can issue a call to the
// real filesystem and demand the same result. The errno rules modelled are the VFS ones:
// EEXIST for an existing name, ENOENT for a missing one, ENOTDIR/EISDIR for type clashes in
// rename and unlink, ENOTEMPTY for rmdir or rename onto a non-empty directory (and onto an
// ancestor of the source), EINVAL for moving a directory below itself, and rename of two names
// of one inode being a successful no-op.
//
// Invariants: the root (id kRootId) is a directory that is never removed; every directory has
// exactly one name and a parent_ pointer to the directory holding it; a file's nlink equals the
// number of entries naming it and an inode is dropped when that reaches zero; children maps
// are ordered, so walks (entries()) are deterministic for a given history.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tools/stress/content.h"

namespace ubtrfs::stress {

using InodeId = uint64_t;
inline constexpr InodeId kRootId = 1;

enum class NodeType : uint8_t { kFile, kDir, kSymlink };
const char* node_type_name(NodeType t);

struct Inode {
  NodeType type = NodeType::kFile;
  uint32_t mode = 0;   // permission bits (07777)
  uint32_t nlink = 1;  // names; for directories only ever 1 here (filesystems differ on dirs)
  FileContent content;                          // kFile
  std::string target;                           // kSymlink
  std::map<std::string, std::string> xattrs;    // full names ("user.x1") to values
  std::map<std::string, InodeId> children;      // kDir
  InodeId parent = 0;                           // kDir: the directory holding it
  uint64_t real_ino = 0;  // st_ino seen on the real filesystem, 0 until first observed
};

struct Entry {
  std::string path;
  InodeId id;
  NodeType type;
};

class Model {
 public:
  explicit Model(uint32_t root_mode = 0755);

  // The inode a path names, or nullopt.
  std::optional<InodeId> lookup(std::string_view path) const;
  Inode& inode(InodeId id) { return inodes_.at(id); }
  const Inode& inode(InodeId id) const { return inodes_.at(id); }
  size_t inode_count() const { return inodes_.size(); }

  int create(std::string_view path, uint32_t mode);
  int mkdir(std::string_view path, uint32_t mode);
  int symlink(std::string_view path, std::string_view target);
  int link(std::string_view old_path, std::string_view new_path);
  int unlink(std::string_view path);
  int rmdir(std::string_view path);
  int rename(std::string_view old_path, std::string_view new_path);

  // setxattr flags: 0, XATTR_CREATE (EEXIST if present), XATTR_REPLACE (ENODATA if absent).
  int setxattr(InodeId id, const std::string& name, const std::string& value, int flags);
  int removexattr(InodeId id, const std::string& name);

  // Every name in the tree (the root included, as ""), in depth-first sorted order. Cached;
  // the cache is dropped by every namespace change.
  const std::vector<Entry>& entries() const;

  // Sum of FileContent::allocated() over all files.
  uint64_t allocated_bytes() const;

  // Joins a directory path and a name ("" + "a" is "a").
  static std::string join(std::string_view dir, std::string_view name);

 private:
  struct Parent {
    InodeId dir;
    std::string name;
  };
  // Resolves the parent of `path`; errno ENOENT/ENOTDIR when it is missing or not a directory.
  int resolve_parent(std::string_view path, Parent* out) const;
  // True when `ancestor` is `dir` or one of the directories above it.
  bool is_ancestor(InodeId ancestor, InodeId dir) const;
  InodeId add_inode(NodeType type, uint32_t mode);
  // Drops one name of `id` (already removed from its directory).
  void drop_link(InodeId id);
  void touch() { entries_valid_ = false; }

  std::unordered_map<InodeId, Inode> inodes_;
  InodeId next_id_ = kRootId;
  mutable std::vector<Entry> entries_;
  mutable bool entries_valid_ = false;
};

}  // namespace ubtrfs::stress
