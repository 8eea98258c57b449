// Extent buffer item surgery: the byte movers behind insert, delete, split and push; see
// extent_buffer.h. Every function keeps FORMAT.md §2.3 (leaf data packed from the end of the block,
// item i's data ending where item i-1's begins, no gaps) and §2.4 (key pointers contiguous).
#include "tree/extent_buffer.h"

#include <numeric>

namespace ubtrfs {

std::pair<bool, int> ExtentBuffer::bin_search(const Key& key) const {
  // btrfs `btrfs_bin_search` (ctree.c): classic lower bound over item or pointer keys.
  int lo = 0;
  int hi = static_cast<int>(nritems());
  const bool leaf = is_leaf();
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    Key k = leaf ? item_key(mid) : node_key(mid);
    if (k < key) {
      lo = mid + 1;
    } else if (key < k) {
      hi = mid;
    } else {
      return {true, mid};
    }
  }
  return {false, lo};
}

void leaf_insert_slots(ExtentBuffer& leaf, int slot, std::span<const Key> keys, std::span<const uint32_t> sizes) {
  assert(keys.size() == sizes.size());
  const int n = static_cast<int>(leaf.nritems());
  const int k = static_cast<int>(keys.size());
  const uint32_t total = std::accumulate(sizes.begin(), sizes.end(), 0u);
  assert(leaf.leaf_free_space() >= total + k * sizeof(Item));
  uint32_t top = slot == 0 ? leaf.leaf_data_size() : leaf.item_offset(slot - 1);
  if (slot < n) {
    const uint32_t data_end = leaf.leaf_data_end();
    leaf.memmove_within(ExtentBuffer::leaf_data_abs(data_end - total), ExtentBuffer::leaf_data_abs(data_end),
                        top - data_end);
    for (int i = slot; i < n; ++i) leaf.set_item_offset(i, leaf.item_offset(i) - total);
    leaf.memmove_within(ExtentBuffer::item_nr_offset(slot + k), ExtentBuffer::item_nr_offset(slot),
                        static_cast<size_t>(n - slot) * sizeof(Item));
  }
  for (int j = 0; j < k; ++j) {
    top -= sizes[j];
    leaf.set_item_key(slot + j, keys[j]);
    leaf.set_item_offset(slot + j, top);
    leaf.set_item_size(slot + j, sizes[j]);
  }
  leaf.set_nritems(static_cast<uint32_t>(n + k));
}

void leaf_delete_slots(ExtentBuffer& leaf, int slot, int nr) {
  const int n = static_cast<int>(leaf.nritems());
  assert(slot >= 0 && nr >= 0 && slot + nr <= n);
  if (nr == 0) return;
  const uint32_t dsize = leaf.item_end(slot) - leaf.item_offset(slot + nr - 1);
  if (slot + nr < n) {
    const uint32_t data_end = leaf.leaf_data_end();
    const uint32_t last = leaf.item_offset(slot + nr - 1);
    leaf.memmove_within(ExtentBuffer::leaf_data_abs(data_end + dsize), ExtentBuffer::leaf_data_abs(data_end),
                        last - data_end);
    for (int i = slot + nr; i < n; ++i) leaf.set_item_offset(i, leaf.item_offset(i) + dsize);
    leaf.memmove_within(ExtentBuffer::item_nr_offset(slot), ExtentBuffer::item_nr_offset(slot + nr),
                        static_cast<size_t>(n - slot - nr) * sizeof(Item));
  }
  leaf.set_nritems(static_cast<uint32_t>(n - nr));
}

void leaf_append_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr) {
  if (nr <= 0) return;
  const int dn = static_cast<int>(dst.nritems());
  const uint32_t dst_end = dst.leaf_data_end();
  const uint32_t lo = src.item_offset(start + nr - 1);
  const uint32_t hi = src.item_end(start);
  const uint32_t total = hi - lo;
  assert(dst.leaf_free_space() >= total + nr * sizeof(Item));
  dst.copy_from(src, ExtentBuffer::leaf_data_abs(dst_end - total), ExtentBuffer::leaf_data_abs(lo), total);
  dst.copy_from(src, ExtentBuffer::item_nr_offset(dn), ExtentBuffer::item_nr_offset(start),
                static_cast<size_t>(nr) * sizeof(Item));
  const int64_t delta = static_cast<int64_t>(dst_end) - static_cast<int64_t>(hi);
  for (int i = dn; i < dn + nr; ++i)
    dst.set_item_offset(i, static_cast<uint32_t>(static_cast<int64_t>(dst.item_offset(i)) + delta));
  dst.set_nritems(static_cast<uint32_t>(dn + nr));
}

void leaf_prepend_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr) {
  if (nr <= 0) return;
  const int dn = static_cast<int>(dst.nritems());
  const uint32_t lds = dst.leaf_data_size();
  const uint32_t dst_end = dst.leaf_data_end();
  const uint32_t lo = src.item_offset(start + nr - 1);
  const uint32_t hi = src.item_end(start);
  const uint32_t total = hi - lo;
  assert(dst.leaf_free_space() >= total + nr * sizeof(Item));
  if (dn > 0) {
    dst.memmove_within(ExtentBuffer::leaf_data_abs(dst_end - total), ExtentBuffer::leaf_data_abs(dst_end),
                       lds - dst_end);
    for (int i = 0; i < dn; ++i) dst.set_item_offset(i, dst.item_offset(i) - total);
    dst.memmove_within(ExtentBuffer::item_nr_offset(nr), ExtentBuffer::item_nr_offset(0),
                       static_cast<size_t>(dn) * sizeof(Item));
  }
  dst.copy_from(src, ExtentBuffer::leaf_data_abs(lds - total), ExtentBuffer::leaf_data_abs(lo), total);
  dst.copy_from(src, ExtentBuffer::item_nr_offset(0), ExtentBuffer::item_nr_offset(start),
                static_cast<size_t>(nr) * sizeof(Item));
  const uint32_t delta = lds - hi;
  for (int i = 0; i < nr; ++i) dst.set_item_offset(i, dst.item_offset(i) + delta);
  dst.set_nritems(static_cast<uint32_t>(dn + nr));
}

void node_insert_ptr(ExtentBuffer& node, int slot, const Key& key, uint64_t blockptr, uint64_t gen) {
  const int n = static_cast<int>(node.nritems());
  assert(static_cast<uint32_t>(n) < node.max_ptrs() && slot <= n);
  if (slot < n)
    node.memmove_within(ExtentBuffer::key_ptr_offset(slot + 1), ExtentBuffer::key_ptr_offset(slot),
                        static_cast<size_t>(n - slot) * sizeof(KeyPtr));
  node.set_node_key(slot, key);
  node.set_node_blockptr(slot, blockptr);
  node.set_node_ptr_generation(slot, gen);
  node.set_nritems(static_cast<uint32_t>(n + 1));
}

void node_delete_ptrs(ExtentBuffer& node, int slot, int nr) {
  const int n = static_cast<int>(node.nritems());
  assert(slot + nr <= n);
  if (slot + nr < n)
    node.memmove_within(ExtentBuffer::key_ptr_offset(slot), ExtentBuffer::key_ptr_offset(slot + nr),
                        static_cast<size_t>(n - slot - nr) * sizeof(KeyPtr));
  node.set_nritems(static_cast<uint32_t>(n - nr));
}

void node_append_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr) {
  if (nr <= 0) return;
  const int dn = static_cast<int>(dst.nritems());
  assert(dn + nr <= static_cast<int>(dst.max_ptrs()));
  dst.copy_from(src, ExtentBuffer::key_ptr_offset(dn), ExtentBuffer::key_ptr_offset(start),
                static_cast<size_t>(nr) * sizeof(KeyPtr));
  dst.set_nritems(static_cast<uint32_t>(dn + nr));
}

void node_prepend_from(ExtentBuffer& dst, const ExtentBuffer& src, int start, int nr) {
  if (nr <= 0) return;
  const int dn = static_cast<int>(dst.nritems());
  assert(dn + nr <= static_cast<int>(dst.max_ptrs()));
  if (dn > 0)
    dst.memmove_within(ExtentBuffer::key_ptr_offset(nr), ExtentBuffer::key_ptr_offset(0),
                       static_cast<size_t>(dn) * sizeof(KeyPtr));
  dst.copy_from(src, ExtentBuffer::key_ptr_offset(0), ExtentBuffer::key_ptr_offset(start),
                static_cast<size_t>(nr) * sizeof(KeyPtr));
  dst.set_nritems(static_cast<uint32_t>(dn + nr));
}

}  // namespace ubtrfs
