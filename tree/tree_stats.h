// Tree statistics: the counters ARCHITECTURE.md "Stats" asks of the tree layer — COWs (and COWs of
// blocks born in the running transaction, the amplification the seed describes) and search_slot
// restarts by site, root objectid and level (the four reasons of KERNEL.md §9, named as the
// `btrfs_search_slot_restart` tracepoint of patch 3 names them).
//
// Thread safety: every method may be called concurrently. Totals are relaxed atomics; the per
// (site, root, level) breakdown is a small map under a mutex (restarts are rare next to searches).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace ubtrfs {

enum class RestartSite : uint8_t { kWriteLock = 0, kSetupNodes, kSlotZero, kReadBlock };
inline constexpr int kRestartSiteCount = 4;
// "write_lock", "setup_nodes", "slot_zero", "read_block".
const char* restart_site_name(RestartSite site);

class TreeStats {
 public:
  struct RestartRow {
    RestartSite site;
    uint64_t root;
    int level;
    uint64_t count;
  };

  void count_restart(RestartSite site, uint64_t root, int level);
  // `born_in_running_transaction`: the old block's generation equals the running transid, i.e. the
  // COW re-copies a block this transaction already copied (the seed's amplification).
  // `write_in_flight`: the copy was forced because a write of the block was in flight.
  void count_cow(bool born_in_running_transaction, bool write_in_flight = false);

  uint64_t restarts(RestartSite site) const { return totals_[static_cast<int>(site)].load(std::memory_order_relaxed); }
  uint64_t restarts(RestartSite site, uint64_t root, int level) const;
  uint64_t cows() const { return cows_.load(std::memory_order_relaxed); }
  uint64_t cows_same_transaction() const { return cows_same_trans_.load(std::memory_order_relaxed); }
  // Re-COWs of blocks born in the running transaction whose write was in flight at the decision.
  uint64_t cows_same_transaction_write_in_flight() const {
    return cows_same_trans_in_flight_.load(std::memory_order_relaxed);
  }
  std::vector<RestartRow> restart_rows() const;
  // One line per counter, for logs and test output.
  std::string to_string() const;
  void reset();

 private:
  std::array<std::atomic<uint64_t>, kRestartSiteCount> totals_{};
  std::atomic<uint64_t> cows_{0};
  std::atomic<uint64_t> cows_same_trans_{0};
  std::atomic<uint64_t> cows_same_trans_in_flight_{0};
  mutable std::mutex mu_;
  std::map<std::tuple<int, uint64_t, int>, uint64_t> by_site_root_level_;  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs
