// space_info: the byte accounting of one block-group type and the reservations made against it
// (btrfs space-info.c "HOW DOES SPACE RESERVATION WORK"; KERNEL.md §2-§4; the ENOSPC seed).
//
// Owns, per type (DATA, METADATA, SYSTEM; one shared object for mixed block groups):
// - the seven counters of KERNEL.md §2 — total (sum of group lengths, mirrors not counted), used,
//   pinned, reserved, may_use, readonly (superblock stripes), plus disk_total / disk_used with the
//   profile factor — kept exact by the block groups (alloc/block_group.cpp reports every change) and
//   by reservations (may_use);
// - the ticket queues: a reservation that does not fit waits on a ticket. Normal tickets (FLUSH_ALL,
//   FLUSH_ALL_STEAL, FLUSH_DATA) are served by the reclaim thread (space_reclaim.cpp); priority
//   tickets (FLUSH_LIMIT, FLUSH_EVICT) flush in the caller's own thread. Granting walks the priority
//   queue then the normal one, each strictly head of line (btrfs_try_granting_tickets);
// - `full`: no chunk of this type can be created any more (the device is allocated).
//
// Rules (KERNEL.md §2, §3, §4.2):
// - used(with may_use) = used + reserved + pinned + readonly + may_use; a reservation of b fits
//   without overcommit iff used + b <= total. Pinned counts as used: only a commit returns it.
// - Metadata and system may overcommit against unallocated device space: avail = unallocated /
//   profile factor, minus one effective data chunk held back, then /8 for FLUSH_ALL and /2 for every
//   other mode; allowed iff used + b < total + avail. DATA (and mixed) never overcommits.
// - Beyond the kernel: the metadata overcommit is made good. A data chunk may not take the
//   unallocated bytes that back metadata's current overcommit (SpaceInfos::metadata_backing_needed;
//   the chunk creator asks before every data chunk), so overcommitted metadata reservations can
//   always become a metadata chunk and a COW never meets ENOSPC that a reservation promised away.
// - FIFO: any queued ticket blocks the fast path of FLUSH_ALL, FLUSH_ALL_STEAL, NO_FLUSH and (unlike
//   the kernel, which lets FLUSH_DATA pass normal tickets) FLUSH_DATA, so no ticket starves; other
//   modes are blocked only by queued priority tickets.
// - FLUSH_EMERGENCY ignores may_use: fits iff used(without may_use) + b <= total.
// - A waiter whose request was interrupted (FUSE_INTERRUPT: the process was killed) leaves the queue
//   with EINTR and holds nothing; a ticket is either granted (its bytes are in may_use and belong to
//   the waiter) or failed (nothing reserved) — never both.
// - Freed space (unpin, reserved released, may_use released) first refills the global block reserve
//   to its size (btrfs_return_free_space), then grants tickets.
//
// Locking: mu_ is a leaf lock except that it may be held while taking a BlockRsv's lock (return of
// free space to the global reserve, stealing from it). Never held while calling the flusher or a
// block group. Waiters sleep on cv_. Lock order: ChunkCreator's mutex -> SpaceInfo::mu_ -> BlockRsv.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <span>
#include <string>

#include "io/status.h"

namespace ubtrfs::alloc {

class BlockRsv;
class SpaceInfo;
class SpaceInfos;

// The interrupt flag of the request the calling thread serves: the daemon points the thread-local
// at its request's flag for the duration of a FUSE request, and FUSE_INTERRUPT (the process was
// killed) sets it and wakes the waiters, whose ticket then leaves the queue with EINTR.
struct WaitInterrupt {
  std::atomic<bool> interrupted{false};
};
void set_current_wait_interrupt(WaitInterrupt* w);
WaitInterrupt* current_wait_interrupt();

// btrfs_reserve_flush_enum (KERNEL.md §4.1), in the kernel's order.
enum class FlushMode : uint8_t {
  kNoFlush,         // inside a transaction: fail at once, never queue
  kFlushLimit,      // priority ticket; delayed items and a chunk, in the caller's thread
  kFlushEvict,      // priority ticket; every state incl. commit, may steal from the global reserve
  kFlushData,       // data: normal ticket, the reclaim thread allocates chunks, flushes, commits
  kFlushAll,        // metadata: normal ticket, the reclaim thread does everything
  kFlushAllSteal,   // FLUSH_ALL, and may steal from the global reserve at the end (unlink, rmdir...)
  kFlushEmergency,  // only from use_block_rsv: ignores may_use
};
const char* flush_mode_name(FlushMode m);

// btrfs_flush_state (KERNEL.md §4.3); the order is the order tried. RESET_ZONES (zoned) is meaningless
// on an image and is not modelled.
enum class FlushState : uint8_t {
  kNone = 0,
  kDelayedItemsNr = 1,
  kDelayedItems,
  kDelayedRefsNr,
  kDelayedRefs,
  kDelalloc,
  kDelallocWait,
  kDelallocFull,
  kAllocChunk,
  kAllocChunkForce,
  kRunDelayedIputs,
  kCommitTrans,
};
inline constexpr int kFlushStateCount = 12;  // kNone .. kCommitTrans
const char* flush_state_name(FlushState s);

// What the reclaim machinery asks of the layers above (btrfs flush_space's actions): fs implements
// it (fs/space_flusher.cpp). REQUIRES of implementations: never wait on a ticket, never block on an
// inode lock (try-lock and skip: a waiter may hold it), never hold a transaction handle across a
// commit. Returns the bytes the action released by its own account (0 if unknown); an error only
// for a fatal condition (the filesystem aborted).
class SpaceFlusher {
 public:
  virtual ~SpaceFlusher() = default;
  [[nodiscard]] virtual Result<uint64_t> flush(SpaceInfo& si, FlushState state, uint64_t to_reclaim) = 0;
  // Bytes of dirty file data not yet given extents (the preemptive test weighs it).
  virtual uint64_t delalloc_bytes() const { return 0; }
};

// A snapshot of one space_info's counters (stats, tests).
struct SpaceCounters {
  uint64_t flags = 0;
  uint64_t total = 0, used = 0, pinned = 0, reserved = 0, may_use = 0, readonly = 0;
  uint64_t disk_total = 0, disk_used = 0;
  bool full = false;
  uint64_t reclaim_size = 0;  // bytes of queued tickets
  size_t tickets = 0, priority_tickets = 0;
  uint64_t used_all() const { return used + reserved + pinned + readonly + may_use; }
};

// Ticket and flush statistics of one space_info (live counters of `ubtrfs-inspect stats`).
struct TicketStats {
  uint64_t queued = 0, granted = 0, failed = 0, interrupted = 0, stolen = 0;
  uint64_t priority_queued = 0, priority_granted = 0, priority_failed = 0, priority_interrupted = 0,
           priority_stolen = 0;
  uint64_t fast_path = 0;        // reservations that fit at once
  uint64_t overcommitted = 0;    // ... of which only by overcommit
  uint64_t emergency = 0;        // FLUSH_EMERGENCY successes
  uint64_t enospc_no_flush = 0;  // NO_FLUSH / EMERGENCY refusals (no ticket)
  uint64_t preemptive_runs = 0;
  std::array<uint64_t, kFlushStateCount> flush_runs{};
  std::array<uint64_t, kFlushStateCount> flush_reclaimed{};
};

class SpaceInfo {
 public:
  SpaceInfo(SpaceInfos& owner, uint64_t flags);
  SpaceInfo(const SpaceInfo&) = delete;
  SpaceInfo& operator=(const SpaceInfo&) = delete;

  uint64_t flags() const { return flags_; }
  bool is_data() const;  // DATA bit set (also mixed): never overcommits
  const char* name() const;
  SpaceInfos& owner() { return owner_; }

  // ---- accounting, reported by the block groups (every method keeps the counters exact) ----------
  // A block group joins (load or chunk creation): total += length, readonly += super_bytes, used +=
  // its used bytes; disk_* with `factor` (2 for DUP). Tickets are granted by grant_tickets() once the
  // group is visible to the allocator.
  void add_block_group(uint64_t length, uint64_t used, uint64_t super_bytes, int factor);
  void grant_tickets();
  // The allocator handed out [len] bytes: reserved += len; may_use -= from_may_use (the part a
  // reservation had promised; btrfs_add_reserved_bytes).
  void extent_reserved(uint64_t len, uint64_t from_may_use);
  // A reserved extent was given back unused (btrfs_free_reserved_bytes): reserved -= len.
  void reserved_released(uint64_t len);
  void reserved_to_used(uint64_t len);    // its reference was recorded (delayed ref run)
  void reserved_to_pinned(uint64_t len);  // written but never referenced: pinned until commit
  void used_to_pinned(uint64_t len);      // freed: pinned until the commit
  void unpinned(uint64_t len);            // the commit returned pinned bytes to free space
  void free_to_used(uint64_t len);        // mkfs / replay: marked used directly

  // ---- reservations (btrfs_reserve_metadata_bytes / btrfs_reserve_data_bytes) --------------------
  // may_use += bytes if it fits now (or by overcommit), else per `mode`: NO_FLUSH/EMERGENCY fail at
  // once; the others queue a ticket and wait until it is granted or failed. Errors: ENOSPC (the
  // flushers made no progress, or NO_FLUSH), EINTR (the waiting request was interrupted).
  // REQUIRES: for FLUSH_ALL / FLUSH_ALL_STEAL / FLUSH_EVICT / FLUSH_DATA the caller holds no
  // transaction handle (the flusher may commit).
  [[nodiscard]] Status reserve_bytes(uint64_t bytes, FlushMode mode);
  // may_use -= bytes (a reservation given back); frees go to the global reserve first, then tickets.
  void release_bytes(uint64_t bytes);
  // may_use += bytes unconditionally (the global reserve's top-up, which the kernel does even past
  // total).
  void force_may_use(uint64_t bytes);
  // Reservation headroom right now: total - used(with may_use), clamped at 0 (no overcommit).
  uint64_t free_now() const;

  // Whether `bytes` more would fit by overcommit in `mode` (KERNEL.md §3). Exposed for tests.
  bool can_overcommit(uint64_t bytes, FlushMode mode) const;

  // ---- reclaim ---------------------------------------------------------------------------------
  // Sum of queued ticket bytes plus the overage beyond total + avail(FLUSH_ALL) (KERNEL.md §4.6).
  uint64_t reclaim_target() const;
  // Whether a ticket is queued (normal or priority).
  bool has_tickets() const;
  uint64_t tickets_id() const;
  // Fails every normal ticket from the head while no progress is made, first trying to steal from
  // the global reserve for tickets allowed to (btrfs maybe_fail_all_tickets). Returns true if a
  // ticket was served (progress).
  bool fail_tickets();
  // Fails every ticket with `err` (abort, unmount).
  void fail_all_tickets(int err, const std::string& why);
  // The flush loop of the reclaim thread is (not) running for this space_info.
  bool flush_running() const;
  // The async loop's exit test: no normal ticket queued -> flush_running = false, true. Atomic with
  // respect to queuing, so a ticket queued now re-kicks the thread.
  bool finish_flush_if_idle();
  void set_flush_running(bool v);
  void set_full(bool v);
  bool full() const;
  // Data: less than half a data chunk left to reserve while the device has unallocated space, no
  // ticket queued and the type not full — the reclaim thread allocates the next chunk ahead of need.
  bool needs_chunk_soon() const;
  // Preemptive flushing (KERNEL.md §4.7): whether the reclaim thread should flush ahead of need.
  bool need_preemptive_reclaim() const;
  // Wakes every waiter (an interrupted request must re-check its flag).
  void wake_waiters();

  void count_flush(FlushState s, uint64_t reclaimed);
  void count_preemptive();
  // The preemptive pass found nothing to do: flush later next time (clamp - 1, at least 1).
  void relax_clamp();
  // Granted ticket bytes so far (the reclaim loop measures what a state achieved with it).
  uint64_t granted_bytes() const;

  // For the chunk creator: this space_info's lock, held while it decides how much unallocated space
  // a data chunk may take, so that no overcommit decision interleaves (see "Beyond the kernel").
  [[nodiscard]] std::unique_lock<std::mutex> lock_for_chunk_decision() const;
  // REQUIRES: that lock held. Bytes reserved or used beyond total (what overcommit promised).
  uint64_t overcommitted_locked() const;

  SpaceCounters counters() const;
  TicketStats ticket_stats() const;

 private:
  struct Ticket {
    uint64_t bytes = 0;  // still to grant; 0 once granted
    uint64_t orig = 0;
    int error = 0;       // set when failed
    bool steal = false;  // FLUSH_ALL_STEAL / FLUSH_EVICT may take from the global reserve
    bool priority = false;
    bool done = false;
    std::string why;
  };
  friend class SpaceInfos;

  // REQUIRES: mu_ held, for all *_locked.
  uint64_t used_locked(bool with_may_use) const;
  bool fits_locked(uint64_t bytes, FlushMode mode) const;
  bool can_overcommit_locked(uint64_t bytes, FlushMode mode) const;
  void try_granting_tickets_locked();
  void return_free_space_locked(uint64_t bytes);  // btrfs_return_free_space
  bool steal_from_global_locked(Ticket& t);
  void remove_ticket_locked(Ticket& t);
  void grant_locked(Ticket& t, bool stolen);
  // Priority reclaim in the caller's thread (btrfs priority_reclaim_metadata_space).
  void priority_reclaim(Ticket& t, FlushMode mode);
  [[nodiscard]] Status wait_ticket(Ticket& t, std::unique_lock<std::mutex>& lk);

  SpaceInfos& owner_;
  const uint64_t flags_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  // GUARDED_BY(mu_):
  uint64_t total_ = 0, used_ = 0, pinned_ = 0, reserved_ = 0, may_use_ = 0, readonly_ = 0;
  uint64_t disk_total_ = 0, disk_used_ = 0;
  int factor_ = 1;
  bool full_ = false;
  bool flush_running_ = false;
  int clamp_ = 1;  // preemptive threshold shift, 1..8 (btrfs space_info->clamp)
  std::list<Ticket*> tickets_, priority_tickets_;
  uint64_t reclaim_size_ = 0;
  uint64_t tickets_id_ = 0;
  uint64_t granted_bytes_ = 0;
  TicketStats stats_;
};

}  // namespace ubtrfs::alloc
