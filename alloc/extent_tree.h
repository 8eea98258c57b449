// The extent tree updater: applies delayed reference heads to the extent tree at commit (btrfs
// extent-tree.c `__btrfs_run_delayed_refs`, `alloc_reserved_tree_block`, `alloc_reserved_file_extent`,
// `__btrfs_inc_extent_ref`, `__btrfs_free_extent`).
//
// Owns the extent tree's item layouts as ubtrfs writes them (FORMAT.md §3.7-3.9):
// - tree blocks: METADATA_ITEM (skinny_metadata) keyed (bytenr, 169, level), else EXTENT_ITEM keyed
//   (bytenr, 168, nodesize) with a tree_block_info; flags TREE_BLOCK; one inline TREE_BLOCK_REF;
// - data: EXTENT_ITEM keyed (bytenr, 168, num_bytes), flags DATA, inline EXTENT_DATA_REFs (sorted as
//   the kernel sorts inline refs) while the item fits, keyed EXTENT_DATA_REF items beyond;
// - existing items written by the kernel are modified in whatever form they are in (inline or keyed
//   refs); SHARED_BLOCK_REF / SHARED_DATA_REF refs come from heads whose RefKey has a parent
//   (the first COW of a block a snapshot shares, alloc/shared_refs.cpp).
// For every head it also applies the space consequences through the ExtentSpace callbacks: an
// extent item inserted -> block group reserved->used and the range leaves the free space tree; an
// extent item deleted -> used->pinned, the range returns to the free space tree, and (data) its
// checksums must be deleted. Cancelled heads (allocated and freed in one transaction) never touch
// the tree.
//
// Rules mirrored from the kernel (extent-tree.c `lookup_inline_extent_backref`,
// `insert_extent_data_ref`, `__btrfs_free_extent`):
// - inline refs are ordered by type ascending, within a type by sequence descending (sequence =
//   the root / parent, or hash_extent_data_ref for EXTENT_DATA_REF) — what the tree-checker demands;
// - a new ref goes inline only while item size + ref size < max_extent_item_size(nodesize)
//   (BTRFS_MAX_EXTENT_ITEM_SIZE) and no keyed ref item exists for the extent; else it becomes a
//   keyed item; keyed EXTENT_DATA_REFs sit at the hash, or the next free offset on a collision;
// - keyed refs that drop to 0 are deleted; nothing moves back inline (the kernel does not either);
// - the extent item's refs is the sum of every ref's count; at 0 the item and its keyed refs go;
// - per head, additions run before drops (btrfs `select_delayed_ref`), so counts never dip to 0;
//   tree refs are matched by root, shared refs by parent (RefKey's level is informational); a
//   head's set_flags (FULL_BACKREF) is ORed into the item.
// - non-skinny tree blocks: tree_block_info's key is the block's first key taken from the buffer
//   cache when the item is inserted (the kernel records the key known at allocation; btrfs check
//   does not compare it, relocation re-reads the block), a zero key if the block is not cached or
//   empty; its level is the block's level.
// Thread safety: called by the committer only, with no other handle running.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "alloc/delayed_ref.h"
#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::alloc {

// What running refs does to space, implemented by the committer (fs/commit) over BlockGroupCache
// and the FreeSpaceTree.
class ExtentSpace {
 public:
  virtual ~ExtentSpace() = default;
  // The extent's item was inserted: its bytes become `used` on disk.
  [[nodiscard]] virtual Status extent_inserted(TreeHandle& h, uint64_t bytenr, uint64_t len, bool is_data) = 0;
  // The extent's item was deleted (last reference gone): bytes pinned until commit end; data
  // extents also lose their checksums.
  [[nodiscard]] virtual Status extent_deleted(TreeHandle& h, uint64_t bytenr, uint64_t len, bool is_data) = 0;
  // A head that cancelled (allocated and dropped in this transaction). Tree blocks: nothing to do
  // for space, ExtentAllocator::free_tree_block already released or pinned the bytes. Data: the
  // bytes are still reserved; the committer pins them (BlockGroup::pin_reserved, as the kernel pins
  // a must_insert_reserved head: the data may have been written) and deletes their checksums.
  [[nodiscard]] virtual Status extent_cancelled(TreeHandle& h, uint64_t bytenr, uint64_t len, bool is_data) = 0;
};

// ---- item codec (exposed for tests and inspection tools) ------------------------------------------

// One backref of an extent, inline or keyed, in CPU form.
struct ExtentBackref {
  uint8_t type = 0;       // kTreeBlockRefKey, kExtentDataRefKey, kSharedBlockRefKey, kSharedDataRefKey, kExtentOwnerRefKey
  uint64_t offset = 0;    // TREE_BLOCK / OWNER: root; SHARED_*: parent bytenr; EXTENT_DATA_REF: unused
  uint64_t root = 0, objectid = 0, data_offset = 0;  // EXTENT_DATA_REF only
  uint64_t count = 1;     // EXTENT_DATA_REF / SHARED_DATA_REF count; 1 for the others
  // Ordering sequence within a type (inline refs: descending).
  uint64_t sequence() const;
  bool same_ref(const ExtentBackref& o) const;
};

// An EXTENT_ITEM / METADATA_ITEM body.
struct ExtentItemBody {
  uint64_t refs = 0, generation = 0, flags = 0;
  bool has_block_info = false;  // EXTENT_ITEM of a tree block (non-skinny)
  Key block_key{};
  uint8_t block_level = 0;
  std::vector<ExtentBackref> inline_refs;
  uint32_t encoded_size() const;
};

// BTRFS_MAX_EXTENT_ITEM_SIZE: an inline ref is added only while item size + ref size stays below.
constexpr uint32_t max_extent_item_size(uint32_t nodesize) {
  return (leaf_data_size(nodesize) >> 4) - static_cast<uint32_t>(sizeof(Item));
}

// Parses the item at `key` (type 168 or 169). Errors: EUCLEAN naming the key (truncated body,
// unknown inline ref type, trailing bytes).
[[nodiscard]] Result<ExtentItemBody> parse_extent_item(const Key& key, std::span<const uint8_t> data);
std::vector<uint8_t> encode_extent_item(const ExtentItemBody& body);
// Keyed backref items (types 176, 178, 182, 184): parse / encode the body.
[[nodiscard]] Result<ExtentBackref> parse_keyed_backref(const Key& key, std::span<const uint8_t> data);
std::vector<uint8_t> encode_keyed_backref(const ExtentBackref& ref);
// Where `ref` goes among `refs` (sorted as the kernel keeps them).
size_t inline_insert_position(const std::vector<ExtentBackref>& refs, const ExtentBackref& ref);

struct RunRefsStats {
  uint64_t heads = 0, inserted = 0, deleted = 0, updated = 0, cancelled = 0;
};

// Runs `heads` (from DelayedRefs::take_all) in order against `extent_root`. Modifying the tree
// COWs blocks and so queues new delayed refs: the committer loops until the queue stays empty.
// Errors: EUCLEAN with bytenr and key when the tree disagrees with a head (a missing item for a
// drop, a ref count going negative, an existing item for a must_insert head), EIO/ENOSPC from
// the tree. On error the transaction must be aborted.
[[nodiscard]] Result<RunRefsStats> run_delayed_refs(TreeHandle& h, TreeRoot& extent_root, const FsParams& fs,
                                                    std::vector<DelayedRefHead>& heads, ExtentSpace& space);

}  // namespace ubtrfs::alloc
