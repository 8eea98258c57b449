// Discard: telling the device which bytes hold nothing (btrfs discard.c and extent-tree.c
// btrfs_trim_fs / free-space-cache.c btrfs_trim_block_group), two ways:
//   - FITRIM (`fstrim MNT`): trim_fs() discards, once, the free space of every block group that
//     meets the asked logical range, and the device's unallocated space (no chunk) in the same range
//     read as physical offsets;
//   - `-o discard` (async, as btrfs's discard=async): every commit hands the ranges its unpin made
//     free to AsyncDiscard, whose worker discards them in batches a moment later.
//
// The one rule: never discard a byte that anything may still read. It is kept by discarding only
// what is free space in memory *and taking it out of free space while it is discarded*:
//   - in-memory free space is a subset of what is free in the committed state: an extent freed in
//     the running transaction stays pinned (BlockGroup::pin_extent) until the commit whose
//     superblock no longer references it is on disk, and only then is unpinned; anything allocated
//     (a running handle's tree blocks, delalloc's data extents, tree-log blocks, extents a log
//     replay excludes) is reserved or used, never free;
//   - a range being discarded is reserved (BlockGroup::take_free_for_trim, the kernel's "trimming"
//     state in do_trimming), so no allocation can land in it until release_reserved() gives it back;
//   - unallocated device space is discarded with chunk planning held off (ChunkCreator::
//     lock_planning, the kernel's chunk_mutex), so no new chunk's stripe is placed in a hole while
//     it is discarded;
//   - superblock copies are never discarded: inside chunks they are not free space
//     (super_mirror_ranges), in unallocated space they are cut out here, and the first MiB (primary
//     superblock, boot area) is never touched.
// FITRIM does not commit first (nor does the kernel): the rule above already keeps everything a
// running or uncommitted transaction needs, and a commit would only add the extents freed since
// the last one — `sync` before `fstrim` when those should be trimmed too.
// A DUP (or any multi-stripe) chunk's logical range is discarded on every stripe (ChunkMap::map).
// Thread safety: trim_fs may run concurrently with everything (allocations, commits, the async
// worker): each range it owns is reserved. AsyncDiscard's methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

class FsInfo;

// How long the -o discard worker lets unpinned ranges gather before discarding them.
inline constexpr std::chrono::milliseconds kAsyncDiscardDelay{500};

// Counters for the stats JSON ("discard": bytes, extents, ...). All relaxed atomics.
struct DiscardCounters {
  std::atomic<uint64_t> bytes{0};         // device bytes discarded (each stripe of a DUP range counted)
  std::atomic<uint64_t> extents{0};       // discard requests that reached the device
  std::atomic<uint64_t> fitrim_bytes{0};  // of which by FITRIM (what fstrim -v reports, per stripe)
  std::atomic<uint64_t> async_bytes{0};   // of which by -o discard
  std::atomic<uint64_t> errors{0};        // discards the device refused (async mode logs them)
};

struct TrimResult {
  uint64_t trimmed = 0;  // device bytes discarded, every stripe counted (btrfs_discard_extent's
                         // discarded_bytes): what FITRIM returns in range.len
  uint64_t extents = 0;
};

// btrfs_trim_fs: discards the free space of every block group meeting [start, start+len) (logical)
// and the unallocated device space in [start, start+len) (physical), skipping free runs shorter
// than `minlen`. Runs concurrently with everything (see the header comment).
// Errors: EROFS (read-only mount), EINVAL (len < sectorsize, start beyond the device and every
// chunk), EOPNOTSUPP (the
// device cannot discard), EIO (shut down, device error). Whatever was discarded before an error
// stays discarded and counted.
[[nodiscard]] Result<TrimResult> trim_fs(FsInfo& fs, uint64_t start, uint64_t len, uint64_t minlen,
                                         DiscardCounters* counters = nullptr);

// The -o discard worker (btrfs discard=async; discard=sync is an alias: a synchronous discard in
// the commit would only make commits slower, the space is safe either way).
// queue() takes ranges the commit just unpinned; the worker waits `delay` to batch more, merges
// them, and discards whatever part of each is still free (a range may have been allocated again
// since), each part reserved while it is discarded. A device that cannot discard turns the worker
// off after one warning. stop(drain) ends the worker, first discarding what is queued if asked
// (unmount, after the final commit).
class AsyncDiscard {
 public:
  AsyncDiscard(FsInfo& fs, std::chrono::milliseconds delay, DiscardCounters& counters);
  ~AsyncDiscard();  // stop(false)
  AsyncDiscard(const AsyncDiscard&) = delete;
  AsyncDiscard& operator=(const AsyncDiscard&) = delete;

  void queue(std::vector<std::pair<uint64_t, uint64_t>>&& logical_ranges);
  void stop(bool drain);
  // Bytes queued and not yet handled (tests).
  uint64_t queued_bytes() const;

 private:
  void run();
  void discard_batch(std::vector<std::pair<uint64_t, uint64_t>> batch);

  FsInfo& fs_;
  const std::chrono::milliseconds delay_;
  DiscardCounters& counters_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<uint64_t, uint64_t>> queue_;  // GUARDED_BY(mu_)
  bool stop_ = false, drain_ = false;                 // GUARDED_BY(mu_)
  bool unsupported_ = false;                          // only the worker touches it
  std::thread worker_;
};

}  // namespace ubtrfs::fs
