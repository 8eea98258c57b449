// The daemon's ioctl table; see ioctl.h.
#include "tools/daemon/ioctl.h"

#include <linux/fs.h>
#include <linux/ioctl.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

#include "tools/common/control_protocol.h"
#include "tools/daemon/logging.h"

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
    return p == control::Payload::kStats ? ctx.fs->stats_json() : recent_log_json();
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
  uint64_t eff = 0;
  bool known = false;
  if (req.pid > 0) {
    std::ifstream f("/proc/" + std::to_string(req.pid) + "/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("CapEff:", 0) != 0) continue;
      const size_t at = line.find_first_not_of(" \t", 7);
      if (at != std::string::npos)
        known = std::from_chars(line.data() + at, line.data() + line.size(), eff, 16).ec == std::errc{};
      break;
    }
  }
  constexpr uint64_t kCapFowner = 1ull << 3, kCapLinuxImmutable = 1ull << 9;
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

constexpr IoctlCommand kCommands[] = {
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
