// BlockGroup and BlockGroupCache; see block_group.h for the accounting lifecycle and lock order.
#include "alloc/block_group.h"

#include <algorithm>

namespace ubtrfs::alloc {

std::vector<std::pair<uint64_t, uint64_t>> super_mirror_ranges(const ChunkMapping& chunk) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (int mirror = 0; mirror < kSuperMirrorMax; ++mirror) {
    uint64_t phys = super_offset(mirror);
    for (const auto& s : chunk.stripes) {
      if (phys < s.physical || phys - s.physical >= chunk.length) continue;
      uint64_t logical = chunk.logical + (phys - s.physical);
      uint64_t len = std::min<uint64_t>(kStripeLen, chunk.logical + chunk.length - logical);
      out.emplace_back(logical, len);
    }
  }
  std::sort(out.begin(), out.end());
  // Two stripes of a DUP chunk could in theory map the same logical stripe: merge overlaps.
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (auto r : out) {
    if (!merged.empty() && merged.back().first + merged.back().second >= r.first) {
      uint64_t end = std::max(merged.back().first + merged.back().second, r.first + r.second);
      merged.back().second = end - merged.back().first;
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

BlockGroup::BlockGroup(const ChunkMapping& chunk, uint64_t used)
    : start_(chunk.logical),
      length_(chunk.length),
      flags_(chunk.type),
      used_(used),
      super_ranges_(super_mirror_ranges(chunk)),
      free_(chunk.logical, chunk.length) {
  for (auto [s, l] : super_ranges_) super_bytes_ += l;
}

void BlockGroup::attach(SpaceInfo* si, int factor) {
  uint64_t used, super;
  {
    std::lock_guard lock(mu_);
    space_info_ = si;
    used = used_;
    super = super_bytes_;
  }
  if (si) si->add_block_group(length_, used, super, factor);
}

Status BlockGroup::add_free(uint64_t start, uint64_t len) {
  std::lock_guard lock(mu_);
  // Add the parts of [start, start+len) that are not superblock stripes.
  uint64_t cur = start, end = start + len;
  for (auto [s, l] : super_ranges_) {
    if (s + l <= cur || s >= end) continue;
    if (s > cur) UBTRFS_TRY_STATUS(free_.add(cur, s - cur));
    cur = std::max(cur, s + l);
  }
  if (cur < end) UBTRFS_TRY_STATUS(free_.add(cur, end - cur));
  return {};
}

Status BlockGroup::init_free_from_allocated(const std::vector<std::pair<uint64_t, uint64_t>>& allocated) {
  uint64_t cur = start_;
  for (auto [s, l] : allocated) {
    if (s < cur || s + l > start_ + length_)
      return fail(EUCLEAN, "allocated range [{}, +{}) out of order or outside block group {}", s, l, start_);
    if (s > cur) UBTRFS_TRY_STATUS(add_free(cur, s - cur));
    cur = s + l;
  }
  if (cur < start_ + length_) UBTRFS_TRY_STATUS(add_free(cur, start_ + length_ - cur));
  return {};
}

std::optional<uint64_t> BlockGroup::reserve_extent(uint64_t len, uint64_t align, uint64_t hint, uint64_t boundary,
                                                   uint64_t from_may_use) {
  std::optional<uint64_t> at;
  {
    std::lock_guard lock(mu_);
    at = free_.find(len, align, hint, boundary);
    if (!at) return std::nullopt;
    if (!free_.remove(*at, len)) return std::nullopt;  // cannot happen: find() returned a free range
    reserved_ += len;
    reserved_ranges_.emplace(*at, len);
  }
  if (space_info_) space_info_->extent_reserved(len, from_may_use);
  return at;
}

Status BlockGroup::reserve_exact(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    if (len == 0 || start < start_ || start + len > start_ + length_ || !free_.is_free(start, len))
      return fail(EUCLEAN, "block group {}: range [{}, +{}) to exclude is not free space", start_, start, len);
    UBTRFS_TRY_STATUS(free_.remove(start, len));
    reserved_ += len;
    reserved_ranges_.emplace(start, len);
  }
  if (space_info_) space_info_->extent_reserved(len, 0);
  return {};
}

Status BlockGroup::take_reserved(uint64_t start, uint64_t len, const char* what) {
  auto it = reserved_ranges_.upper_bound(start);
  if (it == reserved_ranges_.begin() || len == 0)
    return fail(EUCLEAN, "block group {}: {} of [{}, +{}) which is not reserved", start_, what, start, len);
  --it;
  const uint64_t rs = it->first, re = it->first + it->second;
  if (start + len > re)
    return fail(EUCLEAN, "block group {}: {} of [{}, +{}) which is not reserved (reserved range [{}, +{}))", start_,
                what, start, len, rs, re - rs);
  reserved_ranges_.erase(it);
  if (rs < start) reserved_ranges_.emplace(rs, start - rs);
  if (start + len < re) reserved_ranges_.emplace(start + len, re - (start + len));
  reserved_ -= len;
  return {};
}

bool BlockGroup::is_reserved(uint64_t start, uint64_t len) const {
  std::lock_guard lock(mu_);
  return is_reserved_locked(start, len);
}

bool BlockGroup::is_reserved_locked(uint64_t start, uint64_t len) const {
  auto it = reserved_ranges_.upper_bound(start);
  if (it == reserved_ranges_.begin()) return false;
  --it;
  return start + len <= it->first + it->second;
}

Status BlockGroup::pin_reserved(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    UBTRFS_TRY_STATUS(take_reserved(start, len, "pin"));
    if (auto st = add_pinned(start, len); !st) {
      reserved_ranges_.emplace(start, len);  // undo: keep the accounting consistent for the caller
      reserved_ += len;
      return st;
    }
  }
  if (space_info_) space_info_->reserved_to_pinned(len);
  return {};
}

Status BlockGroup::add_pinned(uint64_t start, uint64_t len) {
  auto it = pinned_ranges_.lower_bound(start);
  if ((it != pinned_ranges_.end() && it->first < start + len) ||
      (it != pinned_ranges_.begin() && std::prev(it)->first + std::prev(it)->second > start))
    return fail(EUCLEAN, "block group {}: extent [{}, +{}) freed twice in one transaction", start_, start, len);
  pinned_ranges_[start] = len;
  pinned_ += len;
  return {};
}

Status BlockGroup::commit_reserved(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    if (reserved_ < len)
      return fail(EUCLEAN, "block group {}: commit of {} reserved bytes at {} but only {} reserved", start_, len,
                  start, reserved_);
    UBTRFS_TRY_STATUS(take_reserved(start, len, "commit"));
    used_ += len;
  }
  if (space_info_) space_info_->reserved_to_used(len);
  return {};
}

Status BlockGroup::release_reserved(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    if (reserved_ < len)
      return fail(EUCLEAN, "block group {}: release of {} reserved bytes at {} but only {} reserved", start_, len,
                  start, reserved_);
    if (!is_reserved_locked(start, len))
      return fail(EUCLEAN, "block group {}: release of [{}, +{}) which is not reserved", start_, start, len);
    UBTRFS_TRY_STATUS(free_.add(start, len));
    UBTRFS_TRY_STATUS(take_reserved(start, len, "release"));
  }
  if (space_info_) space_info_->reserved_released(len);
  return {};
}

Status BlockGroup::pin_extent(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    if (used_ < len)
      return fail(EUCLEAN, "block group {}: freeing {} bytes at {} but only {} used", start_, len, start, used_);
    UBTRFS_TRY_STATUS(add_pinned(start, len));
    used_ -= len;
  }
  if (space_info_) space_info_->used_to_pinned(len);
  return {};
}

Status BlockGroup::mark_used(uint64_t start, uint64_t len) {
  {
    std::lock_guard lock(mu_);
    UBTRFS_TRY_STATUS(free_.remove(start, len));
    used_ += len;
  }
  if (space_info_) space_info_->free_to_used(len);
  return {};
}

uint64_t BlockGroup::unpin_all(std::vector<std::pair<uint64_t, uint64_t>>* unpinned) {
  uint64_t n = 0;
  {
    std::lock_guard lock(mu_);
    std::map<uint64_t, uint64_t> still_pinned;
    for (auto [s, l] : pinned_ranges_) {
      // A failure would mean a pinned range is also free (double accounting): keep it pinned so
      // the invariant check reports it instead of handing the range out twice.
      if (free_.add(s, l)) {
        n += l;
        if (unpinned) unpinned->emplace_back(s, l);
      } else {
        still_pinned.emplace(s, l);
      }
    }
    pinned_ranges_.swap(still_pinned);
    pinned_ -= n;
  }
  if (space_info_ && n) space_info_->unpinned(n);
  return n;
}

std::optional<std::pair<uint64_t, uint64_t>> BlockGroup::take_free_for_trim(uint64_t from, uint64_t end,
                                                                            uint64_t min_len, uint64_t max_len) {
  std::pair<uint64_t, uint64_t> got;
  {
    std::lock_guard lock(mu_);
    from = std::max(from, start_);
    end = std::min(end, start_ + length_);
    if (from >= end || max_len == 0) return std::nullopt;
    const auto& runs = free_.runs();
    auto it = runs.upper_bound(from);
    if (it != runs.begin() && std::prev(it)->first + std::prev(it)->second > from) --it;
    bool found = false;
    for (; it != runs.end() && it->first < end; ++it) {
      const uint64_t s = std::max(it->first, from);
      const uint64_t e = std::min(it->first + it->second, end);
      if (e <= s || e - s < std::max<uint64_t>(min_len, 1)) continue;
      got = {s, std::min(e - s, max_len)};
      found = true;
      break;
    }
    if (!found) return std::nullopt;
    if (!free_.remove(got.first, got.second)) return std::nullopt;  // cannot happen: inside a free run
    reserved_ += got.second;
    reserved_ranges_.emplace(got.first, got.second);
  }
  if (space_info_) space_info_->extent_reserved(got.second, 0);
  return got;
}

BlockGroupUsage BlockGroup::usage() const {
  std::lock_guard lock(mu_);
  return BlockGroupUsage{start_,        length_, flags_, used_, reserved_, pinned_, super_bytes_, free_.free_bytes(),
                         free_.extent_count()};
}

uint64_t BlockGroup::free_bytes() const {
  std::lock_guard lock(mu_);
  return free_.free_bytes();
}

std::map<uint64_t, uint64_t> BlockGroup::free_space_tree_runs() const {
  std::lock_guard lock(mu_);
  FreeSpace runs = free_;
  for (auto [s, l] : super_ranges_) (void)runs.add(s, l);
  return runs.runs();
}

Status BlockGroup::check_invariant() const {
  std::lock_guard lock(mu_);
  uint64_t sum = free_.free_bytes() + used_ + reserved_ + pinned_ + super_bytes_;
  if (sum != length_)
    return fail(EUCLEAN,
                "block group {}: free {} + used {} + reserved {} + pinned {} + super {} = {} != length {}", start_,
                free_.free_bytes(), used_, reserved_, pinned_, super_bytes_, sum, length_);
  return {};
}

Status BlockGroupCache::add(std::unique_ptr<BlockGroup> bg) {
  std::unique_lock lock(mu_);
  uint64_t s = bg->start();
  auto next = groups_.lower_bound(s);
  if ((next != groups_.end() && next->first < s + bg->length()) ||
      (next != groups_.begin() && std::prev(next)->second->start() + std::prev(next)->second->length() > s))
    return fail(EUCLEAN, "block group {} overlaps an existing block group", s);
  groups_.emplace(s, std::move(bg));
  return {};
}

BlockGroup* BlockGroupCache::find(uint64_t logical) const {
  std::shared_lock lock(mu_);
  auto it = groups_.upper_bound(logical);
  if (it == groups_.begin()) return nullptr;
  --it;
  return it->second->contains(logical) ? it->second.get() : nullptr;
}

std::vector<BlockGroup*> BlockGroupCache::of_type(uint64_t type) const {
  std::shared_lock lock(mu_);
  std::vector<BlockGroup*> out;
  for (const auto& [s, bg] : groups_)
    if ((bg->flags() & kBlockGroupTypeMask) == type) out.push_back(bg.get());
  return out;
}

std::vector<BlockGroup*> BlockGroupCache::all() const {
  std::shared_lock lock(mu_);
  std::vector<BlockGroup*> out;
  for (const auto& [s, bg] : groups_) out.push_back(bg.get());
  return out;
}

}  // namespace ubtrfs::alloc
