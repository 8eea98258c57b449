// TransactionManager: handles, the commit gate and the commit thread; see transaction.h. The commit
// pipeline itself is in commit.cpp.
#include "fs/transaction.h"

#include <spdlog/spdlog.h>

#include "fs/fs_info.h"

namespace ubtrfs::fs {

TransHandle& TransHandle::operator=(TransHandle&& o) noexcept {
  if (this != &o) {
    end();
    mgr_ = o.mgr_;
    tree_ = std::move(o.tree_);
    num_items_ = o.num_items_;
    o.mgr_ = nullptr;
    o.tree_.inhibited.clear();
  }
  return *this;
}

void TransHandle::end() {
  if (!mgr_) return;
  TransactionManager* m = mgr_;
  mgr_ = nullptr;
  tree_.end_handle();
  m->end_handle(*this);
}

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

Result<TransHandle> TransactionManager::start(unsigned num_items) {
  if (fs_.read_only()) return fail(EROFS, "{}: read-only filesystem", fs_.path());
  std::unique_lock lk(mu_);
  // Fair to the committer: while a commit is waiting or running, new handles wait for it (btrfs
  // wait_current_trans), so a stream of operations cannot starve it.
  cv_.wait(lk, [&] { return !committing_ || aborted_; });
  if (aborted_) return fail(EROFS, "{}: filesystem is read-only after an aborted transaction: {}", fs_.path(),
                            abort_reason_);
  ++running_handles_;
  TransHandle h;
  h.mgr_ = this;
  h.num_items_ = num_items;
  h.tree_.transid = transid_;
  h.tree_.allocator = &fs_.allocator();
  h.tree_.cow_overwrite = fs_.cow_overwrite();
  h.tree_.wb_inhibit = fs_.wb_inhibit();
  return h;
}

void TransactionManager::end_handle(TransHandle&) {
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

void TransactionManager::set_pre_commit_flusher(std::function<Status()> f) {
  std::lock_guard lk(commit_mu_);
  pre_commit_flusher_ = std::move(f);
}

void TransactionManager::set_csum_deleter(CsumDeleter f) {
  std::lock_guard lk(commit_mu_);
  csum_deleter_ = std::move(f);
}

Status TransactionManager::commit() {
  if (fs_.read_only()) return {};
  std::lock_guard commit_lk(commit_mu_);
  {
    std::lock_guard lk(mu_);
    if (aborted_) return fail(EROFS, "{}: transaction aborted earlier: {}", fs_.path(), abort_reason_);
  }
  // Delalloc first, outside the gate: the flusher starts handles of its own (btrfs
  // btrfs_start_delalloc_flush before the commit critical section).
  if (pre_commit_flusher_) {
    auto st = pre_commit_flusher_();
    if (!st) {
      spdlog::error("{}: flushing data before commit failed: {}", fs_.path(), st.error().message);
      abort(st.error());
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
      stats_.last_commit_ms = ms;
    }
  }
  if (!st) {
    spdlog::error("{}: transaction {} commit failed, filesystem is now read-only: {}", fs_.path(), running_transid(),
                  st.error().message);
    abort(st.error());
  }
  {
    std::lock_guard lk(mu_);
    committing_ = false;
  }
  cv_.notify_all();
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
      commit_requested_ = false;
      lk.unlock();
      if (!aborted()) {
        auto st = commit();
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
