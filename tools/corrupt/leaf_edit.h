// Leaf and node surgery for ubtrfs-corrupt: the raw edits the oracle tests need to build each
// corruption of FORMAT.md §6.3 (delete an item and repack the leaf, swap two keys, rewrite a
// field of an item body or of the header). These functions do NOT keep the tree valid — that is
// the point — but they keep the leaf's own layout packed unless asked otherwise, so that exactly
// one rule is broken at a time. Every access is bounds-checked; errors come back as Status.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::corrupt {

// Item slot of `key` in the leaf, or ENOENT.
[[nodiscard]] Result<int> find_slot(std::span<const uint8_t> leaf, const Key& key);
// Absolute byte range [off, off+size) of slot's body inside the block.
[[nodiscard]] Result<std::pair<size_t, size_t>> item_body_range(std::span<const uint8_t> leaf, int slot);
// Removes the item, moves the data of the later items up so the leaf stays packed.
[[nodiscard]] Status delete_item(std::span<uint8_t> leaf, int slot);
// Exchanges the keys of slot and slot+1 (bodies stay): the "bad key order" corruption.
[[nodiscard]] Status swap_keys(std::span<uint8_t> leaf, int slot);
// Rewrites the key of a slot (leaf) or key pointer (node).
[[nodiscard]] Status set_key(std::span<uint8_t> block, int slot, const Key& key);

// Field tables: name -> (offset, size) inside an item body of the given key type, or inside the
// header (type 0). Sizes 1, 2, 4 or 8. ENOENT with the list of known names otherwise.
struct Field {
  size_t offset = 0;
  size_t size = 0;
};
[[nodiscard]] Result<Field> item_field(uint8_t key_type, const std::string& name, bool skinny_metadata_item);
[[nodiscard]] Result<Field> header_field(const std::string& name);
[[nodiscard]] Result<Field> super_field(const std::string& name);

uint64_t get_le(const uint8_t* p, size_t size);
void put_le(uint8_t* p, size_t size, uint64_t v);

// Parses "257 INODE_ITEM 0" (objectid and offset decimal, negative, or 0x hex; type by name as
// dump-tree prints it, or a number).
[[nodiscard]] Result<Key> parse_key(const std::string& text);

}  // namespace ubtrfs::corrupt
