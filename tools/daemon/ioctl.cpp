// The daemon's ioctl table; see ioctl.h.
#include "tools/daemon/ioctl.h"

#include <linux/btrfs.h>
#include <linux/fs.h>
#include <linux/ioctl.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "fs/scrub.h"
#include "fs/transaction.h"
#include "tools/common/control_protocol.h"
#include "tools/daemon/caller_caps.h"
#include "tools/daemon/caller_fd.h"
#include "tools/daemon/fuse_uring.h"
#include "tools/daemon/name_invalidation.h"
#include "tools/daemon/logging.h"
#include "tools/daemon/page_cache_guard.h"

namespace ubtrfs::daemon {

namespace {

using Handler = Result<IoctlReply> (*)(DaemonContext& ctx, const IoctlRequest& req);

struct IoctlCommand {
  uint32_t cmd;
  const char* name;
  Handler handler;
};

// UBTRFS_IOC_CONTROL_READ: one chunk of a payload snapshot (tools/common/control_protocol.h).
Result<IoctlReply> control_read(DaemonContext& ctx, const IoctlRequest& req) {
  if (req.in.size() < sizeof(control::Message) || req.out_size < control::kHeaderSize)
    return fail(EINVAL, "control ioctl with {} bytes in, {} out", req.in.size(), req.out_size);
  // Copied out of the request buffer: it need not be aligned for Message.
  auto msg = std::make_unique<control::Message>();
  std::memcpy(msg.get(), req.in.data(), sizeof(control::Message));
  auto reply = std::make_unique<control::Message>();
  auto produce = [&](control::Payload p) -> std::string {
    if (p == control::Payload::kScrub) return fs::scrub_status_json(ctx.fs->scrub().status());
    if (p != control::Payload::kStats) return recent_log_json();
    return with_writeback_cache_stats(with_transport_stats(ctx.fs->stats_json(), ctx.uring), ctx.writeback_cache,
                                      ctx.guard);
  };
  const size_t n = UBTRFS_TRY(ctx.control.serve(*msg, *reply, produce));
  IoctlReply out;
  const auto* bytes = reinterpret_cast<const uint8_t*>(reply.get());
  out.out.assign(bytes, bytes + std::min(n, req.out_size));
  return out;
}

// FS_IOC_GOINGDOWN: XFS_IOC_GOINGDOWN _IOR('X', 125, __u32), the same number as btrfs's
// BTRFS_IOC_SHUTDOWN and f2fs's; <xfs/xfs_fs.h> is not a dependency, so it is spelled out here.
constexpr uint32_t kIocGoingDown = _IOR('X', 125, uint32_t);
static_assert(kIocGoingDown == 0x8004587d);
static_assert(FS_IOC_GETFSLABEL == 0x81009431 && FS_IOC_SETFSLABEL == 0x41009432);

// The requester as the one shutdown warning names it: "pid 1234 (godown)".
std::string describe_caller(const IoctlRequest& req) {
  std::string comm;
  if (req.pid > 0) {
    std::ifstream f("/proc/" + std::to_string(req.pid) + "/comm");
    std::getline(f, comm);
  }
  return comm.empty() ? fmt::format("pid {}", req.pid) : fmt::format("pid {} ({})", req.pid, comm);
}

Status require_admin(const IoctlRequest& req, const char* what) {
  if (req.uid != 0) return fail(EPERM, "{} by uid {}: operation not permitted", what, req.uid);
  return {};
}

// FS_IOC_GOINGDOWN (xfstests' godown, btrfs_ioctl_shutdown, xfs_fs_goingdown). The command is
// encoded _IOR although the kernel reads the flags from the caller, so a FUSE daemon — which only
// gets restricted ioctls, where an _IOR command carries no input bytes — never sees them. ubtrfs
// reads the missing flags as 0, BTRFS_SHUTDOWN_FLAGS_DEFAULT / XFS_FSOP_GOING_FLAGS_DEFAULT: commit
// everything, then shut down. That is also the only reading that keeps what the caller may have
// made durable before: the kernel passes neither sync(2) nor syncfs(2) to a FUSE daemon
// (FUSE_SYNCFS is sent to virtiofs only), so "syncfs; godown" (xfstests generic/474, 599) or
// "godown -f" (635) would otherwise lose what the caller was promised. A power cut — nothing
// written from the moment the ioctl returns, only what fsync made durable kept — is
// UBTRFS_IOC_SHUTDOWN with flags 2 (`ubtrfs-inspect shutdown --mode no-flush`); the crash harness
// (tests/crash) proves fsync without relying on either. README: "Shutdown".
Result<IoctlReply> goingdown(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "FS_IOC_GOINGDOWN"));
  UBTRFS_TRY_STATUS(ctx.fs->shutdown(fs::ShutdownMode::kSyncFirst,
                                     describe_caller(req) + " with FS_IOC_GOINGDOWN (sync first)"));
  return IoctlReply{};
}

// UBTRFS_IOC_SHUTDOWN: the same with the flags FS_IOC_GOINGDOWN cannot carry through FUSE.
Result<IoctlReply> control_shutdown(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "UBTRFS_IOC_SHUTDOWN"));
  if (req.in.size() < sizeof(uint32_t)) return fail(EINVAL, "shutdown ioctl with {} bytes in", req.in.size());
  uint32_t flags;
  std::memcpy(&flags, req.in.data(), sizeof flags);
  static constexpr const char* kNames[] = {"sync first", "flush log", "no flush"};
  if (flags > 2) return fail(EINVAL, "shutdown flags {} are not 0, 1 or 2", flags);
  const std::string who = fmt::format("{} with UBTRFS_IOC_SHUTDOWN ({})", describe_caller(req), kNames[flags]);
  UBTRFS_TRY_STATUS(ctx.fs->shutdown(static_cast<fs::ShutdownMode>(flags), who));
  return IoctlReply{};
}

// FS_IOC_GETFSLABEL (btrfs_ioctl_get_fslabel): the label, NUL padded to FSLABEL_MAX bytes.
Result<IoctlReply> get_fslabel(DaemonContext& ctx, const IoctlRequest& req) {
  const std::string label = UBTRFS_TRY(ctx.fs->label());
  IoctlReply out;
  out.out.assign(std::min<size_t>(req.out_size, FSLABEL_MAX), 0);
  std::memcpy(out.out.data(), label.data(), std::min(label.size(), out.out.size()));
  return out;
}

// FS_IOC_SETFSLABEL (btrfs_ioctl_set_fslabel): CAP_SYS_ADMIN, then EINVAL for a buffer without a
// NUL in its FSLABEL_MAX (= BTRFS_LABEL_SIZE) bytes, then the change, committed before the reply.
Result<IoctlReply> set_fslabel(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "FS_IOC_SETFSLABEL"));
  const auto* p = reinterpret_cast<const char*>(req.in.data());
  const size_t len = strnlen(p, req.in.size());
  if (len == req.in.size())
    return fail(EINVAL, "unable to set label with more than {} bytes", FSLABEL_MAX - 1);
  UBTRFS_TRY_STATUS(ctx.fs->set_label(std::string_view(p, len)));
  return IoctlReply{};
}

// FITRIM (btrfs_ioctl_fitrim): CAP_SYS_ADMIN; struct fstrim_range in and out (24 bytes), with
// range.len set to the bytes discarded. fs/discard.h says what is trimmed and why it is safe.
static_assert(FITRIM == 0xc0185879 && sizeof(fstrim_range) == 24);
Result<IoctlReply> fitrim(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "FITRIM"));
  if (req.in.size() < sizeof(fstrim_range) || req.out_size < sizeof(fstrim_range))
    return fail(EINVAL, "FITRIM with {} bytes in, {} out", req.in.size(), req.out_size);
  fstrim_range range;
  std::memcpy(&range, req.in.data(), sizeof range);
  range.len = UBTRFS_TRY(ctx.fs->trim(range.start, range.len, range.minlen));
  IoctlReply out;
  const auto* bytes = reinterpret_cast<const uint8_t*>(&range);
  out.out.assign(bytes, bytes + sizeof range);
  return out;
}

// ---- inode flags (chattr / lsattr; fs/inode_flags.h) ----------------------------------------------
// The kernel never forwards these from the caller: ioctl_getflags & co. go through
// vfs_fileattr_get / vfs_fileattr_set, which for FUSE (fuse_fileattr_get / fuse_fileattr_set) open
// the inode read-only themselves and send the command with their own buffer — an unsigned int for
// GETFLAGS / SETFLAGS although the command number says long, a struct fsxattr for the others. A
// SETFLAGS or FSSETXATTR is preceded by an FSGETXATTR (vfs_fileattr_set reads the old flags with
// an empty fileattr), and the kernel has already checked ownership and CAP_LINUX_IMMUTABLE against
// those; the filesystem checks both again.
static_assert(FS_IOC_GETFLAGS == 0x80086601 && FS_IOC_SETFLAGS == 0x40086602);
static_assert(FS_IOC_FSGETXATTR == 0x801c581f && FS_IOC_FSSETXATTR == 0x401c5820);
static_assert(sizeof(struct fsxattr) == 28);

// The caller's effective capabilities from /proc/PID/status (CapEff, a hex mask): the kernel has
// checked them against the same process. When the process is gone or the line unreadable, uid 0
// stands for both capabilities (as require_admin does for CAP_SYS_ADMIN).
fs::Caller caller_with_caps(const IoctlRequest& req) {
  fs::Caller c;
  c.uid = req.uid;
  c.gid = req.gid;
  const std::optional<uint64_t> caps = caller_cap_effective(req.pid);
  const bool known = caps.has_value();
  const uint64_t eff = caps.value_or(0);
  c.cap_fowner = known ? (eff & kCapFowner) != 0 : req.uid == 0;
  c.cap_linux_immutable = known ? (eff & kCapLinuxImmutable) != 0 : req.uid == 0;
  spdlog::debug("ioctl caller pid {} uid {}: CapEff {}, CAP_FOWNER {}, CAP_LINUX_IMMUTABLE {}", req.pid, req.uid,
                known ? fmt::format("{:#x}", eff) : std::string("unknown (uid 0 stands for both)"), c.cap_fowner,
                c.cap_linux_immutable);
  return c;
}

Result<IoctlReply> reply_bytes(const void* p, size_t n, const IoctlRequest& req, const char* what) {
  if (req.out_size < n) return fail(EINVAL, "{} with room for {} bytes, needs {}", what, req.out_size, n);
  IoctlReply out;
  const auto* b = static_cast<const uint8_t*>(p);
  out.out.assign(b, b + n);
  return out;
}

// FS_IOC_GETFLAGS (btrfs_fileattr_get): the FS_*_FL word.
Result<IoctlReply> get_flags(DaemonContext& ctx, const IoctlRequest& req) {
  const uint32_t flags = UBTRFS_TRY(ctx.fs->get_fsflags(req.ino));
  return reply_bytes(&flags, sizeof flags, req, "FS_IOC_GETFLAGS");
}

// After a flag change: the new ctime must not hide behind the kernel's cached attributes (up to
// attr_timeout, a day by default), since a FUSE fileattr_set invalidates nothing itself (xfstests generic/277 stats
// right after chattr). Attributes only (offset -1): no page lock is taken, so this is safe while
// the kernel waits for the ioctl's reply with the inode locked.
void invalidate_attrs(DaemonContext& ctx, uint64_t ino) {
  if (ctx.session) (void)fuse_lowlevel_notify_inval_inode(ctx.session, ino, -1, 0);
}

// FS_IOC_SETFLAGS (btrfs_fileattr_set).
Result<IoctlReply> set_flags(DaemonContext& ctx, const IoctlRequest& req) {
  uint32_t flags;
  if (req.in.size() < sizeof flags) return fail(EINVAL, "FS_IOC_SETFLAGS with {} bytes in", req.in.size());
  std::memcpy(&flags, req.in.data(), sizeof flags);
  UBTRFS_TRY_STATUS(ctx.fs->set_fsflags(req.ino, flags, caller_with_caps(req)));
  invalidate_attrs(ctx, req.ino);
  return IoctlReply{};
}

// FS_IOC_FSGETXATTR: the common xflags, the other fields zero.
Result<IoctlReply> get_fsxattr(DaemonContext& ctx, const IoctlRequest& req) {
  const fs::FsXattr x = UBTRFS_TRY(ctx.fs->get_fsxattr(req.ino));
  struct fsxattr out {};
  out.fsx_xflags = x.xflags;
  out.fsx_extsize = x.extsize;
  out.fsx_nextents = x.nextents;
  out.fsx_projid = x.projid;
  out.fsx_cowextsize = x.cowextsize;
  return reply_bytes(&out, sizeof out, req, "FS_IOC_FSGETXATTR");
}

// FS_IOC_FSSETXATTR: only the five flags btrfs stores; EOPNOTSUPP for anything else.
Result<IoctlReply> set_fsxattr(DaemonContext& ctx, const IoctlRequest& req) {
  struct fsxattr in {};
  if (req.in.size() < sizeof in) return fail(EINVAL, "FS_IOC_FSSETXATTR with {} bytes in", req.in.size());
  std::memcpy(&in, req.in.data(), sizeof in);
  fs::FsXattr x;
  x.xflags = in.fsx_xflags;
  x.extsize = in.fsx_extsize;
  x.nextents = in.fsx_nextents;
  x.projid = in.fsx_projid;
  x.cowextsize = in.fsx_cowextsize;
  UBTRFS_TRY_STATUS(ctx.fs->set_fsxattr(req.ino, x, caller_with_caps(req)));
  invalidate_attrs(ctx, req.ino);
  return IoctlReply{};
}

// ---- scrub and the filesystem / device info (btrfs ioctl.c; layouts from <linux/btrfs.h>) ----------
static_assert(sizeof(btrfs_ioctl_scrub_args) == 1024 && sizeof(btrfs_scrub_progress) == 15 * 8);
static_assert(BTRFS_IOC_SCRUB == _IOWR(0x94, 27, btrfs_ioctl_scrub_args) && BTRFS_IOC_SCRUB == 0xc400941b);
static_assert(BTRFS_IOC_SCRUB_CANCEL == _IO(0x94, 28) && BTRFS_IOC_SCRUB_PROGRESS == 0xc400941d);
static_assert(sizeof(btrfs_ioctl_fs_info_args) == 1024 && BTRFS_IOC_FS_INFO == 0x8400941f);
static_assert(sizeof(btrfs_ioctl_dev_info_args) == 4096 && BTRFS_IOC_DEV_INFO == 0xd000941e);
static_assert(offsetof(btrfs_ioctl_scrub_args, progress) == 32);
static_assert(offsetof(btrfs_ioctl_fs_info_args, flags) == 48 && offsetof(btrfs_ioctl_fs_info_args, generation) == 56);

void fill_progress(btrfs_scrub_progress& out, const fs::ScrubProgress& p) {
  out.data_extents_scrubbed = p.data_extents_scrubbed;
  out.tree_extents_scrubbed = p.tree_extents_scrubbed;
  out.data_bytes_scrubbed = p.data_bytes_scrubbed;
  out.tree_bytes_scrubbed = p.tree_bytes_scrubbed;
  out.read_errors = p.read_errors;
  out.csum_errors = p.csum_errors;
  out.verify_errors = p.verify_errors;
  out.no_csum = p.no_csum;
  out.csum_discards = p.csum_discards;
  out.super_errors = p.super_errors;
  out.malloc_errors = p.malloc_errors;
  out.uncorrectable_errors = p.uncorrectable_errors;
  out.corrected_errors = p.corrected_errors;
  out.last_physical = p.last_physical;
  out.unverified_errors = p.unverified_errors;
}

Result<btrfs_ioctl_scrub_args> scrub_args_in(const IoctlRequest& req, const char* what) {
  btrfs_ioctl_scrub_args a{};
  if (req.in.size() < sizeof a || req.out_size < sizeof a)
    return fail(EINVAL, "{} with {} bytes in, {} out", what, req.in.size(), req.out_size);
  std::memcpy(&a, req.in.data(), sizeof a);
  // One device, devid 1 (ubtrfs is single-device); the kernel answers ENODEV for another devid.
  if (a.devid != 1) return fail(ENODEV, "{}: no device with devid {}", what, a.devid);
  return a;
}

// BTRFS_IOC_SCRUB (btrfs_ioctl_scrub): CAP_SYS_ADMIN; unknown flags EOPNOTSUPP; a repairing scrub
// needs a writable mount (EROFS, as mnt_want_write_file); then the scrub runs and the ioctl returns
// when it ended, with the final counters (ECANCELED when cancelled). start/end (a physical range
// of the device) are not honoured: the whole filesystem is scrubbed. Like the kernel's, the call
// blocks for the whole scrub: here it holds one FUSE worker thread (libfuse's multithreaded loop
// starts more for other requests), and the scrub itself runs in the filesystem's scrub thread.
Result<IoctlReply> scrub(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_SCRUB"));
  auto a = UBTRFS_TRY(scrub_args_in(req, "BTRFS_IOC_SCRUB"));
  if (a.flags & ~static_cast<uint64_t>(BTRFS_SCRUB_SUPPORTED_FLAGS))
    return fail(EOPNOTSUPP, "BTRFS_IOC_SCRUB: unsupported flags {:#x}", a.flags);
  const bool readonly = a.flags & BTRFS_SCRUB_READONLY;
  if (!readonly && ctx.read_only) return fail(EROFS, "BTRFS_IOC_SCRUB: read-only filesystem (use a readonly scrub)");
  fs::ScrubOptions o;
  o.readonly = readonly;
  UBTRFS_TRY_STATUS(ctx.fs->scrub().start(o));
  const fs::ScrubStatus st = ctx.fs->scrub().wait();
  if (st.state == fs::ScrubState::kCanceled) return fail(ECANCELED, "BTRFS_IOC_SCRUB: scrub cancelled");
  if (st.state == fs::ScrubState::kAborted) return fail(EIO, "BTRFS_IOC_SCRUB: scrub aborted: {}", st.failure);
  fill_progress(a.progress, st.progress);
  return reply_bytes(&a, sizeof a, req, "BTRFS_IOC_SCRUB");
}

// BTRFS_IOC_SCRUB_CANCEL: ENOTCONN when no scrub runs.
Result<IoctlReply> scrub_cancel(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_SCRUB_CANCEL"));
  UBTRFS_TRY_STATUS(ctx.fs->scrub().cancel());
  return IoctlReply{};
}

// BTRFS_IOC_SCRUB_PROGRESS: the running scrub's counters; ENOTCONN when none runs.
Result<IoctlReply> scrub_progress(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_SCRUB_PROGRESS"));
  auto a = UBTRFS_TRY(scrub_args_in(req, "BTRFS_IOC_SCRUB_PROGRESS"));
  const fs::ScrubStatus st = ctx.fs->scrub().status();
  if (st.state != fs::ScrubState::kRunning) return fail(ENOTCONN, "BTRFS_IOC_SCRUB_PROGRESS: no scrub is running");
  fill_progress(a.progress, st.progress);
  return reply_bytes(&a, sizeof a, req, "BTRFS_IOC_SCRUB_PROGRESS");
}

// UBTRFS_IOC_SCRUB_LIMIT (tools/common/control_protocol.h): the scrub throughput limit.
Result<IoctlReply> scrub_limit(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "UBTRFS_IOC_SCRUB_LIMIT"));
  uint64_t limit;
  if (req.in.size() < sizeof limit) return fail(EINVAL, "UBTRFS_IOC_SCRUB_LIMIT with {} bytes in", req.in.size());
  std::memcpy(&limit, req.in.data(), sizeof limit);
  ctx.fs->scrub().set_rate_limit(limit);
  spdlog::info("{}: scrub limit set to {} by {}", ctx.fs->info().path(),
               limit ? fmt::format("{} bytes/s", limit) : std::string("unlimited"), describe_caller(req));
  return IoctlReply{};
}

// BTRFS_IOC_FS_INFO (btrfs_ioctl_fs_info). The command is _IOR, so through FUSE the daemon never
// sees the caller's flags (which ask for the optional fields): every optional field is filled
// and flagged.
Result<IoctlReply> fs_info(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_fs_info_args a{};
  fs::FsInfo& info = ctx.fs->info();
  const FsParams& p = info.params();
  {
    std::lock_guard g(info.super_mu());
    const Superblock& sb = info.super();
    a.max_id = 1;
    a.num_devices = 1;
    std::memcpy(a.fsid, sb.fsid, sizeof a.fsid);
    std::memcpy(a.metadata_uuid, p.fsid.data(), sizeof a.metadata_uuid);
    a.generation = sb.generation;
  }
  a.nodesize = p.nodesize;
  a.sectorsize = p.sectorsize;
  a.clone_alignment = p.sectorsize;
  a.csum_type = static_cast<uint16_t>(p.csum_type);
  a.csum_size = static_cast<uint16_t>(p.csum_size());
  a.flags = BTRFS_FS_INFO_FLAG_CSUM_INFO | BTRFS_FS_INFO_FLAG_GENERATION | BTRFS_FS_INFO_FLAG_METADATA_UUID;
  return reply_bytes(&a, sizeof a, req, "BTRFS_IOC_FS_INFO");
}

// BTRFS_IOC_DEV_INFO (btrfs_ioctl_dev_info): devid 1 (or 0 with the device's uuid), else ENODEV.
Result<IoctlReply> dev_info(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_dev_info_args a{};
  if (req.in.size() < sizeof a) return fail(EINVAL, "BTRFS_IOC_DEV_INFO with {} bytes in", req.in.size());
  std::memcpy(&a, req.in.data(), sizeof a);
  fs::FsInfo& info = ctx.fs->info();
  std::lock_guard g(info.super_mu());
  const DevItem& d = info.super().dev_item;
  const bool uuid_given = std::any_of(std::begin(a.uuid), std::end(a.uuid), [](uint8_t b) { return b != 0; });
  if (a.devid != d.devid.get() && !(a.devid == 0 && uuid_given && std::memcmp(a.uuid, d.uuid, 16) == 0))
    return fail(ENODEV, "BTRFS_IOC_DEV_INFO: no device with devid {}", a.devid);
  btrfs_ioctl_dev_info_args out{};
  out.devid = d.devid.get();
  std::memcpy(out.uuid, d.uuid, sizeof out.uuid);
  out.bytes_used = d.bytes_used.get();
  out.total_bytes = d.total_bytes.get();
  const std::string& path = info.path();
  std::memcpy(out.path, path.data(), std::min(path.size(), sizeof out.path - 1));
  return reply_bytes(&out, sizeof out, req, "BTRFS_IOC_DEV_INFO");
}

// ---- subvolumes (btrfs ioctl.c; fs/subvolume.cpp) -----------------------------------------------------
static_assert(sizeof(btrfs_ioctl_vol_args) == 4096 && BTRFS_IOC_SUBVOL_CREATE == 0x5000940e);
static_assert(sizeof(btrfs_ioctl_vol_args_v2) == 4096 && BTRFS_IOC_SUBVOL_CREATE_V2 == 0x50009418);

// A name appeared in or vanished from directory `parent` behind the kernel's back: its cached
// entry (negative ones too, kept for entry_timeout) and the directory's attributes are dropped
// before the reply — without blocking a FUSE-over-io_uring worker (name_invalidation.h).
void invalidate_new_name(DaemonContext& ctx, uint64_t parent, std::string_view name) {
  if (ctx.names) ctx.names->name_changed(parent, name);
}

// The caller for a namespace change made by ioctl: uid/gid of the request.
fs::Caller caller_of(const IoctlRequest& req) {
  fs::Caller c;
  c.uid = req.uid;
  c.gid = req.gid;
  c.in_group = [pid = req.pid, gid = req.gid](uint32_t g) { return caller_in_group(pid, gid, g); };
  return c;
}

Result<IoctlReply> create_subvolume_named(DaemonContext& ctx, const IoctlRequest& req, std::string_view name) {
  const uint64_t id = UBTRFS_TRY(ctx.fs->create_subvolume(req.ino, name, caller_of(req)));
  invalidate_new_name(ctx, req.ino, name);
  spdlog::debug("subvolume {} '{}' created by {}", id, name, describe_caller(req));
  return IoctlReply{};
}

// BTRFS_IOC_SUBVOL_CREATE (btrfs_ioctl_snap_create with subvol set): struct btrfs_ioctl_vol_args,
// the name NUL-terminated within BTRFS_PATH_NAME_MAX (the kernel forces the last byte to NUL). On
// the fd of the parent directory. No capability needed: write and search permission on the parent.
Result<IoctlReply> subvol_create(DaemonContext& ctx, const IoctlRequest& req) {
  if (req.in.size() < sizeof(btrfs_ioctl_vol_args))
    return fail(EINVAL, "BTRFS_IOC_SUBVOL_CREATE with {} bytes in", req.in.size());
  const auto* p = reinterpret_cast<const char*>(req.in.data()) + offsetof(btrfs_ioctl_vol_args, name);
  return create_subvolume_named(ctx, req, std::string_view(p, strnlen(p, BTRFS_PATH_NAME_MAX)));
}

// BTRFS_IOC_SUBVOL_CREATE_V2 (btrfs_ioctl_snap_create_v2): flags beyond RDONLY and QGROUP_INHERIT
// are EOPNOTSUPP as in the kernel; QGROUP_INHERIT too (ubtrfs has no quota groups); RDONLY means
// nothing for a new subvolume (the kernel ignores it there too).
Result<IoctlReply> subvol_create_v2(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_vol_args_v2 a;
  if (req.in.size() < sizeof a) return fail(EINVAL, "BTRFS_IOC_SUBVOL_CREATE_V2 with {} bytes in", req.in.size());
  std::memcpy(&a, req.in.data(), sizeof a);
  constexpr uint64_t kKnown = BTRFS_SUBVOL_RDONLY | BTRFS_SUBVOL_QGROUP_INHERIT;
  if (a.flags & ~kKnown) return fail(EOPNOTSUPP, "BTRFS_IOC_SUBVOL_CREATE_V2: unsupported flags {:#x}", a.flags);
  if (a.flags & BTRFS_SUBVOL_QGROUP_INHERIT)
    return fail(EOPNOTSUPP, "BTRFS_IOC_SUBVOL_CREATE_V2: quota groups are not supported");
  a.name[BTRFS_SUBVOL_NAME_MAX] = '\0';
  return create_subvolume_named(ctx, req, std::string_view(a.name, strnlen(a.name, BTRFS_SUBVOL_NAME_MAX)));
}

// BTRFS_IOC_SNAP_CREATE / _V2 (btrfs_ioctl_snap_create(_v2), __btrfs_ioctl_snap_create): the
// source is the caller's descriptor `fd` (caller_fd.h): EINVAL if it has none of that number, EXDEV
// if it is not on this mount, EPERM unless the caller owns the source's inode (or is root, for
// CAP_FOWNER), as inode_owner_or_capable; any inode of the source subvolume names it. _V2 flags:
// RDONLY; QGROUP_INHERIT is EOPNOTSUPP (no quota groups), others EOPNOTSUPP as in the kernel.
static_assert(BTRFS_IOC_SNAP_CREATE == 0x50009401 && BTRFS_IOC_SNAP_CREATE_V2 == 0x50009417);

Result<IoctlReply> snapshot_from(DaemonContext& ctx, const IoctlRequest& req, int64_t src_fd, std::string_view name,
                                 bool readonly) {
  if (ctx.read_only) return fail(EROFS, "snapshot '{}': read-only filesystem", name);
  if (name.find('/') != std::string_view::npos) return fail(EINVAL, "snapshot name '{}' contains a '/'", name);
  auto src_r = stat_caller_fd(req.pid, src_fd);
  // fdget failing is EINVAL in the kernel's __btrfs_ioctl_snap_create, not EBADF.
  if (!src_r && src_r.error().err == EBADF) return fail(EINVAL, "{}", src_r.error().message);
  const CallerFile src = UBTRFS_TRY(std::move(src_r));
  if (ctx.mount_dev == 0 || src.dev != ctx.mount_dev)
    return fail(EXDEV, "snapshot '{}': the source (descriptor {} of pid {}) is not on this mount", name, src_fd, req.pid);
  const fs::InodeId sid = UBTRFS_TRY(ctx.fs->inode_id(src.ino));
  if (req.uid != 0) {
    const struct stat st = UBTRFS_TRY(ctx.fs->getattr(src.ino));
    if (st.st_uid != req.uid)
      return fail(EPERM, "snapshot of subvolume {} by uid {}: not the owner of its inode", sid.subvol, req.uid);
  }
  const uint64_t id = UBTRFS_TRY(ctx.fs->create_snapshot(req.ino, name, sid.subvol, readonly, caller_of(req)));
  invalidate_new_name(ctx, req.ino, name);
  spdlog::debug("snapshot {} '{}' of subvolume {} created by {}", id, name, sid.subvol, describe_caller(req));
  return IoctlReply{};
}

Result<IoctlReply> snap_create(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_vol_args a;
  if (req.in.size() < sizeof a) return fail(EINVAL, "BTRFS_IOC_SNAP_CREATE with {} bytes in", req.in.size());
  std::memcpy(&a, req.in.data(), sizeof a);
  a.name[BTRFS_PATH_NAME_MAX] = '\0';
  return snapshot_from(ctx, req, a.fd, std::string_view(a.name, strnlen(a.name, BTRFS_PATH_NAME_MAX)), false);
}

Result<IoctlReply> snap_create_v2(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_vol_args_v2 a;
  if (req.in.size() < sizeof a) return fail(EINVAL, "BTRFS_IOC_SNAP_CREATE_V2 with {} bytes in", req.in.size());
  std::memcpy(&a, req.in.data(), sizeof a);
  constexpr uint64_t kKnown = BTRFS_SUBVOL_RDONLY | BTRFS_SUBVOL_QGROUP_INHERIT;
  if (a.flags & ~kKnown) return fail(EOPNOTSUPP, "BTRFS_IOC_SNAP_CREATE_V2: unsupported flags {:#x}", a.flags);
  if (a.flags & BTRFS_SUBVOL_QGROUP_INHERIT)
    return fail(EOPNOTSUPP, "BTRFS_IOC_SNAP_CREATE_V2: quota groups are not supported");
  a.name[BTRFS_SUBVOL_NAME_MAX] = '\0';
  return snapshot_from(ctx, req, a.fd, std::string_view(a.name, strnlen(a.name, BTRFS_SUBVOL_NAME_MAX)),
                       a.flags & BTRFS_SUBVOL_RDONLY);
}

// BTRFS_IOC_SNAP_DESTROY (btrfs_ioctl_snap_destroy): struct btrfs_ioctl_vol_args on the parent
// directory, the subvolume by name. _V2: the same with btrfs_ioctl_vol_args_v2, or with
// BTRFS_SUBVOL_SPEC_BY_ID the subvolume by id (subvolid, at least 256); other flags EOPNOTSUPP.
// The name's dentry (cached a day) is invalidated in the directory that held it.
static_assert(BTRFS_IOC_SNAP_DESTROY == 0x5000940f && BTRFS_IOC_SNAP_DESTROY_V2 == 0x5000943f);
static_assert(BTRFS_IOC_SYNC == 0x9408 && BTRFS_IOC_START_SYNC == 0x80089418 && BTRFS_IOC_WAIT_SYNC == 0x40089416);

Result<IoctlReply> destroy_named(DaemonContext& ctx, const IoctlRequest& req, std::string_view name) {
  const uint64_t id = UBTRFS_TRY(ctx.fs->delete_subvolume(req.ino, name, caller_of(req)));
  invalidate_new_name(ctx, req.ino, name);
  spdlog::debug("subvolume {} '{}' deleted by {}", id, name, describe_caller(req));
  return IoctlReply{};
}

Result<IoctlReply> snap_destroy(DaemonContext& ctx, const IoctlRequest& req) {
  if (req.in.size() < sizeof(btrfs_ioctl_vol_args))
    return fail(EINVAL, "BTRFS_IOC_SNAP_DESTROY with {} bytes in", req.in.size());
  const auto* p = reinterpret_cast<const char*>(req.in.data()) + offsetof(btrfs_ioctl_vol_args, name);
  return destroy_named(ctx, req, std::string_view(p, strnlen(p, BTRFS_PATH_NAME_MAX)));
}

Result<IoctlReply> snap_destroy_v2(DaemonContext& ctx, const IoctlRequest& req) {
  btrfs_ioctl_vol_args_v2 a;
  if (req.in.size() < sizeof a) return fail(EINVAL, "BTRFS_IOC_SNAP_DESTROY_V2 with {} bytes in", req.in.size());
  std::memcpy(&a, req.in.data(), sizeof a);
  if (a.flags & ~static_cast<uint64_t>(BTRFS_SUBVOL_SPEC_BY_ID))
    return fail(EOPNOTSUPP, "BTRFS_IOC_SNAP_DESTROY_V2: unsupported flags {:#x}", a.flags);
  if (!(a.flags & BTRFS_SUBVOL_SPEC_BY_ID)) {
    a.name[BTRFS_SUBVOL_NAME_MAX] = '\0';
    return destroy_named(ctx, req, std::string_view(a.name, strnlen(a.name, BTRFS_SUBVOL_NAME_MAX)));
  }
  if (a.subvolid < kFirstFreeObjectid)
    return fail(EINVAL, "BTRFS_IOC_SNAP_DESTROY_V2: subvolume id {} cannot be deleted", a.subvolid);
  // Where it was named, for the dentry to drop (read before it goes).
  auto where = ctx.fs->subvolume_name(a.subvolid);
  UBTRFS_TRY(ctx.fs->delete_subvolume_by_id(a.subvolid, caller_of(req)));
  if (where) invalidate_new_name(ctx, ctx.fs->numbers().to_fuse(where->first), where->second);
  return IoctlReply{};
}

// BTRFS_IOC_SYNC, START_SYNC, WAIT_SYNC (btrfs_ioctl_start_sync / wait_sync): the kernel does not
// pass sync(2) or syncfs(2) to a FUSE daemon, so these are how a caller makes everything durable:
// each commits at once and returns when the commit is on disk (START_SYNC answers with the
// transaction it committed; WAIT_SYNC of a committed transaction returns at once). Each first
// evicts the inodes whose last FORGET came (delayed iputs), so "rm; sync" frees their space.
Result<IoctlReply> sync_now(DaemonContext& ctx, const IoctlRequest& req) {
  if (ctx.read_only) return IoctlReply{};
  UBTRFS_TRY(ctx.fs->run_delayed_iputs());
  UBTRFS_TRY_STATUS(ctx.fs->info().transactions().commit(fs::CommitCause::kRequested));
  (void)req;
  return IoctlReply{};
}

Result<IoctlReply> start_sync(DaemonContext& ctx, const IoctlRequest& req) {
  if (!ctx.read_only) UBTRFS_TRY(ctx.fs->run_delayed_iputs());
  uint64_t transid = ctx.fs->info().transactions().running_transid();
  if (!ctx.read_only) UBTRFS_TRY_STATUS(ctx.fs->info().transactions().commit(fs::CommitCause::kRequested));
  if (ctx.read_only) transid = ctx.fs->info().transactions().stats().last_transid;
  return reply_bytes(&transid, sizeof transid, req, "BTRFS_IOC_START_SYNC");
}

Result<IoctlReply> wait_sync(DaemonContext& ctx, const IoctlRequest& req) {
  uint64_t transid = 0;
  if (req.in.size() >= sizeof transid) std::memcpy(&transid, req.in.data(), sizeof transid);
  fs::TransactionManager& tm = ctx.fs->info().transactions();
  if (transid > tm.running_transid()) return fail(EINVAL, "BTRFS_IOC_WAIT_SYNC: transaction {} is in the future", transid);
  if (!ctx.read_only && (transid == 0 || transid >= tm.running_transid())) {
    UBTRFS_TRY(ctx.fs->run_delayed_iputs());
    UBTRFS_TRY_STATUS(tm.commit(fs::CommitCause::kRequested));
  }
  return IoctlReply{};
}

// ---- what `subvolume list|show|get-default|set-default` read (btrfs ioctl.c) --------------------------
static_assert(sizeof(btrfs_ioctl_search_args) == 4096 && BTRFS_IOC_TREE_SEARCH == 0xd0009411);
static_assert(sizeof(btrfs_ioctl_search_header) == 32);
static_assert(sizeof(btrfs_ioctl_ino_lookup_args) == 4096 && BTRFS_IOC_INO_LOOKUP == 0xd0009412);
static_assert(BTRFS_IOC_DEFAULT_SUBVOL == 0x40089413 && BTRFS_IOC_SUBVOL_GETFLAGS == 0x80089419);
static_assert(sizeof(btrfs_ioctl_get_subvol_info_args) == 504 && BTRFS_IOC_GET_SUBVOL_INFO == 0x81f8943c);

// The subvolume of the inode the ioctl was made on (a tree id of 0 in the arguments means it).
Result<uint64_t> subvolume_of(DaemonContext& ctx, const IoctlRequest& req) {
  const fs::InodeId id = UBTRFS_TRY(ctx.fs->inode_id(req.ino));
  return id.subvol;
}

// BTRFS_IOC_TREE_SEARCH (v1, search_ioctl): CAP_SYS_ADMIN; struct btrfs_ioctl_search_args in and
// out, the items packed in its 3992-byte buffer, key.nr_items set to the count (fs/tree_search.cpp
// has the rules). TREE_SEARCH_V2 carries its buffer beyond the fixed struct, which FUSE does not
// pass: it stays ENOTTY.
Result<IoctlReply> tree_search(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_TREE_SEARCH"));
  auto a = std::make_unique<btrfs_ioctl_search_args>();
  if (req.in.size() < sizeof *a || req.out_size < sizeof *a)
    return fail(EINVAL, "BTRFS_IOC_TREE_SEARCH with {} bytes in, {} out", req.in.size(), req.out_size);
  std::memcpy(a.get(), req.in.data(), sizeof *a);
  btrfs_ioctl_search_key& sk = a->key;
  const uint64_t tree_id = sk.tree_id ? sk.tree_id : UBTRFS_TRY(subvolume_of(ctx, req));
  fs::TreeSearchRange r;
  r.min = Key{sk.min_objectid, static_cast<uint8_t>(std::min<uint32_t>(sk.min_type, 0xFF)), sk.min_offset};
  r.max = Key{sk.max_objectid, static_cast<uint8_t>(std::min<uint32_t>(sk.max_type, 0xFF)), sk.max_offset};
  r.min_transid = sk.min_transid;
  r.max_transid = sk.max_transid;
  const auto found = UBTRFS_TRY(ctx.fs->tree_search(tree_id, r, sk.nr_items, sizeof a->buf));
  size_t off = 0;
  for (const auto& it : found.items) {
    btrfs_ioctl_search_header h{};
    h.transid = it.transid;
    h.objectid = it.key.objectid;
    h.offset = it.key.offset;
    h.type = it.key.type;
    h.len = static_cast<uint32_t>(it.data.size());
    std::memcpy(a->buf + off, &h, sizeof h);
    std::memcpy(a->buf + off + sizeof h, it.data.data(), it.data.size());
    off += sizeof h + it.data.size();
  }
  sk.nr_items = static_cast<uint32_t>(found.items.size());
  return reply_bytes(a.get(), sizeof *a, req, "BTRFS_IOC_TREE_SEARCH");
}

// BTRFS_IOC_INO_LOOKUP (btrfs_ioctl_ino_lookup): treeid 0 means the inode's subvolume (and is
// answered with it); objectid 256 (the subvolume's root) gives an empty path to anyone, any other
// directory needs CAP_SYS_ADMIN and gives its path with a '/' after each component.
Result<IoctlReply> ino_lookup(DaemonContext& ctx, const IoctlRequest& req) {
  auto a = std::make_unique<btrfs_ioctl_ino_lookup_args>();
  if (req.in.size() < sizeof *a) return fail(EINVAL, "BTRFS_IOC_INO_LOOKUP with {} bytes in", req.in.size());
  std::memcpy(a.get(), req.in.data(), sizeof *a);
  if (a->treeid == 0) a->treeid = UBTRFS_TRY(subvolume_of(ctx, req));
  if (a->objectid == kFirstFreeObjectid) {
    a->name[0] = '\0';
  } else {
    UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_INO_LOOKUP"));
    const std::string path = UBTRFS_TRY(ctx.fs->inode_path(a->treeid, a->objectid, sizeof a->name - 1));
    std::memset(a->name, 0, sizeof a->name);
    std::memcpy(a->name, path.data(), path.size());
  }
  return reply_bytes(a.get(), sizeof *a, req, "BTRFS_IOC_INO_LOOKUP");
}

// BTRFS_IOC_DEFAULT_SUBVOL (btrfs_ioctl_default_subvol): CAP_SYS_ADMIN; the id (0: FS_TREE).
Result<IoctlReply> default_subvol(DaemonContext& ctx, const IoctlRequest& req) {
  UBTRFS_TRY_STATUS(require_admin(req, "BTRFS_IOC_DEFAULT_SUBVOL"));
  uint64_t id;
  if (req.in.size() < sizeof id) return fail(EINVAL, "BTRFS_IOC_DEFAULT_SUBVOL with {} bytes in", req.in.size());
  std::memcpy(&id, req.in.data(), sizeof id);
  UBTRFS_TRY_STATUS(ctx.fs->set_default_subvolume(id));
  return IoctlReply{};
}

// BTRFS_IOC_SUBVOL_GETFLAGS (btrfs_ioctl_subvol_getflags): on a subvolume's root directory only
// (EINVAL elsewhere); BTRFS_SUBVOL_RDONLY when its ROOT_ITEM says read-only.
Result<IoctlReply> subvol_getflags(DaemonContext& ctx, const IoctlRequest& req) {
  const fs::InodeId id = UBTRFS_TRY(ctx.fs->inode_id(req.ino));
  if (id.objectid != kFirstFreeObjectid)
    return fail(EINVAL, "BTRFS_IOC_SUBVOL_GETFLAGS on inode {} of subvolume {}: not a subvolume root", id.objectid,
                id.subvol);
  const fs::SubvolumeInfo info = UBTRFS_TRY(ctx.fs->subvolume_info(id.subvol));
  const uint64_t flags = (info.item.flags.get() & kRootSubvolRdonly) ? BTRFS_SUBVOL_RDONLY : 0;
  return reply_bytes(&flags, sizeof flags, req, "BTRFS_IOC_SUBVOL_GETFLAGS");
}

// BTRFS_IOC_SUBVOL_SETFLAGS (btrfs_ioctl_subvol_setflags): only BTRFS_SUBVOL_RDONLY (other bits
// EOPNOTSUPP), on a subvolume's root directory, by its owner or root.
static_assert(BTRFS_IOC_SUBVOL_SETFLAGS == 0x4008941a);
Result<IoctlReply> subvol_setflags(DaemonContext& ctx, const IoctlRequest& req) {
  uint64_t flags;
  if (req.in.size() < sizeof flags) return fail(EINVAL, "BTRFS_IOC_SUBVOL_SETFLAGS with {} bytes in", req.in.size());
  std::memcpy(&flags, req.in.data(), sizeof flags);
  if (flags & ~static_cast<uint64_t>(BTRFS_SUBVOL_RDONLY))
    return fail(EOPNOTSUPP, "BTRFS_IOC_SUBVOL_SETFLAGS: unsupported flags {:#x}", flags);
  UBTRFS_TRY_STATUS(ctx.fs->set_subvolume_readonly(req.ino, flags & BTRFS_SUBVOL_RDONLY, caller_with_caps(req)));
  return IoctlReply{};
}

// BTRFS_IOC_GET_SUBVOL_INFO (btrfs_ioctl_get_subvol_info): the inode's subvolume, for anyone.
Result<IoctlReply> get_subvol_info(DaemonContext& ctx, const IoctlRequest& req) {
  const fs::SubvolumeInfo info = UBTRFS_TRY(ctx.fs->subvolume_info(UBTRFS_TRY(subvolume_of(ctx, req))));
  btrfs_ioctl_get_subvol_info_args a{};
  const RootItem& ri = info.item;
  a.treeid = info.id;
  std::memcpy(a.name, info.name.data(), std::min(info.name.size(), sizeof a.name - 1));
  a.parent_id = info.parent_id;
  a.dirid = info.dirid;
  a.generation = ri.generation.get();
  a.flags = ri.flags.get();
  std::memcpy(a.uuid, ri.uuid, sizeof a.uuid);
  std::memcpy(a.parent_uuid, ri.parent_uuid, sizeof a.parent_uuid);
  std::memcpy(a.received_uuid, ri.received_uuid, sizeof a.received_uuid);
  a.ctransid = ri.ctransid.get();
  a.otransid = ri.otransid.get();
  a.stransid = ri.stransid.get();
  a.rtransid = ri.rtransid.get();
  auto ts = [](btrfs_ioctl_timespec& out, const Timespec& t) {
    out.sec = t.sec.get();
    out.nsec = t.nsec.get();
  };
  ts(a.ctime, ri.ctime);
  ts(a.otime, ri.otime);
  ts(a.stime, ri.stime);
  ts(a.rtime, ri.rtime);
  return reply_bytes(&a, sizeof a, req, "BTRFS_IOC_GET_SUBVOL_INFO");
}

constexpr IoctlCommand kCommands[] = {
    {BTRFS_IOC_SNAP_CREATE, "BTRFS_IOC_SNAP_CREATE", snap_create},
    {BTRFS_IOC_SNAP_CREATE_V2, "BTRFS_IOC_SNAP_CREATE_V2", snap_create_v2},
    {BTRFS_IOC_SNAP_DESTROY, "BTRFS_IOC_SNAP_DESTROY", snap_destroy},
    {BTRFS_IOC_SNAP_DESTROY_V2, "BTRFS_IOC_SNAP_DESTROY_V2", snap_destroy_v2},
    {BTRFS_IOC_SYNC, "BTRFS_IOC_SYNC", sync_now},
    {BTRFS_IOC_START_SYNC, "BTRFS_IOC_START_SYNC", start_sync},
    {BTRFS_IOC_WAIT_SYNC, "BTRFS_IOC_WAIT_SYNC", wait_sync},
    {BTRFS_IOC_TREE_SEARCH, "BTRFS_IOC_TREE_SEARCH", tree_search},
    {BTRFS_IOC_INO_LOOKUP, "BTRFS_IOC_INO_LOOKUP", ino_lookup},
    {BTRFS_IOC_DEFAULT_SUBVOL, "BTRFS_IOC_DEFAULT_SUBVOL", default_subvol},
    {BTRFS_IOC_SUBVOL_GETFLAGS, "BTRFS_IOC_SUBVOL_GETFLAGS", subvol_getflags},
    {BTRFS_IOC_SUBVOL_SETFLAGS, "BTRFS_IOC_SUBVOL_SETFLAGS", subvol_setflags},
    {BTRFS_IOC_GET_SUBVOL_INFO, "BTRFS_IOC_GET_SUBVOL_INFO", get_subvol_info},
    {BTRFS_IOC_SUBVOL_CREATE, "BTRFS_IOC_SUBVOL_CREATE", subvol_create},
    {BTRFS_IOC_SUBVOL_CREATE_V2, "BTRFS_IOC_SUBVOL_CREATE_V2", subvol_create_v2},
    {BTRFS_IOC_SCRUB, "BTRFS_IOC_SCRUB", scrub},
    {BTRFS_IOC_SCRUB_CANCEL, "BTRFS_IOC_SCRUB_CANCEL", scrub_cancel},
    {BTRFS_IOC_SCRUB_PROGRESS, "BTRFS_IOC_SCRUB_PROGRESS", scrub_progress},
    {control::kIocScrubLimit, "UBTRFS_IOC_SCRUB_LIMIT", scrub_limit},
    {BTRFS_IOC_FS_INFO, "BTRFS_IOC_FS_INFO", fs_info},
    {BTRFS_IOC_DEV_INFO, "BTRFS_IOC_DEV_INFO", dev_info},
    {control::kIocControlRead, "UBTRFS_IOC_CONTROL_READ", control_read},
    {control::kIocShutdown, "UBTRFS_IOC_SHUTDOWN", control_shutdown},
    {kIocGoingDown, "FS_IOC_GOINGDOWN", goingdown},
    {FS_IOC_GETFSLABEL, "FS_IOC_GETFSLABEL", get_fslabel},
    {FS_IOC_SETFSLABEL, "FS_IOC_SETFSLABEL", set_fslabel},
    {FITRIM, "FITRIM", fitrim},
    {FS_IOC_GETFLAGS, "FS_IOC_GETFLAGS", get_flags},
    {FS_IOC_SETFLAGS, "FS_IOC_SETFLAGS", set_flags},
    {FS_IOC_FSGETXATTR, "FS_IOC_FSGETXATTR", get_fsxattr},
    {FS_IOC_FSSETXATTR, "FS_IOC_FSSETXATTR", set_fsxattr},
};

}  // namespace

Result<IoctlReply> dispatch_ioctl(DaemonContext& ctx, const IoctlRequest& req) {
  for (const auto& c : kCommands)
    if (c.cmd == req.cmd) return c.handler(ctx, req);
  return fail(ENOTTY, "ioctl 0x{:08x} is not supported", req.cmd);
}

const char* ioctl_name(uint32_t cmd) {
  for (const auto& c : kCommands)
    if (c.cmd == cmd) return c.name;
  return nullptr;
}

}  // namespace ubtrfs::daemon
