// File extents: decoding, lookup, btrfs_drop_extents, insertion. See file_extent.h.
//
// drop_extents handles the four overlap cases of btrfs_drop_extents (file.c) one item at a time,
// each with a fresh search: (1) item inside the range: delete, ref -1; (2) item sticks out on the
// left only: shorten it in place; (3) on the right only: re-key it at `end` with its extent offset
// advanced (done as delete + insert: the key changes; the data ref triple (root, ino,
// key - offset) stays the same so no ref changes); (4) on both sides: shorten in place and insert
// the right piece, which adds a second reference on the same extent (ref +1).
#include "fs/file_extent.h"

#include <algorithm>
#include <cstring>

#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

constexpr Key extent_key(uint64_t ino, uint64_t off) { return Key{ino, kExtentDataKey, off}; }

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// The first extent of ino ending after `cursor` and starting before `end`.
Result<std::optional<FileExtent>> first_extent_from(TreeRoot& root, const FsParams& fs, uint64_t ino, uint64_t cursor,
                                                    uint64_t end) {
  auto v = UBTRFS_TRY(find_file_extents(root, fs, ino, cursor, end));
  if (v.empty()) return std::optional<FileExtent>{};
  return std::optional<FileExtent>{std::move(v.front())};
}

}  // namespace

uint64_t FileExtent::end(uint32_t sectorsize) const {
  if (is_inline()) return align_up(file_offset + ram_bytes, sectorsize);
  return file_offset + num_bytes;
}

uint64_t FileExtent::nbytes() const {
  if (is_inline()) return ram_bytes;
  return is_hole() ? 0 : num_bytes;
}

Result<FileExtent> parse_file_extent(const Key& key, std::span<const uint8_t> item, uint32_t sectorsize) {
  if (item.size() < kFileExtentInlineDataStart)
    return fail(EUCLEAN, "file extent [{} {} {}]: item size {} too small", key.objectid, key.type, key.offset,
                item.size());
  const auto fi_head = item.first(kFileExtentInlineDataStart);
  FileExtentItem fi{};
  std::memcpy(&fi, fi_head.data(), fi_head.size());
  FileExtent e;
  e.file_offset = key.offset;
  e.generation = fi.generation;
  e.ram_bytes = fi.ram_bytes;
  e.compression = fi.compression;
  e.type = fi.type;
  if (fi.encryption != 0 || fi.other_encoding.get() != 0)
    return fail(EUCLEAN, "file extent [{} {} {}]: encryption {} other_encoding {} unsupported", key.objectid, key.type,
                key.offset, fi.encryption, fi.other_encoding.get());
  if (e.compression > kCompressZstd)
    return fail(EUCLEAN, "file extent [{} {} {}]: unknown compression {}", key.objectid, key.type, key.offset,
                e.compression);
  if (e.type == kFileExtentInline) {
    if (key.offset != 0)
      return fail(EUCLEAN, "file extent [{} {} {}]: inline extent not at offset 0", key.objectid, key.type, key.offset);
    e.inline_data.assign(item.begin() + kFileExtentInlineDataStart, item.end());
    if (e.compression == kCompressNone && e.inline_data.size() != e.ram_bytes)
      return fail(EUCLEAN, "file extent [{} {} {}]: inline ram_bytes {} != stored length {}", key.objectid, key.type,
                  key.offset, e.ram_bytes, e.inline_data.size());
    return e;
  }
  if (e.type != kFileExtentReg && e.type != kFileExtentPrealloc)
    return fail(EUCLEAN, "file extent [{} {} {}]: unknown type {}", key.objectid, key.type, key.offset, e.type);
  if (item.size() != sizeof(FileExtentItem))
    return fail(EUCLEAN, "file extent [{} {} {}]: item size {} != {}", key.objectid, key.type, key.offset, item.size(),
                sizeof(FileExtentItem));
  std::memcpy(&fi, item.data(), sizeof(fi));
  e.disk_bytenr = fi.disk_bytenr;
  e.disk_num_bytes = fi.disk_num_bytes;
  e.offset = fi.offset;
  e.num_bytes = fi.num_bytes;
  if (key.offset % sectorsize || e.num_bytes % sectorsize || e.num_bytes == 0 || e.disk_bytenr % sectorsize)
    return fail(EUCLEAN, "file extent [{} {} {}]: unaligned or empty (num_bytes {} disk_bytenr {})", key.objectid,
                key.type, key.offset, e.num_bytes, e.disk_bytenr);
  if (e.disk_bytenr != 0 && e.offset + e.num_bytes > e.ram_bytes)
    return fail(EUCLEAN, "file extent [{} {} {}]: offset {} + num_bytes {} > ram_bytes {}", key.objectid, key.type,
                key.offset, e.offset, e.num_bytes, e.ram_bytes);
  return e;
}

Result<std::vector<FileExtent>> find_file_extents(TreeRoot& root, const FsParams& fs, uint64_t ino, uint64_t start,
                                                  uint64_t end) {
  std::vector<FileExtent> out;
  if (start >= end) return out;
  Path p;
  const int r = UBTRFS_TRY(search_slot(nullptr, root, extent_key(ino, start), p, 0, false));
  if (r == 1 && p.slots[0] > 0) {
    // The item before may reach into [start, end).
    const Key k = p.leaf().item_key(p.slots[0] - 1);
    if (k.objectid == ino && k.type == kExtentDataKey) --p.slots[0];
  }
  bool valid = true;
  if (p.slots[0] >= static_cast<int>(p.leaf().nritems())) {
    if (p.leaf().nritems() == 0) return out;
    p.slots[0] = static_cast<int>(p.leaf().nritems()) - 1;
    valid = UBTRFS_TRY(next_leaf(root, p));
  }
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid != ino || k.type != kExtentDataKey || k.offset >= end) break;
    FileExtent e = UBTRFS_TRY(parse_file_extent(k, p.leaf().item_data(p.slots[0]), fs.sectorsize));
    if (e.end(fs.sectorsize) > start) out.push_back(std::move(e));
    valid = UBTRFS_TRY(next_item(root, p));
  }
  return out;
}

Result<uint64_t> drop_extents(TreeHandle& h, TreeRoot& root, const FsParams& fs, DataRefSink& refs, uint64_t ino,
                              uint64_t start, uint64_t end) {
  uint64_t dropped = 0;
  uint64_t cursor = start;
  const uint64_t root_id = root.objectid();
  while (cursor < end) {
    auto found = UBTRFS_TRY(first_extent_from(root, fs, ino, cursor, end));
    if (!found) break;
    const FileExtent& e = *found;
    const uint64_t ks = e.file_offset, ee = e.end(fs.sectorsize);
    const bool left = ks < start, right = ee > end;
    if (e.is_inline() && (left || right))
      return fail(EINVAL, "inode {} root {}: drop of [{}, {}) would split the inline extent [0, {})", ino, root_id,
                  start, end, ee);
    const bool has_ref = !e.is_inline() && !e.is_hole();
    const uint64_t ref_offset = ks - e.offset;

    Path p;
    const int r = UBTRFS_TRY(search_slot(&h, root, extent_key(ino, ks), p, -1, true));
    if (r != 0)
      return fail(EUCLEAN, "inode {} root {}: file extent [{} 108 {}] vanished during drop", ino, root_id, ino, ks);
    const int slot = p.slots[0];

    if (!left && !right) {
      UBTRFS_TRY_STATUS(del_items(h, root, p, slot, 1));
      if (has_ref)
        UBTRFS_TRY_STATUS(refs.add_data_ref(h, e.disk_bytenr, e.disk_num_bytes, root_id, ino, ref_offset, -1, false));
      dropped += e.nbytes();
    } else if (left && !right) {
      auto* fi = reinterpret_cast<FileExtentItem*>(p.leaf().item_data(slot).data());
      fi->num_bytes = start - ks;
      if (!e.is_hole()) dropped += ee - start;
    } else if (!left && right) {
      auto body = p.leaf().item_data(slot);
      FileExtentItem fi{};
      std::memcpy(&fi, body.data(), sizeof(fi));
      fi.offset = e.offset + (end - ks);
      fi.num_bytes = ee - end;
      UBTRFS_TRY_STATUS(del_items(h, root, p, slot, 1));
      UBTRFS_TRY_STATUS(insert_file_extent(h, root, ino, end, fi));
      if (!e.is_hole()) dropped += end - ks;
    } else {
      auto body = p.leaf().item_data(slot);
      FileExtentItem tail{};
      std::memcpy(&tail, body.data(), sizeof(tail));
      tail.offset = e.offset + (end - ks);
      tail.num_bytes = ee - end;
      reinterpret_cast<FileExtentItem*>(body.data())->num_bytes = start - ks;
      p.release();
      UBTRFS_TRY_STATUS(insert_file_extent(h, root, ino, end, tail));
      if (has_ref)
        UBTRFS_TRY_STATUS(refs.add_data_ref(h, e.disk_bytenr, e.disk_num_bytes, root_id, ino, ref_offset, +1, false));
      if (!e.is_hole()) dropped += end - start;
    }
    cursor = ee;
  }
  return dropped;
}

FileExtentItem make_file_extent(uint64_t transid, uint8_t type, uint64_t disk_bytenr, uint64_t disk_num_bytes,
                                uint64_t offset, uint64_t num_bytes, uint64_t ram_bytes, uint8_t compression) {
  FileExtentItem fi{};
  fi.generation = transid;
  fi.ram_bytes = ram_bytes;
  fi.compression = compression;
  fi.encryption = 0;
  fi.other_encoding = 0;
  fi.type = type;
  fi.disk_bytenr = disk_bytenr;
  fi.disk_num_bytes = disk_num_bytes;
  fi.offset = offset;
  fi.num_bytes = num_bytes;
  return fi;
}

Status insert_file_extent(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t file_offset,
                          const FileExtentItem& item) {
  std::span<const uint8_t> bytes{reinterpret_cast<const uint8_t*>(&item), sizeof(item)};
  return insert_item(h, root, extent_key(ino, file_offset), bytes);
}

Status insert_inline_extent(TreeHandle& h, TreeRoot& root, uint64_t ino, uint64_t transid,
                            std::span<const uint8_t> data, uint8_t compression, uint64_t ram_bytes) {
  FileExtentItem fi = make_file_extent(transid, kFileExtentInline, 0, 0, 0, 0,
                                       compression == kCompressNone ? data.size() : ram_bytes, compression);
  std::vector<uint8_t> body(kFileExtentInlineDataStart + data.size());
  std::memcpy(body.data(), &fi, kFileExtentInlineDataStart);
  std::memcpy(body.data() + kFileExtentInlineDataStart, data.data(), data.size());
  return insert_item(h, root, extent_key(ino, 0), body);
}

}  // namespace ubtrfs::fs
