// LeafBuilder: builds one complete btrfs leaf from a set of items (FORMAT.md §2.1, §2.3).
//
// mkfs creates every initial tree as a single leaf, so it needs no B-tree code: items are collected
// in any order, then build() sorts them by key, refuses duplicates and overflow, packs the item data
// downwards from the end of the block with no gaps, fills the header (fsid, bytenr, WRITTEN flag with
// backref revision 1, chunk tree uuid, generation, owner, level 0) and the checksum.
// Item bodies are produced by the small encoders below, one per on-disk item type.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "io/status.h"
#include "tree/format.h"
#include "tree/fs_params.h"

namespace ubtrfs::mkfs {

using Bytes = std::vector<uint8_t>;

class LeafBuilder {
 public:
  LeafBuilder(uint64_t owner, uint64_t bytenr) : owner_(owner), bytenr_(bytenr) {}

  void add(const Key& key, Bytes body) { items_.push_back({key, std::move(body)}); }
  template <class T>
  void add_struct(const Key& key, const T& v) {
    Bytes b(sizeof(T));
    store(b.data(), v);
    add(key, std::move(b));
  }

  // Bytes of leaf data the items need (item headers + bodies).
  size_t used_bytes() const;
  uint64_t owner() const { return owner_; }
  uint64_t bytenr() const { return bytenr_; }

  // The finished, checksummed block. Errors: EFBIG if the items do not fit in one leaf (message
  // names the tree and both sizes), EEXIST on a duplicate key.
  [[nodiscard]] Result<Bytes> build(const FsParams& fs, uint64_t generation) const;

 private:
  struct PendingItem {
    Key key;
    Bytes body;
  };
  uint64_t owner_;
  uint64_t bytenr_;
  std::vector<PendingItem> items_;
};

// ---- item body encoders ---------------------------------------------------------------------------
template <class T>
Bytes encode(const T& v) {
  Bytes b(sizeof(T));
  store(b.data(), v);
  return b;
}
// INODE_REF body: one {index, name_len, name} entry.
Bytes inode_ref(uint64_t index, std::string_view name);
// DIR_ITEM / DIR_INDEX body with one entry.
Bytes dir_item(const Key& location, uint64_t transid, std::string_view name, uint8_t type);
// CHUNK_ITEM with one stripe per physical offset.
Bytes chunk_item(uint64_t length, uint64_t type, uint32_t sectorsize, std::span<const uint64_t> physical,
                 std::span<const uint8_t, 16> dev_uuid);
// Skinny METADATA_ITEM body: refs 1, TREE_BLOCK flag, one inline TREE_BLOCK_REF to `owner`.
Bytes metadata_item(uint64_t generation, uint64_t owner);

}  // namespace ubtrfs::mkfs
