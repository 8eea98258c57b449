// SpaceInfos: the filesystem-wide part of the reservation system (btrfs fs_info's space_info list,
// its block reserves, free_chunk_space and the async reclaim workers; KERNEL.md §2-§5).
//
// Owns: the DATA, METADATA and SYSTEM space_infos (one object for both when block groups are
// mixed); the filesystem's block reserves — global (refilled first when space is freed), trans
// (every reserving handle adds to it), delayed refs, delayed ops (delayed inode items), chunk
// (SYSTEM) and the empty reserve; the overcommit inputs (unallocated device bytes, profile factors,
// the effective data chunk size); the tree-block fallback chain (use_block_rsv); the reclaim
// thread (space_reclaim.cpp) that serves normal tickets by walking the flush states and flushes
// preemptively; reservation statistics.
//
// The fallback chain for every new tree block, including each COW (btrfs_use_block_rsv, KERNEL.md
// §5), in order, each step counted: (1) the picked reserve's bytes; (2) for a failfast reserve,
// ENOSPC; for the global reserve, recompute and retry; (3) NO_FLUSH straight from the space_info;
// (4) the global reserve, if the picked one is another reserve of the same space_info; (5)
// FLUSH_EMERGENCY; (6) ENOSPC. Steps 3-5 are "overruns": a COW the handle had not paid for.
//
// Thread safety: every method may be called from any thread; the reclaim thread is started once a
// flusher exists (start_reclaim) and stopped before the flusher goes away (stop_reclaim).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "alloc/block_rsv.h"
#include "alloc/space_info.h"
#include "io/status.h"

namespace ubtrfs::alloc {

// Where each new tree block's bytes came from (the fallback chain's steps), and ENOSPC by reason.
struct ReservationStats {
  uint64_t from_rsv = 0;           // step 1
  uint64_t beyond_handle = 0;      // step 1, but past what this handle itself put into a shared reserve
  uint64_t no_flush = 0;           // step 3
  uint64_t global = 0;             // step 4
  uint64_t emergency = 0;          // step 5
  uint64_t failfast_enospc = 0;    // step 2 on a failfast reserve
  uint64_t enospc = 0;             // step 6
  // Steps 3-5 by the reserve the block was charged to (indexed by RsvType): which reserve ran dry.
  std::array<uint64_t, kRsvTypeCount> overruns_by_rsv{};
  uint64_t overruns() const { return no_flush + global + emergency; }
};

// ENOSPC returned to callers, by reason (the counters `ubtrfs-inspect stats` shows).
enum class EnospcReason : uint8_t {
  kMetadataTicket,   // a metadata ticket failed after the flushers made no progress
  kDataTicket,       // a data ticket failed likewise
  kNoFlush,          // a NO_FLUSH reservation did not fit
  kTreeBlock,        // the fallback chain ran dry (a COW or split)
  kChunk,            // a chunk could not be created
  kDataChunkBacking, // a data chunk refused: the unallocated space backs metadata overcommit
};
inline constexpr int kEnospcReasonCount = 6;
const char* enospc_reason_name(EnospcReason r);

class SpaceInfos {
 public:
  SpaceInfos(uint32_t nodesize, bool free_space_tree, bool mixed_groups);
  ~SpaceInfos();
  SpaceInfos(const SpaceInfos&) = delete;
  SpaceInfos& operator=(const SpaceInfos&) = delete;

  SpaceInfo& data() { return *data_; }
  SpaceInfo& metadata() { return *meta_; }
  SpaceInfo& system() { return *system_; }
  // Mixed block groups (INCOMPAT_MIXED_GROUPS): data and metadata share one DATA|METADATA space_info.
  bool mixed() const { return data_ == meta_; }
  // The space_info of a block group with these flags (type bits decide).
  SpaceInfo& for_flags(uint64_t bg_flags);

  BlockRsv& global_rsv() { return global_rsv_; }
  BlockRsv& trans_rsv() { return trans_rsv_; }
  BlockRsv& delayed_refs_rsv() { return delayed_refs_rsv_; }
  BlockRsv& delayed_block_rsv() { return delayed_block_rsv_; }
  BlockRsv& chunk_rsv() { return chunk_rsv_; }
  BlockRsv& empty_rsv() { return empty_rsv_; }

  uint32_t nodesize() const { return nodesize_; }
  bool free_space_tree() const { return fst_; }
  uint64_t insert_size(uint64_t items) const { return calc_insert_metadata_size(nodesize_, items); }
  uint64_t metadata_size(uint64_t items) const { return calc_metadata_size(nodesize_, items); }
  uint64_t delayed_ref_bytes(uint64_t items) const { return calc_delayed_ref_bytes(nodesize_, items, fst_); }

  // ---- overcommit inputs (KERNEL.md §3) -----------------------------------------------------------
  // Unallocated device bytes (btrfs fs_info->free_chunk_space). Set by the chunk creator under the
  // metadata space_info's lock (see metadata_backing_needed).
  void set_free_chunk_space(uint64_t b) { free_chunk_space_.store(b, std::memory_order_release); }
  uint64_t free_chunk_space() const { return free_chunk_space_.load(std::memory_order_acquire); }
  // Profile factor (2 for DUP) of new chunks of a type.
  void set_factor(uint64_t type, int factor);
  int factor(uint64_t type) const;
  // Total writable device bytes (for the data chunk hold-back: min(data chunk, 10 %, 1 GiB)).
  void set_device_bytes(uint64_t b) { device_bytes_.store(b, std::memory_order_relaxed); }
  void set_data_chunk_size(uint64_t b) { data_chunk_size_.store(b, std::memory_order_relaxed); }
  uint64_t effective_data_chunk_size() const;
  // calc_available_free_space: how far `si` may overcommit in `mode`. REQUIRES: si's lock held by
  // the caller or a racy read being acceptable (it reads atomics only).
  uint64_t overcommit_avail(const SpaceInfo& si, FlushMode mode) const;
  // Unallocated device bytes that back the current overcommit of METADATA and SYSTEM (their
  // used-with-may_use beyond total, times the profile factor). A data chunk must leave this much.
  uint64_t metadata_backing_needed();

  // ---- the global reserve (btrfs_update_global_block_rsv) ----------------------------------------
  // tree_bytes: bytes used by the root, extent, csum, free-space (and block-group) trees; nroots:
  // how many of those global roots exist besides the root tree. Size = max(tree_bytes,
  // insert_size(1 + nroots + 6) + delayed_ref_bytes(6)), at most 512 MiB; reserved is topped up to
  // it at once. If it reaches the metadata total, a chunk should be forced.
  void update_global_rsv(uint64_t tree_bytes, unsigned nroots);

  // ---- the fallback chain ---------------------------------------------------------------------------
  // btrfs_use_block_rsv for one tree block of `bytes`: returns the reserve the bytes came from (the
  // empty reserve for steps 3 and 5: the bytes were reserved straight into may_use). `handle_share`:
  // bytes of `rsv` this handle still may take without counting "beyond_handle" (decremented).
  // Errors: ENOSPC.
  [[nodiscard]] Result<BlockRsv*> use_block_rsv(BlockRsv* rsv, uint64_t bytes, uint64_t* handle_share);
  // btrfs_update_delayed_refs_rsv: `updates` newly queued ref heads grow the delayed-refs reserve's
  // size by what running them will cost, and move up to that much from the handle's own
  // delayed-ref reserve (null: none) into it. Called as references are queued, not at handle end:
  // the reclaim thread may run a head while the handle that queued it is still running, and it
  // must find the head's bytes there.
  void update_delayed_refs_rsv(BlockRsv* handle_rsv, uint64_t updates);
  // btrfs_unuse_block_rsv: the allocation after use_block_rsv failed; give the bytes back.
  void unuse_block_rsv(BlockRsv* from, uint64_t bytes);
  // btrfs_block_rsv_release with the kernel's routing of the excess (see the .cpp). `bytes` =
  // UINT64_MAX releases the whole size. Returns the bytes given back to the space_info.
  uint64_t release_block_rsv(BlockRsv& rsv, uint64_t bytes);
  ReservationStats reservation_stats() const;
  void count_enospc(EnospcReason r);
  std::array<uint64_t, kEnospcReasonCount> enospc_counts() const;

  // ---- reclaim (space_reclaim.cpp) ----------------------------------------------------------------
  // Starts the reclaim thread; `flusher` must outlive stop_reclaim().
  void start_reclaim(SpaceFlusher* flusher);
  // Stops it; queued tickets are failed with `err` first (unmount: ENOSPC? no — EROFS/EIO).
  void stop_reclaim();
  SpaceFlusher* flusher() const { return flusher_; }
  // Asks the reclaim thread to serve `si`'s tickets (btrfs queue_work(async_reclaim_work)).
  void kick_reclaim(SpaceInfo& si);
  // Asks for a preemptive pass (metadata only).
  void kick_preemptive();
  // Runs one flush state for `si` in the calling thread and counts it (priority reclaim and tests).
  [[nodiscard]] Result<uint64_t> run_flush_state(SpaceInfo& si, FlushState state, uint64_t to_reclaim);
  // The async reclaim loops (one pass to completion; called by the reclaim thread, and by tests
  // without a thread).
  void async_reclaim_metadata(SpaceInfo& si);
  void async_reclaim_data(SpaceInfo& si);
  void preemptive_reclaim();

 private:
  void reclaim_thread_main();

  const uint32_t nodesize_;
  const bool fst_;
  std::vector<std::unique_ptr<SpaceInfo>> owned_;
  SpaceInfo* data_;
  SpaceInfo* meta_;  // == data_ with mixed block groups (one DATA|METADATA space_info)
  SpaceInfo* system_;
  BlockRsv global_rsv_, trans_rsv_, delayed_refs_rsv_, delayed_block_rsv_, chunk_rsv_, empty_rsv_;
  std::atomic<uint64_t> free_chunk_space_{0};
  std::atomic<uint64_t> device_bytes_{0};
  std::atomic<uint64_t> data_chunk_size_{0};
  std::array<std::atomic<int>, 3> factors_{};  // data, metadata, system

  mutable std::mutex stats_mu_;
  ReservationStats rstats_;                             // GUARDED_BY(stats_mu_)
  std::array<uint64_t, kEnospcReasonCount> enospc_{};   // GUARDED_BY(stats_mu_)

  SpaceFlusher* flusher_ = nullptr;
  std::thread reclaim_thread_;
  std::mutex reclaim_mu_;
  std::condition_variable reclaim_cv_;
  bool reclaim_stop_ = false;     // GUARDED_BY(reclaim_mu_)
  bool want_meta_ = false, want_data_ = false, want_system_ = false, want_preempt_ = false;  // GUARDED_BY(reclaim_mu_)
};

}  // namespace ubtrfs::alloc
