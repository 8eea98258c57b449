// Transactions: handles, the commit gate, the commit thread (btrfs transaction.c; ARCHITECTURE.md
// "Transaction handles"; KERNEL.md §4).
//
// A modifying operation starts a TransHandle with the number of items it will touch (btrfs
// `btrfs_start_transaction(root, num_items)`; the reservation system of the next issue will charge
// that number), does its tree operations with handle.tree(), and ends it (destructor or end()).
// Every handle belongs to the running transaction (transid = last committed generation + 1).
//
// Commit (commit.cpp, one ordered pipeline in commit_transaction()): run the pre-commit flushers
// (delalloc) outside the gate; close the gate to new handles and wait for running ones (btrfs
// TRANS_STATE_COMMIT_DOING + wait for num_writers == 0); then, with no handle running: create the
// items of new chunks, run delayed refs and their free-space-tree/block-group consequences until no
// ref is left, update block group items and root items until stable, write every dirty tree block,
// flush, write the superblocks with backup roots, flush, unpin, open the next transaction.
// A failed commit aborts: the filesystem turns read-only (EROFS for every later handle), nothing
// more is written, and the on-disk state stays the previous commit's.
//
// Thread safety: start/join/end from any thread; commit() from any thread that holds no handle
// (it would wait for itself). The gate is fair to the committer: once a commit is waiting, new
// handles wait for it instead of starving it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "io/status.h"
#include "tree/tree_root.h"

namespace ubtrfs::fs {

class FsInfo;
class TransactionManager;

class TransHandle {
 public:
  TransHandle() = default;
  TransHandle(TransHandle&& o) noexcept { *this = std::move(o); }
  TransHandle& operator=(TransHandle&& o) noexcept;
  ~TransHandle() { end(); }

  bool active() const { return mgr_ != nullptr; }
  uint64_t transid() const { return tree_.transid; }
  // The tree-facing part (COW context, allocator, writeback inhibition) for ctree.h calls.
  TreeHandle& tree() { return tree_; }
  unsigned num_items() const { return num_items_; }
  // btrfs_end_transaction: uninhibits writeback of the buffers this handle COWed and lets a waiting
  // commit proceed. Idempotent.
  void end();
  // btrfs_abort_transaction: an operation failed after it had changed trees, so the running
  // transaction holds a half-done change that must never be committed. The filesystem turns
  // read-only (every later start() is EROFS, commit() writes nothing); the disk keeps the last
  // commit. Returns `why` so callers can `return th.abort(err);`. Ends the handle.
  std::unexpected<Error> abort(const Error& why);

 private:
  friend class TransactionManager;
  TransactionManager* mgr_ = nullptr;
  TreeHandle tree_;
  unsigned num_items_ = 0;
};

struct CommitStats {
  uint64_t commits = 0, aborted = 0;
  uint64_t last_transid = 0;
  double last_commit_ms = 0;
  uint64_t blocks_written = 0;
};

class TransactionManager {
 public:
  explicit TransactionManager(FsInfo& fs);
  ~TransactionManager();

  // btrfs_start_transaction. Errors: EROFS (read-only mount or aborted).
  [[nodiscard]] Result<TransHandle> start(unsigned num_items);
  // btrfs_join_transaction: a handle with no item count (internal work: flushers, orphan cleanup).
  [[nodiscard]] Result<TransHandle> join() { return start(0); }

  // Commits the running transaction now (a no-op commit still writes a new generation if anything
  // is dirty; with nothing dirty it returns at once). REQUIRES: the caller holds no handle.
  // Errors: EROFS after an abort, or the failure that caused the abort.
  [[nodiscard]] Status commit();
  // Asks the commit thread for a commit soon (dirty threshold passed) without waiting.
  void request_commit();

  // Work that must run before the commit closes the gate (delalloc flush: it starts handles of its
  // own). Registered once by the fs layer; called by commit() outside the gate.
  void set_pre_commit_flusher(std::function<Status()> f);
  // Deletes the data checksums of [bytenr, bytenr+len) from the csum tree: the commit calls it for
  // every data extent whose last reference went away (btrfs __btrfs_free_extent -> btrfs_del_csums).
  // Registered once by the fs layer, which owns the csum tree format.
  using CsumDeleter = std::function<Status(TreeHandle& h, uint64_t bytenr, uint64_t len)>;
  void set_csum_deleter(CsumDeleter f);

  // The periodic commit thread (`commit=` seconds; also woken by request_commit()).
  void start_commit_thread(std::chrono::seconds interval);
  void stop_commit_thread();

  uint64_t running_transid() const;
  // Aborts the running transaction (see TransHandle::abort); also used by the commit itself.
  void abort(const Error& why);
  bool aborted() const;
  // The reason of the abort, for messages ("" if none).
  std::string abort_reason() const;
  CommitStats stats() const;

 private:
  friend class TransHandle;
  void end_handle(TransHandle& h);
  [[nodiscard]] Status commit_locked();  // commit.cpp: the pipeline; REQUIRES gate closed, no handle
  FsInfo& fs_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t transid_ = 0;          // GUARDED_BY(mu_): the running transaction
  unsigned running_handles_ = 0;  // GUARDED_BY(mu_)
  bool committing_ = false;       // GUARDED_BY(mu_): gate closed
  bool aborted_ = false;          // GUARDED_BY(mu_)
  std::string abort_reason_;      // GUARDED_BY(mu_)
  CommitStats stats_;             // GUARDED_BY(mu_)
  std::mutex commit_mu_;          // serializes whole commits (flusher included)
  std::function<Status()> pre_commit_flusher_;
  CsumDeleter csum_deleter_;
  // The commit pipeline's steps (commit.cpp).
  [[nodiscard]] Status commit_converge(TreeHandle& h);
  [[nodiscard]] Status write_super_and_unpin(uint64_t transid);

  std::thread commit_thread_;
  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool thread_stop_ = false;      // GUARDED_BY(thread_mu_)
  bool commit_requested_ = false; // GUARDED_BY(thread_mu_)
};

}  // namespace ubtrfs::fs
