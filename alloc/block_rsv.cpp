// BlockRsv; see block_rsv.h for the rules and lock order.
#include "alloc/block_rsv.h"

#include <algorithm>

namespace ubtrfs::alloc {

const char* rsv_type_name(RsvType t) {
  switch (t) {
    case RsvType::kGlobal: return "global";
    case RsvType::kDelalloc: return "delalloc";
    case RsvType::kTrans: return "trans";
    case RsvType::kChunk: return "chunk";
    case RsvType::kDelayedOps: return "delayed_ops";
    case RsvType::kDelayedRefs: return "delayed_refs";
    case RsvType::kEmpty: return "empty";
    case RsvType::kTemp: return "temp";
  }
  return "?";
}

BlockRsv::~BlockRsv() = default;

uint64_t BlockRsv::size() const {
  std::lock_guard lk(mu_);
  return size_;
}

uint64_t BlockRsv::reserved() const {
  std::lock_guard lk(mu_);
  return reserved_;
}

bool BlockRsv::full() const {
  std::lock_guard lk(mu_);
  return reserved_ >= size_;
}

Status BlockRsv::add(uint64_t bytes, FlushMode mode) {
  if (bytes == 0) return {};
  UBTRFS_TRY_STATUS(space_info_->reserve_bytes(bytes, mode));
  std::lock_guard lk(mu_);
  size_ += bytes;
  reserved_ += bytes;
  return {};
}

Status BlockRsv::refill(uint64_t min_reserved, FlushMode mode) {
  uint64_t need;
  {
    std::lock_guard lk(mu_);
    if (reserved_ >= min_reserved) return {};
    need = min_reserved - reserved_;
  }
  UBTRFS_TRY_STATUS(space_info_->reserve_bytes(need, mode));
  std::lock_guard lk(mu_);
  reserved_ += need;
  size_ = std::max(size_, min_reserved);
  return {};
}

Status BlockRsv::use_bytes(uint64_t bytes) {
  std::lock_guard lk(mu_);
  if (reserved_ < bytes)
    return fail(ENOSPC, "{} block reserve holds {} bytes, {} needed", rsv_type_name(type_), reserved_, bytes);
  reserved_ -= bytes;
  return {};
}

void BlockRsv::add_bytes(uint64_t bytes, bool update_size) {
  std::lock_guard lk(mu_);
  reserved_ += bytes;
  if (update_size) size_ += bytes;
}

void BlockRsv::grow_size(uint64_t bytes) {
  std::lock_guard lk(mu_);
  size_ += bytes;
}

uint64_t BlockRsv::release(uint64_t bytes, BlockRsv* target) {
  uint64_t excess;
  {
    std::lock_guard lk(mu_);
    size_ -= std::min(bytes, size_);
    excess = reserved_ > size_ ? reserved_ - size_ : 0;
    reserved_ -= excess;
  }
  if (excess && target && target != this && target->space_info_ == space_info_) excess -= target->absorb(excess);
  if (excess) space_info_->release_bytes(excess);
  return excess;
}

uint64_t BlockRsv::absorb(uint64_t bytes) {
  std::lock_guard lk(mu_);
  const uint64_t room = size_ > reserved_ ? size_ - reserved_ : 0;
  const uint64_t take = std::min(room, bytes);
  reserved_ += take;
  return take;
}

uint64_t BlockRsv::take_reserved(uint64_t bytes, uint64_t keep_at_least) {
  std::lock_guard lk(mu_);
  if (reserved_ < bytes || reserved_ - bytes < keep_at_least) return 0;
  reserved_ -= bytes;
  return bytes;
}

void BlockRsv::set_size_and_fill(uint64_t size) {
  uint64_t need = 0;
  {
    std::lock_guard lk(mu_);
    size_ = size;
    if (reserved_ < size_) need = size_ - reserved_;
  }
  // may_use first, then reserved: reserved never exceeds what may_use counts for it.
  if (need) {
    space_info_->force_may_use(need);
    std::lock_guard lk(mu_);
    reserved_ += need;
  }
  uint64_t excess = 0;
  {
    std::lock_guard lk(mu_);
    if (reserved_ > size_) {
      excess = reserved_ - size_;
      reserved_ = size_;
    }
  }
  if (excess) space_info_->release_bytes(excess);
}

Status BlockRsv::migrate(BlockRsv& src, BlockRsv& dst, uint64_t bytes, bool update_size) {
  UBTRFS_TRY_STATUS(src.use_bytes(bytes));
  dst.add_bytes(bytes, update_size);
  return {};
}

}  // namespace ubtrfs::alloc
