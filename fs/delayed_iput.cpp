// DelayedIputs: the queue of inodes to evict and its worker; see delayed_iput.h.
#include "fs/delayed_iput.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <optional>

namespace ubtrfs::fs {

namespace {
std::atomic<bool> g_paused_for_test{false};
}  // namespace

void DelayedIputs::set_workers_paused_for_test(bool paused) { g_paused_for_test.store(paused); }

DelayedIputs::DelayedIputs(Evictor evictor) : evictor_(std::move(evictor)) {
  worker_ = std::thread([this] { worker_main(); });
  pthread_setname_np(worker_.native_handle(), "ubtrfs-iput");
}

DelayedIputs::~DelayedIputs() { stop(); }

void DelayedIputs::add(InodeId id) {
  bool wake;
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    queue_.push_back(id);
    counters_.queued++;
    // The worker waits for a first inode, then sleeps out the delay unless a full batch is
    // waiting: waking it for every inode would cost the context switches batching saves.
    wake = queue_.size() == 1 || queue_.size() == kDelayedIputBatch;
  }
  if (wake) cv_.notify_one();
}

void DelayedIputs::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

DelayedIputCounters DelayedIputs::counters() const {
  std::lock_guard lk(mu_);
  DelayedIputCounters c = counters_;
  c.pending = queue_.size();
  return c;
}

std::vector<InodeId> DelayedIputs::take_batch() {
  std::lock_guard lk(mu_);
  const auto take = static_cast<std::ptrdiff_t>(std::min(queue_.size(), kDelayedIputBatch));
  std::vector<InodeId> batch(queue_.begin(), queue_.begin() + take);
  queue_.erase(queue_.begin(), queue_.begin() + take);
  return batch;
}

Result<size_t> DelayedIputs::run_batch(std::vector<InodeId> batch) {
  const size_t n = batch.size();
  auto r = evictor_(std::move(batch));
  std::lock_guard lk(mu_);
  counters_.batches++;
  if (!r) {
    counters_.failed += n;
    return r;
  }
  counters_.evicted += *r;
  return r;
}

Result<size_t> DelayedIputs::run_all() {
  std::lock_guard run(run_mu_);
  size_t evicted = 0;
  std::optional<Error> first_error;
  for (;;) {
    std::vector<InodeId> batch = take_batch();
    if (batch.empty()) break;
    auto r = run_batch(std::move(batch));
    if (r)
      evicted += *r;
    else if (!first_error)
      first_error = r.error();
  }
  if (first_error) return fail(*first_error);
  return evicted;
}

void DelayedIputs::worker_main() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    // Let the FORGETs of a burst of unlinks gather: consecutive inodes share leaves.
    cv_.wait_for(lk, kDelayedIputDelay, [&] { return stop_ || queue_.size() >= kDelayedIputBatch; });
    if (stop_) return;
    if (g_paused_for_test.load()) {
      cv_.wait_for(lk, kDelayedIputDelay, [&] { return stop_; });
      continue;
    }
    lk.unlock();
    {
      std::lock_guard run(run_mu_);
      std::vector<InodeId> batch = take_batch();
      if (!batch.empty()) {
        const size_t n = batch.size();
        if (auto r = run_batch(std::move(batch)); !r)
          spdlog::error("evicting {} unlinked inodes: {} (their orphan items stay for the next mount)", n,
                        r.error().message);
      }
    }
    lk.lock();
  }
}

}  // namespace ubtrfs::fs
