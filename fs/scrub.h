// Scrub: read every committed tree block and data extent, verify it, repair a bad copy from a
// good one (btrfs scrub.c; BTRFS_IOC_SCRUB / SCRUB_PROGRESS / SCRUB_CANCEL).
//
// What is checked: every EXTENT_ITEM / METADATA_ITEM of the committed extent tree, in logical
// order (so every block group and chunk is walked), each copy separately (DUP: both stripes,
// mapped logical -> physical by the chunk map):
// - a tree block: its checksum, then the header and structure (check_tree_block: bytenr, fsid,
//   level, the generation recorded in the extent item — the kernel's scrub compares the header
//   generation with the extent item's too — and the tree checker);
// - a data extent: every sector's checksum from the committed csum tree (sectors without one —
//   nodatasum, prealloc — are counted as no_csum).
// Repair: a bad copy is rewritten in place from a copy that verified, then read back and verified
// again; never from a copy that is bad itself, never on a read-only mount or a readonly scrub. A
// block or sector with no good copy is uncorrectable; for data the file(s) are named through the
// back-references (EXTENT_DATA_REF: root, inode, offset; SHARED_DATA_REF: the parent leaf's file
// extent items) and the inode refs up to the subvolume's root directory.
// Counters (ScrubProgress, the kernel's struct btrfs_scrub_progress) with the kernel's units, as it
// scrubs every stripe of a DUP chunk on its own: extents and bytes scrubbed count every copy;
// errors count sectors of a copy — a bad copy of a tree block (checksum, header or tree checker)
// adds nodesize/sectorsize verify errors, a bad data sector one csum error; corrected counts the
// sectors of copies rewritten and verified; uncorrectable the sectors of bad copies without a good
// twin (or whose rewrite failed). A readonly scrub counts neither for a bad copy with a good twin
// (nothing is rewritten). tests/oracle/scrub_test.sh compares the figures with the kernel's.
//
// Consistency with a running filesystem (fs/scrub.cpp says it in full): scrub works in batches;
// each batch holds a joined transaction handle, so no commit can complete — and so nothing the
// last commit references or pinned can be freed and reused — while it reads the committed trees
// (fs/committed_tree.h) and the extents they list. Between batches commits proceed.
// Priority: a background thread at nice 19 and the lowest best-effort I/O priority, yielding
// between batches and ending a batch early when a commit waits for it (the kernel's scrub pause);
// optionally rate limited.
// Lifecycle: one scrub at a time per filesystem; cancel() stops it at the next extent; the
// Filesystem cancels it at unmount. The status of the last run is kept in memory and, when a
// status file is set, written there at the end of every run and read back when set (so the next
// mount reports the last run: the role of btrfs-progs' /var/lib/btrfs/scrub.status.FSID).
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "io/status.h"

namespace ubtrfs::fs {

class FsInfo;

// The kernel's struct btrfs_scrub_progress, field for field (same order).
struct ScrubProgress {
  uint64_t data_extents_scrubbed = 0;
  uint64_t tree_extents_scrubbed = 0;
  uint64_t data_bytes_scrubbed = 0;
  uint64_t tree_bytes_scrubbed = 0;
  uint64_t read_errors = 0;
  uint64_t csum_errors = 0;
  uint64_t verify_errors = 0;
  uint64_t no_csum = 0;
  uint64_t csum_discards = 0;
  uint64_t super_errors = 0;
  uint64_t malloc_errors = 0;
  uint64_t uncorrectable_errors = 0;
  uint64_t corrected_errors = 0;
  uint64_t last_physical = 0;
  uint64_t unverified_errors = 0;
};

// One bad copy found (the first kMaxScrubErrorRecords of a run are kept).
struct ScrubErrorRecord {
  uint64_t logical = 0;
  uint64_t physical = 0;
  int mirror = 0;           // 1-based copy number
  bool metadata = false;
  bool corrected = false;
  std::string reason;       // the verifier's message
  // Data only: "root 5 inode 257 offset 4096 path /dir/file" per reference found.
  std::vector<std::string> files;
};
inline constexpr size_t kMaxScrubErrorRecords = 64;

enum class ScrubState : uint8_t { kNever, kRunning, kFinished, kCanceled, kAborted };
const char* scrub_state_name(ScrubState s);

struct ScrubStatus {
  ScrubState state = ScrubState::kNever;
  bool readonly = false;
  bool from_previous_mount = false;  // read from the status file, not run by this mount
  int64_t started = 0, ended = 0;    // unix seconds (ended 0 while running)
  ScrubProgress progress;
  std::vector<ScrubErrorRecord> errors;
  std::string failure;               // why an aborted run stopped
  uint64_t rate_limit = 0;           // Scrub::rate_limit() when the status was taken
};
std::string scrub_status_json(const ScrubStatus& s);
[[nodiscard]] Result<ScrubStatus> scrub_status_from_json(std::string_view text);

struct ScrubOptions {
  bool readonly = false;          // BTRFS_SCRUB_READONLY: report, never repair
  bool low_priority = true;       // nice 19 and I/O priority best-effort 7 for the scrub thread
  uint64_t rate_limit = 0;        // bytes per second read (all copies), 0 = Scrub::rate_limit()
  // TEST ONLY: called between batches (no handle held) with the progress so far.
  std::function<void(const ScrubProgress&)> batch_hook;
  // TEST ONLY: a smaller batch, so that tests see many batches on a small image.
  uint64_t batch_bytes = 0;
  // TEST ONLY: batches without the transaction handle, to show that the handle is what keeps a
  // scrub concurrent with writes free of false errors (tests/fs/scrub_test.cpp). Never set by the
  // daemon.
  bool unguarded_for_test = false;
  // TEST ONLY: called in every batch after its extents were listed from the committed trees and
  // before they are read (the handle, if any, held).
  std::function<void()> mid_batch_hook;
};

class Scrub {
 public:
  explicit Scrub(FsInfo& fs);
  ~Scrub();  // stop(): cancels a running scrub and waits for it
  Scrub(const Scrub&) = delete;
  Scrub& operator=(const Scrub&) = delete;

  // Starts a scrub in its background thread. On a read-only mount the scrub is readonly.
  // Errors: EINPROGRESS (one is running), ESHUTDOWN after stop().
  [[nodiscard]] Status start(const ScrubOptions& opts);
  // Blocks until no scrub runs; returns the status of the last run.
  ScrubStatus wait();
  // Cancels the running scrub and waits until it stopped (the kernel's btrfs_scrub_cancel).
  // Errors: ENOTCONN when none runs.
  [[nodiscard]] Status cancel();
  // The last (or running) scrub's status, progress as of now.
  ScrubStatus status() const;
  bool running() const;
  // Unmount: cancels a running scrub, waits for it, refuses later starts. Idempotent.
  void stop();
  // The filesystem's scrub throughput limit in bytes per second (0: unlimited), for every run that
  // sets none itself; a change applies to a running scrub at once (the kernel's per-device
  // scrub_speed_max in sysfs, `btrfs scrub limit`).
  void set_rate_limit(uint64_t bytes_per_second) { limit_.store(bytes_per_second, std::memory_order_relaxed); }
  uint64_t rate_limit() const { return limit_.load(std::memory_order_relaxed); }
  // Where the status of every finished run is written (empty: nowhere). Reads the file now: its
  // run becomes status() (from_previous_mount) until this mount runs one.
  void set_status_file(std::string path);

 private:
  void run(ScrubOptions opts);
  void save_status_locked();  // REQUIRES: mu_ held

  FsInfo& fs_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  ScrubStatus status_;             // GUARDED_BY(mu_); progress updated by the thread
  std::atomic<bool> cancel_{false};
  std::atomic<uint64_t> limit_{0};
  bool stopped_ = false;           // GUARDED_BY(mu_)
  std::string status_file_;        // GUARDED_BY(mu_)
  std::thread thread_;             // joined by the next start() or stop()
  std::mutex thread_mu_;           // serializes start/stop's joins
};

}  // namespace ubtrfs::fs
