// The writeback cache's dirty window: sizing rules and kernel knobs; see dirty_window.h.
#include "tools/daemon/dirty_window.h"

#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace ubtrfs::daemon {

namespace {
constexpr uint64_t kMiB = uint64_t{1} << 20;
}

uint64_t dirty_bound_for(uint64_t limit) { return 2 * limit + std::clamp<uint64_t>(limit, 8 * kMiB, 16 * kMiB); }

uint64_t dirty_target_for(uint64_t usable, uint64_t floor, uint64_t ceiling) {
  ceiling = std::max(floor, ceiling);
  const uint64_t quarter = usable / 4;
  // bound = 2L + margin <= quarter, with the margin at its largest (16 MiB).
  uint64_t l = quarter > 16 * kMiB ? (quarter - 16 * kMiB) / 2 : 0;
  l &= ~(kMiB - 1);
  return std::clamp(l, floor, ceiling);
}

DirtyWindowStep next_dirty_window(uint64_t limit, uint64_t floor, uint64_t ceiling, uint64_t usable, uint64_t pushed,
                                  bool cached_writers, bool idle_a_second) {
  if (!cached_writers)
    return limit > floor && idle_a_second ? DirtyWindowStep{DirtyWindowStep::kToFloor, floor} : DirtyWindowStep{};
  const uint64_t target = dirty_target_for(usable, floor, ceiling);
  if (target >= 4 * limit && pushed >= limit / 2) return {DirtyWindowStep::kGrow, target};
  return {};
}

uint64_t dirty_ceiling_for_machine() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  const uint64_t ram = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
  return std::min<uint64_t>(uint64_t{1} << 30, ram ? (ram / 16) & ~(kMiB - 1) : 64 * kMiB);
}

std::string mount_bdi_dir(dev_t mount_dev) {
  if (mount_dev == 0) return {};
  return "/sys/class/bdi/" + std::to_string(major(mount_dev)) + ":" + std::to_string(minor(mount_dev));
}

bool write_bdi_max_bytes(const std::string& bdi_dir, uint64_t bytes) {
  if (bdi_dir.empty()) return false;
  std::ofstream out(bdi_dir + "/max_bytes");
  out << bytes << std::flush;
  return static_cast<bool>(out);
}

uint64_t read_bdi_max_bytes(const std::string& bdi_dir) {
  if (bdi_dir.empty()) return 0;
  std::ifstream in(bdi_dir + "/max_bytes");
  uint64_t v = 0;
  if (!(in >> v)) return 0;
  return v;
}

}  // namespace ubtrfs::daemon
