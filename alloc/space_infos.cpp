// SpaceInfos: the space_infos, the filesystem's block reserves, overcommit inputs, the global
// reserve and the tree-block fallback chain; see space_infos.h. The reclaim thread is in
// space_reclaim.cpp.
#include "alloc/space_infos.h"

#include <algorithm>

#include "tree/format.h"

namespace ubtrfs::alloc {

namespace {
constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kGlobalRsvMax = 512 * kMiB;

int type_index(uint64_t type) {
  if (type & kBlockGroupSystem) return 2;
  if (type & kBlockGroupMetadata) return 1;
  return 0;
}

std::vector<std::unique_ptr<SpaceInfo>> make_space_infos(SpaceInfos& owner, bool mixed) {
  std::vector<std::unique_ptr<SpaceInfo>> v;
  v.push_back(std::make_unique<SpaceInfo>(owner, mixed ? (kBlockGroupData | kBlockGroupMetadata) : kBlockGroupData));
  v.push_back(mixed ? nullptr : std::make_unique<SpaceInfo>(owner, kBlockGroupMetadata));
  v.push_back(std::make_unique<SpaceInfo>(owner, kBlockGroupSystem));
  return v;
}
}  // namespace

const char* enospc_reason_name(EnospcReason r) {
  switch (r) {
    case EnospcReason::kMetadataTicket: return "metadata_ticket";
    case EnospcReason::kDataTicket: return "data_ticket";
    case EnospcReason::kNoFlush: return "no_flush";
    case EnospcReason::kTreeBlock: return "tree_block";
    case EnospcReason::kChunk: return "chunk";
    case EnospcReason::kDataChunkBacking: return "data_chunk_backing";
  }
  return "?";
}

SpaceInfos::SpaceInfos(uint32_t nodesize, bool free_space_tree, bool mixed_groups)
    : nodesize_(nodesize),
      fst_(free_space_tree),
      owned_(make_space_infos(*this, mixed_groups)),
      data_(owned_[0].get()),
      meta_(mixed_groups ? owned_[0].get() : owned_[1].get()),
      system_(owned_[2].get()),
      global_rsv_(RsvType::kGlobal, meta_),
      trans_rsv_(RsvType::kTrans, meta_),
      delayed_refs_rsv_(RsvType::kDelayedRefs, meta_),
      delayed_block_rsv_(RsvType::kDelayedOps, meta_),
      chunk_rsv_(RsvType::kChunk, system_),
      empty_rsv_(RsvType::kEmpty, meta_) {
  for (auto& f : factors_) f.store(1);
}

SpaceInfos::~SpaceInfos() { stop_reclaim(); }

SpaceInfo& SpaceInfos::for_flags(uint64_t bg_flags) {
  if (bg_flags & kBlockGroupSystem) return *system_;
  if (bg_flags & kBlockGroupData) return *data_;
  return *meta_;
}

void SpaceInfos::set_factor(uint64_t type, int factor) { factors_[type_index(type)].store(std::max(1, factor)); }

int SpaceInfos::factor(uint64_t type) const { return factors_[type_index(type)].load(); }

uint64_t SpaceInfos::effective_data_chunk_size() const {
  // calc_effective_data_chunk_size: min(the data chunk size, 10 % of the writable bytes, 1 GiB).
  uint64_t s = data_chunk_size_.load(std::memory_order_relaxed);
  if (s == 0) s = 10 * kGiB;
  s = std::min(s, device_bytes_.load(std::memory_order_relaxed) / 10);
  return std::min(s, kGiB);
}

uint64_t SpaceInfos::overcommit_avail(const SpaceInfo& si, FlushMode mode) const {
  if (si.is_data()) return 0;
  uint64_t avail = free_chunk_space() / static_cast<uint64_t>(factor(si.flags()));
  if (avail == 0) return 0;
  // Hold back one data chunk: data reservations take whole chunks at once, so metadata must not
  // promise the space the next data chunk is about to take.
  const uint64_t data_chunk = effective_data_chunk_size();
  if (avail <= data_chunk) return 0;
  avail -= data_chunk;
  // If we can flush everything, do not overcommit much.
  return mode == FlushMode::kFlushAll ? avail >> 3 : avail >> 1;
}

uint64_t SpaceInfos::metadata_backing_needed() {
  uint64_t need = 0;
  for (SpaceInfo* si : {meta_, system_}) {
    if (si->is_data()) continue;  // mixed: no overcommit, nothing to back
    const SpaceCounters c = si->counters();
    if (c.used_all() > c.total) need += (c.used_all() - c.total) * static_cast<uint64_t>(factor(si->flags()));
  }
  return need;
}

void SpaceInfos::update_global_rsv(uint64_t tree_bytes, unsigned nroots) {
  const uint64_t min_items = 1 + nroots + kUnlinkMetadataUnits;
  uint64_t size = std::max(tree_bytes, insert_size(min_items) + delayed_ref_bytes(kUnlinkMetadataUnits));
  size = std::min(size, kGlobalRsvMax);
  global_rsv_.set_size_and_fill(size);
}

Result<BlockRsv*> SpaceInfos::use_block_rsv(BlockRsv* rsv, uint64_t bytes, uint64_t* handle_share) {
  if (!rsv) rsv = &empty_rsv_;
  auto count = [&](uint64_t ReservationStats::*field, bool overrun = false) {
    std::lock_guard lk(stats_mu_);
    rstats_.*field += 1;
    if (overrun) rstats_.overruns_by_rsv[static_cast<int>(rsv->type())] += 1;
  };
  if (rsv->size() != 0) {
    if (rsv->use_bytes(bytes)) {
      count(&ReservationStats::from_rsv);
      if (handle_share) {
        if (*handle_share >= bytes) {
          *handle_share -= bytes;
        } else {
          *handle_share = 0;
          count(&ReservationStats::beyond_handle);
        }
      }
      return rsv;
    }
    if (rsv->failfast()) {
      count(&ReservationStats::failfast_enospc);
      return fail(ENOSPC, "{} block reserve exhausted (failfast)", rsv_type_name(rsv->type()));
    }
  }
  SpaceInfo* si = rsv->space_info();
  if (si->reserve_bytes(bytes, FlushMode::kNoFlush)) {
    count(&ReservationStats::no_flush, true);
    return &empty_rsv_;
  }
  if (rsv != &global_rsv_ && si == global_rsv_.space_info() && global_rsv_.use_bytes(bytes)) {
    count(&ReservationStats::global, true);
    return &global_rsv_;
  }
  if (si->reserve_bytes(bytes, FlushMode::kFlushEmergency)) {
    count(&ReservationStats::emergency, true);
    return &empty_rsv_;
  }
  count(&ReservationStats::enospc);
  count_enospc(EnospcReason::kTreeBlock);
  const SpaceCounters c = si->counters();
  return fail(ENOSPC, "no {} space for a tree block: total {} used {} reserved {} pinned {} may_use {}", si->name(),
              c.total, c.used, c.reserved, c.pinned, c.may_use);
}

void SpaceInfos::update_delayed_refs_rsv(BlockRsv* handle_rsv, uint64_t updates) {
  if (updates == 0) return;
  const uint64_t need = delayed_ref_bytes(updates);
  const uint64_t take = handle_rsv ? std::min(need, handle_rsv->reserved()) : 0;
  if (take && handle_rsv->use_bytes(take)) delayed_refs_rsv_.add_bytes(take, false);
  delayed_refs_rsv_.grow_size(need);
}

void SpaceInfos::unuse_block_rsv(BlockRsv* from, uint64_t bytes) {
  if (!from) from = &empty_rsv_;
  from->add_bytes(bytes, false);
  release_block_rsv(*from, 0);
}

uint64_t SpaceInfos::release_block_rsv(BlockRsv& rsv, uint64_t bytes) {
  // btrfs_block_rsv_release's routing: a delayed-ops reserve's excess refills the global reserve;
  // any other reserve's (but the global and delayed-refs ones) tops up the delayed-refs reserve
  // while it is short; the rest goes back to the space_info (which refills the global reserve).
  BlockRsv* target = nullptr;
  if (&rsv == &global_rsv_ || rsv.space_info() != global_rsv_.space_info())
    target = nullptr;
  else if (rsv.type() == RsvType::kDelayedOps)
    target = &global_rsv_;
  else if (&rsv != &delayed_refs_rsv_ && !delayed_refs_rsv_.full())
    target = &delayed_refs_rsv_;
  return rsv.release(bytes, target);
}

ReservationStats SpaceInfos::reservation_stats() const {
  std::lock_guard lk(stats_mu_);
  return rstats_;
}

void SpaceInfos::count_enospc(EnospcReason r) {
  std::lock_guard lk(stats_mu_);
  enospc_[static_cast<int>(r)]++;
}

std::array<uint64_t, kEnospcReasonCount> SpaceInfos::enospc_counts() const {
  std::lock_guard lk(stats_mu_);
  return enospc_;
}

}  // namespace ubtrfs::alloc
