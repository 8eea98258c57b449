// Delalloc sectors of one inode. See delalloc.h.
#include "fs/delalloc.h"

#include <algorithm>
#include <cstring>

namespace ubtrfs::fs {

SectorPool::SectorPool(uint32_t sectorsize, uint64_t max_free_bytes)
    : sectorsize_(sectorsize), max_free_(static_cast<size_t>(max_free_bytes / sectorsize)) {}

SectorPool::~SectorPool() {
  for (uint8_t* p : free_) delete[] p;
}

uint8_t* SectorPool::get() {
  {
    std::lock_guard g(mu_);
    if (!free_.empty()) {
      uint8_t* p = free_.back();
      free_.pop_back();
      return p;
    }
    allocated_++;
  }
  return new uint8_t[sectorsize_];
}

void SectorPool::put(uint8_t* sector) {
  {
    std::lock_guard g(mu_);
    if (free_.size() < max_free_) {
      free_.push_back(sector);
      return;
    }
    allocated_--;
  }
  delete[] sector;
}

uint64_t SectorPool::free_bytes() const {
  std::lock_guard g(mu_);
  return static_cast<uint64_t>(free_.size()) * sectorsize_;
}

uint64_t SectorPool::allocated_bytes() const {
  std::lock_guard g(mu_);
  return static_cast<uint64_t>(allocated_) * sectorsize_;
}

InodeDelalloc::Page InodeDelalloc::new_page() const {
  Page page(pool_ ? pool_->get() : new uint8_t[sectorsize_], SectorDeleter{pool_});
  std::memset(page.get(), 0, sectorsize_);
  return page;
}

InodeDelalloc::PageMap::iterator InodeDelalloc::insert_page(uint64_t s, Page page) {
  const bool left = s >= sectorsize_ && pages_.count(s - sectorsize_);
  const bool right = pages_.count(s + sectorsize_);
  // A lone sector is a new run; one joining a neighbour extends it; one bridging two merges them.
  if (!left && !right) runs_++;
  else if (left && right) runs_--;
  return pages_.emplace(s, std::move(page)).first;
}

InodeDelalloc::PageMap::iterator InodeDelalloc::erase_page(PageMap::iterator it) {
  const uint64_t s = it->first;
  const bool left = s >= sectorsize_ && pages_.count(s - sectorsize_);
  const bool right = pages_.count(s + sectorsize_);
  if (!left && !right) runs_--;
  else if (left && right) runs_++;
  return pages_.erase(it);
}

uint64_t InodeDelalloc::absent_bytes(uint64_t off, uint64_t len) const {
  if (len == 0) return 0;
  uint64_t n = 0;
  for (uint64_t s = round_down(off); s < off + len; s += sectorsize_)
    if (!pages_.count(s)) n += sectorsize_;
  return n;
}

Status InodeDelalloc::load_sector(uint64_t off, const FillFn& fill) {
  const uint64_t s = round_down(off);
  if (pages_.count(s)) return {};
  Page page = new_page();
  UBTRFS_TRY_STATUS(fill(s, {page.get(), sectorsize_}));
  insert_page(s, std::move(page));
  return {};
}

Status InodeDelalloc::write(uint64_t off, std::span<const uint8_t> data, const FillFn& fill) {
  const uint64_t end = off + data.size();
  for (uint64_t s = round_down(off); s < end; s += sectorsize_) {
    const uint64_t from = std::max(s, off), to = std::min<uint64_t>(s + sectorsize_, end);
    auto it = pages_.find(s);
    if (it == pages_.end()) {
      Page page = new_page();
      if (to - from < sectorsize_) UBTRFS_TRY_STATUS(fill(s, {page.get(), sectorsize_}));
      it = insert_page(s, std::move(page));
    }
    std::memcpy(it->second.get() + (from - s), data.data() + (from - off), to - from);
  }
  return {};
}

void InodeDelalloc::overlay(uint64_t off, std::span<uint8_t> out) const {
  const uint64_t end = off + out.size();
  for (auto it = pages_.lower_bound(round_down(off)); it != pages_.end() && it->first < end; ++it) {
    const uint64_t from = std::max(it->first, off), to = std::min<uint64_t>(it->first + sectorsize_, end);
    std::memcpy(out.data() + (from - off), it->second.get() + (from - it->first), to - from);
  }
}

void InodeDelalloc::truncate(uint64_t size) {
  for (auto it = pages_.lower_bound(round_up(size)); it != pages_.end();) it = erase_page(it);
  if (size % sectorsize_) {
    auto it = pages_.find(round_down(size));
    if (it != pages_.end()) std::memset(it->second.get() + size % sectorsize_, 0, sectorsize_ - size % sectorsize_);
  }
}

void InodeDelalloc::zero_range(uint64_t start, uint64_t end) {
  if (start >= end) return;
  for (auto it = pages_.lower_bound(round_down(start)); it != pages_.end() && it->first < end;) {
    const uint64_t from = std::max(it->first, start), to = std::min<uint64_t>(it->first + sectorsize_, end);
    if (to - from == sectorsize_) {
      it = erase_page(it);
      continue;
    }
    std::memset(it->second.get() + (from - it->first), 0, to - from);
    ++it;
  }
}

std::vector<InodeDelalloc::Run> InodeDelalloc::runs() const {
  std::vector<Run> out;
  for (const auto& [s, page] : pages_) {
    if (!out.empty() && out.back().start + out.back().len == s)
      out.back().len += sectorsize_;
    else
      out.push_back(Run{s, sectorsize_});
  }
  return out;
}

std::vector<uint8_t> InodeDelalloc::copy(uint64_t start, uint64_t len) const {
  std::vector<uint8_t> out(len, 0);
  overlay(start, out);
  return out;
}

void InodeDelalloc::drop(uint64_t start, uint64_t len) {
  for (auto it = pages_.lower_bound(start); it != pages_.end() && it->first < start + len;) it = erase_page(it);
}

std::optional<uint64_t> InodeDelalloc::next_present(uint64_t off) const {
  auto it = pages_.lower_bound(round_down(off));
  if (it == pages_.end()) return std::nullopt;
  return it->first;
}

}  // namespace ubtrfs::fs
