// Background writeback thread; see writeback.h.
#include "tree/writeback.h"

#include <algorithm>
#include <chrono>

#include <spdlog/spdlog.h>

namespace ubtrfs {

namespace {
// After a pass that wrote nothing, the next one waits at least this long.
constexpr auto kNoProgressBackoff = std::chrono::milliseconds(5);
}  // namespace

WritebackThread::WritebackThread(BufferCache& cache, const WritebackOptions& opts) : cache_(cache), opts_(opts) {}

WritebackThread::~WritebackThread() { stop(); }

uint64_t WritebackThread::background_threshold() const {
  uint64_t t = opts_.thresh_bytes;
  if (opts_.ratio_pct) t = std::min<uint64_t>(t, cache_.budget() / 100 * opts_.ratio_pct);
  return std::max<uint64_t>(t, cache_.fs().nodesize);
}

void WritebackThread::start() {
  if (!opts_.enabled || thread_.joinable()) return;
  {
    std::lock_guard g(mu_);
    stop_ = false;
  }
  cache_.set_background_threshold(background_threshold());
  cache_.set_pressure_hook([this] { kick(); });
  thread_ = std::thread([this] { run(); });
}

void WritebackThread::stop() {
  if (!thread_.joinable()) return;
  cache_.set_pressure_hook(nullptr);
  cache_.set_background_threshold(0);
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  cache_.notify_pass_done();  // nobody waits for a pass that will not come
}

void WritebackThread::kick() {
  if (kicked_.exchange(true, std::memory_order_acq_rel)) return;  // already pending
  cv_.notify_one();
}

WritebackThread::Stats WritebackThread::stats() const {
  std::lock_guard g(mu_);
  return stats_;
}

void WritebackThread::run() {
  const uint32_t nodesize = cache_.fs().nodesize;
  auto next_periodic = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.interval_ms);
  for (;;) {
    {
      std::unique_lock lk(mu_);
      cv_.wait_until(lk, next_periodic, [&] { return stop_ || kicked_.load(std::memory_order_acquire); });
      if (stop_) return;
    }
    kicked_.store(false, std::memory_order_release);
    const bool periodic = std::chrono::steady_clock::now() >= next_periodic;
    if (periodic) next_periodic = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.interval_ms);

    const uint64_t thresh = background_threshold();
    bool wrote_any = false;
    // Pressure and threshold passes repeat while they are needed and make progress.
    for (;;) {
      const uint64_t size = cache_.size_bytes(), budget = cache_.effective_budget();
      const uint64_t dirty = cache_.dirty_bytes();
      WbPolicy policy;
      policy.coldest_first = opts_.coldest_first;
      enum { kNone, kPressure, kThreshold } why = kNone;
      if (size > budget && dirty > 0) {
        why = kPressure;
        policy.max_bytes = std::min(dirty, size - budget + BufferCache::kWriteBatch * nodesize);
      } else if (dirty > thresh) {
        why = kThreshold;
        policy.max_bytes = dirty - thresh / 2;
      }
      if (why == kNone) break;
      const WbPassResult r = cache_.writeback(policy);
      {
        std::lock_guard g(mu_);
        (why == kPressure ? stats_.pressure_passes : stats_.threshold_passes)++;
        if (r.blocks == 0) stats_.idle_passes++;
      }
      cache_.notify_pass_done();
      if (r.blocks == 0) {
        // Everything dirty is inhibited, locked or failing: give the handles a moment.
        std::unique_lock lk(mu_);
        cv_.wait_for(lk, kNoProgressBackoff, [&] { return stop_; });
        if (stop_) return;
        break;
      }
      wrote_any = true;
      std::lock_guard g(mu_);
      if (stop_) return;
    }
    if (periodic && !wrote_any) {
      WbPolicy policy;
      policy.coldest_first = opts_.coldest_first;
      policy.min_age_ms = opts_.expire_ms;
      const WbPassResult r = cache_.writeback(policy);
      {
        std::lock_guard g(mu_);
        stats_.periodic_passes++;
      }
      if (r.blocks) cache_.notify_pass_done();
    }
  }
}

}  // namespace ubtrfs
