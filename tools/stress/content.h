// The model of one regular file's bytes, for ubtrfs-stress.
//
// Owns: a file size and a map of data extents. Every write is identified by a nonzero 64-bit
// seed, and the byte a write puts at absolute file offset o is pattern_byte(seed, o): a pure
// function of the seed and the offset. An extent is therefore just [start, end) plus the seed
// that wrote it, and trimming or splitting an extent (overwrite, truncate, punch) never has to
// touch data. Bytes below the size that no extent covers read as zero (holes, preallocated
// space, the tail exposed by truncating up). Memory is O(number of live extents), never
// O(file size), so sparse files of many MiB cost a few map nodes.
//
// Invariants: extents never overlap, never are empty, and never reach past size_ (truncate
// down trims them; punch and write past EOF keep the map consistent). allocated_ is an
// estimate of the space the file pins (data extents plus fallocated bytes); it is only used to
// keep a run inside its space budget, never verified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>

namespace ubtrfs::stress {

// The byte write `seed` stores at file offset `offset`.
uint8_t pattern_byte(uint64_t seed, uint64_t offset);

// Fills out[i] = pattern_byte(seed, offset + i), eight bytes per hash.
void fill_pattern(uint64_t seed, uint64_t offset, std::span<uint8_t> out);

class FileContent {
 public:
  uint64_t size() const { return size_; }
  uint64_t allocated() const;
  uint64_t data_bytes() const;
  size_t extent_count() const { return extents_.size(); }

  // pwrite(len bytes at off) of pattern `seed`. REQUIRES: seed != 0.
  void write(uint64_t off, uint64_t len, uint64_t seed);
  // ftruncate(new_size).
  void truncate(uint64_t new_size);
  // fallocate(PUNCH_HOLE | KEEP_SIZE, off, len): zeroes [off, off+len) below the size.
  void punch(uint64_t off, uint64_t len);
  // fallocate(mode 0 or KEEP_SIZE): contents unchanged; mode 0 may grow the size.
  void fallocate(uint64_t off, uint64_t len, bool keep_size);
  // copy_file_range of n bytes at `off` of `src` to the same offset of this file: the bytes (and
  // holes) of src's range replace this file's; the size grows to off + n. Since a byte's pattern
  // is a function of its offset, a copy to the same offset is the source's extents, clipped.
  // REQUIRES: off + n <= src.size(), &src != this.
  void copy_from(const FileContent& src, uint64_t off, uint64_t n);

  // The bytes a read of out.size() bytes at off must return; returns the count (short at EOF).
  size_t read(uint64_t off, std::span<uint8_t> out) const;

 private:
  struct Extent {
    uint64_t end;
    uint64_t seed;
  };
  // Removes every byte of [start, end) from the extent map (splitting at the edges).
  void clear_range(uint64_t start, uint64_t end);

  uint64_t size_ = 0;
  uint64_t prealloc_ = 0;      // bytes fallocated (an over-estimate: overlaps count twice)
  uint64_t prealloc_end_ = 0;  // highest end of a fallocate since the last shrink
  std::map<uint64_t, Extent> extents_;  // key: start offset
};

}  // namespace ubtrfs::stress
