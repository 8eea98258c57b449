// FITRIM and -o discard; the rules and the protocol are in discard.h. Also Filesystem::trim
// (btrfs_ioctl_fitrim's filesystem side).
#include "fs/discard.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "alloc/block_group.h"
#include "alloc/chunk_alloc.h"
#include "fs/chunk_creator.h"
#include "fs/filesystem.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "tree/format.h"

namespace ubtrfs::fs {

namespace {

// One discard request at most this long (the kernel splits by the device's max_discard_sectors):
// a range is reserved while discarded, so this bounds what allocations cannot use meanwhile.
constexpr uint64_t kMaxDiscardBytes = 64ull << 20;

enum class Source { kFitrim, kAsync };

void count(DiscardCounters* c, Source src, uint64_t bytes) {
  if (!c) return;
  c->bytes.fetch_add(bytes, std::memory_order_relaxed);
  c->extents.fetch_add(1, std::memory_order_relaxed);
  (src == Source::kFitrim ? c->fitrim_bytes : c->async_bytes).fetch_add(bytes, std::memory_order_relaxed);
}

// Discards the logical range [logical, +len) on every stripe of its chunk. REQUIRES: the caller
// owns the range (taken out of free space). Returns the device bytes discarded.
Result<uint64_t> discard_logical(FsInfo& fs, uint64_t logical, uint64_t len, DiscardCounters* c, Source src) {
  const auto phys = UBTRFS_TRY(fs.chunk_map().map(logical, len));
  uint64_t done = 0;
  for (uint64_t p : phys) {
    UBTRFS_TRY_STATUS(fs.device().discard(p, len));
    count(c, src, len);
    done += len;
  }
  return done;
}

// Trims the free space of `bg` inside [start, end) (btrfs_trim_block_group): free run by free
// run, each reserved while it is discarded, then given back.
Status trim_block_group(FsInfo& fs, alloc::BlockGroup& bg, uint64_t start, uint64_t end, uint64_t minlen,
                        TrimResult& out, DiscardCounters* c, Source src) {
  uint64_t cur = start;
  while (cur < end) {
    if (fs.is_shutdown()) return fail(EIO, "{}: trim stopped: filesystem shut down", fs.path());
    auto got = bg.take_free_for_trim(cur, end, minlen, kMaxDiscardBytes);
    if (!got) return {};
    auto [s, l] = *got;
    auto done = discard_logical(fs, s, l, c, src);
    // Given back whatever happened: the bytes are free either way (a failed discard left them as
    // they were, and free space never promises anything about its contents).
    auto rel = bg.release_reserved(s, l);
    if (!done) return fail(done.error());
    UBTRFS_TRY_STATUS(rel);
    out.trimmed += *done;
    ++out.extents;
    cur = s + l;
  }
  return {};
}

// Trims the device's unallocated space in the physical range [start, end) (btrfs_trim_free_extents):
// every hole between DEV_EXTENTs (planned chunks included), above the first MiB, below the device's
// end, less the superblock mirrors, one hole at a time with chunk planning held off.
Status trim_unallocated(FsInfo& fs, uint64_t start, uint64_t end, uint64_t minlen, TrimResult& out,
                        DiscardCounters* c) {
  const alloc::DeviceSpace& dev = fs.device_space();
  end = std::min({end, dev.total_bytes(), fs.device().size()});
  uint64_t cur = std::max(start, kReserved1MForSuper);
  while (cur < end) {
    if (fs.is_shutdown()) return fail(EIO, "{}: trim stopped: filesystem shut down", fs.path());
    auto lock = fs.chunk_creator().lock_planning();
    // The hole containing or following `cur`.
    uint64_t hole_start = cur, hole_end = end;
    for (auto [p, l] : dev.extents()) {
      if (p + l <= hole_start) continue;
      if (p <= hole_start) {
        hole_start = p + l;  // cur is inside this extent: the hole starts after it
        continue;
      }
      hole_end = std::min(hole_end, p);
      break;
    }
    if (hole_start >= end) return {};
    hole_end = std::min(hole_end, std::min(end, hole_start + kMaxDiscardBytes));
    // Cut the superblock mirrors out (64 KiB each, as chunks exclude them).
    std::vector<std::pair<uint64_t, uint64_t>> pieces{{hole_start, hole_end}};
    for (int m = 0; m < kSuperMirrorMax; ++m) {
      const uint64_t sb = super_offset(m), sb_end = sb + kStripeLen;
      std::vector<std::pair<uint64_t, uint64_t>> next;
      for (auto [a, b] : pieces) {
        if (sb_end <= a || sb >= b) {
          next.emplace_back(a, b);
          continue;
        }
        if (a < sb) next.emplace_back(a, sb);
        if (sb_end < b) next.emplace_back(sb_end, b);
      }
      pieces.swap(next);
    }
    for (auto [a, b] : pieces) {
      if (b - a < std::max<uint64_t>(minlen, 1)) continue;
      UBTRFS_TRY_STATUS(fs.device().discard(a, b - a));
      count(c, Source::kFitrim, b - a);
      out.trimmed += b - a;
      ++out.extents;
    }
    cur = hole_end;
  }
  return {};
}

}  // namespace

Result<TrimResult> trim_fs(FsInfo& fs, uint64_t start, uint64_t len, uint64_t minlen, DiscardCounters* counters) {
  UBTRFS_TRY_STATUS(fs.check_shutdown("FITRIM"));
  if (fs.read_only()) return fail(EROFS, "{}: FITRIM on a read-only filesystem", fs.path());
  if (fs.transactions().aborted())
    return fail(EROFS, "{}: FITRIM: transaction aborted earlier: {}", fs.path(), fs.transactions().abort_reason());
  if (len < fs.params().sectorsize || start == UINT64_MAX)
    return fail(EINVAL, "{}: FITRIM range start {} length {} (length below a sector)", fs.path(), start, len);
  // A start beyond both address spaces (the device's bytes, and the logical addresses of every
  // chunk) can trim nothing: EINVAL, as the generic FITRIM contract says (xfstests generic/260; the
  // kernel's btrfs accepts any logical start since its block groups may sit above total_bytes after
  // a balance, and so does this check, which allows every start below the last chunk's end).
  uint64_t total = 0;
  {
    std::lock_guard g(fs.super_mu());
    total = fs.super().total_bytes.get();
  }
  const uint64_t fs_end = std::max(total, fs.chunk_map().logical_end());
  if (start >= fs_end)
    return fail(EINVAL, "{}: FITRIM start {} is beyond the end of the filesystem ({})", fs.path(), start, fs_end);
  const uint64_t end = len > UINT64_MAX - start ? UINT64_MAX : start + len;
  TrimResult out;
  // Block groups first (logical addresses), then the device's unallocated space (physical), as
  // btrfs_trim_fs does. A device that cannot discard fails the first request: stop there.
  for (alloc::BlockGroup* bg : fs.block_groups().all()) {
    if (bg->start() + bg->length() <= start || bg->start() >= end) continue;
    UBTRFS_TRY_STATUS(trim_block_group(fs, *bg, std::max(start, bg->start()),
                                       std::min(end, bg->start() + bg->length()), minlen, out, counters,
                                       Source::kFitrim));
  }
  UBTRFS_TRY_STATUS(trim_unallocated(fs, start, end, minlen, out, counters));
  spdlog::debug("{}: FITRIM [{}, +{}) minlen {}: {} bytes in {} extents", fs.path(), start, len, minlen, out.trimmed,
                out.extents);
  return out;
}

AsyncDiscard::AsyncDiscard(FsInfo& fs, std::chrono::milliseconds delay, DiscardCounters& counters)
    : fs_(fs), delay_(delay), counters_(counters) {
  worker_ = std::thread([this] { run(); });
}

AsyncDiscard::~AsyncDiscard() { stop(false); }

void AsyncDiscard::queue(std::vector<std::pair<uint64_t, uint64_t>>&& logical_ranges) {
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    queue_.insert(queue_.end(), logical_ranges.begin(), logical_ranges.end());
  }
  cv_.notify_all();
}

void AsyncDiscard::stop(bool drain) {
  {
    std::lock_guard lk(mu_);
    if (!stop_) drain_ = drain;
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

uint64_t AsyncDiscard::queued_bytes() const {
  std::lock_guard lk(mu_);
  uint64_t n = 0;
  for (auto [s, l] : queue_) n += l;
  return n;
}

void AsyncDiscard::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_ && (!drain_ || queue_.empty())) break;
    // Batch: what the next commits unpin within `delay` joins this pass (btrfs waits per block
    // group; one delay for the whole queue is enough here).
    if (!stop_) cv_.wait_for(lk, delay_, [&] { return stop_; });
    if (stop_ && !drain_) break;
    auto batch = std::move(queue_);
    queue_.clear();
    lk.unlock();
    discard_batch(std::move(batch));
    lk.lock();
  }
  queue_.clear();
}

void AsyncDiscard::discard_batch(std::vector<std::pair<uint64_t, uint64_t>> batch) {
  if (unsupported_ || fs_.is_shutdown() || fs_.transactions().aborted()) return;
  std::sort(batch.begin(), batch.end());
  std::vector<std::pair<uint64_t, uint64_t>> merged;
  for (auto [s, l] : batch) {
    if (!merged.empty() && merged.back().first + merged.back().second >= s)
      merged.back().second = std::max(merged.back().first + merged.back().second, s + l) - merged.back().first;
    else
      merged.emplace_back(s, l);
  }
  for (auto [s, l] : merged) {
    // A range never crosses a block group (unpin works per group), but merging may join two
    // adjacent groups' ranges: walk the groups it meets.
    uint64_t cur = s;
    while (cur < s + l) {
      alloc::BlockGroup* bg = fs_.block_groups().find(cur);
      if (!bg) break;
      const uint64_t bg_end = bg->start() + bg->length();
      TrimResult res;
      auto st = trim_block_group(fs_, *bg, cur, std::min(s + l, bg_end), fs_.params().sectorsize, res, &counters_,
                                 Source::kAsync);
      if (!st) {
        counters_.errors.fetch_add(1, std::memory_order_relaxed);
        if (st.error().err == EOPNOTSUPP) {
          unsupported_ = true;
          spdlog::warn("{}: -o discard: {}; discarding turned off for this mount", fs_.path(), st.error().message);
          return;
        }
        spdlog::warn("{}: -o discard: {}", fs_.path(), st.error().message);
        if (fs_.is_shutdown()) return;
      }
      cur = bg_end;
    }
  }
}

Result<uint64_t> Filesystem::trim(uint64_t start, uint64_t len, uint64_t minlen) {
  if (unmounted_) return fail(EROFS, "{}: FITRIM after unmount", fs_->path());
  auto r = UBTRFS_TRY(trim_fs(*fs_, start, len, minlen, discard_counters_.get()));
  spdlog::info("{}: FITRIM discarded {} bytes in {} extents", fs_->path(), r.trimmed, r.extents);
  return r.trimmed;
}

}  // namespace ubtrfs::fs
