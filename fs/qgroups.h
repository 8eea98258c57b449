// Quota groups (qgroups) on a read-write mount: what ubtrfs owes a filesystem on which
// `btrfs quota enable` was run.
//
// ubtrfs does not account qgroups: the kernel's accounting (btrfs_qgroup_account_extents) needs,
// for every extent a transaction changes, the set of subvolumes that referenced it before and after
// (a backref walk through shared tree blocks), which nothing here computes. Writing without it
// leaves counters that disagree with the extents — `btrfs check` reports "Counts for qgroup id ...
// are different" and fails — and a status generation the kernel calls a mismatch. So the
// accounting is handed to the kernel, in the state the kernel itself leaves when it starts a
// rescan (btrfs_qgroup_rescan: qgroup_rescan_zero_tracking, then the RESCAN flag):
//  - the first commit of the mount zeroes every QGROUP_INFO (generation = that transaction) and
//    sets the status item to ON | RESCAN | INCONSISTENT with rescan progress 0. The kernel's
//    btrfs_read_qgroup_config sees RESCAN and resumes the rescan at its next read-write mount
//    (btrfs_qgroup_rescan_resume), which recounts everything from zero and clears INCONSISTENT;
//    `btrfs check` skips the comparison while a rescan is pending.
//  - every commit stamps the status item with its generation, as btrfs_run_qgroups does, so the
//    kernel finds no generation mismatch.
//  - a new subvolume or snapshot gets its 0/<id> QGROUP_INFO and QGROUP_LIMIT items, zeroed
//    (add_qgroup_item), so that the rescan counts it and `btrfs qgroup show` lists it.
// Limits are not enforced on a ubtrfs mount (no EDQUOT); the mount says so once.
// Not handled: simple quotas (INCOMPAT_SIMPLE_QUOTA is refused at open), a status item of another
// version (the kernel disables quotas then; left as it is).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "io/status.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

struct RootRecord;

class Qgroups {
 public:
  // The quota tree's state, read at open. Null when there is no quota tree, or when quotas are off
  // or of another version (nothing to maintain). Errors: EUCLEAN (a status item of a bad size), EIO.
  [[nodiscard]] static Result<std::unique_ptr<Qgroups>> load(RootRecord& quota_root, const std::string& path);

  // In the commit, with its handle (no other handle runs): the first time, zero every QGROUP_INFO
  // and queue the rescan; every time, stamp the status item with `h.transid`.
  [[nodiscard]] Status stamp_commit(TreeHandle& h);
  // The zeroed 0/<subvol> QGROUP_INFO and QGROUP_LIMIT of a subvolume created under `h` (an
  // existing pair is left as it is, as the kernel's add_qgroup_item tolerates EEXIST).
  [[nodiscard]] Status add_subvolume(TreeHandle& h, uint64_t subvol);
  // Whether a commit of this mount has handed the counters to a rescan yet.
  bool rescan_queued() const { return rescan_queued_.load(std::memory_order_acquire); }

 private:
  Qgroups(RootRecord& root, std::string path) : root_(root), path_(std::move(path)) {}
  [[nodiscard]] Status zero_counters(TreeHandle& h);

  RootRecord& root_;
  const std::string path_;
  std::atomic<bool> rescan_queued_{false};  // written only by the commit
};

}  // namespace ubtrfs::fs
