// Mount options of the ubtrfs daemon: parsing the `-o` list that mount(8), fstab and users pass,
// and the open gate that decides read-write vs read-only from the superblock (the kernel's
// btrfs_check_features, FORMAT.md §1.5, §9.2; issue 3 "Options" and "Feature gate").
//
// Owns: MountOptions (every option ubtrfs understands, with its default), parse_mount_options()
// which also keeps the generic VFS/FUSE options mount(8) adds (rw, relatime, nosuid, ...) apart,
// and decide_open_mode(). Unknown options are an error naming the option, as users expect from a
// kernel filesystem; invalid values name the option and the value.
// Invariants: parsing is pure (no I/O); the same string always gives the same result.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fs/compress_policy.h"
#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::fs {

struct MountOptions {
  bool read_only = false;
  uint32_t commit_interval_s = 30;        // commit=SECONDS, 1..300 (the kernel warns above 300)
  uint64_t cache_mb = 256;                // cache_mb=N: extent-buffer cache budget, >= 1
  std::string log_level = "info";         // log_level=trace|debug|info|warn|error|critical|off
  bool allow_other = false;
  bool default_permissions = false;
  std::optional<uint64_t> subvolid;       // subvolid=N
  std::optional<std::string> subvol;      // subvol=PATH
  // Access time updates, as the kernel's VFS does them for a local filesystem (FUSE leaves atime to
  // the daemon): relatime (default; also `atime`, `nostrictatime`), strictatime (also
  // `norelatime`), noatime; nodiratime spares directories.
  enum class Atime { kRelatime, kStrict, kNoatime };
  Atime atime = Atime::kRelatime;
  bool nodiratime = false;
  // nologreplay / rescue=nologreplay (the kernel's names): never replay a log tree; a read-write
  // mount of an image that has one is then refused.
  bool nologreplay = false;
  bool cow_overwrite = false;             // cow_overwrite=on|off: fix 1 (off by default: upstream reverted it)
  bool wb_inhibit = true;                 // wb_inhibit=on|off|handle: fix 2
  // wb_inhibit=on also holds a block's second copy in a transaction from background writeback until
  // the commit (fix 2's transaction scope, tree/tree_root.h); wb_inhibit=handle is the patch's
  // handle-scoped inhibition alone.
  bool wb_hold_recopied = true;
  bool notreelog = false;                 // notreelog / treelog: fsync by full commit instead of the tree log
  // discard, discard=async, discard=sync / nodiscard: discard what each commit frees, in the
  // background (fs/discard.h; btrfs discard=async). discard=sync is accepted as an alias of async.
  bool discard = false;
  // compress[=zlib[:1-9]|lzo|zstd[:1-15]|no] / compress-force=...: compression of newly written
  // data (fs/compress_policy.h; off by default, as in the kernel).
  CompressOptions compress;
  // Background writeback of dirty tree blocks (tree/writeback.h): writeback=on|off,
  // wb_thresh_mb=N (absolute threshold, default 32), wb_ratio=PCT (threshold as % of cache_mb, 0..100,
  // default 10; 0: only the absolute one), wb_interval=SECONDS (periodic wakeup, default 5),
  // wb_expire=SECONDS (age the periodic pass writes, default 30).
  bool writeback = true;
  uint64_t wb_thresh_mb = 32;
  uint32_t wb_ratio = 10;
  uint32_t wb_interval_s = 5;
  uint32_t wb_expire_s = 30;
  bool wb_lru = true;                     // wb_order=lru|address: background writeback order
  // write_behind=on|off: file data extents reach the image through a write-behind queue and its
  // worker thread (io/write_behind.h) instead of being written by the flushing thread itself.
  bool write_behind = true;
  // writeback_cache=on|off: the kernel's page cache holds written data and sends it later, merged
  // (FUSE_CAP_WRITEBACK_CACHE); space for it is guarded by tools/daemon/page_cache_guard.h.
  bool writeback_cache = false;
  // dirty_limit_mb=N: how much of this mount the kernel may keep dirty in its page cache (the
  // FUSE device's bdi max_bytes; root only). 0: the kernel's default (1 % of its dirty threshold).
  uint64_t dirty_limit_mb = 0;
  std::string stats_file;                 // stats_file=PATH: the live counters as JSON, written at unmount
  std::string log_file;                   // log_file=PATH: the daemon always logs there; empty: its own choice
  // Generic options that are handled by the kernel/libfuse or are meaningless for us, kept to be
  // forwarded to libfuse where it understands them (fsname=, subtype=, max_read=, ...).
  std::vector<std::string> fuse_passthrough;
};

// Splits a comma-separated -o list into its options (empty entries dropped).
std::vector<std::string> split_option_list(const std::string& list);

// Parses a comma-separated option list (several -o lists may be joined with commas). Later
// options override earlier ones ("ro,rw" is rw), as with mount(8).
// Errors: EINVAL "unknown mount option 'x'" / "invalid value 'v' for mount option 'commit'".
[[nodiscard]] Result<MountOptions> parse_mount_options(const std::string& list);

enum class OpenMode { kReadWrite, kReadOnly };

struct OpenDecision {
  OpenMode mode = OpenMode::kReadOnly;
  bool ignore_log_tree = false;  // read-only mount of an image with log_root != 0
  bool replay_log_tree = false;  // read-write mount of an image with log_root != 0: replay it (fs/tree_log_replay.h)
  std::vector<std::string> warnings;
};

// The feature gate: unknown or unsupported incompat bits refuse any mount (EOPNOTSUPP, bits named);
// unknown/unsupported compat_ro bits refuse read-write (EROFS naming them; `-o ro` works); a log
// tree (log_root != 0, left by an fsync before a crash) is replayed by a read-write mount
// (replay_log_tree) unless nologreplay refuses read-write; a read-only mount never writes, so it
// ignores the log with a warning that its fsynced changes are not visible; multi-device refused; a superblock with the
// ERROR flag is mounted read-only only.
[[nodiscard]] Result<OpenDecision> decide_open_mode(const Superblock& sb, const MountOptions& opts);

}  // namespace ubtrfs::fs
