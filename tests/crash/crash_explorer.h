// Crash states of a recording and their judgement (issue 9, acceptance 1).
//
// Crash states. The write log is cut into epochs by the flushes: epoch f holds the writes issued
// after flush f completed (f = 0: from the start) and before flush f + 1 did. A power cut during
// epoch f leaves every earlier epoch whole and any subset of epoch f's writes, some possibly torn.
// For every f the explorer judges: the image exactly at the flush point; in-order prefixes of the
// epoch (evenly spaced, at most max_prefixes); random subsets; the second half alone and the last
// write alone (reordering: what a missing barrier exposes); prefixes followed by one write torn at
// 512-byte or 4 KiB granularity (random sectors kept; the 4 KiB superblock is taken as atomic, as
// btrfs assumes). Images are layers of sectors over the base (sector_overlay.h): the epochs before
// f in one map advanced epoch by epoch, the chosen subset of epoch f in a small map on top.
//
// What must hold (a crash during epoch f may be as late as just before flush f + 1 completed):
// every durability point that had returned with at most f flushes completed is required; the model
// snapshots allowed are those from the latest required point up to the number of ops that had
// started by then. Judgement of one image, in order: ubtrfs mounts it read-only (in process, it must
// write nothing), the state read back passes the model (per fsynced object; and, with
// atomic_commits, the whole image equals one allowed snapshot), fsck.ubtrfs's passes (in process)
// report nothing, a read-write mount and unmount succeed; then, within the oracle budget, the
// external oracles (external_oracles.h). An image with a log tree (fsyncs served by the log, the
// power cut before the next commit) is model-checked on the read-write mount's state, after log
// replay, per fsynced object only (a log holds the fsynced inodes, not a snapshot of everything).
// A verdict is cached by (image hash, f) within one recording: equal images under equal
// requirements get equal verdicts; both counts are printed.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/crash/external_oracles.h"
#include "tests/crash/recorder.h"
#include "tests/crash/sector_overlay.h"

namespace ubtrfs::crash {

struct ExploreConfig {
  size_t max_prefixes = 8;    // in-order prefixes per epoch
  size_t random_subsets = 3;  // per epoch with at least 2 writes
  size_t torn = 2;            // torn-write states per epoch
  bool atomic_commits = true; // every durability point is a full commit (ubtrfs today)
  bool verdict_cache = true;
  bool oracles = false;
  uint64_t oracle_budget = 0;  // distinct images sent to the external oracles (0: unlimited)
  std::string scratch_dir = "/dev/shm";
  std::string save_failures_dir;  // when set, failing images are written there
  uint64_t seed = 1;
};

struct ExploreStats {
  uint64_t recordings = 0;
  uint64_t crash_points = 0;      // every state judged (cached verdicts included)
  uint64_t full_judgements = 0;   // states judged from scratch
  std::set<uint64_t> image_hashes;
  uint64_t oracle_runs = 0;       // images sent to the external oracles
  uint64_t failing_points = 0;
  uint64_t tolerated_mirror_mismatch = 0;  // full judgements where only superblock copies differed
  uint64_t log_images = 0;                 // full judgements of an image with a tree log (replayed)
  std::map<std::string, uint64_t> failures_by_kind;
  uint64_t background_writes = 0;
  uint64_t log_writes = 0, log_flushes = 0;
};

struct CrashFailure {
  std::string workload;  // what reproduces the recording (seed / sequence / config)
  std::string point;     // which crash state
  std::string kind;
  std::string detail;
};

class CrashExplorer {
 public:
  CrashExplorer(const BaseImage& base, ExploreConfig cfg, OracleAvailability oracles)
      : base_(base), cfg_(std::move(cfg)), avail_(std::move(oracles)), rng_(cfg_.seed) {}

  // Judges every crash state of `rec`; failures are returned (and counted in stats()).
  // sabotage_model_for_test: the model forgets the first write op's bytes (one flipped byte in every
  // later snapshot), so the model check must fail — the self-test of the model's side.
  std::vector<CrashFailure> explore(const Recording& rec, const std::string& workload);
  const ExploreStats& stats() const { return stats_; }

 private:
  struct Verdict {
    std::vector<std::pair<std::string, std::string>> problems;  // (kind, detail)
  };
  // epoch_has_super: the crash state's epoch writes superblocks, so copies of two generations are
  // a legitimate power-cut state (btrfs and the kernel read the primary; the next commit rewrites
  // every copy): fsck's "super-mirror ... differs" is tolerated there and counted apart.
  Verdict judge(const Recording& rec, size_t flushes_done, const SectorMap& persisted, const SectorMap& epoch,
                bool epoch_has_super);
  // `whole`: the image must also equal one allowed snapshot (a committed state with atomic_commits).
  void model_check(const Recording& rec, size_t flushes_done, const FsState& img, bool whole, Verdict& v) const;
  // A log image's directory fsync promise, entry by entry (see model_check).
  void dir_entries_check(const Recording& rec, const DurabilityPoint& d, size_t hi, const FsState& img,
                         Verdict& v) const;
  void write_image(const std::string& path, const SectorMap& persisted, const SectorMap& epoch) const;

  const BaseImage& base_;
  ExploreConfig cfg_;
  OracleAvailability avail_;
  std::mt19937_64 rng_;
  ExploreStats stats_;
  std::map<uint64_t, std::vector<std::pair<std::string, std::string>>> oracle_cache_;  // by image hash
  std::vector<std::pair<uint64_t, uint64_t>> nonzero_base_;  // (offset, length) of the base image
};

}  // namespace ubtrfs::crash
