// What the whole-image fuzz targets do with an image once it is open: visit every tree block
// through the read-only reader, and every name, attribute, xattr, symlink and file byte through a
// mounted Filesystem, noting whether anything reported corruption (EUCLEAN or EIO).
//
// Bounded, so that one input cannot run for long: at most kMaxBlocks tree blocks, kMaxEntries
// directory entries, kMaxDepth directory levels and kMaxReadBytes of file data per walk; a
// directory inode seen twice (a corrupt image can link one into itself) is not entered again.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::fuzz {

inline constexpr uint64_t kMaxBlocks = 4096;
inline constexpr uint64_t kMaxEntries = 2048;
inline constexpr int kMaxDepth = 16;
inline constexpr size_t kMaxMessages = 16;
inline constexpr uint64_t kMaxReadBytes = 1ull << 20;
inline constexpr uint64_t kMaxFileBytes = 128ull << 10;  // read per file

struct WalkStats {
  bool corrupt = false;  // some call returned EUCLEAN or EIO
  std::string first_corruption;  // its message
  std::vector<std::string> corruptions;  // the first kMaxMessages distinct messages of EUCLEAN/EIO errors
  uint64_t blocks = 0, items = 0, entries = 0, bytes_read = 0;
  // The first inode numbers of each kind met (0: none), for the write phase of the rw target.
  uint64_t a_file = 0, a_dir = 0;
  uint64_t a_file_parent = 0;
  std::string a_file_name;
};

// Notes an error's class; returns true when the call succeeded.
template <class R>
bool note(WalkStats& w, const R& r) {
  if (r) return true;
  if (r.error().err == EUCLEAN || r.error().err == EIO) {
    if (!w.corrupt) w.first_corruption = r.error().message;
    if (w.corruptions.size() < kMaxMessages &&
        std::find(w.corruptions.begin(), w.corruptions.end(), r.error().message) == w.corruptions.end())
      w.corruptions.push_back(r.error().message);
    w.corrupt = true;
  }
  return false;
}

// With UBTRFS_FUZZ_VERBOSE set in the environment, prints what a run did (to check that seeds
// reach deep): "<what>: corrupt=0 blocks=.. items=.. entries=.. bytes=..".
void report(const char* what, const WalkStats& w);

// Opens `dev` with FsReader and visits the root, chunk and log root trees and every tree the root
// tree lists (blocks, then items). A failing open is noted as any other error.
void walk_trees(io::BlockDevice& dev, WalkStats& w);
// Lists every directory from the subvolume root, looks up and stats each entry, reads symlinks,
// xattrs and file contents. Leaves every lookup count it took at zero again (forget).
void walk_namespace(fs::Filesystem& f, WalkStats& w);

}  // namespace ubtrfs::fuzz
