// NbdReadAhead implementation; see nbd_readahead.h for the contract.
//
// A stream is two or more reads of at least kMinStreamRead bytes, each starting within one window
// of where the previous one ended (FUSE serves a file's reads on several threads, so they may
// arrive slightly out of order). Small reads — tree blocks — neither start nor break a stream.
#include "io/nbd_readahead.h"

#include <algorithm>
#include <cstring>

namespace ubtrfs::io {

struct NbdReadAhead::Window final : NbdConnection::Completion {
  uint64_t off = 0;
  uint64_t len = 0;
  std::vector<uint8_t> buf;
  std::mutex m;
  std::condition_variable cv;
  bool done = false;  // GUARDED_BY(m)
  int err = 0;        // GUARDED_BY(m)

  uint64_t end() const { return off + len; }
  // Runs on the connection's poller: notifies under the lock, so once `done` is seen nothing
  // here touches the window any more and its owner may free it.
  void complete(int e) override {
    std::lock_guard g(m);
    err = e;
    done = true;
    cv.notify_all();
  }
  bool finished() {
    std::lock_guard g(m);
    return done;
  }
  // Waits for the read; true if it succeeded.
  bool wait_ok() {
    std::unique_lock g(m);
    cv.wait(g, [&] { return done; });
    return err == 0;
  }
};

NbdReadAhead::NbdReadAhead(uint64_t device_size, uint32_t align, Issue issue)
    : size_(device_size), align_(align), issue_(std::move(issue)) {}

NbdReadAhead::~NbdReadAhead() {
  std::lock_guard g(mu_);
  for (auto& w : windows_) w->wait_ok();
  for (auto& w : in_flight_) w->wait_ok();
}

uint64_t NbdReadAhead::hits() const {
  std::lock_guard g(mu_);
  return hits_;
}

bool NbdReadAhead::serve(uint64_t off, std::span<uint8_t> buf) {
  const uint64_t end = off + buf.size();
  std::vector<std::shared_ptr<Window>> use;
  {
    std::lock_guard g(mu_);
    uint64_t covered = off;
    for (const auto& w : windows_) {
      if (w->end() <= covered || w->off >= end) continue;
      if (w->off > covered) break;  // a gap
      use.push_back(w);
      covered = w->end();
      if (covered >= end) break;
    }
    if (use.empty() || covered < end) return false;
  }
  for (const auto& w : use)
    if (!w->wait_ok()) return false;
  for (const auto& w : use) {
    const uint64_t from = std::max(off, w->off), to = std::min(end, w->end());
    std::memcpy(buf.data() + (from - off), w->buf.data() + (from - w->off), to - from);
  }
  std::lock_guard g(mu_);
  ++hits_;
  return true;
}

void NbdReadAhead::note_read(uint64_t off, uint64_t len) {
  if (len < kMinStreamRead) return;
  std::lock_guard g(mu_);
  const bool sequential = off + kWindowBytes >= last_end_ && off <= last_end_ + kWindowBytes;
  streak_ = sequential ? streak_ + 1 : 1;
  last_end_ = std::max(sequential ? last_end_ : 0, off + len);
  std::erase_if(in_flight_, [](const std::shared_ptr<Window>& w) { return w->finished(); });
  // Windows the reader has passed are spent.
  while (!windows_.empty() && windows_.front()->end() + kWindowBytes <= off) {
    if (!windows_.front()->finished()) in_flight_.push_back(windows_.front());
    windows_.pop_front();
  }
  if (streak_ >= 2) top_up(off + len, off + len + kMaxWindows * kWindowBytes);
}

void NbdReadAhead::top_up(uint64_t from, uint64_t to) {
  // A new stream elsewhere replaces the old one's windows.
  if (!windows_.empty() && (windows_.back()->end() < from || windows_.front()->off > to)) {
    for (auto& w : windows_)
      if (!w->finished()) in_flight_.push_back(w);
    windows_.clear();
  }
  uint64_t next = windows_.empty() ? from / align_ * align_ : windows_.back()->end();
  to = std::min(to, size_);
  while (next < to && windows_.size() < kMaxWindows) {
    const uint64_t len = std::min(kWindowBytes, (size_ - next) / align_ * align_);
    if (len == 0) break;
    auto w = std::make_shared<Window>();
    w->off = next;
    w->len = len;
    w->buf.resize(len);
    windows_.push_back(w);
    issue_(w->off, w->buf.data(), w->len, w.get());
    next += len;
  }
}

void NbdReadAhead::invalidate(uint64_t off, uint64_t len) {
  const uint64_t end = off + len;
  std::lock_guard g(mu_);
  for (auto it = windows_.begin(); it != windows_.end();) {
    if ((*it)->off < end && off < (*it)->end()) {
      if (!(*it)->finished()) in_flight_.push_back(*it);
      it = windows_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace ubtrfs::io
