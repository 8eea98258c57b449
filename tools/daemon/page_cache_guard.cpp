// PageCacheGuard: the writeback cache's space guard; see page_cache_guard.h.
#include "tools/daemon/page_cache_guard.h"

#define FUSE_USE_VERSION 312
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fs.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace ubtrfs::daemon {

PageCacheGuard::PageCacheGuard(fs::Filesystem& fs, uint64_t bound_bytes) : fs_(fs), bound_(bound_bytes) {
  if (!bound_) return;
  auto got = fs_.hold_data(bound_);
  held_ = got ? *got : 0;
  if (held_ < bound_) {
    // Not even the bound is free: start closed (writes are direct until space comes back).
    open_ = false;
    spdlog::info("writeback cache: {} MiB free is less than the {} MiB the kernel may hold dirty; writes are "
                 "synchronous until space is freed",
                 fs_.data_headroom() >> 20, bound_ >> 20);
  }
}

PageCacheGuard::~PageCacheGuard() { fs_.release_data(held_); }

PageCacheGuard::OpenFile* PageCacheGuard::open(uint64_t ino, int flags) {
  auto* f = new OpenFile{ino, (flags & O_ACCMODE) != O_RDONLY, true};
  if (!f->writable || !bound_) return f;
  // +a, +i, +S: the daemon enforces them per write (fs/inode_flags.h), which needs every write() as
  // it is made, not pages written back later.
  if (auto fl = fs_.get_fsflags(ino); !fl || (*fl & (FS_APPEND_FL | FS_IMMUTABLE_FL | FS_SYNC_FL))) f->cached = false;
  std::lock_guard g(mu_);
  try_reopen_locked();
  if (!open_) f->cached = false;
  if (f->cached) ++cached_writers_[ino];
  return f;
}

void PageCacheGuard::release(OpenFile* f) {
  if (!f) return;
  if (f->writable && f->cached && bound_) {
    std::lock_guard g(mu_);
    auto it = cached_writers_.find(f->ino);
    if (it != cached_writers_.end() && --it->second == 0) cached_writers_.erase(it);
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
  if (!bound_ || !from_page_cache) return fs_.write(ino, off, data);
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
      if (open_) close_locked(session);
      slice = std::min<uint64_t>(held_, rest.size() + (uint64_t{2} << 12) + ((off + done) & 4095));
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
    for (const auto& [ino, n] : cached_writers_) (void)fuse_lowlevel_notify_inval_inode(session, ino, -1, 0);
}

void PageCacheGuard::try_reopen_locked() {
  if (open_ || !cached_writers_.empty()) return;
  if (fs_.data_headroom() < 2 * bound_) return;
  if (held_ < bound_) {
    auto got = fs_.hold_data(bound_ - held_);
    if (got) held_ += *got;
  }
  if (held_ < bound_) return;
  open_ = true;
  spdlog::info("writeback cache: space is back ({} MiB free); writes are cached again", fs_.data_headroom() >> 20);
}

bool PageCacheGuard::refuse_cached_write(const OpenFile* f) {
  if (!f || !f->writable || !f->cached || !bound_) return false;
  return !open_.load();
}

double PageCacheGuard::attr_timeout_for(uint64_t ino, double normal) {
  if (!bound_ || open_.load()) return normal;
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

std::string with_writeback_cache_stats(const std::string& stats, bool on, PageCacheGuard* guard) {
  nlohmann::json j = nlohmann::json::parse(stats, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return stats;
  nlohmann::json w = {{"on", on && guard && guard->bound() != 0}};
  if (guard) {
    w["bound_bytes"] = guard->bound();
    w["held_bytes"] = guard->held();
    w["guard"] = guard->is_open() ? "open" : "closed";
  }
  j["writeback_cache"] = std::move(w);
  return j.dump();
}

std::string mount_bdi_dir(const std::string& mountpoint) {
  // The device number from /proc/self/mountinfo, not stat(2): the daemon must never ask its own
  // mount before its loop serves requests.
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string found;
  while (std::getline(in, line)) {
    // "ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ..."; the last matching line is the newest mount.
    std::istringstream ls(line);
    std::string id, parent, dev, root, mnt;
    if (!(ls >> id >> parent >> dev >> root >> mnt)) continue;
    if (mnt == mountpoint) found = dev;
  }
  return found.empty() ? std::string() : "/sys/class/bdi/" + found;
}

uint64_t kernel_dirty_limit(const std::string& mountpoint, uint64_t set_bytes) {
  const std::string dir = mount_bdi_dir(mountpoint);
  if (dir.empty()) return 0;
  if (set_bytes) {
    std::ofstream out(dir + "/max_bytes");
    out << set_bytes << std::flush;
    if (!out) spdlog::warn("writeback cache: cannot set {}/max_bytes to {} (needs root); the kernel's limit stays", dir,
                           set_bytes);
  }
  std::ifstream in(dir + "/max_bytes");
  uint64_t v = 0;
  if (!(in >> v)) return 0;
  return v;
}

}  // namespace ubtrfs::daemon
