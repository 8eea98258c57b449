// File extents: the EXTENT_DATA items of an inode (btrfs file-item.c / file.c:
// `btrfs_drop_extents`, `insert_reserved_file_extent`; FORMAT.md §3.7).
//
// Owns the item layout and the rules a file's extent list keeps:
// - items of one inode never overlap; REG/PREALLOC items are 53 bytes, inline items 21 + stored
//   length and only at file offset 0; a hole is a REG item with disk_bytenr 0 (only without
//   NO_HOLES);
// - each REG/PREALLOC item with disk_bytenr != 0 holds one data reference (root, ino,
//   key.offset - extent offset) on its disk extent; dropping and splitting items keep those
//   references exact through the DataRefSink (-1 per removed item, +1 per extra piece of a split);
// - inode nbytes = sum of num_bytes of non-hole REG/PREALLOC items + ram_bytes of inline items;
//   drop_extents returns how much it removed so the caller can keep nbytes right.
// An inline extent is never split: dropping a range that starts inside it is refused (the data
// layer first moves an inline extent's bytes to delalloc, like btrfs converts it on write).
// Thread safety: the tree locks itself; REQUIRES the caller holds the inode's lock exclusively for
// modifications.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "io/status.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

// One EXTENT_DATA item, decoded.
struct FileExtent {
  uint64_t file_offset = 0;  // key offset
  uint64_t generation = 0, ram_bytes = 0;
  uint8_t compression = kCompressNone;
  uint8_t type = kFileExtentReg;
  uint64_t disk_bytenr = 0, disk_num_bytes = 0, offset = 0, num_bytes = 0;  // REG / PREALLOC
  std::vector<uint8_t> inline_data;  // INLINE: the stored (maybe compressed) bytes

  bool is_inline() const { return type == kFileExtentInline; }
  bool is_hole() const { return !is_inline() && disk_bytenr == 0; }
  bool is_prealloc() const { return type == kFileExtentPrealloc; }
  // End of the file range it covers; inline extents cover their whole first sector (as btrfs's
  // extent_end = ALIGN(offset + ram_bytes, sectorsize)).
  uint64_t end(uint32_t sectorsize) const;
  // Its contribution to inode nbytes.
  uint64_t nbytes() const;
};

// Decodes and validates an EXTENT_DATA item (sizes, type, alignment). Errors: EUCLEAN naming the key.
[[nodiscard]] Result<FileExtent> parse_file_extent(const Key& key, std::span<const uint8_t> item, uint32_t sectorsize);

// Every extent of `ino` that overlaps [start, end), in file order. Reads without a handle.
[[nodiscard]] Result<std::vector<FileExtent>> find_file_extents(TreeRoot& root, const FsParams& fs, uint64_t ino,
                                                                uint64_t start, uint64_t end);

// Where data reference changes go (ExtentAllocator::add_data_ref in the filesystem; a recorder in
// tests). `offset` is the file key offset minus the extent offset.
class DataRefSink {
 public:
  virtual ~DataRefSink() = default;
  [[nodiscard]] virtual Status add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root,
                                            uint64_t ino, uint64_t offset, int delta, bool new_alloc) = 0;
};

// btrfs_drop_extents: afterwards no extent of `ino` covers any byte of [start, end) (end may be
// UINT64_MAX). Items inside are deleted, items crossing an edge trimmed, an item covering both
// edges split in two (a bookend pair). Returns the nbytes removed. REQUIRES: start, end
// sector-aligned (end may be UINT64_MAX). Errors: EINVAL when start falls strictly inside an inline
// extent; EUCLEAN for a bad item; tree errors.
[[nodiscard]] Result<uint64_t> drop_extents(TreeHandle& h, TreeRoot& root, const FsParams& fs, DataRefSink& refs,
                                            uint64_t ino, uint64_t start, uint64_t end);

// A REG or PREALLOC item (53 bytes). REQUIRES: no extent of `ino` overlaps its range.
// `compression`: a compressed REG extent (disk_num_bytes the compressed size rounded up to the
// sector, ram_bytes the uncompressed size; fs/file_compress.cpp).
FileExtentItem make_file_extent(uint64_t transid, uint8_t type, uint64_t disk_bytenr, uint64_t disk_num_bytes,
                                uint64_t offset, uint64_t num_bytes, uint64_t ram_bytes,
                                uint8_t compression = kCompressNone);
[[nodiscard]] Status insert_file_extent(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t file_offset,
                                        const FileExtentItem& item);
// An inline extent at offset 0 holding `data`: uncompressed, or (compression set) `data` is the
// compressed form of ram_bytes bytes of file data. REQUIRES: data.size() < sectorsize, no extent
// at offset 0.
[[nodiscard]] Status insert_inline_extent(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t transid,
                                          std::span<const uint8_t> data, uint8_t compression = kCompressNone,
                                          uint64_t ram_bytes = 0);

}  // namespace ubtrfs::fs
