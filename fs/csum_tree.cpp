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

std::function<void(uint64_t)>& step_hook() {
  static std::function<void(uint64_t)> hook;
  return hook;
}

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

// Removes the checksums of [from, to) from the item starting at `item_start`, which covers more
// on both sides: the item keeps [item_start, from) and a new item right after it in the same leaf
// takes [to, item end), in one locked step. The search for the item (found, ins_len = one item
// header, search_for_extension) splits the leaf if needed so the new header fits; the tail's data
// fits in what the truncation frees.
Status split_out_range(TreeHandle& h, TreeRoot& root, const FsParams& fs, uint64_t item_start, uint64_t from,
                       uint64_t to) {
  const size_t cs = fs.csum_size();
  Path p;
  p.search_for_extension = true;
  const int r = UBTRFS_TRY(search_slot(&h, root, csum_key(item_start), p, static_cast<int>(sizeof(Item)), true));
  if (r != 0) return fail(EUCLEAN, "csum item [{} 128 {}] vanished while splitting it", kExtentCsumObjectid, item_start);
  ExtentBuffer& leaf = p.leaf();
  const int slot = p.slots[0];
  // Inserts may have extended the item meanwhile; only this deleter shrinks items.
  const CsumItem it = UBTRFS_TRY(parse_item(leaf, slot, fs));
  if (it.end(fs) <= to)
    return fail(EUCLEAN, "csum item [{} 128 {}] of {} sectors shrank while splitting out [{}, {})",
                kExtentCsumObjectid, item_start, it.sectors, from, to);
  auto body = leaf.item_data(slot);
  const uint64_t skip = (to - it.start) / fs.sectorsize * cs;
  const std::vector<uint8_t> tail(body.begin() + static_cast<std::ptrdiff_t>(skip), body.end());
  const auto head_size = static_cast<uint32_t>((from - it.start) / fs.sectorsize * cs);
  const auto tail_size = static_cast<uint32_t>(tail.size());
  if (leaf.leaf_free_space() + (body.size() - head_size) < tail_size + sizeof(Item))
    return fail(EUCLEAN, "csum tree leaf {}: no room to split csum item [{} 128 {}]", leaf.start(),
                kExtentCsumObjectid, item_start);
  truncate_item(root, p, head_size, true);
  const Key tail_key = csum_key(to);
  leaf_insert_slots(leaf, slot + 1, std::span<const Key>(&tail_key, 1), std::span<const uint32_t>(&tail_size, 1));
  std::memcpy(leaf.item_data(slot + 1).data(), tail.data(), tail_size);
  return {};
}

}  // namespace

void set_insert_csums_step_hook_for_test(std::function<void(uint64_t cur)> hook) { step_hook() = std::move(hook); }

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
    if (step_hook()) step_hook()(cur);
    // One write-locked search decides and changes (btrfs_csum_file_blocks): the item before `cur`
    // is examined under the same leaf lock that extends it. The delayed-ref runner deletes the
    // checksums of freed extents concurrently, so an item seen by an earlier, released search may
    // since have been truncated, split or deleted; extending it by its old key would place the new
    // checksums at the wrong sectors or over its split-off tail.
    Path p;
    const int r = UBTRFS_TRY(search_slot(&h, csum_root, csum_key(cur), p, static_cast<int>(cs), true));
    ExtentBuffer& leaf = p.leaf();
    const int slot = p.slots[0];
    const int nritems = static_cast<int>(leaf.nritems());
    if (r == 0)
      return fail(EEXIST, "csum insert at {}: a csum item [{} {} {}] already starts there", cur, kExtentCsumObjectid,
                  static_cast<int>(kExtentCsumKey), cur);
    // The item after `cur` in this leaf bounds the range (a later leaf's items start later still).
    uint64_t next_start = UINT64_MAX;
    if (slot < nritems && is_csum_key(leaf.item_key(slot))) next_start = leaf.item_key(slot).offset;
    if (slot > 0 && is_csum_key(leaf.item_key(slot - 1))) {
      const CsumItem prev = UBTRFS_TRY(parse_item(leaf, slot - 1, fs));
      if (prev.end(fs) > cur)
        return fail(EEXIST, "csum insert at {}: overlaps csum item [{} {} {}] of {} sectors", cur,
                    kExtentCsumObjectid, static_cast<int>(kExtentCsumKey), prev.start, prev.sectors);
      if (prev.end(fs) == cur && prev.sectors < max_items) {
        // Extend by what the cap, the leaf's free space and the remaining checksums allow (>= 1:
        // the search made room for ins_len = one checksum).
        const size_t n = std::min<size_t>({total - done, max_items - prev.sectors, leaf.leaf_free_space() / cs});
        if (n > 0) {
          if (cur + n * fs.sectorsize > next_start)
            return fail(EEXIST, "csum insert at {} of {} sectors: overlaps csum item [{} {} {}]", cur, n,
                        kExtentCsumObjectid, static_cast<int>(kExtentCsumKey), next_start);
          p.slots[0] = slot - 1;
          const uint32_t old_size = leaf.item_size(slot - 1);
          extend_item(csum_root, p, static_cast<uint32_t>(n * cs));
          std::memcpy(leaf.item_data(slot - 1).data() + old_size, csums.data() + done * cs, n * cs);
          done += n;
          cur += n * fs.sectorsize;
          continue;
        }
      }
    }
    const size_t n = std::min<size_t>(total - done, max_items);
    if (cur + n * fs.sectorsize > next_start)
      return fail(EEXIST, "csum insert at {} of {} sectors: overlaps csum item [{} {} {}]", cur, n,
                  kExtentCsumObjectid, static_cast<int>(kExtentCsumKey), next_start);
    // A new item at `cur`: no other writer targets these sectors, and a concurrent delete only
    // removes checksums of other (pinned) sectors, so releasing the path before inserting is safe.
    p.release();
    UBTRFS_TRY_STATUS(insert_item(h, csum_root, csum_key(cur), csums.subspan(done * cs, n * cs)));
    done += n;
    cur += n * fs.sectorsize;
  }
  return {};
}

Status delete_csums(TreeHandle& h, TreeRoot& csum_root, const FsParams& fs, uint64_t bytenr, uint64_t len) {
  // Every change is made under the leaf lock of the search that found the item, so a concurrent
  // lookup (a read verifying live data next to the freed range) never sees a checksum of a live
  // sector missing, and an insert never sees an item half-changed.
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
    if (it_end > end && it.start < bytenr) {
      // Both ends survive: split in place (btrfs_split_item + truncate_one_csum).
      p.release();
      UBTRFS_TRY_STATUS(split_out_range(h, csum_root, fs, it.start, bytenr, end));
    } else if (it_end > end) {
      // Keep the tail [end, it_end): drop the front and move the key (btrfs truncate_one_csum).
      truncate_item(csum_root, p, static_cast<uint32_t>((it_end - end) / fs.sectorsize * cs), false);
      set_item_key_safe(csum_root, p, csum_key(end));
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
