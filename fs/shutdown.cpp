// Emergency shutdown: FsInfo::force_shutdown and Filesystem::shutdown (the kernel's
// btrfs_force_shutdown / BTRFS_FS_STATE_EMERGENCY_SHUTDOWN and xfs_do_force_shutdown, reached by
// FS_IOC_GOINGDOWN = XFS_IOC_GOINGDOWN = BTRFS_IOC_SHUTDOWN, _IOR('X', 125, __u32)).
//
// What a shutdown is: a power cut the filesystem survives. From the moment force_shutdown()
// returns, nothing more reaches the image — not the commit thread, not the unmount commit, not
// background writeback, not delalloc or data writeback, not a log tree — because the one gate every
// write and flush passes (io/shutdown_gate.h, in front of the device FsInfo opened) is shut, and
// shutting it waits for the writes already in flight. Above the gate, every operation the kernel
// refuses after a shutdown (reads included) fails with EIO at its first check (check_shutdown),
// the transaction manager hands out no handle and runs no commit (EIO), and unmount skips its
// commit; statfs and getattr still answer, so the mount can be inspected and unmounted.
// An operation in flight when the gate shuts finishes or fails (its writes get EIO; a commit that
// fails that way aborts, and the image keeps the previous commit): the image holds the last
// completed commit plus whatever a completed fsync made durable (a full commit today; after the log
// tree, the log the next mount replays) and nothing half-done, since every btrfs update becomes
// visible only through a superblock write, which either happened before the cut or did not.
//
// Modes (the ioctl's flags, XFS_FSOP_GOING_FLAGS_*): kSyncFirst (DEFAULT, 0) commits everything first,
// then shuts down; kFlushLog (LOGFLUSH, 1) and kNoFlush (NOLOGFLUSH, 2) shut down at once — for
// ubtrfs "flushing the log" adds nothing, because an fsync returns only once its data is on disk.
// Through FUSE the daemon never sees the flags (fuse_ops/ioctl.cpp): it uses kNoFlush.
#include <spdlog/spdlog.h>

#include "fs/filesystem.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"

namespace ubtrfs::fs {

bool FsInfo::force_shutdown(const std::string& who) {
  if (shutdown_.exchange(true, std::memory_order_acq_rel)) return false;
  // The gate first: it is what makes "nothing more is written" hold, whatever runs right now.
  if (gate_) gate_->shut_down();
  spdlog::warn("{}: filesystem shut down by {}: no further writes reach the device; operations fail with EIO "
               "until it is unmounted, and the next mount sees the last commit and what fsync made durable",
               path_, who);
  // Background writeback has nothing left to do but fail; a pass already running ends with EIO.
  stop_writeback();
  return true;
}

Status FsInfo::check_shutdown(std::string_view what) const {
  if (is_shutdown()) return fail(EIO, "{}: {}: filesystem is shut down", path_, what);
  return {};
}

Status Filesystem::shutdown(ShutdownMode mode, const std::string& who) {
  if (fs_->is_shutdown()) return {};
  if (mode == ShutdownMode::kSyncFirst && !read_only()) {
    // DEFAULT: sync everything first (the kernel freezes the device, which syncs); a failed sync
    // still shuts down, as the kernel does, and says why.
    if (auto st = fs_->transactions().commit(CommitCause::kRequested); !st)
      spdlog::error("{}: sync before shutdown failed: {}", fs_->path(), st.error().message);
  }
  fs_->force_shutdown(who);
  return {};
}

}  // namespace ubtrfs::fs
