// The flush actions of the reservation system for a mounted filesystem (btrfs flush_space's switch;
// KERNEL.md §4.3, §12 "Flush actions"): what each flush state means here.
//
// - FLUSH_DELAYED_ITEMS(_NR): run delayed inode items (fs/delayed_inode.h) — all, or enough to give
//   back about `to_reclaim` bytes of the delayed-items reserve.
// - FLUSH_DELAYED_REFS(_NR): run queued delayed refs in a join handle beside the running handles
//   (TransactionManager::run_delayed_refs), enough heads to give back `to_reclaim` of the
//   delayed-refs reserve, or all of them — but never more than that reserve has paid for (heads
//   queued by join handles wait for their funding or the commit; see run_delayed_refs).
// - FLUSH_DELALLOC / FLUSH_DELALLOC_WAIT: flush inodes' dirty data (largest first, skipping inodes
//   whose lock is busy) until their delalloc reserves gave back `to_reclaim` (at least an eighth of
//   the delalloc); writing is synchronous here, so "wait" differs only in doing twice as much.
// - FLUSH_DELALLOC_FULL: flush every inode that can be locked.
// - ALLOC_CHUNK: a chunk of the space_info's type if its real usage passed 80 % (btrfs
//   should_alloc_chunk); ALLOC_CHUNK_FORCE: a chunk regardless. Returns the bytes of chunk added.
// - RUN_DELAYED_IPUTS: evict every inode whose last FORGET came (fs/delayed_iput.h) and wait for
//   it; what they free is pinned until the commit state after it.
// - COMMIT_TRANS: a commit (which unpins what the running transaction freed), never waiting for an
//   inode lock a ticket waiter may hold.
// Thread safety: called by the reclaim thread and by priority reclaimers (callers holding no handle).
#pragma once

#include <atomic>
#include <functional>
#include <mutex>

#include "alloc/space_info.h"
#include "io/status.h"

namespace ubtrfs::fs {

class FsInfo;
class FileData;

class FsSpaceFlusher final : public alloc::SpaceFlusher {
 public:
  explicit FsSpaceFlusher(FsInfo& fs) : fs_(fs) {}
  // The file data layer, once a Filesystem exists (an FsInfo alone has no delalloc to flush).
  // REQUIRES: set before any reservation can wait for it, cleared only after the reclaim thread
  // stopped.
  void set_file_data(FileData* data) { data_.store(data, std::memory_order_release); }
  // Runs delayed items: (max items, 0 = all) -> bytes of reserve given back. Set once at mount.
  void set_delayed_items_runner(std::function<Result<uint64_t>(uint64_t)> f) { run_delayed_ = std::move(f); }
  // Runs every delayed iput and waits for them (DelayedIputs::run_all). Set at mount once orphan
  // cleanup is done, cleared after the reclaim thread stopped.
  void set_delayed_iputs_runner(std::function<Result<size_t>()> f) {
    std::lock_guard g(iputs_mu_);
    run_iputs_ = std::move(f);
  }

  [[nodiscard]] Result<uint64_t> flush(alloc::SpaceInfo& si, alloc::FlushState state, uint64_t to_reclaim) override;
  uint64_t delalloc_bytes() const override;

 private:
  FsInfo& fs_;
  std::atomic<FileData*> data_{nullptr};
  std::function<Result<uint64_t>(uint64_t)> run_delayed_;
  std::mutex iputs_mu_;  // guards run_iputs_ (copied out before it runs)
  std::function<Result<size_t>()> run_iputs_;
};

}  // namespace ubtrfs::fs
