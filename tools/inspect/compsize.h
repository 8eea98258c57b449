// compsize for an image: how much disk the data of a file, a directory tree or the whole filesystem
// takes per compression type, computed from the EXTENT_DATA items (the report of the `compsize`
// tool, which asks the kernel through TREE_SEARCH for the same items).
//
// Owns: the three figures per type, as compsize defines them —
//   Disk Usage   bytes on disk of each distinct data extent (disk_num_bytes), counted once however
//                many items refer to it; for an inline extent the bytes stored in the item;
//   Uncompressed the data those extents hold uncompressed (ram_bytes), also counted once;
//   Referenced   what the files' items refer to (num_bytes per item; ram_bytes for inline), counted
//                once per reference.
// PREALLOC extents form their own row ("prealloc"); holes count nothing. Without a path every
// subvolume tree is read; with one, the path is resolved in the top-level subvolume (FS_TREE)
// and a directory means every regular file below it (not crossing into other subvolumes).
// Invariants: read-only (the FsReader's device refuses writes).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "io/status.h"
#include "tree/fs_reader.h"

namespace ubtrfs::inspect {

struct CompsizeRow {
  uint64_t disk = 0, uncompressed = 0, referenced = 0;
};
struct CompsizeReport {
  // Indexed by the compression value (none, zlib, lzo, zstd), then prealloc at 4.
  std::array<CompsizeRow, 5> rows{};
  uint64_t files = 0, regular_extents = 0, refs = 0, inline_extents = 0;
  CompsizeRow total() const;
};

// Errors: ENOENT for a path that does not exist; tree read errors.
[[nodiscard]] Result<CompsizeReport> compsize(const FsReader& reader, const std::optional<std::string>& path);
// The compsize table: "Processed N files, ..." then Type / Perc / Disk Usage / Uncompressed /
// Referenced rows (TOTAL first, then each type that has data). `bytes`: plain byte counts (compsize
// -b), else binary units as compsize prints them.
std::string format_compsize(const CompsizeReport& r, bool bytes);

}  // namespace ubtrfs::inspect
