// The reclaim thread of SpaceInfos (btrfs async_reclaim_work, async_data_reclaim_work,
// preempt_reclaim_work; KERNEL.md §4.3-§4.7): it serves the normal tickets of a space_info by
// walking the flush states in order, restarting from the first state whenever a ticket was served
// (tickets_id moved), and fails tickets only after the kernel's number of complete passes without
// progress. It also flushes preemptively so that a steady writer does not reach the ticket path.
//
// Metadata (do_async_reclaim_metadata_space): states 1..11 in order; FLUSH_DELALLOC_FULL and
// ALLOC_CHUNK_FORCE are skipped until a whole pass failed (commit_cycles > 0), so a commit that
// returns pinned space is tried before emptying delalloc or forcing a chunk; after the commit state
// a pass ends; the third failed pass fails tickets (stealing from the global reserve where allowed).
// Data (do_async_reclaim_data_space): force chunk allocation until the space_info is full (or the
// chunk creator refuses), then FLUSH_DELALLOC_FULL, RUN_DELAYED_IPUTS, COMMIT_TRANS,
// ALLOC_CHUNK_FORCE, restarting on progress; exhausted and full -> fail tickets. Beyond the kernel:
// when not full but no chunk can be made (its space backs metadata overcommit), tickets fail after
// three passes too, instead of looping forever.
// Mixed block groups (one DATA|METADATA space_info) are served by the metadata loop.
// One thread serves every space_info in turn; each loop ends when its space_info has no ticket left
// (the check and the clearing of `flush_running` happen under the space_info's lock, so a ticket
// queued at that moment either is seen or re-kicks the thread).
#include <spdlog/spdlog.h>

#include "alloc/space_infos.h"

namespace ubtrfs::alloc {

namespace {
FlushState next_state(FlushState s) { return static_cast<FlushState>(static_cast<int>(s) + 1); }
}  // namespace

void SpaceInfos::start_reclaim(SpaceFlusher* flusher) {
  if (reclaim_thread_.joinable()) return;
  flusher_ = flusher;
  {
    std::lock_guard lk(reclaim_mu_);
    reclaim_stop_ = false;
  }
  reclaim_thread_ = std::thread([this] { reclaim_thread_main(); });
}

void SpaceInfos::stop_reclaim() {
  {
    std::lock_guard lk(reclaim_mu_);
    reclaim_stop_ = true;
  }
  reclaim_cv_.notify_all();
  if (reclaim_thread_.joinable()) reclaim_thread_.join();
  // Nobody serves tickets any more: fail the queued ones (ENOSPC, never a hang).
  for (SpaceInfo* si : {data_, meta_, system_}) {
    si->fail_all_tickets(ENOSPC, "filesystem is being unmounted");
    si->set_flush_running(false);
  }
  flusher_ = nullptr;
}

void SpaceInfos::kick_reclaim(SpaceInfo& si) {
  bool has_thread;
  {
    std::lock_guard lk(reclaim_mu_);
    has_thread = reclaim_thread_.joinable() && !reclaim_stop_;
    if (has_thread) {
      if (&si == system_) want_system_ = true;
      else if (&si == data_) want_data_ = true;
      else want_meta_ = true;
    }
  }
  if (has_thread) {
    reclaim_cv_.notify_all();
    return;
  }
  // No reclaim thread (read-only mount, unit tests, shutdown): nothing can make progress.
  while (si.has_tickets() && si.fail_tickets()) {
  }
  si.set_flush_running(false);
}

void SpaceInfos::kick_preemptive() {
  {
    std::lock_guard lk(reclaim_mu_);
    if (!reclaim_thread_.joinable() || reclaim_stop_) return;
    want_preempt_ = true;
  }
  reclaim_cv_.notify_all();
}

void SpaceInfos::reclaim_thread_main() {
  std::unique_lock lk(reclaim_mu_);
  for (;;) {
    reclaim_cv_.wait(lk, [&] { return reclaim_stop_ || want_meta_ || want_data_ || want_system_ || want_preempt_; });
    if (reclaim_stop_) return;
    const bool meta = want_meta_, data = want_data_, sys = want_system_, preempt = want_preempt_;
    want_meta_ = want_data_ = want_system_ = want_preempt_ = false;
    lk.unlock();
    // Mixed block groups: one DATA|METADATA space_info, kicked as data_ (it is both). It is served by
    // the metadata loop, whose states include every data state (delalloc, delayed iputs, commit,
    // chunk) and the delayed items and refs its tree-block reservations need as well.
    if (meta || (data && data_ == meta_)) async_reclaim_metadata(*meta_);
    if (sys) async_reclaim_metadata(*system_);
    if (data && data_ != meta_) async_reclaim_data(*data_);
    if (preempt && !meta) preemptive_reclaim();
    lk.lock();
  }
}

Result<uint64_t> SpaceInfos::run_flush_state(SpaceInfo& si, FlushState state, uint64_t to_reclaim) {
  const uint64_t used_before = si.counters().used_all();
  const uint64_t granted_before = si.granted_bytes();
  Result<uint64_t> r = uint64_t{0};
  if (flusher_) r = flusher_->flush(si, state, to_reclaim);
  const uint64_t used_after = si.counters().used_all();
  const uint64_t granted = si.granted_bytes() - granted_before;
  // Space the state gave back: usage dropped, plus what went to tickets meanwhile.
  const int64_t reclaimed = static_cast<int64_t>(used_before) - static_cast<int64_t>(used_after) +
                            static_cast<int64_t>(granted);
  si.count_flush(state, reclaimed > 0 ? static_cast<uint64_t>(reclaimed) : 0);
  // EROFS: the transaction was aborted, which was logged once as an error where it happened; every
  // waiting reservation now fails with it, and a warning per flush state would flood the log.
  if (!r && r.error().err != ENOSPC)
    spdlog::log(r.error().err == EROFS ? spdlog::level::debug : spdlog::level::warn,
                "space reclaim: {} for {} space failed: {}", flush_state_name(state), si.name(), r.error().message);
  return r;
}

void SpaceInfos::async_reclaim_metadata(SpaceInfo& si) {
  uint64_t to_reclaim = si.reclaim_target();
  if (si.finish_flush_if_idle()) return;
  FlushState state = FlushState::kDelayedItemsNr;
  int commit_cycles = 0;
  uint64_t last_id = si.tickets_id();
  for (;;) {
    {
      std::lock_guard lk(reclaim_mu_);
      if (reclaim_stop_) return;  // stop_reclaim fails what is left
    }
    auto r = run_flush_state(si, state, to_reclaim);
    if (!r && r.error().err != ENOSPC) {
      // The filesystem cannot make progress any more (aborted): fail everything with its error.
      si.fail_all_tickets(r.error().err, r.error().message);
    }
    if (si.finish_flush_if_idle()) return;
    to_reclaim = si.reclaim_target();
    const uint64_t id = si.tickets_id();
    if (id == last_id) {
      state = next_state(state);
    } else {
      last_id = id;
      state = FlushState::kDelayedItemsNr;
      if (commit_cycles) commit_cycles--;
    }
    // Do not empty delalloc or force a chunk before a commit had its chance.
    if (state == FlushState::kDelallocFull && !commit_cycles) state = next_state(state);
    if (state == FlushState::kAllocChunkForce && !commit_cycles) state = next_state(state);
    if (static_cast<int>(state) > static_cast<int>(FlushState::kCommitTrans)) {
      commit_cycles++;
      if (commit_cycles > 2) {
        if (si.fail_tickets()) {
          commit_cycles--;
          last_id = si.tickets_id();
        } else if (si.finish_flush_if_idle()) {
          return;
        } else {
          commit_cycles = 0;  // new tickets arrived meanwhile: serve them afresh
          last_id = si.tickets_id();
        }
      }
      state = FlushState::kDelayedItemsNr;
    }
  }
}

void SpaceInfos::async_reclaim_data(SpaceInfo& si) {
  if (si.finish_flush_if_idle()) return;
  uint64_t last_id = si.tickets_id();
  // Chunks first: a data reservation that does not fit mostly means the data chunks are full.
  while (!si.full()) {
    {
      std::lock_guard lk(reclaim_mu_);
      if (reclaim_stop_) return;
    }
    auto r = run_flush_state(si, FlushState::kAllocChunkForce, si.reclaim_target());
    if (si.finish_flush_if_idle()) return;
    if (!r || *r == 0) break;  // full, or refused: the space backs metadata overcommit
    last_id = si.tickets_id();
  }
  static constexpr FlushState kDataStates[] = {FlushState::kDelallocFull, FlushState::kRunDelayedIputs,
                                               FlushState::kCommitTrans, FlushState::kAllocChunkForce};
  size_t idx = 0;
  int passes = 0;
  for (;;) {
    {
      std::lock_guard lk(reclaim_mu_);
      if (reclaim_stop_) return;
    }
    auto r = run_flush_state(si, kDataStates[idx], si.reclaim_target());
    if (!r && r.error().err != ENOSPC) si.fail_all_tickets(r.error().err, r.error().message);
    if (si.finish_flush_if_idle()) return;
    const uint64_t id = si.tickets_id();
    if (id == last_id) {
      idx++;
    } else {
      last_id = id;
      idx = 0;
      passes = 0;
    }
    if (idx >= std::size(kDataStates)) {
      idx = 0;
      passes++;
      if (si.full() || passes >= 3) {
        if (si.fail_tickets()) {
          last_id = si.tickets_id();
          passes = 0;
        } else if (si.finish_flush_if_idle()) {
          return;
        } else {
          passes = 0;
          last_id = si.tickets_id();
        }
      }
    }
  }
}

void SpaceInfos::preemptive_reclaim() {
  // Data first: the next chunk ahead of need (ALLOC_CHUNK_FORCE, one at a time; with mixed block
  // groups a DATA|METADATA chunk).
  if (data_->needs_chunk_soon()) {
    (void)run_flush_state(*data_, FlushState::kAllocChunkForce, 0);
    data_->count_preemptive();
  }
  SpaceInfo& si = *meta_;
  int loops = 0;
  while (si.need_preemptive_reclaim()) {
    {
      std::lock_guard lk(reclaim_mu_);
      if (reclaim_stop_) return;
    }
    // Flush the largest pool (btrfs_preempt_reclaim_metadata_space): delalloc, pinned (commit),
    // delayed items, delayed refs; a quarter of it at a time.
    const SpaceCounters c = si.counters();
    const uint64_t global = global_rsv_.size();
    const uint64_t block = delayed_block_rsv_.reserved(), refs = delayed_refs_rsv_.reserved();
    const uint64_t fixed = global + block + refs + trans_rsv_.reserved();
    const uint64_t delalloc = c.may_use > fixed ? c.may_use - fixed : 0;
    FlushState state;
    uint64_t to_reclaim;
    if (delalloc > block && delalloc > refs && delalloc > c.pinned) {
      state = FlushState::kDelalloc;
      to_reclaim = delalloc;
    } else if (c.pinned > block + refs) {
      state = FlushState::kCommitTrans;
      to_reclaim = c.pinned;
    } else if (block > refs) {
      state = FlushState::kDelayedItemsNr;
      to_reclaim = block;
    } else {
      state = FlushState::kDelayedRefsNr;
      to_reclaim = refs;
    }
    to_reclaim >>= 2;
    if (!to_reclaim) to_reclaim = insert_size(1);
    auto r = run_flush_state(si, state, to_reclaim);
    si.count_preemptive();
    ++loops;
    // Nothing came back (or the state failed): flushing more now would only spin.
    if (!r || *r == 0) break;
    if (loops > 64) break;  // a safety bound: the reclaim thread has other work
  }
  if (loops == 1 && !si.has_tickets()) si.relax_clamp();
}

}  // namespace ubtrfs::alloc
