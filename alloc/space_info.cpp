// SpaceInfo: counters, reservations, tickets; see space_info.h for the rules and the lock order.
#include "alloc/space_info.h"

#include <algorithm>
#include <cassert>

#include <fmt/format.h>

#include "alloc/block_rsv.h"
#include "alloc/space_infos.h"
#include "tree/format.h"

namespace ubtrfs::alloc {

namespace {
thread_local WaitInterrupt* tls_interrupt = nullptr;

// Subtracts without wrapping; an underflow is an accounting bug, kept visible in debug builds.
void sub(uint64_t& v, uint64_t d) {
  assert(v >= d);
  v = v >= d ? v - d : 0;
}
}  // namespace

void set_current_wait_interrupt(WaitInterrupt* w) { tls_interrupt = w; }
WaitInterrupt* current_wait_interrupt() { return tls_interrupt; }

const char* flush_mode_name(FlushMode m) {
  switch (m) {
    case FlushMode::kNoFlush: return "NO_FLUSH";
    case FlushMode::kFlushLimit: return "FLUSH_LIMIT";
    case FlushMode::kFlushEvict: return "FLUSH_EVICT";
    case FlushMode::kFlushData: return "FLUSH_DATA";
    case FlushMode::kFlushAll: return "FLUSH_ALL";
    case FlushMode::kFlushAllSteal: return "FLUSH_ALL_STEAL";
    case FlushMode::kFlushEmergency: return "FLUSH_EMERGENCY";
  }
  return "?";
}

const char* flush_state_name(FlushState s) {
  switch (s) {
    case FlushState::kNone: return "none";
    case FlushState::kDelayedItemsNr: return "flush_delayed_items_nr";
    case FlushState::kDelayedItems: return "flush_delayed_items";
    case FlushState::kDelayedRefsNr: return "flush_delayed_refs_nr";
    case FlushState::kDelayedRefs: return "flush_delayed_refs";
    case FlushState::kDelalloc: return "flush_delalloc";
    case FlushState::kDelallocWait: return "flush_delalloc_wait";
    case FlushState::kDelallocFull: return "flush_delalloc_full";
    case FlushState::kAllocChunk: return "alloc_chunk";
    case FlushState::kAllocChunkForce: return "alloc_chunk_force";
    case FlushState::kRunDelayedIputs: return "run_delayed_iputs";
    case FlushState::kCommitTrans: return "commit_trans";
  }
  return "?";
}

SpaceInfo::SpaceInfo(SpaceInfos& owner, uint64_t flags) : owner_(owner), flags_(flags) {}

bool SpaceInfo::is_data() const { return flags_ & kBlockGroupData; }

const char* SpaceInfo::name() const {
  if ((flags_ & kBlockGroupData) && (flags_ & kBlockGroupMetadata)) return "DATA+METADATA";
  if (flags_ & kBlockGroupData) return "DATA";
  if (flags_ & kBlockGroupSystem) return "SYSTEM";
  return "METADATA";
}

// ---- accounting ------------------------------------------------------------------------------------

void SpaceInfo::add_block_group(uint64_t length, uint64_t used, uint64_t super_bytes, int factor) {
  std::lock_guard lk(mu_);
  factor_ = std::max(1, factor);
  total_ += length;
  used_ += used;
  readonly_ += super_bytes;
  disk_total_ += length * factor_;
  disk_used_ += used * factor_;
}

void SpaceInfo::grant_tickets() {
  std::lock_guard lk(mu_);
  try_granting_tickets_locked();
}

void SpaceInfo::extent_reserved(uint64_t len, uint64_t from_may_use) {
  std::lock_guard lk(mu_);
  reserved_ += len;
  sub(may_use_, from_may_use);
}

void SpaceInfo::reserved_released(uint64_t len) {
  std::lock_guard lk(mu_);
  sub(reserved_, len);
  return_free_space_locked(len);
}

void SpaceInfo::reserved_to_used(uint64_t len) {
  std::lock_guard lk(mu_);
  sub(reserved_, len);
  used_ += len;
  disk_used_ += len * factor_;
}

void SpaceInfo::reserved_to_pinned(uint64_t len) {
  std::lock_guard lk(mu_);
  sub(reserved_, len);
  pinned_ += len;
}

void SpaceInfo::used_to_pinned(uint64_t len) {
  std::lock_guard lk(mu_);
  sub(used_, len);
  sub(disk_used_, len * factor_);
  pinned_ += len;
}

void SpaceInfo::unpinned(uint64_t len) {
  std::lock_guard lk(mu_);
  sub(pinned_, len);
  return_free_space_locked(len);
}

void SpaceInfo::free_to_used(uint64_t len) {
  std::lock_guard lk(mu_);
  used_ += len;
  disk_used_ += len * factor_;
}

// ---- reservations ------------------------------------------------------------------------------------

uint64_t SpaceInfo::used_locked(bool with_may_use) const {
  return used_ + reserved_ + pinned_ + readonly_ + (with_may_use ? may_use_ : 0);
}

bool SpaceInfo::can_overcommit_locked(uint64_t bytes, FlushMode mode) const {
  if (is_data()) return false;  // data never overcommits (mixed groups count as data)
  const uint64_t avail = owner_.overcommit_avail(*this, mode);
  return used_locked(true) + bytes < total_ + avail;
}

bool SpaceInfo::can_overcommit(uint64_t bytes, FlushMode mode) const {
  std::lock_guard lk(mu_);
  return can_overcommit_locked(bytes, mode);
}

bool SpaceInfo::fits_locked(uint64_t bytes, FlushMode mode) const {
  return used_locked(true) + bytes <= total_ || can_overcommit_locked(bytes, mode);
}

uint64_t SpaceInfo::free_now() const {
  std::lock_guard lk(mu_);
  const uint64_t used = used_locked(true);
  return total_ > used ? total_ - used : 0;
}

Status SpaceInfo::reserve_bytes(uint64_t bytes, FlushMode mode) {
  if (bytes == 0) return {};
  std::unique_lock lk(mu_);
  // NO_FLUSH must not jump the queue; neither does FLUSH_DATA here (strict FIFO: no data ticket
  // starves behind smaller later ones — the kernel lets FLUSH_DATA pass normal tickets).
  const bool blocked_by_normal = mode == FlushMode::kFlushAll || mode == FlushMode::kFlushAllSteal ||
                                 mode == FlushMode::kNoFlush || mode == FlushMode::kFlushData;
  const bool pending = !priority_tickets_.empty() || (blocked_by_normal && !tickets_.empty());
  if (!pending && mode != FlushMode::kFlushEmergency) {
    bool ok = false;
    if (used_locked(true) + bytes <= total_) {
      ok = true;
    } else if (can_overcommit_locked(bytes, mode)) {
      ok = true;
      stats_.overcommitted++;
    }
    if (ok) {
      may_use_ += bytes;
      stats_.fast_path++;
      lk.unlock();
      // btrfs queues the preemptive flusher from the metadata fast path; beyond the kernel, a data
      // space_info about to run out of allocated room asks for its next chunk ahead of need, so a
      // steady writer does not meet the ticket path at each chunk boundary.
      if (is_data() ? needs_chunk_soon() : need_preemptive_reclaim()) owner_.kick_preemptive();
      return {};
    }
  }
  if (mode == FlushMode::kFlushEmergency) {
    if (used_locked(false) + bytes <= total_) {
      may_use_ += bytes;
      stats_.emergency++;
      return {};
    }
    stats_.enospc_no_flush++;
    return fail(ENOSPC, "{} space: {} bytes do not fit even ignoring reservations (total {}, used {})", name(),
                bytes, total_, used_locked(false));
  }
  if (mode == FlushMode::kNoFlush) {
    stats_.enospc_no_flush++;
    return fail(ENOSPC, "{} space: no room for {} bytes without flushing (total {}, used with reservations {}{})",
                name(), bytes, total_, used_locked(true), pending ? ", tickets queued" : "");
  }
  Ticket t;
  t.bytes = t.orig = bytes;
  t.steal = mode == FlushMode::kFlushAllSteal || mode == FlushMode::kFlushEvict;
  t.priority = mode == FlushMode::kFlushLimit || mode == FlushMode::kFlushEvict;
  reclaim_size_ += bytes;
  if (t.priority) {
    priority_tickets_.push_back(&t);
    stats_.priority_queued++;
    lk.unlock();
    priority_reclaim(t, mode);
    lk.lock();
  } else {
    tickets_.push_back(&t);
    stats_.queued++;
    bool kick = false;
    if (!flush_running_) {
      flush_running_ = true;
      kick = true;
      // maybe_clamp_preempt: a ticket had to be queued while the flusher was idle, so preemptive
      // flushing should start earlier (a larger clamp shifts its threshold down).
      if (!is_data()) clamp_ = std::min(clamp_ + 1, 8);
    }
    lk.unlock();
    if (kick) owner_.kick_reclaim(*this);
    lk.lock();
    if (auto st = wait_ticket(t, lk); !st) return st;
  }
  if (t.error) return fail(t.error, "{}", t.why);
  return {};
}

Status SpaceInfo::wait_ticket(Ticket& t, std::unique_lock<std::mutex>& lk) {
  WaitInterrupt* intr = current_wait_interrupt();
  while (!t.done) {
    if (intr && intr->interrupted.load(std::memory_order_acquire)) {
      // The request was interrupted: the ticket leaves the queue holding nothing.
      remove_ticket_locked(t);
      stats_.interrupted++;
      try_granting_tickets_locked();
      return fail(EINTR, "{} reservation of {} bytes interrupted", name(), t.orig);
    }
    cv_.wait(lk);
  }
  return {};
}

void SpaceInfo::release_bytes(uint64_t bytes) {
  if (bytes == 0) return;
  std::lock_guard lk(mu_);
  sub(may_use_, bytes);
  return_free_space_locked(bytes);
}

void SpaceInfo::force_may_use(uint64_t bytes) {
  std::lock_guard lk(mu_);
  may_use_ += bytes;
}

// ---- tickets -----------------------------------------------------------------------------------------

void SpaceInfo::remove_ticket_locked(Ticket& t) {
  auto& q = t.priority ? priority_tickets_ : tickets_;
  auto it = std::find(q.begin(), q.end(), &t);
  if (it != q.end()) q.erase(it);
  sub(reclaim_size_, t.bytes);
}

void SpaceInfo::grant_locked(Ticket& t, bool stolen) {
  remove_ticket_locked(t);
  granted_bytes_ += t.bytes;
  t.bytes = 0;
  t.done = true;
  tickets_id_++;
  if (t.priority) {
    stats_.priority_granted++;
    if (stolen) stats_.priority_stolen++;
  } else {
    stats_.granted++;
    if (stolen) stats_.stolen++;
  }
  cv_.notify_all();
}

void SpaceInfo::try_granting_tickets_locked() {
  // Priority tickets first (judged with the NO_FLUSH overcommit fraction), then normal ones
  // (FLUSH_ALL's); each queue strictly head of line (btrfs_try_granting_tickets).
  for (int pass = 0; pass < 2; ++pass) {
    auto& q = pass == 0 ? priority_tickets_ : tickets_;
    const FlushMode mode = pass == 0 ? FlushMode::kNoFlush : FlushMode::kFlushAll;
    while (!q.empty()) {
      Ticket& t = *q.front();
      if (!fits_locked(t.bytes, mode)) break;
      may_use_ += t.bytes;
      grant_locked(t, false);
    }
  }
}

void SpaceInfo::return_free_space_locked(uint64_t bytes) {
  BlockRsv& g = owner_.global_rsv();
  if (g.space_info() == this && bytes > 0) {
    const uint64_t taken = g.absorb(bytes);
    may_use_ += taken;
  }
  try_granting_tickets_locked();
}

bool SpaceInfo::steal_from_global_locked(Ticket& t) {
  BlockRsv& g = owner_.global_rsv();
  if (!t.steal || g.space_info() != this) return false;
  // Only while the global reserve keeps a tenth of its size (btrfs steal_from_global_rsv).
  const uint64_t taken = g.take_reserved(t.bytes, g.size() / 10);
  if (taken == 0) return false;
  grant_locked(t, true);  // the bytes stay in may_use: they move from the global reserve to the caller
  return true;
}

bool SpaceInfo::fail_tickets() {
  std::lock_guard lk(mu_);
  const uint64_t start_id = tickets_id_;
  while (!tickets_.empty() && tickets_id_ == start_id) {
    Ticket& t = *tickets_.front();
    if (steal_from_global_locked(t)) break;
    remove_ticket_locked(t);
    t.error = ENOSPC;
    t.why = fmt::format("{} space exhausted: no room for {} bytes after flushing (total {}, used {}, pinned {}, "
                        "reserved {}, may_use {})",
                        name(), t.orig, total_, used_, pinned_, reserved_, may_use_);
    t.done = true;
    stats_.failed++;
    owner_.count_enospc(is_data() ? EnospcReason::kDataTicket : EnospcReason::kMetadataTicket);
    cv_.notify_all();
    // A smaller ticket behind it may fit now.
    try_granting_tickets_locked();
  }
  return tickets_id_ != start_id;
}

void SpaceInfo::fail_all_tickets(int err, const std::string& why) {
  std::lock_guard lk(mu_);
  for (auto* q : {&priority_tickets_, &tickets_}) {
    while (!q->empty()) {
      Ticket& t = *q->front();
      remove_ticket_locked(t);
      t.error = err;
      t.why = why;
      t.done = true;
      if (t.priority) stats_.priority_failed++;
      else stats_.failed++;
    }
  }
  cv_.notify_all();
}

void SpaceInfo::priority_reclaim(Ticket& t, FlushMode mode) {
  static constexpr FlushState kLimit[] = {FlushState::kDelayedItemsNr, FlushState::kDelayedItems,
                                          FlushState::kAllocChunk};
  static constexpr FlushState kEvict[] = {FlushState::kDelayedItemsNr, FlushState::kDelayedItems,
                                          FlushState::kDelayedRefsNr,  FlushState::kDelayedRefs,
                                          FlushState::kDelalloc,       FlushState::kDelallocWait,
                                          FlushState::kDelallocFull,   FlushState::kAllocChunk,
                                          FlushState::kCommitTrans};
  std::span<const FlushState> states =
      mode == FlushMode::kFlushLimit ? std::span<const FlushState>(kLimit) : std::span<const FlushState>(kEvict);
  Error fatal{0, ""};
  for (FlushState s : states) {
    uint64_t target;
    {
      std::lock_guard lk(mu_);
      if (t.done) return;
      target = std::max(reclaim_size_, t.bytes);
    }
    auto r = owner_.run_flush_state(*this, s, target);
    if (!r && r.error().err != ENOSPC) {
      fatal = r.error();
      break;
    }
  }
  std::lock_guard lk(mu_);
  if (t.done) return;
  try_granting_tickets_locked();
  if (t.done) return;
  if (fatal.err == 0 && steal_from_global_locked(t)) return;
  remove_ticket_locked(t);
  t.done = true;
  stats_.priority_failed++;
  if (fatal.err) {
    t.error = fatal.err;
    t.why = fatal.message;
  } else {
    t.error = ENOSPC;
    t.why = fmt::format("{} space exhausted: no room for {} bytes after flushing (total {}, used {}, pinned {}, "
                        "reserved {}, may_use {})",
                        name(), t.orig, total_, used_, pinned_, reserved_, may_use_);
    owner_.count_enospc(is_data() ? EnospcReason::kDataTicket : EnospcReason::kMetadataTicket);
  }
  cv_.notify_all();
  try_granting_tickets_locked();
}

// ---- reclaim support -------------------------------------------------------------------------------

uint64_t SpaceInfo::reclaim_target() const {
  std::lock_guard lk(mu_);
  uint64_t target = reclaim_size_;
  if (!is_data()) {
    const uint64_t used = used_locked(true);
    const uint64_t avail = owner_.overcommit_avail(*this, FlushMode::kFlushAll);
    if (used > total_ + avail) target += used - (total_ + avail);
  }
  return target;
}

bool SpaceInfo::has_tickets() const {
  std::lock_guard lk(mu_);
  return !tickets_.empty() || !priority_tickets_.empty();
}

uint64_t SpaceInfo::tickets_id() const {
  std::lock_guard lk(mu_);
  return tickets_id_;
}

bool SpaceInfo::finish_flush_if_idle() {
  std::lock_guard lk(mu_);
  if (!tickets_.empty()) return false;
  flush_running_ = false;
  return true;
}

bool SpaceInfo::flush_running() const {
  std::lock_guard lk(mu_);
  return flush_running_;
}

void SpaceInfo::set_flush_running(bool v) {
  std::lock_guard lk(mu_);
  flush_running_ = v;
}

void SpaceInfo::set_full(bool v) {
  std::lock_guard lk(mu_);
  full_ = v;
}

bool SpaceInfo::full() const {
  std::lock_guard lk(mu_);
  return full_;
}

bool SpaceInfo::need_preemptive_reclaim() const {
  if (is_data()) return false;
  BlockRsv& g = owner_.global_rsv();
  const uint64_t global = g.space_info() == this ? g.size() : 0;
  const uint64_t delalloc = owner_.flusher() ? owner_.flusher()->delalloc_bytes() : 0;
  const uint64_t delayed = owner_.delayed_refs_rsv().reserved() + owner_.delayed_block_rsv().reserved();
  std::lock_guard lk(mu_);
  if (reclaim_size_) return false;  // tickets are queued: the async flusher is at work
  // "Just full": close to total with real usage, flushing will not help.
  if (used_ + reserved_ + global >= total_ / 10 * 9) return false;
  if (global >= may_use_ + pinned_ || may_use_ + pinned_ - global <= (128ull << 20)) return false;
  uint64_t thresh = owner_.overcommit_avail(*this, FlushMode::kFlushAll);
  const uint64_t committed = used_ + reserved_ + readonly_ + global;
  if (total_ > committed) thresh += total_ - committed;
  thresh >>= clamp_;
  // Ordered extents do not exist here (data is written synchronously by the flusher), so the
  // kernel's "ordered/2 >= delalloc" test reduces to "no delalloc".
  uint64_t compared = pinned_;
  if (delalloc == 0)
    compared += delayed;
  else
    compared += may_use_ > global ? may_use_ - global : 0;
  return compared >= thresh;
}

bool SpaceInfo::needs_chunk_soon() const {
  const uint64_t chunk = owner_.effective_data_chunk_size();
  if (owner_.free_chunk_space() < (1ull << 20)) return false;
  std::lock_guard lk(mu_);
  if (full_ || !tickets_.empty()) return false;
  const uint64_t used = used_locked(true);
  const uint64_t free = total_ > used ? total_ - used : 0;
  return free < chunk / 2;
}

void SpaceInfo::wake_waiters() {
  std::lock_guard lk(mu_);
  cv_.notify_all();
}

void SpaceInfo::count_flush(FlushState s, uint64_t reclaimed) {
  std::lock_guard lk(mu_);
  stats_.flush_runs[static_cast<int>(s)]++;
  stats_.flush_reclaimed[static_cast<int>(s)] += reclaimed;
}

void SpaceInfo::count_preemptive() {
  std::lock_guard lk(mu_);
  stats_.preemptive_runs++;
}

void SpaceInfo::relax_clamp() {
  std::lock_guard lk(mu_);
  clamp_ = std::max(1, clamp_ - 1);
}

uint64_t SpaceInfo::granted_bytes() const {
  std::lock_guard lk(mu_);
  return granted_bytes_;
}

std::unique_lock<std::mutex> SpaceInfo::lock_for_chunk_decision() const { return std::unique_lock(mu_); }

uint64_t SpaceInfo::overcommitted_locked() const {
  const uint64_t used = used_locked(true);
  return used > total_ ? used - total_ : 0;
}

SpaceCounters SpaceInfo::counters() const {
  std::lock_guard lk(mu_);
  SpaceCounters c;
  c.flags = flags_;
  c.total = total_;
  c.used = used_;
  c.pinned = pinned_;
  c.reserved = reserved_;
  c.may_use = may_use_;
  c.readonly = readonly_;
  c.disk_total = disk_total_;
  c.disk_used = disk_used_;
  c.full = full_;
  c.reclaim_size = reclaim_size_;
  c.tickets = tickets_.size();
  c.priority_tickets = priority_tickets_.size();
  return c;
}

TicketStats SpaceInfo::ticket_stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace ubtrfs::alloc
