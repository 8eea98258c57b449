// Tree statistics; see tree_stats.h.
#include "tree/tree_stats.h"

#include <fmt/format.h>

namespace ubtrfs {

const char* restart_site_name(RestartSite site) {
  switch (site) {
    case RestartSite::kWriteLock:
      return "write_lock";
    case RestartSite::kSetupNodes:
      return "setup_nodes";
    case RestartSite::kSlotZero:
      return "slot_zero";
    case RestartSite::kReadBlock:
      return "read_block";
  }
  return "unknown";
}

int CountHistogram::bucket(uint64_t v) {
  if (v <= 2) return static_cast<int>(v);
  int b = 3;
  for (uint64_t hi = 4; v > hi && b < kBuckets - 1; hi *= 2) ++b;
  return b;
}

const char* CountHistogram::label(int bucket) {
  static constexpr const char* kLabels[kBuckets] = {"0", "1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", "65+"};
  return kLabels[bucket];
}

void TreeStats::count_restart(RestartSite site, uint64_t root, int level) {
  totals_[static_cast<int>(site)].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard g(mu_);
  ++by_site_root_level_[{static_cast<int>(site), root, level}];
}

void TreeStats::count_cow(bool born_in_running_transaction, bool write_in_flight) {
  cows_.fetch_add(1, std::memory_order_relaxed);
  if (born_in_running_transaction) {
    cows_same_trans_.fetch_add(1, std::memory_order_relaxed);
    if (write_in_flight) cows_same_trans_in_flight_.fetch_add(1, std::memory_order_relaxed);
  }
}

uint64_t TreeStats::restarts(RestartSite site, uint64_t root, int level) const {
  std::lock_guard g(mu_);
  auto it = by_site_root_level_.find({static_cast<int>(site), root, level});
  return it == by_site_root_level_.end() ? 0 : it->second;
}

std::vector<TreeStats::RestartRow> TreeStats::restart_rows() const {
  std::lock_guard g(mu_);
  std::vector<RestartRow> rows;
  for (const auto& [k, v] : by_site_root_level_)
    rows.push_back({static_cast<RestartSite>(std::get<0>(k)), std::get<1>(k), std::get<2>(k), v});
  return rows;
}

std::string TreeStats::to_string() const {
  std::string s = fmt::format(
      "cows={} cows_same_transaction={} (write in flight {}) max_cows_per_search={} max_copies_per_block={} max_copies_per_block_per_handle={} "
      "overwrites={} in_flight_waits={} inhibits={} (slot reuses {}) held_for_commit={}",
      cows(), cows_same_transaction(), cows_same_transaction_write_in_flight(), per_search_.max(), per_block_.max(), per_handle_block_.max(),
      overwrites(), in_flight_waits(), inhibits(), inhibit_slot_reuses(), held_for_commit());
  for (int i = 0; i < kRestartSiteCount; ++i)
    s += fmt::format(" restart_{}={}", restart_site_name(static_cast<RestartSite>(i)),
                     restarts(static_cast<RestartSite>(i)));
  for (const auto& r : restart_rows())
    s += fmt::format("\n  restart root={} level={} reason={} count={}", r.root, r.level, restart_site_name(r.site),
                     r.count);
  return s;
}

void TreeStats::reset() {
  for (auto& t : totals_) t.store(0, std::memory_order_relaxed);
  cows_.store(0, std::memory_order_relaxed);
  cows_same_trans_.store(0, std::memory_order_relaxed);
  cows_same_trans_in_flight_.store(0, std::memory_order_relaxed);
  for (auto* c : {&overwrites_, &in_flight_waits_, &inhibits_, &inhibit_slot_reuses_, &shared_cows_,
                  &held_for_commit_})
    c->store(0, std::memory_order_relaxed);
  per_search_.reset();
  per_block_.reset();
  per_handle_block_.reset();
  std::lock_guard g(mu_);
  by_site_root_level_.clear();
}

}  // namespace ubtrfs
