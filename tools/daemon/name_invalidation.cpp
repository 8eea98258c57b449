// NameInvalidator (name_invalidation.h): the ubtrfs-inval thread, the bounded wait of a ring
// worker, and FUSE_NOTIFY_INC_EPOCH written to /dev/fuse (libfuse 3.14 has no call for it).
#include "tools/daemon/name_invalidation.h"

#define FUSE_USE_VERSION 312  // as fuse_ops.h
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tools/daemon/fuse_uring.h"

namespace ubtrfs::daemon {

NameInvalidator::NameInvalidator(fuse_session* se) : se_(se) {
  thread_ = std::thread([this] { run(); });
  pthread_setname_np(thread_.native_handle(), "ubtrfs-inval");
}

NameInvalidator::~NameInvalidator() { stop(); }

void NameInvalidator::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  done_cv_.notify_all();
  if (!thread_.joinable()) return;
  thread_.join();
  if (counts_.late)
    spdlog::info("names changed by ioctl: {} invalidated directly, {} through the ring's helper, {} late ({} by epoch)",
                 counts_.direct, counts_.handed, counts_.late, counts_.epochs);
}

NameInvalidator::Counts NameInvalidator::counts() const {
  std::lock_guard lock(mu_);
  return counts_;
}

void NameInvalidator::name_changed(uint64_t parent, std::string_view name) {
  if (!se_) return;
  (void)fuse_lowlevel_notify_inval_inode(se_, parent, -1, 0);
  if (!on_ring_worker()) {
    const int rc = fuse_lowlevel_notify_inval_entry(se_, parent, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT)
      spdlog::debug("invalidating '{}' in directory {}: {}", name, parent, strerror(-rc));
    std::lock_guard lock(mu_);
    ++counts_.direct;
    return;
  }
  std::unique_lock lock(mu_);
  if (stopping_) return;
  const uint64_t seq = next_seq_++;
  queue_.push_back(Item{parent, std::string(name), seq});
  work_cv_.notify_one();
  if (done_cv_.wait_for(lock, kRingWait, [&] { return done_ >= seq || stopping_; })) {
    ++counts_.handed;
    return;
  }
  ++counts_.late;
  lock.unlock();
  const bool epoch = kernel_minor_ >= kIncEpochMinor && send_epoch();
  lock.lock();
  if (epoch) ++counts_.epochs;
  spdlog::debug("invalidation of '{}' in directory {} still waits for the directory after {} ms: {}", name, parent,
                kRingWait.count(),
                epoch ? "every cached name of the mount expired instead (FUSE_NOTIFY_INC_EPOCH)"
                      : "replying first (kernel protocol before 7.44: no epoch to expire names)");
}

bool NameInvalidator::send_epoch() {
  fuse_out_header out{};
  out.len = sizeof out;
  out.error = kNotifyIncEpoch;
  out.unique = 0;
  const ssize_t n = ::write(fuse_session_fd(se_), &out, sizeof out);
  if (n == static_cast<ssize_t>(sizeof out)) return true;
  spdlog::warn("FUSE_NOTIFY_INC_EPOCH refused: {}", n < 0 ? strerror(errno) : "short write");
  kernel_minor_ = 0;  // do not try again
  return false;
}

void NameInvalidator::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Item item = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    // May sleep until every lookup in the directory is answered (the header says why that ends).
    const int rc = fuse_lowlevel_notify_inval_entry(se_, item.parent, item.name.data(), item.name.size());
    if (rc != 0 && rc != -ENOENT)
      spdlog::debug("invalidating '{}' in directory {}: {}", item.name, item.parent, strerror(-rc));
    lock.lock();
    done_ = item.seq;
    done_cv_.notify_all();
  }
}

}  // namespace ubtrfs::daemon
