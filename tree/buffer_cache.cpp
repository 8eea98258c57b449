// Buffer cache; see buffer_cache.h for the invariants and the lock order.
#include "tree/buffer_cache.h"

#include <algorithm>
#include <thread>
#include <cstddef>
#include <optional>
#include <vector>

#include <spdlog/spdlog.h>

#include "io/shutdown_gate.h"
#include "tree/tree_checker.h"

namespace ubtrfs {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Blocks prepared per commit batch: the commit is alone, so larger batches only mean fewer waits.
constexpr size_t kCommitBatch = 256;

}  // namespace

BufferCache::BufferCache(io::BlockDevice& dev, const ChunkMap& map, const FsParams& fs, uint64_t budget_bytes)
    : dev_(dev),
      map_(map),
      fs_(fs),
      budget_(budget_bytes),
      super_gen_(fs.super_generation),
      writer_(std::make_unique<io::UringWriter>(dev)) {}

BufferCache::~BufferCache() = default;

EbRef BufferCache::find(uint64_t bytenr) {
  std::lock_guard g(mu_);
  auto it = map_by_bytenr_.find(bytenr);
  if (it == map_by_bytenr_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  ++counters_.hits;
  return it->second.eb;
}

Result<EbRef> BufferCache::read(const TreeBlockExpect& expect) {
  // A read from the device must not outlive a write of the same address. Without fix 1 that cannot
  // matter: a block's content never changes once written (a change goes to a copy elsewhere). With
  // fix 1 it does: thread A misses and starts reading version 1; thread B reads it too, overwrites
  // it in place (version 2), writeback writes version 2 and the clean buffer is evicted; A's read
  // returns version 1 — same address, same generation, so every check passes — and A would put the
  // old version back into the cache: lost changes, then "first key mismatch" against the parent
  // (seen in writeback_thread_races_8_writers with fix 1). So a read waits out a write in flight
  // to its slot and is retried when a write began meanwhile; the last check is under mu_, where a
  // buffer another thread made (the only one a write could start from) would be found instead.
  const size_t slot = write_slot(expect.bytenr);
  for (;;) {
    if (auto eb = find(expect.bytenr)) {
      // A cached block answers only for the level it has (a corrupt pointer may name a block of
      // another level that is cached: the device read below would refuse it too).
      if (expect.level && eb->level() != *expect.level)
        return fail(EUCLEAN, "bad tree block {}: level {} where {} is expected (cached)", expect.bytenr, eb->level(),
                    *expect.level);
      return eb;
    }
    const uint64_t started = writes_started_[slot].load(std::memory_order_acquire);
    if (writes_done_[slot].load(std::memory_order_acquire) != started) {
      std::this_thread::yield();
      continue;
    }
    auto block = read_tree_block(dev_, map_, io_params(), expect);
    if (after_device_read_) after_device_read_(expect.bytenr);
    if (writes_started_[slot].load(std::memory_order_acquire) != started) continue;
    if (!block) return std::unexpected(block.error());
    auto eb = std::make_shared<ExtentBuffer>(expect.bytenr, fs_.nodesize);
    std::memcpy(eb->bytes().data(), block->data(), fs_.nodesize);
    std::lock_guard g(mu_);
    auto it = map_by_bytenr_.find(expect.bytenr);
    if (it != map_by_bytenr_.end()) return it->second.eb;  // someone else read or created it meanwhile
    if (writes_started_[slot].load(std::memory_order_acquire) != started) continue;
    ++counters_.misses;
    insert_locked(eb);
    evict_locked();
    return eb;
  }
}

EbRef BufferCache::create(uint64_t bytenr) {
  auto eb = std::make_shared<ExtentBuffer>(bytenr, fs_.nodesize);
  std::lock_guard g(mu_);
  auto it = map_by_bytenr_.find(bytenr);
  if (it != map_by_bytenr_.end()) {
    it->second.eb->test_and_set_flag(ExtentBuffer::kStale);
    auto d = dirty_.find(bytenr);
    if (d != dirty_.end() && d->second == it->second.eb) dirty_.erase(d);
    erase_locked(it);
  }
  insert_locked(eb);
  evict_locked();
  return eb;
}

void BufferCache::forget(const EbRef& eb) {
  eb->test_and_set_flag(ExtentBuffer::kStale);
  eb->test_and_clear_flag(ExtentBuffer::kDirty);
  std::lock_guard g(mu_);
  auto d = dirty_.find(eb->start());
  if (d != dirty_.end() && d->second == eb) dirty_.erase(d);
  auto it = map_by_bytenr_.find(eb->start());
  if (it != map_by_bytenr_.end() && it->second.eb == eb) erase_locked(it);
}

void BufferCache::mark_dirty(const EbRef& eb) {
  assert(!eb->stale());
  if (!eb->test_and_set_flag(ExtentBuffer::kDirty)) return;  // already dirty and registered
  eb->set_dirtied_at_ms(now_ms());
  std::lock_guard g(mu_);
  const uint64_t before = dirty_.size() * fs_.nodesize;
  dirty_.emplace(eb->start(), eb);
  const uint64_t after = dirty_.size() * fs_.nodesize;
  counters_.dirty_bytes_max = std::max(counters_.dirty_bytes_max, after);
  const uint64_t thresh = bg_thresh_.load(std::memory_order_relaxed);
  // Crossing the background threshold wakes the writeback thread (it re-checks after each pass).
  if (thresh && before <= thresh && after > thresh && pressure_hook_) pressure_hook_();
}

bool BufferCache::start_write_locked(ExtentBuffer& eb) {
  // btrfs `lock_extent_buffer_for_io`: WRITEBACK before DIRTY goes, so that a lockless observer
  // (eviction) never sees the buffer as neither; WRITTEN into the header before the checksum.
  if (eb.stale() || !eb.dirty()) return false;
  eb.test_and_set_flag(ExtentBuffer::kWriteback);
  eb.test_and_clear_flag(ExtentBuffer::kDirty);
  eb.set_header_flag(kHeaderFlagWritten);
  return true;
}

uint64_t BufferCache::write_batch(std::vector<EbRef>& batch, bool background, std::optional<Error>* first_error) {
  // REQUIRES: wb_mu_ held; every buffer in `batch` went through start_write_locked and is unlocked.
  // WRITEBACK keeps modifiers away, readers only read: the image is stable until end_writeback().
  const FsParams params = io_params();
  std::vector<io::WriteRequest> reqs;
  std::vector<bool> failed(batch.size(), false);
  auto note_error = [&](const Error& e) {
    if (first_error && !*first_error) *first_error = e;
  };
  for (size_t i = 0; i < batch.size(); ++i) {
    ExtentBuffer& eb = *batch[i];
    std::span<uint8_t> img = eb.bytes();
    csum_tree_block(params, img);
    // The write-time tree checker (btrfs btree_csum_one_bio): a block that fails it is never written.
    Status st = eb.level() == 0 ? check_leaf(params, img) : check_node(params, img);
    if (!st) {
      spdlog::error("write-time tree check refused block {}: {}", eb.start(), st.error().message);
      note_error(st.error());
      failed[i] = true;
      continue;
    }
    if (before_submit_) before_submit_(eb);
    auto copies = map_.map(eb.start(), eb.len());
    if (!copies) {
      note_error(copies.error());
      failed[i] = true;
      continue;
    }
    for (uint64_t phys : *copies) reqs.push_back({phys, std::span<const uint8_t>(img.data(), img.size()), i});
  }
  // Before any request goes out (read() keys on this; see there).
  for (const auto& eb : batch) writes_started_[write_slot(eb->start())].fetch_add(1, std::memory_order_acq_rel);
  writer_->submit(reqs);
  std::vector<uint64_t> failed_tags;
  if (auto st = writer_->wait_all(&failed_tags); !st) note_error(st.error());
  for (uint64_t t : failed_tags) failed[t] = true;

  uint64_t nfailed = 0, nwritten = 0, bytes = 0;
  for (const auto& eb : batch) writes_done_[write_slot(eb->start())].fetch_add(1, std::memory_order_acq_rel);
  for (size_t i = 0; i < batch.size(); ++i) {
    ExtentBuffer& eb = *batch[i];
    if (failed[i]) {
      // Back to dirty (it never left dirty_): written again by the next pass, the commit's at the
      // latest. WRITTEN stays: part of it may be on the device.
      ++nfailed;
      if (!eb.stale()) eb.test_and_set_flag(ExtentBuffer::kDirty);
    } else {
      ++nwritten;
    }
    eb.end_writeback();
  }
  for (const auto& r : reqs)
    if (!failed[r.tag]) bytes += r.data.size();
  std::lock_guard g(mu_);
  for (size_t i = 0; i < batch.size(); ++i) {
    if (failed[i]) continue;
    const EbRef& eb = batch[i];
    auto d = dirty_.find(eb->start());
    if (d != dirty_.end() && d->second == eb && !eb->dirty()) dirty_.erase(d);
  }
  counters_.blocks_written += nwritten;
  if (background) counters_.background_blocks_written += nwritten;
  counters_.bytes_written += bytes;
  counters_.write_errors += nfailed;
  return nfailed;
}

Status BufferCache::write_dirty() { return write_dirty_if(nullptr); }

Status BufferCache::write_dirty_if(const std::function<bool(const ExtentBuffer&)>& pick) {
  std::lock_guard wb(wb_mu_);
  std::vector<EbRef> todo;
  {
    std::lock_guard g(mu_);
    todo.reserve(dirty_.size());
    for (auto& [_, eb] : dirty_)  // ascending bytenr: sequential device writes
      if (!pick || pick(*eb)) todo.push_back(eb);
  }
  std::optional<Error> first_error;
  std::vector<EbRef> batch;
  auto flush = [&] {
    if (!batch.empty()) write_batch(batch, false, &first_error);
    batch.clear();
  };
  for (auto& eb : todo) {
    eb->lock_write();
    // No pass but this one runs (wb_mu_), so no write of this buffer is in flight.
    assert(!eb->under_writeback());
    const bool go = start_write_locked(*eb);
    eb->unlock_write();
    if (!go) {
      std::lock_guard g(mu_);
      auto d = dirty_.find(eb->start());
      if (d != dirty_.end() && d->second == eb && !eb->dirty()) dirty_.erase(d);
      continue;
    }
    batch.push_back(eb);
    if (batch.size() == kCommitBatch) flush();
  }
  flush();
  {
    std::lock_guard g(mu_);
    evict_locked();
  }
  if (first_error) return fail(*first_error);
  return {};
}

void BufferCache::pause_background() {
  background_paused_.fetch_add(1, std::memory_order_acq_rel);
  std::lock_guard wb(wb_mu_);  // a pass that started before the flag ends first
}

void BufferCache::resume_background() { background_paused_.fetch_sub(1, std::memory_order_acq_rel); }

WbPassResult BufferCache::writeback(const WbPolicy& policy) {
  std::lock_guard wb(wb_mu_);
  WbPassResult r;
  if (background_paused_.load(std::memory_order_acquire) > 0) {
    r.paused = true;
    std::lock_guard g(mu_);
    ++counters_.paused_passes;
    return r;
  }
  std::vector<EbRef> cands;
  // Uses from now on are newer than everything this pass orders by.
  if (policy.coldest_first) ExtentBuffer::advance_use_epoch();
  {
    std::lock_guard g(mu_);
    cands.reserve(dirty_.size());
    if (policy.coldest_first) {
      // Least recently used by a tree path first: the cache's LRU list only sees lookups, and a
      // root node, held by its root, is never looked up, so order by the buffers' own stamps.
      // The stamps change under us (paths run): sort a snapshot, std::sort needs a fixed order.
      // Ties (one epoch) go in address order, as the address-ordered pass would write them.
      std::vector<std::pair<uint64_t, uint64_t>> order;  // (use epoch, start)
      order.reserve(dirty_.size());
      for (auto& [start, eb] : dirty_) order.emplace_back(eb->last_use(), start);
      std::sort(order.begin(), order.end());
      for (auto& [use, start] : order) cands.push_back(dirty_.at(start));
    } else {
      // range_cyclic: from the cursor to the end, then from the start up to the cursor.
      for (auto it = dirty_.lower_bound(cursor_); it != dirty_.end(); ++it) cands.push_back(it->second);
      for (auto it = dirty_.begin(); it != dirty_.end() && it->first < cursor_; ++it) cands.push_back(it->second);
    }
  }
  const int64_t now = now_ms();
  const uint64_t max_blocks = policy.max_bytes / fs_.nodesize + (policy.max_bytes % fs_.nodesize ? 1 : 0);
  uint64_t prepared = 0;
  std::vector<EbRef> batch;
  auto flush = [&] {
    if (batch.empty()) return;
    const uint64_t nfailed = write_batch(batch, true, nullptr);
    r.failed += nfailed;
    r.blocks += batch.size() - nfailed;
    batch.clear();
  };
  for (auto& eb : cands) {
    if (prepared >= max_blocks) break;
    if (eb->stale() || !eb->dirty()) continue;
    if (policy.min_age_ms && now - eb->dirtied_at_ms() < policy.min_age_ms) continue;
    // Fix 2's transaction scope: a second copy of its block in this transaction; the commit writes it.
    if (eb->held_for_commit()) {
      ++r.skipped_held;
      continue;
    }
    // Fix 2: a live handle COWed or reused this buffer; the commit writes it.
    if (eb->inhibitors() > 0) {
      ++r.skipped_inhibited;
      continue;
    }
    if (eb->under_writeback()) {
      ++r.skipped_in_flight;
      continue;
    }
    if (!eb->try_lock_write()) {
      ++r.skipped_locked;
      continue;
    }
    // Re-check under the lock: an inhibiting handle takes its inhibitor with the lock held.
    if (eb->inhibitors() > 0) {
      eb->unlock_write();
      ++r.skipped_inhibited;
      continue;
    }
    const bool go = start_write_locked(*eb);
    eb->unlock_write();
    if (!go) continue;
    if (!policy.coldest_first) cursor_ = eb->start() + 1;
    batch.push_back(eb);
    ++prepared;
    if (batch.size() == kWriteBatch) flush();
  }
  flush();
  std::lock_guard g(mu_);
  ++counters_.background_passes;
  counters_.skipped_inhibited += r.skipped_inhibited;
  counters_.skipped_held += r.skipped_held;
  counters_.skipped_locked += r.skipped_locked;
  counters_.skipped_in_flight += r.skipped_in_flight;
  // After an emergency shutdown (io/shutdown_gate.h) failed writes are the point, not news.
  const io::ShutdownGate* gate = dev_.shutdown_gate();
  if (r.failed && !(gate && gate->is_shut()))
    spdlog::warn("background writeback: {} tree block writes failed; the blocks stay dirty for the commit",
                 r.failed);
  evict_locked();
  return r;
}

Result<uint64_t> BufferCache::writeback(uint64_t max_bytes) {
  WbPolicy p;
  p.max_bytes = max_bytes;
  const WbPassResult r = writeback(p);
  return r.blocks * fs_.nodesize;
}

void BufferCache::evict_to_budget() {
  std::lock_guard g(mu_);
  evict_locked();
}

void BufferCache::balance_dirty(std::chrono::milliseconds max_wait) {
  std::unique_lock lk(mu_);
  // Without a writeback thread (writeback=off, read-only, tests) there is nobody to wait for.
  if (!pressure_hook_ || bytes_ <= effective_budget() || dirty_.empty()) return;
  ++counters_.throttled;
  pressure_hook_();
  const uint64_t seen = passes_done_;
  pass_cv_.wait_for(lk, max_wait, [&] { return passes_done_ != seen || bytes_ <= effective_budget(); });
}

void BufferCache::set_pressure_hook(std::function<void()> hook) {
  std::lock_guard g(mu_);
  pressure_hook_ = std::move(hook);
}

void BufferCache::notify_pass_done() {
  {
    std::lock_guard g(mu_);
    ++passes_done_;
  }
  pass_cv_.notify_all();
}

uint64_t BufferCache::effective_budget() const {
  return std::max<uint64_t>(budget_.load(std::memory_order_relaxed), kMinCachedBlocks * fs_.nodesize);
}

void BufferCache::insert_locked(const EbRef& eb) {
  lru_.push_front(eb->start());
  map_by_bytenr_.emplace(eb->start(), Entry{eb, lru_.begin()});
  bytes_ += eb->len();
}

void BufferCache::erase_locked(std::unordered_map<uint64_t, Entry>::iterator it) {
  bytes_ -= it->second.eb->len();
  lru_.erase(it->second.lru);
  map_by_bytenr_.erase(it);
}

void BufferCache::evict_locked() {
  // Floor: a search needs its whole path cached at once; evicting below a few paths' worth would
  // let read_block restarts evict each other forever.
  const uint64_t budget = effective_budget();
  if (bytes_ <= budget) {
    pressure_.store(false, std::memory_order_release);
    return;
  }
  // Bounded scan from the cold end; buffers that cannot go (dirty, referenced, in flight) are moved
  // to the hot end so the next scan does not trip over them again.
  size_t scan = (bytes_ - budget) / fs_.nodesize * 2 + 32;
  while (bytes_ > budget && scan-- > 0 && !lru_.empty()) {
    auto it = std::prev(lru_.end());
    auto m = map_by_bytenr_.find(*it);
    assert(m != map_by_bytenr_.end());
    const EbRef& eb = m->second.eb;
    if (eb.use_count() == 1 && !eb->dirty() && !eb->under_writeback()) {
      ++counters_.evictions;
      erase_locked(m);
    } else {
      lru_.splice(lru_.begin(), lru_, it);
    }
  }
  const bool pressure = bytes_ > budget && !dirty_.empty();
  pressure_.store(pressure, std::memory_order_release);
  if (pressure) {
    // Only dirty (or referenced) buffers are left: they become evictable once written.
    ++counters_.pressure_kicks;
    if (pressure_hook_) pressure_hook_();
  }
}

uint64_t BufferCache::size_bytes() const {
  std::lock_guard g(mu_);
  return bytes_;
}

size_t BufferCache::nr_buffers() const {
  std::lock_guard g(mu_);
  return map_by_bytenr_.size();
}

size_t BufferCache::nr_dirty() const {
  std::lock_guard g(mu_);
  return dirty_.size();
}

uint64_t BufferCache::dirty_bytes() const {
  std::lock_guard g(mu_);
  return dirty_.size() * fs_.nodesize;
}

BufferCache::Counters BufferCache::counters() const {
  std::lock_guard g(mu_);
  return counters_;
}

io::UringWriterStats BufferCache::io_stats() const { return writer_->stats(); }

}  // namespace ubtrfs
