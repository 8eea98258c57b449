// The operation table of ubtrfs-stress: names, default weights, and --ops parsing.
//
// Owns: the list of operation kinds a worker can draw and their relative frequencies. A weight
// vector is indexed by OpKind; an operation with weight 0 is never drawn. The table order is
// part of the deterministic sequence (a seed replays only against the same table). copy_range is
// off by default (weight 0), so the sequences of seeds recorded before it existed are unchanged;
// enable it with --ops ...,copy_range=N. snapshot and snapdelete are off too (--snapshots turns
// them on and makes each worker's directory a subvolume).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ubtrfs::stress {

enum class OpKind : uint8_t {
  kCreat,
  kWrite,
  kRead,
  kTruncate,
  kPunch,
  kFallocate,
  kRename,
  kLink,
  kUnlink,
  kMkdir,
  kRmdir,
  kSymlink,
  kSetxattr,
  kRemovexattr,
  kFsync,
  kFdatasync,
  kStat,
  kReaddir,
  kChmod,
  kCopyRange,  // copy_file_range between two files at the same offset (ubtrfs shares extents)
  kSnapshot,   // btrfs snapshot of the worker's subvolume root (--snapshots), verified later
  kSnapDelete, // delete one of those snapshots after verifying it
  kCount,
};

inline constexpr size_t kNumOps = static_cast<size_t>(OpKind::kCount);
using OpWeights = std::array<uint32_t, kNumOps>;
using OpCounts = std::array<uint64_t, kNumOps>;

const char* op_name(OpKind op);
std::optional<OpKind> op_from_name(std::string_view name);
OpWeights default_op_weights();

// Parses "write,read" (listed ops at their default weight, the others off) or
// "write=10,read=5" (explicit weights), or a mix. Returns nullopt and sets *error on a bad list.
std::optional<OpWeights> parse_op_list(std::string_view list, std::string* error);

// Names of every op, comma-separated, for --help.
std::string all_op_names();

}  // namespace ubtrfs::stress
