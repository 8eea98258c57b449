// Tree statistics: the counters ARCHITECTURE.md "Stats" asks of the tree layer — COWs (and COWs of
// blocks born in the running transaction, the amplification the seed describes), search_slot
// restarts by site, root objectid and level (the four reasons of KERNEL.md §9, named as the
// `btrfs_search_slot_restart` tracepoint of patch 3 names them), and the two maxima the seed's
// table is about: COWs in one search (restarts included; v2's per-call cow_count) and copies of one
// logical block in one transaction (ExtentBuffer::cow_copies), each with a histogram; fix 1's
// in-place overwrites and waits for writes in flight; fix 2's inhibitor slots.
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

// Power-of-two buckets: 0, 1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65+.
class CountHistogram {
 public:
  static constexpr int kBuckets = 9;
  static int bucket(uint64_t v);
  static const char* label(int bucket);
  void add(uint64_t v) {
    counts_[bucket(v)].fetch_add(1, std::memory_order_relaxed);
    uint64_t m = max_.load(std::memory_order_relaxed);
    while (v > m && !max_.compare_exchange_weak(m, v, std::memory_order_relaxed)) {
    }
  }
  uint64_t count(int bucket) const { return counts_[bucket].load(std::memory_order_relaxed); }
  uint64_t max() const { return max_.load(std::memory_order_relaxed); }
  void reset() {
    for (auto& c : counts_) c.store(0, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> max_{0};
};
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
  // One COW made a copy that is the `copies`-th of its logical block in this transaction.
  void count_block_copies(uint32_t copies) { per_block_.add(copies); }
  // ... and the `copies`-th made by the same handle (fix 2's scope: one operation).
  void count_handle_copies(uint32_t copies) { per_handle_block_.add(copies); }
  // One search_slot with cow finished (or failed) after `cows` COWs, its restarts included.
  void count_search(uint64_t cows) { per_search_.add(cows); }
  // Fix 1: a WRITTEN block of this transaction re-dirtied instead of copied.
  void count_overwrite() { overwrites_.fetch_add(1, std::memory_order_relaxed); }
  // A COW of a block another tree (a snapshot) still references (update_ref_for_cow, refs > 1).
  void count_shared_cow() { shared_cows_.fetch_add(1, std::memory_order_relaxed); }
  // Fix 1: a write of the block was in flight; the handle waited for it instead of copying.
  void count_in_flight_wait() { in_flight_waits_.fetch_add(1, std::memory_order_relaxed); }
  // Fix 2: an inhibitor taken (`replaced`: the 8-slot set dropped another buffer's for it).
  // Fix 2's transaction scope: a second copy of a block marked to be left to the commit.
  void count_held_for_commit() { held_for_commit_.fetch_add(1, std::memory_order_relaxed); }
  void count_inhibit(bool replaced) {
    inhibits_.fetch_add(1, std::memory_order_relaxed);
    if (replaced) inhibit_slot_reuses_.fetch_add(1, std::memory_order_relaxed);
  }

  uint64_t restarts(RestartSite site) const { return totals_[static_cast<int>(site)].load(std::memory_order_relaxed); }
  uint64_t restarts(RestartSite site, uint64_t root, int level) const;
  uint64_t cows() const { return cows_.load(std::memory_order_relaxed); }
  uint64_t cows_same_transaction() const { return cows_same_trans_.load(std::memory_order_relaxed); }
  // Re-COWs of blocks born in the running transaction whose write was in flight at the decision.
  uint64_t cows_same_transaction_write_in_flight() const {
    return cows_same_trans_in_flight_.load(std::memory_order_relaxed);
  }
  std::vector<RestartRow> restart_rows() const;
  const CountHistogram& per_search() const { return per_search_; }
  const CountHistogram& per_block() const { return per_block_; }
  const CountHistogram& per_handle_block() const { return per_handle_block_; }
  uint64_t overwrites() const { return overwrites_.load(std::memory_order_relaxed); }
  uint64_t shared_cows() const { return shared_cows_.load(std::memory_order_relaxed); }
  uint64_t in_flight_waits() const { return in_flight_waits_.load(std::memory_order_relaxed); }
  uint64_t inhibits() const { return inhibits_.load(std::memory_order_relaxed); }
  uint64_t inhibit_slot_reuses() const { return inhibit_slot_reuses_.load(std::memory_order_relaxed); }
  uint64_t held_for_commit() const { return held_for_commit_.load(std::memory_order_relaxed); }
  // One line per counter, for logs and test output.
  std::string to_string() const;
  void reset();

 private:
  std::array<std::atomic<uint64_t>, kRestartSiteCount> totals_{};
  std::atomic<uint64_t> cows_{0};
  std::atomic<uint64_t> cows_same_trans_{0};
  std::atomic<uint64_t> cows_same_trans_in_flight_{0};
  std::atomic<uint64_t> overwrites_{0}, in_flight_waits_{0}, inhibits_{0}, inhibit_slot_reuses_{0},
      held_for_commit_{0};
  std::atomic<uint64_t> shared_cows_{0};
  CountHistogram per_search_, per_block_, per_handle_block_;
  mutable std::mutex mu_;
  std::map<std::tuple<int, uint64_t, int>, uint64_t> by_site_root_level_;  // GUARDED_BY(mu_)
};

}  // namespace ubtrfs
