// ExtentAllocator implementation (btrfs extent-tree.c `find_free_extent`, `btrfs_reserve_extent`,
// `btrfs_alloc_tree_block`, `btrfs_free_tree_block`); see extent_allocator.h for the rules.
#include "alloc/extent_allocator.h"

#include <algorithm>
#include <string_view>

#include <spdlog/spdlog.h>

namespace ubtrfs::alloc {

namespace {

std::string_view type_name(uint64_t type) {
  if (type & kBlockGroupSystem) return "SYSTEM";
  if (type & kBlockGroupMetadata) return "METADATA";
  return "DATA";
}

}  // namespace

bool ExtentAllocator::group_serves(uint64_t flags, uint64_t type) {
  if (type == kBlockGroupSystem) return flags & kBlockGroupSystem;
  // A SYSTEM group never holds other trees' blocks or data, even if other bits were set.
  if (flags & kBlockGroupSystem) return false;
  return (flags & type) != 0;  // mixed DATA|METADATA groups serve both
}

Result<uint64_t> ExtentAllocator::reserve_in_groups(uint64_t type, uint64_t len, uint64_t min_len, uint64_t align,
                                                    uint64_t boundary, uint64_t hint, uint64_t* got_len,
                                                    bool charged) {
  std::vector<BlockGroup*> candidates;
  for (BlockGroup* bg : groups_.all())
    if (group_serves(bg->flags(), type)) candidates.push_back(bg);
  // The group holding the hint first (allocation near the old block, like find_free_extent's
  // search_start), then the others in address order.
  std::stable_partition(candidates.begin(), candidates.end(),
                        [&](BlockGroup* bg) { return hint != 0 && bg->contains(hint); });
  // Full length anywhere before a shorter piece anywhere (btrfs_reserve_extent halves only after
  // find_free_extent failed everywhere).
  for (uint64_t want = len; want >= min_len && want > 0;) {
    for (BlockGroup* bg : candidates) {
      if (auto at = bg->reserve_extent(want, align, bg->contains(hint) ? hint : 0, boundary, charged ? want : 0)) {
        if (got_len) *got_len = want;
        return *at;
      }
    }
    if (want == min_len) break;
    want = std::max(min_len, (want / 2) / align * align);
  }
  return fail(ENOSPC, "no {} group has {} free bytes", type_name(type), min_len);
}

Result<uint64_t> ExtentAllocator::reserve(uint64_t type, uint64_t len, uint64_t min_len, uint64_t align,
                                          uint64_t boundary, uint64_t hint, uint64_t* got_len, bool charged) {
  // Full length in the existing groups.
  if (auto r = reserve_in_groups(type, len, len, align, boundary, hint, got_len, charged)) return r;
  // Charged data was counted against the data chunks when it was reserved, so it fits in them:
  // take a shorter piece before asking for a chunk that the reservation did not pay for.
  if (charged && type == kBlockGroupData && min_len < len)
    if (auto r = reserve_in_groups(type, len, min_len, align, boundary, hint, got_len, charged)) return r;
  Error chunk_error{ENOSPC, ""};
  {
    // One thread creates the chunk; the others wait and then find room in it (re-check first).
    std::lock_guard lock(chunk_mu_);
    if (auto r = reserve_in_groups(type, len, len, align, boundary, hint, got_len, charged)) return r;
    if (auto st = chunks_.create_chunk(type, len); !st) {
      chunk_error = st.error();
    } else if (auto r = reserve_in_groups(type, len, len, align, boundary, hint, got_len, charged)) {
      return r;
    }
  }
  // Fragmented (or the device is full): a shorter extent, as btrfs_reserve_extent retries.
  if (min_len < len)
    if (auto r = reserve_in_groups(type, len, min_len, align, boundary, hint, got_len, charged)) return r;
  return fail(ENOSPC, "no space for a {}-byte {} extent: device full ({})", len, type_name(type),
              chunk_error.message.empty() ? "chunk created but still no room" : chunk_error.message);
}

void ExtentAllocator::remember_level(uint64_t transid, uint64_t bytenr, int level) {
  std::lock_guard lock(mu_);
  if (levels_transid_ != transid) {
    levels_.clear();
    levels_transid_ = transid;
  }
  levels_[bytenr] = level;
}

std::optional<int> ExtentAllocator::forget_level(uint64_t transid, uint64_t bytenr) {
  std::lock_guard lock(mu_);
  if (levels_transid_ != transid) return std::nullopt;
  auto it = levels_.find(bytenr);
  if (it == levels_.end()) return std::nullopt;
  int level = it->second;
  levels_.erase(it);
  return level;
}

void ExtentAllocator::record_error(Error e) {
  spdlog::error("extent allocator: {}", e.message);
  std::lock_guard lock(mu_);
  if (!deferred_error_) deferred_error_ = std::move(e);
}

Status ExtentAllocator::deferred_status() const {
  std::lock_guard lock(mu_);
  if (deferred_error_) return fail(*deferred_error_);
  return {};
}

Result<uint64_t> ExtentAllocator::alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level, uint64_t hint) {
  return alloc_tree_block_impl(h, root_objectid, level, hint, false);
}

Result<uint64_t> ExtentAllocator::alloc_tree_block_charged(TreeHandle& h, uint64_t root_objectid, int level,
                                                           uint64_t hint) {
  return alloc_tree_block_impl(h, root_objectid, level, hint, true);
}

Status ExtentAllocator::create_chunk(uint64_t type, uint64_t min_bytes) {
  std::lock_guard lock(chunk_mu_);
  return chunks_.create_chunk(type, min_bytes);
}

Result<uint64_t> ExtentAllocator::alloc_tree_block_impl(TreeHandle& h, uint64_t root_objectid, int level,
                                                        uint64_t hint, bool charged) {
  if (level < 0 || level >= kMaxLevel)
    return fail(EINVAL, "tree block for root {} at level {}: level out of range", root_objectid, level);
  const uint64_t type = root_objectid == kChunkTreeObjectid ? kBlockGroupSystem : kBlockGroupMetadata;
  const uint64_t nodesize = fs_.nodesize;
  const uint64_t bytenr =
      UBTRFS_TRY(reserve(type, nodesize, nodesize, nodesize, kStripeLen, hint, nullptr, charged));
  BlockGroup* bg = groups_.find(bytenr);
  // FreeSpace aligns relative to the group start; btrfs (and btrfs check's stripe test) are
  // absolute. Groups start sector- and in practice stripe-aligned, but never hand out a bad block.
  if (bytenr % nodesize != 0 || bytenr / kStripeLen != (bytenr + nodesize - 1) / kStripeLen) {
    if (bg) (void)bg->release_reserved(bytenr, nodesize);
    return fail(EUCLEAN, "tree block {} for root {} is misaligned or crosses a 64 KiB stripe (group {})", bytenr,
                root_objectid, bg ? bg->start() : 0);
  }
  auto queued = refs_.add_tree_ref(bytenr, nodesize, root_objectid, level, +1, true, h.transid);
  if (!queued) {
    if (bg) (void)bg->release_reserved(bytenr, nodesize);
    return fail(queued.error());
  }
  if (*queued) h.delayed_ref_updates++;  // a new head (a cancelled one reused is paid for already)
  remember_level(h.transid, bytenr, level);
  return bytenr;
}

void ExtentAllocator::free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                                      bool written) {
  const uint64_t nodesize = fs_.nodesize;
  const std::optional<int> level = forget_level(h.transid, bytenr);
  // The level is only part of the ref's identity (RefKey); for an older block any value works
  // (extent_tree matches tree refs by root).
  const int ref_level = level.value_or(0);
  BlockGroup* bg = groups_.find(bytenr);
  if (!bg) {
    record_error(Error{EUCLEAN, fmt::format("freeing tree block {} of root {}: no block group holds it", bytenr,
                                            root_objectid)});
    return;
  }
  // The +1 must still be queued, not merely unrun: a runner (the committer, or a flusher running
  // refs beside the handles) may be running it right now (then it becomes `used` and a plain -1
  // deletes it later). The check and the cancelling -1 are one step under the queue's lock.
  if (generation == h.transid) {
    auto cancelled = refs_.cancel_new_tree_alloc(bytenr, nodesize, root_objectid, ref_level, h.transid);
    if (!cancelled) {
      record_error(cancelled.error());
      return;
    }
    if (*cancelled) {
      // Born in this transaction and its +1 ref still queued: the -1 cancelled it, the extent item
      // never materialises. Unwritten: nobody can have read it, reuse at once. Written: the bytes
      // were sent to disk (a log tree or a crash could see them), keep them until the commit. The
      // -1 went in before the bytes are released: once released, another thread may allocate the
      // same block and queue its +1, which must find this head already cancelled. No new head:
      // nothing more to reserve for (the cancelled head costs its runner no tree change).
      Status st = written ? bg->pin_reserved(bytenr, nodesize) : bg->release_reserved(bytenr, nodesize);
      if (!st) record_error(st.error());
      return;
    }
  }
  // An older block, or one of this transaction whose +1 already ran (now `used`): a -1 ref; the
  // run deletes its extent item and the committer pins the bytes (extent_deleted).
  if (auto r = refs_.add_tree_ref(bytenr, nodesize, root_objectid, ref_level, -1, false, h.transid); !r)
    record_error(r.error());
  else if (*r)
    h.delayed_ref_updates++;
}

Result<ExtentAllocator::DataExtent> ExtentAllocator::reserve_data(TreeHandle&, uint64_t len, uint64_t min_len,
                                                                  uint64_t hint, bool charged) {
  const uint64_t ss = fs_.sectorsize;
  if (len == 0 || len % ss != 0 || len > kMaxDataExtent || min_len > len || min_len % ss != 0)
    return fail(EINVAL, "data reservation of {} bytes (at least {}): not a sector multiple up to {}", len, min_len,
                kMaxDataExtent);
  if (min_len == 0) min_len = ss;
  uint64_t got = 0;
  const uint64_t at = UBTRFS_TRY(reserve(kBlockGroupData, len, min_len, ss, 0, hint, &got, charged));
  return DataExtent{at, got};
}

void ExtentAllocator::release_data(uint64_t bytenr, uint64_t len, bool charged) {
  BlockGroup* bg = groups_.find(bytenr);
  // may_use first: the freed bytes must not be granted to a ticket while the reservation that still
  // owns them is not counted.
  if (charged && bg && bg->space_info()) bg->space_info()->force_may_use(len);
  Status st = bg ? bg->release_reserved(bytenr, len)
                 : Status(fail(EUCLEAN, "releasing data extent [{}, +{}): no block group holds it", bytenr, len));
  if (!st) record_error(st.error());
}

Status ExtentAllocator::add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root, uint64_t ino,
                                     uint64_t offset, int delta, bool new_alloc) {
  if (UBTRFS_TRY(refs_.add_data_ref(bytenr, len, root, ino, offset, delta, new_alloc, h.transid)))
    h.delayed_ref_updates++;  // per new head: more references to a queued extent run with it
  return {};
}

Result<uint64_t> ExtentAllocator::alloc_log_block(uint64_t hint,
                                                  const std::function<bool(const BlockGroup&)>& usable) {
  const uint64_t nodesize = fs_.nodesize;
  std::vector<BlockGroup*> candidates;
  for (BlockGroup* bg : groups_.all())
    if (group_serves(bg->flags(), kBlockGroupMetadata) && usable(*bg)) candidates.push_back(bg);
  std::stable_partition(candidates.begin(), candidates.end(),
                        [&](BlockGroup* bg) { return hint != 0 && bg->contains(hint); });
  for (BlockGroup* bg : candidates) {
    auto at = bg->reserve_extent(nodesize, nodesize, bg->contains(hint) ? hint : 0, kStripeLen, 0);
    if (!at) continue;
    // Same guard as alloc_tree_block_impl: never hand out a misaligned block.
    if (*at % nodesize != 0 || *at / kStripeLen != (*at + nodesize - 1) / kStripeLen) {
      (void)bg->release_reserved(*at, nodesize);
      return fail(EUCLEAN, "log block {} is misaligned or crosses a 64 KiB stripe (group {})", *at, bg->start());
    }
    return *at;
  }
  return fail(ENOSPC, "no committed METADATA group has a free {}-byte block for the tree log", nodesize);
}

void ExtentAllocator::free_log_block(uint64_t bytenr, bool pin) {
  const uint64_t nodesize = fs_.nodesize;
  BlockGroup* bg = groups_.find(bytenr);
  Status st = !bg ? Status(fail(EUCLEAN, "freeing log block {}: no block group holds it", bytenr))
                  : (pin ? bg->pin_reserved(bytenr, nodesize) : bg->release_reserved(bytenr, nodesize));
  if (!st) record_error(st.error());
}

uint64_t ExtentAllocator::free_bytes(uint64_t type) const {
  uint64_t n = 0;
  for (BlockGroup* bg : groups_.all())
    if (group_serves(bg->flags(), type)) n += bg->free_bytes();
  return n;
}

}  // namespace ubtrfs::alloc

namespace ubtrfs::alloc {

// ---- HandleAllocator ---------------------------------------------------------------------------------

BlockRsv* HandleAllocator::pick_rsv(uint64_t root_objectid) {
  switch (root_objectid) {
    case kChunkTreeObjectid:
      return &spaces_.chunk_rsv();
    case kRootTreeObjectid:
    case kDevTreeObjectid:
    case kQuotaTreeObjectid:
      return &spaces_.global_rsv();
    case kExtentTreeObjectid:
    case kFreeSpaceTreeObjectid:
    case kBlockGroupTreeObjectid:
      return &spaces_.delayed_refs_rsv();
    case kCsumTreeObjectid:
      return block_rsv ? block_rsv : &spaces_.delayed_refs_rsv();
    default:
      return block_rsv;
  }
}

Result<uint64_t> HandleAllocator::alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level,
                                                   uint64_t hint) {
  BlockRsv* rsv = pick_rsv(root_objectid);
  uint64_t* share = rsv && rsv == block_rsv ? &handle_share : nullptr;
  auto from = spaces_.use_block_rsv(rsv, nodesize_, share);
  if (!from && from.error().err == ENOSPC && !(rsv && rsv->failfast())) {
    // Nothing left inside the existing chunks: make the overcommit real with a new chunk.
    const uint64_t type = root_objectid == kChunkTreeObjectid ? kBlockGroupSystem : kBlockGroupMetadata;
    if (extents_.create_chunk(type, nodesize_)) from = spaces_.use_block_rsv(rsv, nodesize_, share);
  }
  if (!from) return fail(from.error().err, "root {} level {}: {}", root_objectid, level, from.error().message);
  auto r = extents_.alloc_tree_block_charged(h, root_objectid, level, hint);
  if (!r) {
    spaces_.unuse_block_rsv(*from, nodesize_);
    return r;
  }
  blocks_allocated++;
  account_ref_updates(h);
  return r;
}

void HandleAllocator::free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                                      bool written) {
  extents_.free_tree_block(h, root_objectid, bytenr, generation, written);
  account_ref_updates(h);
}

void HandleAllocator::account_ref_updates(TreeHandle& h) {
  spaces_.update_delayed_refs_rsv(delayed_rsv, h.delayed_ref_updates);
  h.delayed_ref_updates = 0;
}

}  // namespace ubtrfs::alloc
