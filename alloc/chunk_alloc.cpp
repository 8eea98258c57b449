// DeviceSpace and chunk planning; see chunk_alloc.h for the rules.
#include "alloc/chunk_alloc.h"

#include <algorithm>

namespace ubtrfs::alloc {

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMinStripe = kMiB;  // smaller holes are not worth a chunk

uint64_t round_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

Status DeviceSpace::add_extent(uint64_t physical, uint64_t len) {
  if (len == 0 || physical > total_bytes_ || len > total_bytes_ - physical)
    return fail(EUCLEAN, "dev extent [{}, +{}) beyond device size {}", physical, len, total_bytes_);
  auto next = extents_.lower_bound(physical);
  if ((next != extents_.end() && next->first < physical + len) ||
      (next != extents_.begin() && std::prev(next)->first + std::prev(next)->second > physical))
    return fail(EUCLEAN, "dev extent [{}, +{}) overlaps another dev extent", physical, len);
  extents_.emplace(physical, len);
  allocated_ += len;
  return {};
}

Status DeviceSpace::remove_extent(uint64_t physical, uint64_t len) {
  auto it = extents_.find(physical);
  if (it == extents_.end() || it->second != len)
    return fail(EUCLEAN, "dev extent [{}, +{}) to forget was not recorded", physical, len);
  extents_.erase(it);
  allocated_ -= len;
  return {};
}

std::optional<uint64_t> DeviceSpace::find_hole(uint64_t len) const {
  uint64_t cur = kReserved1MForSuper;
  for (auto [s, l] : extents_) {
    if (s + l <= cur) continue;
    if (s > cur && s - cur >= len) return cur;
    cur = std::max(cur, round_up(s + l, kStripeLen));
  }
  if (cur < total_bytes_ && total_bytes_ - cur >= len) return cur;
  return std::nullopt;
}

std::optional<std::pair<uint64_t, uint64_t>> DeviceSpace::largest_hole() const {
  std::optional<std::pair<uint64_t, uint64_t>> best;
  uint64_t cur = kReserved1MForSuper;
  auto consider = [&](uint64_t start, uint64_t end) {
    if (end > start && (!best || end - start > best->second)) best = std::make_pair(start, end - start);
  };
  for (auto [s, l] : extents_) {
    if (s > cur) consider(cur, round_down(s, kStripeLen) > cur ? round_down(s, kStripeLen) : s);
    cur = std::max(cur, round_up(s + l, kStripeLen));
  }
  if (cur < total_bytes_) consider(cur, total_bytes_);
  if (best) best->second = round_down(best->second, kStripeLen);
  if (best && best->second == 0) best.reset();
  return best;
}

uint64_t DeviceSpace::unallocated_bytes() const {
  uint64_t usable = total_bytes_ > kReserved1MForSuper ? total_bytes_ - kReserved1MForSuper : 0;
  return usable > allocated_ ? usable - allocated_ : 0;
}

int profile_factor(uint64_t profile_bits) {
  if (profile_bits & (kBlockGroupDup | kBlockGroupRaid1 | kBlockGroupRaid10)) return 2;
  if (profile_bits & kBlockGroupRaid1c3) return 3;
  if (profile_bits & kBlockGroupRaid1c4) return 4;
  return 1;
}

uint64_t chunk_size_limit(uint64_t type, uint64_t total_bytes) {
  uint64_t type_max;
  if (type & kBlockGroupData) type_max = kGiB;  // per stripe; SINGLE data chunks are one stripe
  else if (type & kBlockGroupSystem) type_max = 32 * kMiB;
  else type_max = total_bytes > 50 * kGiB ? kGiB : 256 * kMiB;
  uint64_t ten_percent = round_up(total_bytes / 10, 16 * kMiB);
  return std::min(type_max, ten_percent);
}

Result<ChunkMapping> plan_chunk(DeviceSpace& space, uint64_t logical, uint64_t type, uint64_t wanted) {
  const bool dup = type & kBlockGroupDup;
  const int nstripes = dup ? 2 : 1;
  uint64_t size = wanted ? wanted : chunk_size_limit(type, space.total_bytes());
  size = round_down(size, kStripeLen);
  // Shrink to what the device still has: DUP needs two stripes, in one hole or two.
  std::vector<uint64_t> starts;
  for (;;) {
    if (size < kMinStripe)
      return fail(ENOSPC, "no unallocated device space for a new {} chunk ({} bytes unallocated)",
                  (type & kBlockGroupData) ? "data" : (type & kBlockGroupSystem) ? "system" : "metadata",
                  space.unallocated_bytes());
    starts.clear();
    if (auto h = space.find_hole(size * nstripes)) {
      for (int i = 0; i < nstripes; ++i) starts.push_back(*h + i * size);
      break;
    }
    if (dup) {
      // Two separate holes of `size` each.
      DeviceSpace probe = space;
      auto a = probe.find_hole(size);
      if (a && probe.add_extent(*a, size)) {
        auto b = probe.find_hole(size);
        if (b) {
          starts = {*a, *b};
          break;
        }
      }
    }
    auto largest = space.largest_hole();
    if (!largest) size = 0;
    else size = std::min(size - kStripeLen, round_down(largest->second / nstripes, kStripeLen));
  }
  ChunkMapping m;
  m.logical = logical;
  m.length = size;
  m.type = type;
  for (uint64_t s : starts) {
    UBTRFS_TRY_STATUS(space.add_extent(s, size));
    m.stripes.push_back(ChunkStripe{1, s, {}});
  }
  return m;
}

}  // namespace ubtrfs::alloc
