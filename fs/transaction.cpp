// TransactionManager: handles, the commit gate and the commit thread; see transaction.h. The commit
// pipeline itself is in commit.cpp.
#include "fs/transaction.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "alloc/block_rsv.h"
#include "alloc/extent_allocator.h"
#include "alloc/space_infos.h"
#include "fs/fs_info.h"

namespace ubtrfs::fs {

// What a handle owns for its reservations, at a stable address (TreeHandle::allocator points here
// while the TransHandle itself may move).
struct HandleReservation {
  HandleReservation(alloc::ExtentAllocator& ea, alloc::SpaceInfos& sp)
      : allocator(ea, sp, sp.nodesize()), delayed_rsv(alloc::RsvType::kDelayedRefs, &sp.metadata()) {}
  alloc::HandleAllocator allocator;
  alloc::BlockRsv delayed_rsv;   // btrfs trans->delayed_rsv: this handle's delayed-ref bytes
  uint64_t bytes_reserved = 0;   // btrfs trans->bytes_reserved: its part of the trans reserve
};

const char* commit_cause_name(CommitCause c) {
  switch (c) {
    case CommitCause::kPeriodic: return "periodic";
    case CommitCause::kRequested: return "requested";
    case CommitCause::kFsync: return "fsync";
    case CommitCause::kUnmount: return "unmount";
    case CommitCause::kReclaim: return "reclaim";
    case CommitCause::kOther: return "other";
  }
  return "?";
}

TransHandle::TransHandle() = default;
TransHandle::~TransHandle() { end(); }
TransHandle::TransHandle(TransHandle&& o) noexcept { *this = std::move(o); }

TransHandle& TransHandle::operator=(TransHandle&& o) noexcept {
  if (this != &o) {
    end();
    mgr_ = o.mgr_;
    tree_ = std::move(o.tree_);
    num_items_ = o.num_items_;
    res_ = std::move(o.res_);
    o.mgr_ = nullptr;
  }
  return *this;
}

void TransHandle::end() {
  if (!mgr_) return;
  TransactionManager* m = mgr_;
  mgr_ = nullptr;
  tree_.end_handle();
  m->end_handle(*this);
  // btrfs_btree_balance_dirty after end_transaction: over the cache budget with dirty blocks, wait
  // a little for background writeback (our inhibitors are gone, so it can write what we dirtied).
  m->fs().cache().balance_dirty(std::chrono::milliseconds(50));
}

void TransHandle::set_block_rsv(alloc::BlockRsv* rsv, uint64_t share) {
  if (!res_) return;
  res_->allocator.block_rsv = rsv;
  res_->allocator.handle_share = share;
}

alloc::BlockRsv* TransHandle::block_rsv() const { return res_ ? res_->allocator.block_rsv : nullptr; }

bool TransHandle::migrate_reservation(alloc::BlockRsv& dst, uint64_t bytes) {
  if (!res_ || !res_->allocator.block_rsv || res_->allocator.handle_share < bytes) return false;
  if (!alloc::BlockRsv::migrate(*res_->allocator.block_rsv, dst, bytes, true)) return false;
  res_->allocator.handle_share -= bytes;
  return true;
}

FsInfo* TransHandle::fs() const { return mgr_ ? &mgr_->fs() : nullptr; }

uint64_t TransHandle::bytes_reserved() const { return res_ ? res_->bytes_reserved : 0; }

std::unexpected<Error> TransHandle::abort(const Error& why) {
  TransactionManager* m = mgr_;
  if (m) {
    spdlog::error("transaction {} aborted: {}", tree_.transid, why.message);
    m->abort(why);
  }
  end();
  return std::unexpected<Error>(why);
}

TransactionManager::TransactionManager(FsInfo& fs) : fs_(fs) {
  transid_ = fs.super().generation.get() + 1;
}

TransactionManager::~TransactionManager() { stop_commit_thread(); }

Result<TransHandle> TransactionManager::start(unsigned num_items, alloc::FlushMode mode) {
  UBTRFS_TRY_STATUS(fs_.check_shutdown("start transaction"));  // fs/shutdown.cpp
  if (fs_.read_only()) return fail(EROFS, "{}: read-only filesystem", fs_.path());
  {
    std::lock_guard lk(mu_);
    if (aborted_) return fail(EROFS, "{}: filesystem is read-only after an aborted transaction: {}", fs_.path(),
                              abort_reason_);
  }
  alloc::SpaceInfos& sp = fs_.spaces();
  // btrfs_reserve_trans_metadata: the insert part and the delayed-ref part in one reservation (one
  // flushing cycle per start), before joining: waiting on a ticket may need a commit.
  uint64_t bytes = 0, dref = 0;
  if (num_items > 0) {
    bytes = sp.insert_size(num_items);
    dref = sp.delayed_ref_bytes(num_items);
    auto st = sp.metadata().reserve_bytes(bytes + dref, mode);
    // btrfs_reserve_trans_metadata: the stealing modes retry without the delayed-ref part.
    if (!st && st.error().err == ENOSPC &&
        (mode == alloc::FlushMode::kFlushAllSteal || mode == alloc::FlushMode::kFlushEvict)) {
      dref = 0;
      st = sp.metadata().reserve_bytes(bytes, mode);
    }
    if (!st) return fail(st.error().err, "{}: metadata reservation for {} items: {}", fs_.path(), num_items,
                         st.error().message);
  }
  std::unique_lock lk(mu_);
  // Fair to the committer: while a commit is waiting or running, new handles wait for it (btrfs
  // wait_current_trans), so a stream of operations cannot starve it.
  cv_.wait(lk, [&] { return !committing_ || aborted_; });
  if (aborted_) {
    lk.unlock();
    sp.metadata().release_bytes(bytes + dref);
    // A shutdown while this handle waited aborts the commit it waited for: EIO, not EROFS.
    UBTRFS_TRY_STATUS(fs_.check_shutdown("start transaction"));
    return fail(EROFS, "{}: filesystem is read-only after an aborted transaction: {}", fs_.path(), abort_reason_);
  }
  ++running_handles_;
  const uint64_t transid = transid_;
  lk.unlock();
  TransHandle h;
  h.mgr_ = this;
  h.num_items_ = num_items;
  h.res_ = std::make_unique<HandleReservation>(fs_.allocator(), sp);
  h.res_->bytes_reserved = bytes;
  if (bytes) sp.trans_rsv().add_bytes(bytes, true);
  if (dref) h.res_->delayed_rsv.add_bytes(dref, true);
  h.res_->allocator.block_rsv = num_items > 0 ? &sp.trans_rsv() : nullptr;
  h.res_->allocator.handle_share = bytes;
  h.res_->allocator.delayed_rsv = &h.res_->delayed_rsv;
  h.tree_.transid = transid;
  h.tree_.allocator = &h.res_->allocator;
  h.tree_.cow_overwrite = fs_.cow_overwrite();
  h.tree_.wb_inhibit = fs_.wb_inhibit();
  h.tree_.wb_hold_recopied = fs_.wb_hold_recopied();
  return h;
}

Result<TransHandle> TransactionManager::join(alloc::BlockRsv* rsv) {
  auto h = UBTRFS_TRY(start(0));
  h.set_block_rsv(rsv, rsv ? rsv->reserved() : 0);
  return h;
}

void TransactionManager::end_handle(TransHandle& h) {
  if (h.res_) {
    // btrfs_update_delayed_refs_rsv + btrfs_trans_release_metadata.
    alloc::SpaceInfos& sp = fs_.spaces();
    HandleReservation& r = *h.res_;
    // Tree-block references were accounted as they were queued (HandleAllocator); data
    // references (file extents) are counted on the handle and accounted here.
    r.allocator.account_ref_updates(h.tree_);
    if (r.bytes_reserved) sp.release_block_rsv(sp.trans_rsv(), r.bytes_reserved);
    r.bytes_reserved = 0;
    sp.release_block_rsv(r.delayed_rsv, UINT64_MAX);
  }
  {
    std::lock_guard lk(mu_);
    --running_handles_;
    if (running_handles_ == 0) cv_.notify_all();
  }
  // Dirty metadata past half the cache budget: ask for a commit (btrfs commits when dirty
  // metadata grows, and the cache cannot evict dirty buffers until they are written).
  const uint64_t dirty_bytes = static_cast<uint64_t>(fs_.cache().nr_dirty()) * fs_.params().nodesize;
  if (dirty_bytes > fs_.cache().budget() / 2) request_commit();
}

void TransactionManager::set_pre_commit_flusher(std::function<Status(CommitCause)> f) {
  std::lock_guard lk(commit_mu_);
  pre_commit_flusher_ = std::move(f);
}

void TransactionManager::set_commit_hook(std::function<Status(TreeHandle&)> run, std::function<bool()> pending) {
  std::lock_guard lk(commit_mu_);
  commit_hook_ = std::move(run);
  commit_hook_pending_ = std::move(pending);
}

void TransactionManager::set_csum_deleter(CsumDeleter f) {
  std::lock_guard lk(commit_mu_);
  csum_deleter_ = std::move(f);
}

Status TransactionManager::commit(CommitCause cause) {
  UBTRFS_TRY_STATUS(fs_.check_shutdown("commit"));  // nothing is written after a shutdown
  if (fs_.read_only()) return {};
  std::lock_guard commit_lk(commit_mu_);
  UBTRFS_TRY_STATUS(fs_.check_shutdown("commit"));  // again: it may have come while this waited
  {
    std::lock_guard lk(mu_);
    if (aborted_) return fail(EROFS, "{}: transaction aborted earlier: {}", fs_.path(), abort_reason_);
  }
  // Delalloc first, outside the gate: the flusher starts handles of its own (btrfs
  // btrfs_start_delalloc_flush before the commit critical section).
  if (pre_commit_flusher_) {
    auto st = pre_commit_flusher_(cause);
    if (!st) {
      if (!fs_.is_shutdown())  // else cut short by the shutdown (fs/shutdown.cpp), which said so once
        spdlog::error("{}: flushing data before commit failed: {}", fs_.path(), st.error().message);
      abort(st.error());
      UBTRFS_TRY_STATUS(fs_.check_shutdown("commit"));  // EIO, whatever the flusher ran into
      return fail(st.error());
    }
  }
  {
    std::unique_lock lk(mu_);
    committing_ = true;
    cv_.wait(lk, [&] { return running_handles_ == 0; });
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto st = commit_locked();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  {
    std::lock_guard lk(mu_);
    if (st) {
      stats_.commits++;
      stats_.by_cause[static_cast<int>(cause)]++;
      stats_.last_commit_ms = ms;
    }
  }
  if (!st) {
    // A commit the shutdown gate cut short (fs/shutdown.cpp) is the shutdown working, not a failure.
    if (fs_.is_shutdown())
      spdlog::info("{}: transaction {} not committed: the filesystem was shut down during its commit", fs_.path(),
                   running_transid());
    else
      spdlog::error("{}: transaction {} commit failed, filesystem is now read-only: {}", fs_.path(), running_transid(),
                    st.error().message);
    abort(st.error());
  }
  {
    std::lock_guard lk(mu_);
    committing_ = false;
  }
  cv_.notify_all();
  if (!st) UBTRFS_TRY_STATUS(fs_.check_shutdown("commit"));
  return st;
}

void TransactionManager::abort(const Error& why) {
  std::lock_guard lk(mu_);
  if (!aborted_) {
    aborted_ = true;
    abort_reason_ = why.message;
    stats_.aborted++;
  }
  cv_.notify_all();
}

void TransactionManager::request_commit() {
  {
    std::lock_guard lk(thread_mu_);
    commit_requested_ = true;
  }
  thread_cv_.notify_all();
}

void TransactionManager::start_commit_thread(std::chrono::seconds interval) {
  if (fs_.read_only() || commit_thread_.joinable()) return;
  {
    std::lock_guard lk(thread_mu_);
    thread_stop_ = false;
  }
  commit_thread_ = std::thread([this, interval] {
    std::unique_lock lk(thread_mu_);
    while (!thread_stop_) {
      thread_cv_.wait_for(lk, interval, [&] { return thread_stop_ || commit_requested_; });
      if (thread_stop_) break;
      const CommitCause cause = commit_requested_ ? CommitCause::kRequested : CommitCause::kPeriodic;
      commit_requested_ = false;
      lk.unlock();
      if (!aborted() && !fs_.is_shutdown()) {
        auto st = commit(cause);
        if (!st) spdlog::error("{}: periodic commit: {}", fs_.path(), st.error().message);
      }
      lk.lock();
    }
  });
}

void TransactionManager::stop_commit_thread() {
  {
    std::lock_guard lk(thread_mu_);
    thread_stop_ = true;
  }
  thread_cv_.notify_all();
  if (commit_thread_.joinable()) commit_thread_.join();
}

bool TransactionManager::commit_waiting() const {
  std::lock_guard lk(mu_);
  return committing_;
}

uint64_t TransactionManager::running_transid() const {
  std::lock_guard lk(mu_);
  return transid_;
}

bool TransactionManager::aborted() const {
  std::lock_guard lk(mu_);
  return aborted_;
}

std::string TransactionManager::abort_reason() const {
  std::lock_guard lk(mu_);
  return abort_reason_;
}

CommitStats TransactionManager::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

}  // namespace ubtrfs::fs
