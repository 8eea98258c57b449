// The workload of ubtrfs-cowbench: a directory tree deep enough that the subvolume's fs tree has a
// root of level >= 2, prepopulated once, then N threads of create / write / rename / unlink /
// setxattr (with the lookups a FUSE client would send) issued straight at fs::Filesystem — the
// "concurrent filesystem operations" of the patch series' benchmark (KERNEL.md §11).
//
// Layout: `depth` levels of `fanout` directories ("d0".."d{fanout-1}" at every level), files only in
// the leaf directories. Prepopulated file i is "p<i>" in leaf i % leaves. During a run, thread t
// owns the prepopulated files with i % threads == t plus the files it creates ("t<t>n<k>"), so no two
// threads race for one name and every operation is expected to succeed: any failure is counted by
// errno, ENOSPC apart (the seed's "spurious ENOSPC").
//
// Thread safety: run_workload starts and joins its own threads; the counters it publishes while
// running are atomics readable from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "io/status.h"

namespace ubtrfs::cowbench {

struct TreeShape {
  int depth = 3;   // directory levels below the subvolume root
  int fanout = 4;  // directories per level
  uint64_t leaves() const;
  // "d1/d0/d3" style path of leaf `index` (0 <= index < leaves()).
  std::string leaf_path(uint64_t index) const;
};

// Creates the directory tree and prepopulated files. files == 0: keep creating until the fs tree's
// root block has level >= 2, then 25 % more (so the level survives the runs' unlinks); at most 2,000,000.
// Returns the number of files created. Errors: the first failed operation.
[[nodiscard]] Result<uint64_t> populate(fs::Filesystem& fs, const TreeShape& shape, uint64_t files, int threads);

// FUSE numbers of the leaf directories of a populated tree, by index (lookups, kept referenced).
[[nodiscard]] Result<std::vector<uint64_t>> resolve_leaves(fs::Filesystem& fs, const TreeShape& shape);

// Level of the root block of the mounted subvolume's fs tree. Errors: those of loading the root.
[[nodiscard]] Result<int> fs_tree_level(fs::Filesystem& fs);

enum class OpKind : uint8_t { kCreate = 0, kWrite, kRename, kUnlink, kSetxattr };
inline constexpr int kOpKinds = 5;
const char* op_kind_name(OpKind k);  // "create", "write", "rename", "unlink", "setxattr"

struct WorkloadOptions {
  int threads = 8;
  uint64_t prepopulated = 0;    // files made by populate()
  uint64_t max_ops = 0;         // stop after this many operations in all (0: only the clock stops it)
  uint64_t seed = 1;
  uint32_t write_max = 8192;    // bytes per write, 1..write_max at an offset below 64 KiB
  uint32_t xattr_max = 256;     // bytes per xattr value
};

// Live counters, shared by the workers (relaxed atomics).
struct WorkloadCounters {
  std::atomic<uint64_t> ops{0};     // operations attempted (a lookup before an op is part of it)
  std::atomic<uint64_t> ok{0};      // operations that succeeded
  std::array<std::atomic<uint64_t>, kOpKinds> by_kind{};  // attempted, by kind
  std::atomic<uint64_t> enospc{0};  // operations that failed with ENOSPC
  std::atomic<uint64_t> other_errors{0};
  std::atomic<bool> stop{false};    // set by the caller (clock) or by a worker (max_ops, EROFS)
};

struct WorkloadResult {
  std::string first_error;  // first unexpected (non-ENOSPC) failure, "" if none
};

// Runs the workers until counters.stop is set (by the caller, or when max_ops is reached, or after
// the filesystem turned read-only). REQUIRES: `leaves` from resolve_leaves on this mount.
WorkloadResult run_workload(fs::Filesystem& fs, const std::vector<uint64_t>& leaves, const WorkloadOptions& opts,
                            WorkloadCounters& counters);

}  // namespace ubtrfs::cowbench
