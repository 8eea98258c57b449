// The namespace and contents of a filesystem as the crash model compares them.
//
// Owns: FsState (every name -> inode number, every inode's type, bytes and user xattrs) and the
// reader that builds one from a mounted fs::Filesystem by walking it from the root through the same
// calls FUSE makes (readdir, lookup, read, listxattr, getxattr), forgetting every lookup it took.
// Invariants: paths are relative to the root ("a", "d/b"); the root itself is not listed; inode
// numbers are the FUSE numbers the filesystem returns, which are stable across mounts.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "fs/filesystem.h"
#include "io/status.h"

namespace ubtrfs::crash {

struct InodeState {
  bool dir = false;
  std::string data;                             // regular files: the bytes (size = data.size())
  std::map<std::string, std::string> xattrs;    // user.* only
  bool operator==(const InodeState&) const = default;
};

struct FsState {
  std::map<std::string, uint64_t> names;   // path -> inode number
  std::map<uint64_t, InodeState> inodes;   // every inode some name reaches
  bool operator==(const FsState&) const = default;

  const InodeState* at(const std::string& path) const;
  // The entries directly inside directory `dir` ("" = root): name -> inode number.
  std::map<std::string, uint64_t> entries(const std::string& dir) const;
  // Names of inode `ino` (hard links), sorted.
  std::vector<std::string> paths_of(uint64_t ino) const;
  // What an fsync of inode `ino` promises, as one comparable string: for a file its bytes and (unless
  // data_only) xattrs; for a directory its entries; "absent" when no name reaches it.
  std::string object_view(uint64_t ino, bool data_only) const;
  // One line per name, for failure reports.
  std::string describe() const;
};

// Reads the whole namespace. Errors: whatever the filesystem returns, with the path named.
[[nodiscard]] Result<FsState> read_fs_state(fs::Filesystem& fs);

// A short description of how two states differ (first few differences).
std::string state_diff(const FsState& want, const FsState& have);

// The root directory as fs::Filesystem numbers it (FUSE's root id; btrfs's 256 is mapped to it).
inline constexpr uint64_t kRootIno = 1;
// "a/b" for "a/b/c", "" for a name in the root.
std::string parent_of(const std::string& path);

}  // namespace ubtrfs::crash
