// Buffer cache; see buffer_cache.h for the invariants and the lock order.
#include "tree/buffer_cache.h"

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

#include "tree/tree_checker.h"

namespace ubtrfs {

EbRef BufferCache::find(uint64_t bytenr) {
  std::lock_guard g(mu_);
  auto it = map_by_bytenr_.find(bytenr);
  if (it == map_by_bytenr_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second.lru);
  ++counters_.hits;
  return it->second.eb;
}

Result<EbRef> BufferCache::read(const TreeBlockExpect& expect) {
  if (auto eb = find(expect.bytenr)) return eb;
  auto block = UBTRFS_TRY(read_tree_block(dev_, map_, io_params(), expect));
  auto eb = std::make_shared<ExtentBuffer>(expect.bytenr, fs_.nodesize);
  std::memcpy(eb->bytes().data(), block.data(), fs_.nodesize);
  std::lock_guard g(mu_);
  ++counters_.misses;
  auto it = map_by_bytenr_.find(expect.bytenr);
  if (it != map_by_bytenr_.end()) return it->second.eb;  // someone else read or created it meanwhile
  insert_locked(eb);
  evict_locked();
  return eb;
}

EbRef BufferCache::create(uint64_t bytenr) {
  auto eb = std::make_shared<ExtentBuffer>(bytenr, fs_.nodesize);
  std::lock_guard g(mu_);
  auto it = map_by_bytenr_.find(bytenr);
  if (it != map_by_bytenr_.end()) {
    it->second.eb->test_and_set_flag(ExtentBuffer::kStale);
    dirty_.erase(bytenr);
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
  std::lock_guard g(mu_);
  dirty_.emplace(eb->start(), eb);
}

Status BufferCache::write_one_locked(const EbRef& eb) {
  // btrfs `lock_extent_buffer_for_io` + `write_one_eb`: WRITTEN goes into the header before the
  // checksum, DIRTY moves to WRITEBACK, and the image is copied so the lock can be dropped for I/O.
  eb->set_header_flag(kHeaderFlagWritten);
  eb->test_and_clear_flag(ExtentBuffer::kDirty);
  eb->test_and_set_flag(ExtentBuffer::kWriteback);
  std::vector<uint8_t> copy(eb->bytes().begin(), eb->bytes().end());
  eb->unlock_write();
  const FsParams params = io_params();
  csum_tree_block(params, copy);
  Status st = copy[offsetof(Header, level)] == 0 ? check_leaf(params, copy) : check_node(params, copy);
  if (st) st = write_tree_block(dev_, map_, eb->start(), copy);
  if (!st) {
    // Keep the data: the buffer goes back to dirty so the transaction abort can see it.
    eb->test_and_set_flag(ExtentBuffer::kDirty);
  }
  eb->test_and_clear_flag(ExtentBuffer::kWriteback);
  std::lock_guard g(mu_);
  if (st) {
    ++counters_.blocks_written;
    auto d = dirty_.find(eb->start());
    if (d != dirty_.end() && d->second == eb && !eb->dirty()) dirty_.erase(d);
  }
  return st;
}

Status BufferCache::write_dirty() {
  std::vector<EbRef> todo;
  {
    std::lock_guard g(mu_);
    todo.reserve(dirty_.size());
    for (auto& [_, eb] : dirty_) todo.push_back(eb);
  }
  // Ascending bytenr: sequential device writes.
  std::sort(todo.begin(), todo.end(), [](const EbRef& a, const EbRef& b) { return a->start() < b->start(); });
  for (auto& eb : todo) {
    eb->lock_write();
    // WB_SYNC_ALL waits for a background write of this buffer still in flight (btrfs
    // lock_extent_buffer_for_io: "wait and relock"), so the commit never outruns it.
    while (eb->test_flag(ExtentBuffer::kWriteback)) {
      eb->unlock_write();
      std::this_thread::yield();
      eb->lock_write();
    }
    if (eb->stale() || !eb->dirty()) {
      eb->unlock_write();
      std::lock_guard g(mu_);
      auto d = dirty_.find(eb->start());
      if (d != dirty_.end() && d->second == eb && !eb->dirty()) dirty_.erase(d);
      continue;
    }
    UBTRFS_TRY_STATUS(write_one_locked(eb));
  }
  std::lock_guard g(mu_);
  evict_locked();
  return {};
}

Result<uint64_t> BufferCache::writeback(uint64_t max_bytes) {
  std::vector<EbRef> todo;
  {
    std::lock_guard g(mu_);
    // Oldest first: walk the LRU from the back.
    for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
      auto d = dirty_.find(*it);
      if (d != dirty_.end()) todo.push_back(d->second);
    }
  }
  uint64_t written = 0;
  for (auto& eb : todo) {
    if (written >= max_bytes) break;
    if (eb->inhibitors() > 0 || eb->test_flag(ExtentBuffer::kWriteback)) continue;
    if (!eb->try_lock_write()) continue;
    // Fix 2: re-check under the lock; an inhibiting handle takes its inhibitor with the lock held.
    if (eb->stale() || !eb->dirty() || eb->inhibitors() > 0) {
      eb->unlock_write();
      continue;
    }
    UBTRFS_TRY_STATUS(write_one_locked(eb));
    written += eb->len();
  }
  std::lock_guard g(mu_);
  evict_locked();
  return written;
}

void BufferCache::evict_to_budget() {
  std::lock_guard g(mu_);
  evict_locked();
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
  const uint64_t budget = std::max<uint64_t>(budget_.load(std::memory_order_relaxed), kMinCachedBlocks * fs_.nodesize);
  if (bytes_ <= budget) return;
  // Bounded scan from the cold end; buffers that cannot go (dirty, referenced, in flight) are moved
  // to the hot end so the next scan does not trip over them again.
  size_t scan = (bytes_ - budget) / fs_.nodesize * 2 + 32;
  auto it = lru_.end();
  while (bytes_ > budget && scan-- > 0 && !lru_.empty()) {
    it = std::prev(lru_.end());
    auto m = map_by_bytenr_.find(*it);
    assert(m != map_by_bytenr_.end());
    const EbRef& eb = m->second.eb;
    if (eb.use_count() == 1 && !eb->dirty() && !eb->test_flag(ExtentBuffer::kWriteback)) {
      ++counters_.evictions;
      erase_locked(m);
    } else {
      lru_.splice(lru_.begin(), lru_, it);
    }
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

BufferCache::Counters BufferCache::counters() const {
  std::lock_guard g(mu_);
  return counters_;
}

}  // namespace ubtrfs
