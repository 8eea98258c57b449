// FsSpaceFlusher: the flush states' actions; see space_flusher.h.
#include "fs/space_flusher.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "fs/file_data.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"

namespace ubtrfs::fs {

uint64_t FsSpaceFlusher::delalloc_bytes() const {
  FileData* data = data_.load(std::memory_order_acquire);
  return data ? data->total_delalloc() : 0;
}

Result<uint64_t> FsSpaceFlusher::flush(alloc::SpaceInfo& si, alloc::FlushState state, uint64_t to_reclaim) {
  using alloc::FlushState;
  alloc::SpaceInfos& sp = fs_.spaces();
  FileData* data = data_.load(std::memory_order_acquire);
  if (fs_.transactions().aborted())
    return fail(EROFS, "{}: filesystem is read-only after an aborted transaction", fs_.path());
  const uint64_t type = si.flags() & kBlockGroupSystem     ? kBlockGroupSystem
                        : si.flags() & kBlockGroupMetadata ? kBlockGroupMetadata
                                                            : kBlockGroupData;
  switch (state) {
    case FlushState::kNone:
      return uint64_t{0};
    case FlushState::kRunDelayedIputs: {
      // btrfs_run_delayed_iputs + btrfs_wait_on_delayed_iputs: the evicted inodes' extents and
      // tree blocks are pinned until the next commit, so nothing counts as reclaimed yet.
      std::function<Result<size_t>()> run;
      {
        std::lock_guard g(iputs_mu_);
        run = run_iputs_;
      }
      // A batch that failed keeps its inodes' orphan items (logged by the evictor); that is no
      // reason to fail the tickets, which the commit state may still serve.
      if (run)
        if (auto r = run(); !r) spdlog::warn("{}: RUN_DELAYED_IPUTS: {}", fs_.path(), r.error().message);
      return uint64_t{0};
    }
    case FlushState::kDelayedRefsNr:
    case FlushState::kDelayedRefs: {
      // btrfs_run_delayed_refs: enough funded heads to give back `to_reclaim` of the
      // delayed-refs reserve, or (the full state) every head, the run's own included.
      const uint64_t per_head = sp.delayed_ref_bytes(1);
      if (state == FlushState::kDelayedRefs) return UBTRFS_TRY(fs_.transactions().run_all_delayed_refs()) * per_head;
      const size_t heads = static_cast<size_t>(std::max<uint64_t>(1, to_reclaim / per_head));
      const uint64_t ran = UBTRFS_TRY(fs_.transactions().run_delayed_refs(heads));
      return ran * per_head;
    }
    case FlushState::kDelayedItemsNr:
    case FlushState::kDelayedItems: {
      if (!run_delayed_) return uint64_t{0};
      // calc_reclaim_items_nr: max(1, to_reclaim / insert_size(1)), twice that many nodes.
      const uint64_t items =
          state == FlushState::kDelayedItems ? 0 : 2 * std::max<uint64_t>(1, to_reclaim / sp.insert_size(1));
      return run_delayed_(items);
    }
    case FlushState::kDelalloc:
    case FlushState::kDelallocWait: {
      if (!data) return uint64_t{0};
      // shrink_delalloc: at least an eighth of the delalloc, "wait" twice that.
      uint64_t target = std::max(to_reclaim, data->total_delalloc() / 8);
      if (state == FlushState::kDelallocWait) target *= 2;
      // A flushed inode's reserve first tops up the delayed-refs reserve for the refs the flush
      // queued (release routing), so flushing alone gives the tickets little until those refs
      // run; and the reclaim's ref runs take only funded heads (run_delayed_refs). Running the
      // ones each flush funded right after it turns the reserve into free space, instead of
      // flushing every dirty inode for nothing and escalating to a commit — which with many
      // writers made a commit per ticket, each flushing every inode with a few KiB of data (the
      // kernel's FLUSH_DELAYED_REFS runs refs whether funded or not).
      return data->flush_some(target, [this]() -> Status {
        UBTRFS_TRY(fs_.transactions().run_delayed_refs(0));
        return {};
      });
    }
    case FlushState::kDelallocFull: {
      if (!data) return uint64_t{0};
      UBTRFS_TRY_STATUS(data->flush_all(false));
      return uint64_t{0};
    }
    case FlushState::kAllocChunk:
    case FlushState::kAllocChunkForce: {
      const alloc::SpaceCounters c = si.counters();
      if (c.full) return uint64_t{0};
      if (state == FlushState::kAllocChunk) {
        // should_alloc_chunk: only when real usage (not reservations) passed 80 %.
        const uint64_t used = c.used + c.reserved + c.pinned + c.readonly;
        if (used + (2ull << 20) < c.total / 10 * 8) return uint64_t{0};
      }
      auto st = fs_.allocator().create_chunk(type, 0);
      if (!st) {
        if (st.error().err == ENOSPC) return uint64_t{0};
        return fail(st.error());
      }
      const uint64_t after = si.counters().total;
      return after > c.total ? after - c.total : 0;
    }
    case FlushState::kCommitTrans: {
      UBTRFS_TRY_STATUS(fs_.transactions().commit(CommitCause::kReclaim));
      return uint64_t{0};
    }
  }
  return uint64_t{0};
}

}  // namespace ubtrfs::fs
