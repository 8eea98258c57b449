#include "fuzz/walk.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "tree/fs_reader.h"

namespace ubtrfs::fuzz {

namespace {

constexpr uint64_t kRootIno = 1;  // FUSE_ROOT_ID: the subvolume's root directory

void walk_one_tree(const FsReader& reader, const RootLocation& root, WalkStats& w) {
  note(w, reader.walk_blocks(root, [&](std::span<const uint8_t>) -> Status {
    if (++w.blocks > kMaxBlocks) return fail(ECANCELED, "block budget spent");
    return {};
  }));
  note(w, reader.for_each_item(root, [&](const Key&, std::span<const uint8_t>) -> Status {
    if (++w.items > kMaxBlocks * 64) return fail(ECANCELED, "item budget spent");
    return {};
  }));
}

void read_file(fs::Filesystem& f, uint64_t ino, uint64_t size, WalkStats& w) {
  if (!note(w, f.open(ino, O_RDONLY))) return;
  std::vector<uint8_t> buf(64 * 1024);
  for (uint64_t off = 0; off <= size && off < kMaxFileBytes && w.bytes_read < kMaxReadBytes; off += buf.size()) {
    auto n = f.read(ino, off, buf, false);
    if (!note(w, n) || *n == 0) break;
    w.bytes_read += *n;
  }
  (void)f.lseek(ino, 0, SEEK_DATA);
  (void)f.lseek(ino, 0, SEEK_HOLE);
  note(w, f.release(ino));
}

void walk_dir(fs::Filesystem& f, uint64_t dir, int depth, std::set<uint64_t>& seen, WalkStats& w) {
  if (depth > kMaxDepth || !seen.insert(dir).second) return;
  // opendir reads the directory's last DIR_INDEX (its listing bound). A corrupt block on that path
  // is noted, and the listing still goes on without a bound: the entries before it are reachable.
  auto bound = f.opendir(dir);
  if (!note(w, bound) && bound.error().err != EUCLEAN && bound.error().err != EIO) return;
  const uint64_t last_index = bound ? *bound : UINT64_MAX;
  std::vector<std::string> names;
  uint64_t offset = 0;
  for (;;) {
    bool got = false;
    auto st = f.readdir(dir, offset, false, [&](const fs::DirEntryOut& e) {
      if (w.entries >= kMaxEntries) return false;
      w.entries++;
      got = true;
      offset = e.next_offset;
      if (e.name != "." && e.name != "..") names.emplace_back(e.name);
      return true;
    }, last_index);
    if (!note(w, st) || !got) break;
  }
  for (const auto& name : names) {
    auto attr = f.lookup(dir, name);
    if (!note(w, attr)) continue;
    const uint64_t ino = attr->st_ino;
    note(w, f.getattr(ino));
    if (auto list = f.listxattr(ino); note(w, list))
      for (const auto& x : *list) note(w, f.getxattr(ino, x));
    if (S_ISDIR(attr->st_mode)) {
      if (!w.a_dir) w.a_dir = ino;
      walk_dir(f, ino, depth + 1, seen, w);
    } else if (S_ISREG(attr->st_mode)) {
      if (!w.a_file) {
        w.a_file = ino;
        w.a_file_parent = dir;
        w.a_file_name = name;
      }
      read_file(f, ino, static_cast<uint64_t>(attr->st_size), w);
    } else if (S_ISLNK(attr->st_mode)) {
      note(w, f.readlink(ino));
    }
    f.forget(ino, 1);
  }
}

}  // namespace

void report(const char* what, const WalkStats& w) {
  static const bool verbose = std::getenv("UBTRFS_FUZZ_VERBOSE") != nullptr;
  if (!verbose) return;
  std::fprintf(stderr, "%s: corrupt=%d blocks=%llu items=%llu entries=%llu bytes=%llu\n", what, w.corrupt ? 1 : 0,
               static_cast<unsigned long long>(w.blocks), static_cast<unsigned long long>(w.items),
               static_cast<unsigned long long>(w.entries), static_cast<unsigned long long>(w.bytes_read));
  for (const auto& m : w.corruptions) std::fprintf(stderr, "  corruption: %s\n", m.c_str());
}

void walk_trees(io::BlockDevice& dev, WalkStats& w) {
  auto reader = FsReader::open(dev);
  if (!note(w, reader)) return;
  const FsReader& r = **reader;
  walk_one_tree(r, r.root_tree_root(), w);
  walk_one_tree(r, r.chunk_tree_root(), w);
  if (auto log = r.log_tree_root()) {
    walk_one_tree(r, *log, w);
    if (auto logs = r.list_roots_in(*log); note(w, logs))
      for (const auto& root : *logs) walk_one_tree(r, root, w);
  }
  if (auto roots = r.list_roots(); note(w, roots))
    for (const auto& root : *roots) walk_one_tree(r, root, w);
}

void walk_namespace(fs::Filesystem& f, WalkStats& w) {
  note(w, f.statfs());
  note(w, f.getattr(kRootIno));
  std::set<uint64_t> seen;
  walk_dir(f, kRootIno, 0, seen, w);
}

}  // namespace ubtrfs::fuzz
