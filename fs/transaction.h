// Transactions: handles, the commit gate, the commit thread (btrfs transaction.c; ARCHITECTURE.md
// "Transaction handles"; KERNEL.md §4).
//
// A modifying operation starts a TransHandle with the number of items it will touch (btrfs
// `btrfs_start_transaction(root, num_items)`), does its tree operations with handle.tree(), and ends
// it (destructor or end()). Every handle belongs to the running transaction (transid = last
// committed generation + 1).
//
// Reservations (KERNEL.md §1, §6; alloc/space_infos.h): start(n) reserves insert_size(n) plus
// delayed_ref_bytes(n) of metadata in one call BEFORE it joins the transaction (a reservation may
// wait on a ticket whose flusher commits; a handle must never wait for a commit). The insert part
// goes into the shared trans reserve (the handle's COWs draw from it), the delayed-ref part into the
// handle's own delayed-refs reserve. At end the delayed-ref bytes of the references this handle
// queued move to the filesystem's delayed-refs reserve (btrfs_update_delayed_refs_rsv) and the rest
// is released (excess flows to the delayed-refs reserve while it is short). join() reserves
// nothing; a join may be pointed at another reserve (an inode's delalloc reserve for the flusher).
// FLUSH_ALL_STEAL (unlink, rmdir, rename, truncate down) retries without the delayed-ref part and
// may steal from the global reserve, so those always succeed on a full filesystem.
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

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "alloc/delayed_ref.h"
#include "alloc/space_info.h"
#include "io/status.h"
#include "tree/tree_root.h"

// Like UBTRFS_TRY, for a step after an operation's first tree change through the handle `th`: the
// half-done change must never reach disk, so the transaction is aborted (btrfs_abort_transaction:
// the filesystem turns read-only) before the error propagates. Failures before the first change
// use UBTRFS_TRY / UBTRFS_TRY_STATUS.
#define UBTRFS_TRY_OR_ABORT(th, expr)                                \
  ({                                                                 \
    auto&& ubtrfs_try_a_ = (expr);                                   \
    if (!ubtrfs_try_a_) return (th).abort(ubtrfs_try_a_.error());    \
    std::move(ubtrfs_try_a_).value();                                \
  })
#define UBTRFS_TRY_STATUS_OR_ABORT(th, expr)                         \
  do {                                                               \
    auto&& ubtrfs_try_s_ = (expr);                                   \
    if (!ubtrfs_try_s_) return (th).abort(ubtrfs_try_s_.error());    \
  } while (0)

namespace ubtrfs::fs {

class FsInfo;
class TransactionManager;
struct HandleReservation;  // transaction.cpp: the handle's allocator and reserves (stable address)

class TransHandle {
 public:
  TransHandle();
  TransHandle(TransHandle&& o) noexcept;
  TransHandle& operator=(TransHandle&& o) noexcept;
  ~TransHandle();

  bool active() const { return mgr_ != nullptr; }
  uint64_t transid() const { return tree_.transid; }
  // The tree-facing part (COW context, allocator, writeback inhibition) for ctree.h calls.
  TreeHandle& tree() { return tree_; }
  unsigned num_items() const { return num_items_; }
  // btrfs trans->block_rsv: the reserve this handle's subvolume-tree blocks are charged to (the
  // trans reserve after start(), none after join()). Point it at an inode's delalloc reserve or a
  // temp reserve; `share` is how much of that reserve this handle may use before further use
  // counts as beyond its own reservation.
  void set_block_rsv(alloc::BlockRsv* rsv, uint64_t share);
  alloc::BlockRsv* block_rsv() const;
  // Metadata bytes this handle reserved in the trans reserve.
  uint64_t bytes_reserved() const;
  // Moves `bytes` of this handle's own part of its reserve into `dst` (btrfs_block_rsv_migrate from
  // trans->block_rsv, size updated): what a delayed item takes from the operation that queued it.
  // False (nothing moved) when the handle has no such share left.
  bool migrate_reservation(alloc::BlockRsv& dst, uint64_t bytes);
  // The filesystem this handle belongs to (null for an inactive handle).
  FsInfo* fs() const;
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
  std::unique_ptr<HandleReservation> res_;
};

// Why a commit ran (the "commits by cause" counters).
enum class CommitCause : uint8_t { kPeriodic, kRequested, kFsync, kUnmount, kReclaim, kOther };
inline constexpr int kCommitCauseCount = 6;
const char* commit_cause_name(CommitCause c);

struct CommitStats {
  uint64_t commits = 0, aborted = 0;
  uint64_t last_transid = 0;
  double last_commit_ms = 0;
  uint64_t blocks_written = 0;
  std::array<uint64_t, kCommitCauseCount> by_cause{};
};

class TransactionManager {
 public:
  explicit TransactionManager(FsInfo& fs);
  ~TransactionManager();

  // btrfs_start_transaction: reserves for num_items (see the header comment), then joins.
  // `mode`: FLUSH_ALL (default), FLUSH_ALL_STEAL (btrfs_start_transaction_fallback_global_rsv).
  // REQUIRES: the caller holds no handle. Errors: EROFS (read-only mount or aborted), ENOSPC, EINTR.
  [[nodiscard]] Result<TransHandle> start(unsigned num_items,
                                          alloc::FlushMode mode = alloc::FlushMode::kFlushAll);
  // btrfs_join_transaction: a handle that reserves nothing; its subvolume-tree blocks are charged
  // to `rsv` (null: none, the fallback chain pays).
  [[nodiscard]] Result<TransHandle> join(alloc::BlockRsv* rsv = nullptr);

  // Commits the running transaction now (a no-op commit still writes a new generation if anything
  // is dirty; with nothing dirty it returns at once). REQUIRES: the caller holds no handle.
  // Errors: EROFS after an abort, or the failure that caused the abort.
  [[nodiscard]] Status commit(CommitCause cause = CommitCause::kOther);
  // Asks the commit thread for a commit soon (dirty threshold passed) without waiting.
  void request_commit();
  // TEST ONLY (the crash harness's self-test, tests/crash): while on, every commit of the process
  // skips the device flush between writing the tree blocks and writing the superblock — a
  // deliberately broken ordering the harness must catch. Never set by the daemon or the tools.
  static void set_skip_tree_flush_for_test(bool on);
  // Runs up to `max_heads` (0: all) queued delayed refs now, in a join handle of the running
  // transaction, and releases their part of the delayed-refs reserve (btrfs_run_delayed_refs from
  // the flushers) — never more heads than the delayed-refs reserve holds delayed_ref_bytes(1) for
  // (the rest wait for their funding or the commit). Returns the heads run. REQUIRES: the caller
  // holds no handle. Errors: the tree's (the transaction is aborted).
  [[nodiscard]] Result<uint64_t> run_delayed_refs(size_t max_heads);
  // FLUSH_DELAYED_REFS (btrfs_run_delayed_refs with count 0: every head, and again for the heads
  // the run itself queued): runs every queued head, funded or not, while the delayed-refs reserve
  // holds at least delayed_ref_bytes(1) to pay for the copies, until none is left (at most
  // kMaxRunAllPasses runs). Returns the heads run. REQUIRES and errors: as run_delayed_refs.
  [[nodiscard]] Result<uint64_t> run_all_delayed_refs();
  // Runs that left queued heads for lack of funding (`ubtrfs-inspect stats`:
  // tree_block_reservations.delayed_refs_runs_deferred).
  uint64_t refs_runs_deferred() const { return refs_runs_deferred_.load(std::memory_order_relaxed); }

  // Work that must run before the commit closes the gate (delalloc flush: it starts handles of its
  // own). Registered once by the fs layer; called by commit() outside the gate. `cause` lets the
  // flusher decide whether it may wait for inode locks (unmount) or must skip busy inodes (a commit
  // of the reclaim thread must never wait for a lock a ticket waiter holds).
  void set_pre_commit_flusher(std::function<Status(CommitCause)> f);
  // Work the commit runs with the gate closed, before the delayed refs (delayed inode items), and
  // whether it has anything to do (a commit with nothing dirty otherwise returns at once).
  void set_commit_hook(std::function<Status(TreeHandle&)> run, std::function<bool()> pending);
  // Work for the next commit, run with the gate closed after the delayed items and before the
  // delayed refs (btrfs create_pending_snapshots): `run` once, then `done` with the commit's result
  // when it is on disk or failed (`done` also runs when the commit fails before reaching `run`). A
  // commit with pending work runs even when nothing else is dirty. `run` failing aborts the
  // transaction. Any thread; the caller then commits (or a commit already running takes it).
  struct PendingWork {
    std::function<Status(TreeHandle&)> run;
    std::function<void(const Status&)> done;
    // Only a commit of this transaction or a later one takes it: what the work must see (a
    // snapshot's source data, flushed by the caller) went into that transaction. 0: any commit.
    uint64_t min_transid = 0;
  };
  void add_pending(PendingWork w);
  // Deletes the data checksums of [bytenr, bytenr+len) from the csum tree: the commit calls it for
  // every data extent whose last reference went away (btrfs __btrfs_free_extent -> btrfs_del_csums).
  // Registered once by the fs layer, which owns the csum tree format.
  using CsumDeleter = std::function<Status(TreeHandle& h, uint64_t bytenr, uint64_t len)>;
  void set_csum_deleter(CsumDeleter f);
  // The tree log (fs/tree_log.h), which lives only until the commit that ends its transaction:
  // `active` says a log exists (the commit then runs even with nothing else dirty, so that its
  // superblock, log_root 0, supersedes the fsync's); `forget` runs with the gate closed before the
  // write-out (the log's buffers are never written by a commit); `release` runs once the new
  // superblock is on disk (the log's blocks become free space). Registered once by the fs layer.
  struct TreeLogHooks {
    std::function<bool()> active;
    std::function<void()> forget;
    std::function<void(uint64_t committed_transid)> release;
  };
  void set_tree_log_hooks(TreeLogHooks hooks) { log_hooks_ = std::move(hooks); }
  // Called by the commit, gate still closed, with the ranges its unpin just returned to free space
  // (after the superblock that stopped referencing them is on disk): -o discard queues them
  // (fs/discard.h, btrfs_discard_queue_work from btrfs_finish_extent_commit). Must not block.
  using UnpinHook = std::function<void(std::vector<std::pair<uint64_t, uint64_t>>&& ranges)>;
  void set_unpin_hook(UnpinHook f);

  // The periodic commit thread (`commit=` seconds; also woken by request_commit()).
  void start_commit_thread(std::chrono::seconds interval);
  void stop_commit_thread();

  uint64_t running_transid() const;  // the transaction handles join now
  // True while a commit has closed the gate and waits for the running handles (or runs): the
  // kernel's scrub_pause_req. A long holder of a handle (scrub, fs/scrub.h) ends it on seeing it.
  bool commit_waiting() const;
  // Aborts the running transaction (see TransHandle::abort); also used by the commit itself.
  void abort(const Error& why);
  bool aborted() const;
  // The reason of the abort, for messages ("" if none).
  std::string abort_reason() const;
  CommitStats stats() const;
  FsInfo& fs() { return fs_; }

 private:
  friend class TransHandle;
  void end_handle(TransHandle& h);
  [[nodiscard]] Status commit_locked();  // commit.cpp: the pipeline; REQUIRES gate closed, no handle
  // run_delayed_refs and one pass of run_all_delayed_refs (commit.cpp).
  [[nodiscard]] Result<uint64_t> run_refs_now(size_t max_heads, bool unfunded_too);
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
  std::function<Status(CommitCause)> pre_commit_flusher_;
  std::function<Status(TreeHandle&)> commit_hook_;
  std::vector<PendingWork> pending_;  // GUARDED_BY(mu_): for the next commit (add_pending)
  std::function<bool()> commit_hook_pending_;
  CsumDeleter csum_deleter_;
  TreeLogHooks log_hooks_;
  UnpinHook unpin_hook_;  // set before the commit thread starts, cleared after it stopped
  // Reservations after a commit: the delayed-refs and chunk reserves are released, the global one
  // resized (REQUIRES: gate closed).
  void release_commit_reservations();
  // The commit pipeline's steps (commit.cpp).
  [[nodiscard]] Status commit_converge(TreeHandle& h);
  // Runs `heads` into the extent tree with their space consequences; groups whose usage changed go
  // to `dirty_groups`.
  [[nodiscard]] Status run_refs(TreeHandle& h, std::vector<alloc::DelayedRefHead>& heads,
                                std::set<uint64_t>& dirty_groups);
  std::mutex refs_run_mu_;                 // one delayed-ref runner at a time
  std::atomic<uint64_t> refs_runs_deferred_{0};
  std::set<uint64_t> refs_dirty_groups_;   // GUARDED_BY(refs_run_mu_): for the next commit
  [[nodiscard]] Status write_super_and_unpin(uint64_t transid);

  std::thread commit_thread_;
  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool thread_stop_ = false;      // GUARDED_BY(thread_mu_)
  bool commit_requested_ = false; // GUARDED_BY(thread_mu_)
};

}  // namespace ubtrfs::fs
