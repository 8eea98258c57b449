// FreeSpaceTree: keeping the free space tree exact (btrfs free-space-tree.c; FORMAT.md §3.12).
//
// How a group is laid out in key space: (bg_start, FREE_SPACE_INFO 198, bg_len) comes first, then
// the group's FREE_SPACE_EXTENT (199) or FREE_SPACE_BITMAP (200) items, all with objectid in
// [bg_start, bg_end). Groups are contiguous in key order and share leaves, so every lookup here is
// bounded by the group: a neighbour is only taken as ours if its objectid is >= bg_start and it
// carries the extent type (the group's own info, type 198, stops a backwards look-up), and nothing
// at or after (bg_end, 0, 0) is ever read as ours or deleted.
//
// Extent format edits mirror the kernel's add_free_space_extent / remove_free_space_extent: find
// the free extent(s) touching the range with read-only look-ups, then delete and insert whole
// items (an extent item has an empty body, its length lives in the key) and adjust
// FREE_SPACE_INFO.extent_count by the difference. The look-ups double as the consistency check the
// header promises: removing needs one free extent that contains the whole range, adding needs the
// range to overlap no free extent.
//
// Bitmap format is only read, never written: the first add/remove on a bitmap group loads its runs,
// applies the change in memory through alloc::FreeSpace (which refuses the same inconsistencies),
// deletes the bitmap items and writes the runs as extents (the kernel's
// convert_free_space_to_extents, done unconditionally rather than by its thresholds).
//
// Thread safety: none of its own; the committer is the only caller (B-tree locking still applies
// to each search).
#include "alloc/free_space_tree.h"

#include <array>
#include <span>

#include "alloc/free_space.h"
#include "tree/ctree.h"
#include "tree/print_tree.h"

namespace ubtrfs::alloc {

namespace {

Key info_key(uint64_t bg_start, uint64_t bg_len) { return Key{bg_start, kFreeSpaceInfoKey, bg_len}; }

// Refuses ranges that are empty or leave the group before any tree access.
Status check_range_in_group(const char* what, uint64_t bg_start, uint64_t bg_len, uint64_t start, uint64_t len) {
  const uint64_t bg_end = bg_start + bg_len;
  if (len == 0 || start < bg_start || start >= bg_end || len > bg_end - start)
    return fail(EUCLEAN, "free space tree: cannot {} [{}, +{}): not inside block group [{}, +{})", what, start, len,
                bg_start, bg_len);
  return {};
}

}  // namespace

// ---- read-only helpers ------------------------------------------------------------------------------

Result<FreeSpaceTree::GroupInfo> FreeSpaceTree::read_info(uint64_t bg_start, uint64_t bg_len) {
  const Key key = info_key(bg_start, bg_len);
  auto body = UBTRFS_TRY(lookup_item(root_, key));
  if (!body) return fail(ENOENT, "free space info {} not found for block group {}", key_tuple_str(key), bg_start);
  if (body->size() != sizeof(FreeSpaceInfo))
    return fail(EUCLEAN, "free space info {} has size {} expect {}", key_tuple_str(key), body->size(), sizeof(FreeSpaceInfo));
  const auto raw = load<FreeSpaceInfo>(body->data());
  GroupInfo info{raw.extent_count.get(), raw.flags.get()};
  if (info.flags & ~kFreeSpaceUsingBitmaps)
    return fail(EUCLEAN, "free space info {} has unknown flags 0x{:x}", key_tuple_str(key), info.flags);
  return info;
}

Result<std::optional<Key>> FreeSpaceTree::first_key_at_or_after(const Key& k) {
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root_, k, p, 0, false));
  if (p.slots[0] < static_cast<int>(p.leaf().nritems())) return p.leaf().item_key(p.slots[0]);
  if (p.leaf().nritems() == 0) return std::optional<Key>{};  // empty root leaf
  if (!UBTRFS_TRY(next_leaf(root_, p))) return std::optional<Key>{};
  return p.leaf().item_key(p.slots[0]);
}

Result<std::optional<Key>> FreeSpaceTree::last_key_before(const Key& k) {
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root_, k, p, 0, false));
  // Found or not, slots[0] is the first key >= k; the one before it is what we want.
  if (p.slots[0] > 0) return p.leaf().item_key(p.slots[0] - 1);
  if (p.leaf().nritems() == 0) return std::optional<Key>{};
  if (!UBTRFS_TRY(prev_leaf(root_, p))) return std::optional<Key>{};
  return p.leaf().item_key(p.slots[0]);
}

// ---- load_group ---------------------------------------------------------------------------------

Result<std::map<uint64_t, uint64_t>> FreeSpaceTree::load_group(uint64_t bg_start, uint64_t bg_len) {
  const Key ikey = info_key(bg_start, bg_len);
  const uint64_t bg_end = bg_start + bg_len;
  Path p;
  if (UBTRFS_TRY(search_slot(nullptr, root_, ikey, p, 0, false)) != 0)
    return fail(ENOENT, "free space info {} not found for block group {}", key_tuple_str(ikey), bg_start);
  auto body = p.leaf().item_data(p.slots[0]);
  if (body.size() != sizeof(FreeSpaceInfo))
    return fail(EUCLEAN, "free space info {} has size {} expect {}", key_tuple_str(ikey), body.size(), sizeof(FreeSpaceInfo));
  const auto raw = load<FreeSpaceInfo>(body.data());
  const uint32_t flags = raw.flags.get();
  if (flags & ~kFreeSpaceUsingBitmaps)
    return fail(EUCLEAN, "free space info {} has unknown flags 0x{:x}", key_tuple_str(ikey), flags);
  const bool bitmaps = flags & kFreeSpaceUsingBitmaps;
  const uint64_t sector = fs_.sectorsize;

  std::map<uint64_t, uint64_t> runs;
  uint64_t counted_extents = 0;
  uint64_t covered_end = bg_start;  // end of the last extent / bitmap item seen (items must not overlap)
  // Appends [s, e) to `runs`, merging with the last run when they touch (bitmap runs continue
  // across items; extent items never may — the caller checks that first).
  auto append_run = [&](uint64_t s, uint64_t e) {
    if (!runs.empty()) {
      auto last = std::prev(runs.end());
      if (last->first + last->second == s) {
        last->second += e - s;
        return;
      }
    }
    runs.emplace(s, e - s);
  };

  for (;;) {
    if (!UBTRFS_TRY(next_item(root_, p))) break;
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid >= bg_end) break;
    if (k.type != kFreeSpaceExtentKey && k.type != kFreeSpaceBitmapKey)
      return fail(EUCLEAN, "free space tree item {} inside block group [{}, +{}) is neither extent nor bitmap",
                  key_tuple_str(k), bg_start, bg_len);
    if (k.offset == 0 || k.offset > bg_end - k.objectid)
      return fail(EUCLEAN, "free space item {} leaves block group [{}, +{})", key_tuple_str(k), bg_start, bg_len);
    if (k.objectid < covered_end)
      return fail(EUCLEAN, "free space item {} overlaps the previous item ending at {}", key_tuple_str(k), covered_end);
    if ((k.type == kFreeSpaceBitmapKey) != bitmaps)
      return fail(EUCLEAN, "free space item {} does not match the format of info {} (flags 0x{:x})", key_tuple_str(k),
                  key_tuple_str(ikey), flags);
    if (k.type == kFreeSpaceExtentKey) {
      if (!runs.empty() && k.objectid == covered_end)
        return fail(EUCLEAN, "free space extent {}-{} is unmerged with previous {}-{}", k.objectid,
                    k.objectid + k.offset, std::prev(runs.end())->first, covered_end);
      append_run(k.objectid, k.objectid + k.offset);
      ++counted_extents;
    } else {
      auto bits = p.leaf().item_data(p.slots[0]);
      const uint64_t nbits = k.offset / sector;
      if (k.offset % sector || bits.size() != (nbits + 7) / 8 || (k.objectid - bg_start) % sector)
        return fail(EUCLEAN, "free space bitmap {} has size {} for {} sectors", key_tuple_str(k), bits.size(), nbits);
      // Bit i (LSB first in byte i/8) set = sector i of the item's range is free.
      for (uint64_t i = 0; i < nbits;) {
        if (!(bits[i / 8] & (1u << (i % 8)))) {
          ++i;
          continue;
        }
        uint64_t j = i;
        while (j < nbits && (bits[j / 8] & (1u << (j % 8)))) ++j;
        append_run(k.objectid + i * sector, k.objectid + j * sector);
        i = j;
      }
    }
    covered_end = k.objectid + k.offset;
  }
  const uint64_t counted = bitmaps ? runs.size() : counted_extents;
  if (counted != raw.extent_count.get())
    return fail(EUCLEAN, "free space info {} recorded {} extents, counted {}", key_tuple_str(ikey),
                raw.extent_count.get(), counted);
  return runs;
}

// ---- modifying helpers --------------------------------------------------------------------------

Status FreeSpaceTree::write_info(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, GroupInfo info) {
  const Key key = info_key(bg_start, bg_len);
  Path p;
  if (UBTRFS_TRY(search_slot(&h, root_, key, p, 0, true)) != 0)
    return fail(EUCLEAN, "free space info {} vanished while updating block group {}", key_tuple_str(key), bg_start);
  auto body = p.leaf().item_data(p.slots[0]);
  if (body.size() != sizeof(FreeSpaceInfo))
    return fail(EUCLEAN, "free space info {} has size {} expect {}", key_tuple_str(key), body.size(), sizeof(FreeSpaceInfo));
  FreeSpaceInfo raw{};
  raw.extent_count = info.extent_count;
  raw.flags = info.flags;
  store(body.data(), raw);
  return {};
}

Status FreeSpaceTree::delete_keys(TreeHandle& h, const Key& lo, const Key& hi) {
  for (;;) {
    const auto first = UBTRFS_TRY(first_key_at_or_after(lo));
    if (!first || !(*first < hi)) return {};
    Path p;
    if (UBTRFS_TRY(search_slot(&h, root_, *first, p, -1, true)) != 0)
      return fail(EUCLEAN, "free space tree item {} vanished while deleting", key_tuple_str(*first));
    const int slot = p.slots[0];
    const int nritems = static_cast<int>(p.leaf().nritems());
    int nr = 1;
    while (slot + nr < nritems && p.leaf().item_key(slot + nr) < hi) ++nr;
    UBTRFS_TRY_STATUS(del_items(h, root_, p, slot, nr));
  }
}

Status FreeSpaceTree::insert_extent(TreeHandle& h, uint64_t start, uint64_t len) {
  return insert_item(h, root_, Key{start, kFreeSpaceExtentKey, len}, std::span<const uint8_t>{});
}

Status FreeSpaceTree::rewrite_as_extents(TreeHandle& h, uint64_t bg_start, uint64_t bg_len,
                                         const std::map<uint64_t, uint64_t>& runs) {
  Key after_info = info_key(bg_start, bg_len);
  key_successor(after_info);
  UBTRFS_TRY_STATUS(delete_keys(h, after_info, Key{bg_start + bg_len, 0, 0}));
  for (const auto& [start, len] : runs) UBTRFS_TRY_STATUS(insert_extent(h, start, len));
  return write_info(h, bg_start, bg_len, GroupInfo{static_cast<uint32_t>(runs.size()), 0});
}

Status FreeSpaceTree::modify_bitmap_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start,
                                          uint64_t len, bool make_free) {
  const auto runs = UBTRFS_TRY(load_group(bg_start, bg_len));
  FreeSpace model(bg_start, bg_len);
  for (const auto& [s, l] : runs) UBTRFS_TRY_STATUS(model.add(s, l));
  auto st = make_free ? model.add(start, len) : model.remove(start, len);
  if (!st)
    return fail(EUCLEAN, "free space tree: cannot mark [{}, +{}) {} in block group [{}, +{}) (bitmap format): {}",
                start, len, make_free ? "free" : "allocated", bg_start, bg_len, st.error().message);
  return rewrite_as_extents(h, bg_start, bg_len, model.runs());
}

// ---- public modifications ------------------------------------------------------------------------

Status FreeSpaceTree::add_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len) {
  return add_group_with_runs(h, bg_start, bg_len, {{bg_start, bg_len}});
}

Status FreeSpaceTree::add_group_with_runs(TreeHandle& h, uint64_t bg_start, uint64_t bg_len,
                                          const std::map<uint64_t, uint64_t>& runs) {
  if (bg_len == 0 || bg_len % fs_.sectorsize)
    return fail(EINVAL, "free space tree: block group [{}, +{}) length is not a positive sector multiple", bg_start,
                bg_len);
  uint64_t prev_end = 0;
  for (const auto& [start, len] : runs) {
    UBTRFS_TRY_STATUS(check_range_in_group("record free", bg_start, bg_len, start, len));
    if (prev_end && start <= prev_end)
      return fail(EINVAL, "free space tree: runs of block group {} overlap or touch at {}", bg_start, start);
    prev_end = start + len;
  }
  FreeSpaceInfo raw{};
  raw.extent_count = static_cast<uint32_t>(runs.size());
  raw.flags = 0;
  std::array<uint8_t, sizeof(FreeSpaceInfo)> body{};
  store(body.data(), raw);
  UBTRFS_TRY_STATUS(insert_item(h, root_, info_key(bg_start, bg_len), body));
  for (const auto& [start, len] : runs) UBTRFS_TRY_STATUS(insert_extent(h, start, len));
  return {};
}

Status FreeSpaceTree::remove_group(TreeHandle& h, uint64_t bg_start, uint64_t bg_len) {
  UBTRFS_TRY(read_info(bg_start, bg_len));  // ENOENT if the group has no info
  return delete_keys(h, Key{bg_start, 0, 0}, Key{bg_start + bg_len, 0, 0});
}

Status FreeSpaceTree::remove_range(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start, uint64_t len) {
  UBTRFS_TRY_STATUS(check_range_in_group("mark allocated", bg_start, bg_len, start, len));
  const GroupInfo info = UBTRFS_TRY(read_info(bg_start, bg_len));
  if (info.flags & kFreeSpaceUsingBitmaps) return modify_bitmap_group(h, bg_start, bg_len, start, len, false);

  // The free extent containing `start` is the last item before (start+1, 0, 0) if that is one of
  // ours; anything else there (our info, another group's item) means `start` is not free.
  const uint64_t end = start + len;
  const auto cand = UBTRFS_TRY(last_key_before(Key{start + 1, 0, 0}));
  const bool ours = cand && cand->type == kFreeSpaceExtentKey && cand->objectid >= bg_start;
  if (!ours || cand->objectid + cand->offset < end) {
    const std::string near = ours ? fmt::format(" (free extent before it: [{}, +{}))", cand->objectid, cand->offset)
                                  : std::string();
    return fail(EUCLEAN,
                "free space tree: cannot mark [{}, +{}) allocated in block group [{}, +{}): not inside one free "
                "extent{}",
                start, len, bg_start, bg_len, near);
  }
  if (info.extent_count == 0)
    return fail(EUCLEAN, "free space info {} records 0 extents but free extent {} exists",
                key_tuple_str(info_key(bg_start, bg_len)), key_tuple_str(*cand));
  const uint64_t ext_start = cand->objectid;
  const uint64_t ext_end = cand->objectid + cand->offset;
  UBTRFS_TRY_STATUS(delete_item(h, root_, *cand));
  uint32_t count = info.extent_count - 1;
  if (ext_start < start) {
    UBTRFS_TRY_STATUS(insert_extent(h, ext_start, start - ext_start));
    ++count;
  }
  if (end < ext_end) {
    UBTRFS_TRY_STATUS(insert_extent(h, end, ext_end - end));
    ++count;
  }
  return write_info(h, bg_start, bg_len, GroupInfo{count, 0});
}

Status FreeSpaceTree::add_range(TreeHandle& h, uint64_t bg_start, uint64_t bg_len, uint64_t start, uint64_t len) {
  UBTRFS_TRY_STATUS(check_range_in_group("mark free", bg_start, bg_len, start, len));
  const GroupInfo info = UBTRFS_TRY(read_info(bg_start, bg_len));
  if (info.flags & kFreeSpaceUsingBitmaps) return modify_bitmap_group(h, bg_start, bg_len, start, len, true);

  const uint64_t bg_end = bg_start + bg_len;
  const uint64_t end = start + len;
  // The last free extent starting before `end`: it must end at or before `start` (else the range
  // is partly free already); ending exactly at `start` it merges (kernel: the "left" neighbour).
  std::optional<Key> left;
  const auto before = UBTRFS_TRY(last_key_before(Key{end, 0, 0}));
  if (before && before->type == kFreeSpaceExtentKey && before->objectid >= bg_start) {
    const uint64_t before_end = before->objectid + before->offset;
    if (before_end > start)
      return fail(EUCLEAN,
                  "free space tree: cannot mark [{}, +{}) free in block group [{}, +{}): overlaps free extent [{}, +{})",
                  start, len, bg_start, bg_len, before->objectid, before->offset);
    if (before_end == start) left = before;
  }
  // A free extent starting exactly at `end` inside the group merges too (the "right" neighbour).
  std::optional<Key> right;
  if (end < bg_end) {
    const auto after = UBTRFS_TRY(first_key_at_or_after(Key{end, kFreeSpaceExtentKey, 0}));
    if (after && after->objectid == end && after->type == kFreeSpaceExtentKey) right = after;
  }
  if (info.extent_count < (left ? 1u : 0u) + (right ? 1u : 0u))
    return fail(EUCLEAN, "free space info {} records {} extents but neighbours of [{}, +{}) exist",
                key_tuple_str(info_key(bg_start, bg_len)), info.extent_count, start, len);
  uint64_t new_start = start, new_end = end;
  uint32_t count = info.extent_count + 1;
  if (left) {
    UBTRFS_TRY_STATUS(delete_item(h, root_, *left));
    new_start = left->objectid;
    --count;
  }
  if (right) {
    UBTRFS_TRY_STATUS(delete_item(h, root_, *right));
    new_end = right->objectid + right->offset;
    --count;
  }
  UBTRFS_TRY_STATUS(insert_extent(h, new_start, new_end - new_start));
  return write_info(h, bg_start, bg_len, GroupInfo{count, 0});
}

}  // namespace ubtrfs::alloc
