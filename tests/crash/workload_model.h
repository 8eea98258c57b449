// The workload's operations and the model of what each does and what each durability point
// promises (issue 9, tests/crash).
//
// Owns: Op (one POSIX operation with fixed arguments, printable so a failure names it), the model
// (apply_to_model: the errno POSIX gives for the op in a state, and the state after it) and
// execute_op (the same op through fs::Filesystem, by path, forgetting every lookup it takes).
// Durability (DurabilityPoint, filled by the recorder): fsync/fdatasync of a file promises that
// file's bytes (and, for fsync, xattrs); fsync of a directory its entries; sync (and the final
// unmount) everything. What a point promised is checked per object and therefore stays right when
// fsync becomes a log-tree fsync; while every durability point is a full commit (ubtrfs today) the
// image must moreover equal one whole snapshot of the model (no resurrected deletes, no half
// renames) — crash_judge.h applies both.
// Invariants: apply_to_model never changes the state of an op it refuses; file data written by op
// is a deterministic function of its arguments (pattern()).
#pragma once

#include <cstdint>
#include <string>

#include "fs/filesystem.h"
#include "io/fault_device.h"
#include "tests/crash/fs_state.h"

namespace ubtrfs::crash {

enum class OpKind {
  kCreat, kWrite, kFalloc, kPunch, kTruncate, kLink, kUnlink, kRename, kMkdir, kRmdir, kSetxattr,
  // durability points
  kFsync, kFdatasync, kFsyncDir, kSync,
};

struct Op {
  OpKind kind = OpKind::kSync;
  std::string path, path2;  // path2: link / rename destination
  uint64_t off = 0, len = 0;
  uint8_t fill = 0;         // write pattern seed; setxattr value seed
  bool keep_size = false;   // fallocate
  std::string xname;        // setxattr name

  bool is_durability_point() const { return kind >= OpKind::kFsync; }
  std::string text() const;  // "write foo 2000+5000 fill 7"
};

// The bytes a write op puts at file offset off + i.
std::string pattern(const Op& op);

// 0 if the op succeeds in `state` (which is then updated; new_ino is the inode number the
// filesystem gave a creat/mkdir), else the errno POSIX requires (state unchanged).
int apply_to_model(FsState& state, const Op& op, uint64_t new_ino = 0);

// Runs the op on the filesystem. new_ino receives the inode number of a creat/mkdir.
[[nodiscard]] Status execute_op(fs::Filesystem& fs, const Op& op, uint64_t* new_ino);

// One durability point the workload passed: after the op that made ops_done ops complete, the call
// returned with the recording device at `at_return`.
struct DurabilityPoint {
  size_t snapshot = 0;      // index of the model snapshot it promises (ops completed before it)
  OpKind kind = OpKind::kSync;
  uint64_t ino = 0;         // the object it covers (0: everything)
  io::LogPosition at_return;
  std::string text;         // the op, for reports
};

}  // namespace ubtrfs::crash
