// Data checksums in the csum tree (btrfs file-item.c). See csum_tree.h for the invariants.
//
// Every modifying step is one fresh search followed by one change to one item: simple to reason
// about under concurrent splits/merges (the path never outlives a change), at the cost of a
// search per touched item — the ranges a flush or a freed extent touch span few items.
#include "fs/csum_tree.h"

#include <algorithm>
#include <cstring>

#include "io/checksum.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

constexpr Key csum_key(uint64_t bytenr) { return Key{kExtentCsumObjectid, kExtentCsumKey, bytenr}; }

bool is_csum_key(const Key& k) { return k.objectid == kExtentCsumObjectid && k.type == kExtentCsumKey; }

// A csum item as found: its logical start and number of sectors.
struct CsumItem {
  uint64_t start = 0;
  uint64_t sectors = 0;
  uint64_t end(const FsParams& fs) const { return start + sectors * fs.sectorsize; }
};

Result<CsumItem> parse_item(const ExtentBuffer& leaf, int slot, const FsParams& fs) {
  const Key k = leaf.item_key(slot);
  const uint32_t size = leaf.item_size(slot);
  const size_t cs = fs.csum_size();
  if (size == 0 || size % cs != 0 || k.offset % fs.sectorsize != 0)
    return fail(EUCLEAN, "csum item [{} {} {}] in leaf {}: bad size {} for csum size {} or unaligned start",
                k.objectid, k.type, k.offset, leaf.start(), size, cs);
  return CsumItem{k.offset, size / cs};
}

// Makes the path point at a valid item, crossing to the next leaf if it sits past the end.
Result<bool> settle(TreeRoot& root, Path& p) {
  if (p.slots[0] < static_cast<int>(p.leaf().nritems())) return true;
  if (p.leaf().nritems() == 0) return false;
  p.slots[0] = static_cast<int>(p.leaf().nritems()) - 1;
  return next_leaf(root, p);
}

// The last csum item that starts at or before `bytenr` and ends after `floor`, found read-only.
Result<std::optional<CsumItem>> find_item_before(TreeRoot& root, const FsParams& fs, uint64_t bytenr) {
  Path p;
  const int r = UBTRFS_TRY(search_slot(nullptr, root, csum_key(bytenr), p, 0, false));
  int slot = p.slots[0];
  if (r == 1) {
    if (slot == 0) return std::optional<CsumItem>{};
    --slot;
  }
  if (!is_csum_key(p.leaf().item_key(slot))) return std::optional<CsumItem>{};
  return std::optional<CsumItem>{UBTRFS_TRY(parse_item(p.leaf(), slot, fs))};
}

}  // namespace

uint32_t max_csums_per_item(const FsParams& fs) {
  return static_cast<uint32_t>((leaf_data_size(fs.nodesize) - 2 * sizeof(Item)) / fs.csum_size() - 1);
}

std::vector<uint8_t> compute_data_csums(const FsParams& fs, std::span<const uint8_t> data) {
  const size_t cs = fs.csum_size();
  const size_t n = data.size() / fs.sectorsize;
  std::vector<uint8_t> out(n * cs);
  for (size_t i = 0; i < n; ++i) {
    const io::CsumBytes c = io::compute_csum(fs.csum_type, data.subspan(i * fs.sectorsize, fs.sectorsize));
    std::memcpy(out.data() + i * cs, c.data(), cs);
  }
  return out;
}

Result<CsumRange> lookup_csums(TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr, uint64_t len) {
  const size_t cs = fs.csum_size();
  const uint64_t nsec = len / fs.sectorsize;
  const uint64_t end = bytenr + len;
  CsumRange out;
  out.csums.assign(nsec * cs, 0);
  out.present.assign(nsec, false);
  if (nsec == 0 || !csum_root.node()) return out;

  Path p;
  const int r = UBTRFS_TRY(search_slot(nullptr, csum_root, csum_key(bytenr), p, 0, false));
  if (r == 1 && p.slots[0] > 0) {
    // The item before may cover bytenr.
    const int prev = p.slots[0] - 1;
    if (is_csum_key(p.leaf().item_key(prev))) {
      CsumItem it = UBTRFS_TRY(parse_item(p.leaf(), prev, fs));
      if (it.end(fs) > bytenr) p.slots[0] = prev;
    }
  }
  bool valid = UBTRFS_TRY(settle(csum_root, p));
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (!is_csum_key(k) || k.offset >= end) break;
    CsumItem it = UBTRFS_TRY(parse_item(p.leaf(), p.slots[0], fs));
    const uint64_t from = std::max(it.start, bytenr), to = std::min(it.end(fs), end);
    if (from < to) {
      auto body = p.leaf().item_data(p.slots[0]);
      const uint64_t src = (from - it.start) / fs.sectorsize, dst = (from - bytenr) / fs.sectorsize;
      const uint64_t n = (to - from) / fs.sectorsize;
      std::memcpy(out.csums.data() + dst * cs, body.data() + src * cs, n * cs);
      for (uint64_t i = 0; i < n; ++i) out.present[dst + i] = true;
    }
    valid = UBTRFS_TRY(next_item(csum_root, p));
  }
  return out;
}

Status insert_csums(TreeHandle& h, TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr,
                    std::span<const uint8_t> csums) {
  const size_t cs = fs.csum_size();
  const uint32_t max_items = max_csums_per_item(fs);
  uint64_t cur = bytenr;
  size_t done = 0;  // csums written so far
  const size_t total = csums.size() / cs;
  while (done < total) {
    // Extend the item that ends exactly at `cur` when it has room (btrfs_csum_file_blocks).
    auto before = UBTRFS_TRY(find_item_before(csum_root, fs, cur));
    if (before && before->end(fs) > cur)
      return fail(EEXIST, "csum insert at {}: overlaps csum item [{} {} {}] of {} sectors", cur, kExtentCsumObjectid,
                  static_cast<int>(kExtentCsumKey), before->start, before->sectors);
    if (before && before->end(fs) == cur && before->sectors < max_items) {
      const size_t n = std::min<size_t>(total - done, max_items - before->sectors);
      Path p;
      p.search_for_extension = true;
      const int r = UBTRFS_TRY(search_slot(&h, csum_root, csum_key(before->start), p, static_cast<int>(n * cs), true));
      if (r != 0) return fail(EUCLEAN, "csum item [{} 128 {}] vanished while extending it", kExtentCsumObjectid, before->start);
      const uint32_t old_size = p.leaf().item_size(p.slots[0]);
      extend_item(csum_root, p, static_cast<uint32_t>(n * cs));
      std::memcpy(p.leaf().item_data(p.slots[0]).data() + old_size, csums.data() + done * cs, n * cs);
      done += n;
      cur += n * fs.sectorsize;
      continue;
    }
    const size_t n = std::min<size_t>(total - done, max_items);
    UBTRFS_TRY_STATUS(insert_item(h, csum_root, csum_key(cur), csums.subspan(done * cs, n * cs)));
    done += n;
    cur += n * fs.sectorsize;
  }
  return {};
}

Status delete_csums(TreeHandle& h, TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr, uint64_t len) {
  const size_t cs = fs.csum_size();
  uint64_t end = bytenr + len;
  while (end > bytenr) {
    // The last item starting before `end` (btrfs_del_csums searches for end - 1 and steps back).
    Path p;
    const int r = UBTRFS_TRY(search_slot(&h, csum_root, csum_key(end - 1), p, -1, true));
    int slot = p.slots[0];
    if (r == 1) {
      if (slot == 0) return {};  // nothing at or before end - 1
      --slot;
    }
    const Key k = p.leaf().item_key(slot);
    if (!is_csum_key(k)) return {};
    const CsumItem it = UBTRFS_TRY(parse_item(p.leaf(), slot, fs));
    const uint64_t it_end = it.end(fs);
    if (it_end <= bytenr) return {};
    p.slots[0] = slot;
    if (it_end > end) {
      // Keep the tail [end, it_end) as its own item.
      auto body = p.leaf().item_data(slot);
      const uint64_t skip = (end - it.start) / fs.sectorsize;
      std::vector<uint8_t> tail(body.begin() + static_cast<std::ptrdiff_t>(skip * cs), body.end());
      if (it.start < bytenr) {
        truncate_item(csum_root, p, static_cast<uint32_t>((bytenr - it.start) / fs.sectorsize * cs), true);
      } else {
        UBTRFS_TRY_STATUS(del_items(h, csum_root, p, slot, 1));
      }
      p.release();
      UBTRFS_TRY_STATUS(insert_item(h, csum_root, csum_key(end), tail));
    } else if (it.start < bytenr) {
      truncate_item(csum_root, p, static_cast<uint32_t>((bytenr - it.start) / fs.sectorsize * cs), true);
    } else {
      UBTRFS_TRY_STATUS(del_items(h, csum_root, p, slot, 1));
    }
    end = std::max(it.start, bytenr);
  }
  return {};
}

}  // namespace ubtrfs::fs
