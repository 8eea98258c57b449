// PageCacheGuard: the writeback cache's space guard; see page_cache_guard.h.
#include "tools/daemon/page_cache_guard.h"

#define FUSE_USE_VERSION 312
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fs.h>

#include <algorithm>
#include <cerrno>
#include <pthread.h>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace ubtrfs::daemon {

PageCacheGuard::PageCacheGuard(fs::Filesystem& fs, Window window) : fs_(fs), window_(std::move(window)) {
  if (!enabled()) return;
  limit_ = window_.floor;
  max_bound_ = dirty_bound_for(window_.floor);
  const uint64_t floor_bound = dirty_bound_for(window_.floor);
  auto got = fs_.hold_data(floor_bound);
  held_ = got ? *got : 0;
  if (held_ < floor_bound) {
    // Not even the floor's bound is free: start closed (writes are direct until space comes back).
    open_ = false;
    spdlog::info("writeback cache: {} MiB free is less than the {} MiB the kernel may hold dirty; writes are "
                 "synchronous until space is freed",
                 fs_.data_headroom() >> 20, floor_bound >> 20);
  }
  idle_since_ = std::chrono::steady_clock::now();
  if (elastic()) {
    window_thread_ = std::thread([this] { window_main(); });
    pthread_setname_np(window_thread_.native_handle(), "ubtrfs-wbwin");
  }
}

PageCacheGuard::~PageCacheGuard() {
  if (window_thread_.joinable()) {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    window_cv_.notify_all();
    window_thread_.join();
  }
  fs_.release_data(held_);
}

PageCacheGuard::OpenFile* PageCacheGuard::open(uint64_t ino, int flags) {
  auto* f = new OpenFile{ino, (flags & O_ACCMODE) != O_RDONLY, true};
  if (!f->writable || !enabled()) return f;
  // +a, +i, +S: the daemon enforces them per write (fs/inode_flags.h), which needs every write() as
  // it is made, not pages written back later.
  if (auto fl = fs_.get_fsflags(ino); !fl || (*fl & (FS_APPEND_FL | FS_IMMUTABLE_FL | FS_SYNC_FL))) f->cached = false;
  std::lock_guard g(mu_);
  try_reopen_locked();
  if (!open_) f->cached = false;
  if (f->cached) ++cached_writers_[ino].opens;
  return f;
}

void PageCacheGuard::release(OpenFile* f) {
  if (!f) return;
  if (f->writable && f->cached && enabled()) {
    std::lock_guard g(mu_);
    auto it = cached_writers_.find(f->ino);
    if (it != cached_writers_.end() && --it->second.opens == 0) cached_writers_.erase(it);
    if (cached_writers_.empty()) idle_since_ = std::chrono::steady_clock::now();
    // Closed and the last cached writer gone: the kernel wrote its pages back at that close (flush
    // with the writeback cache writes the inode), so nothing is owed and `held` goes back to all
    // writers until the guard reopens.
    if (!open_ && cached_writers_.empty() && held_) {
      fs_.release_data(held_);
      held_ = 0;
    }
  }
  delete f;
}

Result<size_t> PageCacheGuard::write(fuse_session* session, uint64_t ino, uint64_t off, std::span<const uint8_t> data,
                                     bool from_page_cache) {
  if (!enabled() || !from_page_cache) return fs_.write(ino, off, data);
  if (elastic()) {
    std::lock_guard g(mu_);
    if (auto it = cached_writers_.find(ino); it != cached_writers_.end()) it->second.pushed += data.size();
  }
  // A page the kernel already acknowledged must be written whole: the kernel's writeback takes a
  // short count as done. The ordinary reservation first (it flushes and waits like any write),
  // `held` only for what that cannot place.
  size_t done = 0;
  while (done < data.size()) {
    // The kernel owns mtime/ctime in this mode and sends them with SETATTR: keep_times.
    auto r = fs_.write(ino, off + done, data.subspan(done), nullptr, true);
    if (r && *r > 0) {
      done += *r;
      continue;
    }
    if (!r && r.error().err != ENOSPC) return r;
    // This write's share of `held`, taken out under the lock and the rest put back after: the
    // write itself may wait for a flush and must not hold up the other requests meanwhile.
    const std::span<const uint8_t> rest = data.subspan(done);
    uint64_t slice = 0;
    {
      std::lock_guard g(mu_);
      const uint64_t want = rest.size() + (uint64_t{2} << 12) + ((off + done) & 4095);
      // The window above its floor: the kernel limit goes to the floor now, so that no more pages
      // are dirtied than the floor's bound covers; what is held covers every unsent page (each
      // draw takes what one of them needs), so the guard stays open until a draw reaches into the
      // floor's bound.
      if (limit_ > window_.floor) {
        set_limit_locked(window_.floor);
      }
      if (open_ && held_ < dirty_bound_for(window_.floor) + want) close_locked(session);
      slice = std::min<uint64_t>(held_, want);
      held_ -= slice;
    }
    r = fs_.write(ino, off + done, rest, &slice, true);
    {
      std::lock_guard g(mu_);
      held_ += slice;
    }
    if (!r || *r == 0) {
      spdlog::error("writeback cache: page-cache write of inode {} at {} ({} bytes) failed with {} MiB held: {}", ino,
                    off + done, rest.size(), held() >> 20, r ? std::string("nothing written") : r.error().message);
      return r ? Result<size_t>(done) : r;
    }
    done += *r;
  }
  return done;
}

void PageCacheGuard::close_locked(fuse_session* session) {
  open_ = false;
  spdlog::warn("writeback cache: the device is full apart from the {} MiB held for cached pages; files open for "
               "writing now get ENOSPC at write(), new opens write synchronously",
               held_ >> 20);
  // Attributes only (offset -1): no page lock is taken, so this is safe inside a writeback request.
  if (session)
    for (const auto& [ino, w] : cached_writers_) (void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
}

void PageCacheGuard::try_reopen_locked() {
  if (open_ || !cached_writers_.empty()) return;
  const uint64_t floor_bound = dirty_bound_for(window_.floor);
  if (fs_.data_headroom() < 2 * floor_bound) return;
  if (held_ < floor_bound) {
    auto got = fs_.hold_data(floor_bound - held_);
    if (got) held_ += *got;
  }
  if (held_ < floor_bound) return;
  open_ = true;
  spdlog::info("writeback cache: space is back ({} MiB free); writes are cached again", fs_.data_headroom() >> 20);
}

bool PageCacheGuard::refuse_cached_write(const OpenFile* f) {
  if (!f || !f->writable || !f->cached || !enabled()) return false;
  return !open_.load();
}

double PageCacheGuard::attr_timeout_for(uint64_t ino, double normal) {
  if (!enabled() || open_.load()) return normal;
  std::lock_guard g(mu_);
  if (open_) return normal;
  return cached_writers_.contains(ino) ? 0.0 : normal;
}

bool PageCacheGuard::is_open() {
  std::lock_guard g(mu_);
  return open_;
}

uint64_t PageCacheGuard::held() {
  std::lock_guard g(mu_);
  return held_;
}

uint64_t PageCacheGuard::bound() {
  std::lock_guard g(mu_);
  return enabled() ? dirty_bound_for(limit_) : 0;
}

PageCacheGuard::WindowStats PageCacheGuard::window_stats() {
  std::lock_guard g(mu_);
  return {limit_, window_.floor, std::max(window_.floor, window_.ceiling), grows_, shrinks_, max_bound_};
}

void PageCacheGuard::set_limit_locked(uint64_t limit) {
  if (!write_bdi_max_bytes(window_.bdi_dir, limit))
    spdlog::warn("writeback cache: cannot set {}/max_bytes to {}", window_.bdi_dir, limit);
  if (limit < limit_) ++shrinks_;
  limit_ = limit;
  for (auto& [ino, w] : cached_writers_) w.pushed = 0;
}

void PageCacheGuard::window_main() {
  std::unique_lock lk(mu_);
  while (!stop_) {
    window_cv_.wait_for(lk, std::chrono::milliseconds(100));
    if (stop_) break;
    window_step(lk);
  }
}

void PageCacheGuard::window_step(std::unique_lock<std::mutex>& lk) {
  using clock = std::chrono::steady_clock;
  if (cached_writers_.empty()) {
    // No file open for cached writing: every page dirtied under a larger limit has been sent (its
    // RELEASE came after), so the window goes back to its floor a second after the last close
    // (dirty_window.h) and what is held beyond the limit's bound goes back at once.
    if (next_dirty_window(limit_, window_.floor, window_.ceiling, 0, 0, false,
                          clock::now() - idle_since_ >= std::chrono::seconds(1))
            .kind == DirtyWindowStep::kToFloor) {
      set_limit_locked(window_.floor);
      spdlog::debug("writeback cache: no cached writer: dirty window back to {} MiB", limit_ >> 20);
    }
    if (held_ > dirty_bound_for(limit_)) {
      fs_.release_data(held_ - dirty_bound_for(limit_));
      held_ = dirty_bound_for(limit_);
    }
    return;
  }
  if (!open_) return;
  uint64_t pushed = 0;
  for (const auto& [ino, w] : cached_writers_) pushed = std::max(pushed, w.pushed);
  const uint64_t usable = fs_.data_headroom() + held_;
  const DirtyWindowStep step = next_dirty_window(limit_, window_.floor, window_.ceiling, usable, pushed, true, false);
  if (step.kind != DirtyWindowStep::kGrow) return;
  // Grow: `held` first (outside mu_: a reservation may flush and wait), the kernel limit after.
  const uint64_t target = step.to;
  const uint64_t before = limit_;
  const uint64_t need = dirty_bound_for(target) - std::min(held_, dirty_bound_for(target));
  const auto hold_start = clock::now();
  lk.unlock();
  auto r = fs_.hold_data(need);
  lk.lock();
  const uint64_t got = r ? *r : 0;
  const auto hold_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - hold_start).count();
  // Meanwhile a draw may have lowered the limit (the device filled) or the guard closed: then the
  // space goes back and the window stays.
  if (got == need && open_ && !cached_writers_.empty() && !stop_ && limit_ == before &&
      held_ + got >= dirty_bound_for(target)) {
    held_ += got;
    set_limit_locked(target);
    ++grows_;
    max_bound_ = std::max(max_bound_, dirty_bound_for(target));
    spdlog::debug("writeback cache: {} MiB usable: dirty window up to {} MiB ({} MiB held in {} ms)", usable >> 20,
                  target >> 20, got >> 20, hold_ms);
  } else if (got) {
    fs_.release_data(got);
  }
}

std::string with_writeback_cache_stats(const std::string& stats, bool on, PageCacheGuard* guard) {
  nlohmann::json j = nlohmann::json::parse(stats, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return stats;
  nlohmann::json w = {{"on", on && guard && guard->enabled()}};
  if (guard) {
    w["bound_bytes"] = guard->bound();
    w["held_bytes"] = guard->held();
    w["guard"] = guard->is_open() ? "open" : "closed";
    const PageCacheGuard::WindowStats ws = guard->window_stats();
    w["limit_bytes"] = ws.limit;
    w["floor_bytes"] = ws.floor;
    w["ceiling_bytes"] = ws.ceiling;
    w["grows"] = ws.grows;
    w["shrinks"] = ws.shrinks;
    w["max_bound_bytes"] = ws.max_bound;
  }
  j["writeback_cache"] = std::move(w);
  return j.dump();
}

}  // namespace ubtrfs::daemon
