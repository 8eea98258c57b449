// The FUSE runner (fuse_runner.h).
#include "tests/crash/fuse_runner.h"

#define FUSE_USE_VERSION 312
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "tools/daemon/fuse_ops.h"

namespace ubtrfs::crash {
namespace {

constexpr mode_t kFilePerm = 0644, kDirPerm = 0755;
constexpr decltype(statfs::f_type) kFuseSuperMagic = 0x65735546;  // FUSE_SUPER_MAGIC

Status os_fail(const Op& op, const char* call) {
  const int e = errno;
  return fail(e, "{}: {}: {}", op.text(), call, std::strerror(e));
}

// A descriptor closed on scope exit (close is a FUSE flush; its error is the op's error).
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

struct FuseRunner::Context {
  daemon::DaemonContext daemon;
};

FuseRunner::FuseRunner(std::string scratch_dir) : scratch_(std::move(scratch_dir)) {}

FuseRunner::~FuseRunner() { (void)stop(); }

std::string FuseRunner::unavailable_reason() {
  if (::geteuid() != 0) return "needs root (a FUSE mount without fusermount3)";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return fmt::format("/dev/fuse: {}", std::strerror(errno));
  return {};
}

Status FuseRunner::start(fs::Filesystem& fs) {
  std::string tmpl = scratch_ + "/ubtrfs-crash-fuse.XXXXXX";
  if (!::mkdtemp(tmpl.data())) return fail(errno, "mkdtemp in {}: {}", scratch_, std::strerror(errno));
  mnt_ = tmpl;
  ctx_ = std::make_unique<Context>();
  ctx_->daemon.fs = &fs;
  // The daemon's session options for a root mount (daemon_cli.cpp fuse_session_options).
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&args, "ubtrfs-crashtest");
  fuse_opt_add_arg(&args, "-o");
  fuse_opt_add_arg(&args, "fsname=crash-run,subtype=ubtrfs,default_permissions,rw");
  se_ = fuse_session_new(&args, &daemon::ubtrfs_fuse_ops(), sizeof(fuse_lowlevel_ops), &ctx_->daemon);
  fuse_opt_free_args(&args);
  if (!se_) return fail(EIO, "cannot create a FUSE session");
  ctx_->daemon.session = se_;
  if (fuse_session_mount(se_, mnt_.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    return fail(EIO, "cannot mount FUSE on {}", mnt_);
  }
  // One thread serves the requests in order; the workload is one thread too.
  loop_ = std::thread([se = se_] { fuse_session_loop(se); });
  // The ops must really go through the kernel: the mount point is a FUSE mount now.
  struct statfs sf {};
  if (::statfs(mnt_.c_str(), &sf) != 0 || sf.f_type != kFuseSuperMagic) {
    (void)stop();
    return fail(EIO, "{} is not a FUSE mount after fuse_session_mount", mnt_);
  }
  return {};
}

Status FuseRunner::stop() {
  if (!se_) return {};
  // The kernel mount goes first (the loop then reads ENODEV and returns), as in the daemon.
  fuse_session_unmount(se_);
  if (loop_.joinable()) loop_.join();
  fuse_session_destroy(se_);
  se_ = nullptr;
  ::rmdir(mnt_.c_str());
  return {};
}

Status FuseRunner::run(fs::Filesystem&, const Op& op, uint64_t* new_ino) {
  const std::string p = op.path.empty() ? mnt_ : mnt_ + "/" + op.path;
  const std::string q = mnt_ + "/" + op.path2;
  struct stat st {};
  Fd f;
  switch (op.kind) {
    case OpKind::kCreat:
      f.fd = ::open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, kFilePerm);
      if (f.fd < 0) return os_fail(op, "open(O_CREAT|O_EXCL)");
      if (::fstat(f.fd, &st) != 0) return os_fail(op, "fstat");
      if (new_ino) *new_ino = st.st_ino;
      return {};
    case OpKind::kMkdir:
      if (::mkdir(p.c_str(), kDirPerm) != 0) return os_fail(op, "mkdir");
      if (::lstat(p.c_str(), &st) != 0) return os_fail(op, "lstat");
      if (new_ino) *new_ino = st.st_ino;
      return {};
    case OpKind::kUnlink: return ::unlink(p.c_str()) == 0 ? Status{} : os_fail(op, "unlink");
    case OpKind::kRmdir: return ::rmdir(p.c_str()) == 0 ? Status{} : os_fail(op, "rmdir");
    case OpKind::kRename: return ::rename(p.c_str(), q.c_str()) == 0 ? Status{} : os_fail(op, "rename");
    case OpKind::kLink: return ::link(p.c_str(), q.c_str()) == 0 ? Status{} : os_fail(op, "link");
    case OpKind::kTruncate:
      return ::truncate(p.c_str(), static_cast<off_t>(op.off)) == 0 ? Status{} : os_fail(op, "truncate");
    case OpKind::kSetxattr: {
      const std::string v = fmt::format("v{}", op.fill);
      return ::setxattr(p.c_str(), op.xname.c_str(), v.data(), v.size(), 0) == 0 ? Status{} : os_fail(op, "setxattr");
    }
    case OpKind::kWrite: {
      f.fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
      if (f.fd < 0) return os_fail(op, "open(O_WRONLY)");
      const std::string bytes = pattern(op);
      size_t done = 0;
      while (done < bytes.size()) {
        const ssize_t n = ::pwrite(f.fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(op.off + done));
        if (n < 0) return os_fail(op, "pwrite");
        if (n == 0) return fail(EIO, "{}: pwrite wrote nothing", op.text());
        done += static_cast<size_t>(n);
      }
      break;
    }
    case OpKind::kFalloc:
    case OpKind::kPunch: {
      f.fd = ::open(p.c_str(), O_WRONLY | O_CLOEXEC);
      if (f.fd < 0) return os_fail(op, "open(O_WRONLY)");
      const int mode = op.kind == OpKind::kPunch ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                                 : (op.keep_size ? FALLOC_FL_KEEP_SIZE : 0);
      if (::fallocate(f.fd, mode, static_cast<off_t>(op.off), static_cast<off_t>(op.len)) != 0)
        return os_fail(op, "fallocate");
      break;
    }
    case OpKind::kFsync:
    case OpKind::kFdatasync:
    case OpKind::kFsyncDir: {
      f.fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | (op.kind == OpKind::kFsyncDir ? O_DIRECTORY : 0));
      if (f.fd < 0) return os_fail(op, "open(O_RDONLY)");
      const int r = op.kind == OpKind::kFdatasync ? ::fdatasync(f.fd) : ::fsync(f.fd);
      if (r != 0) return os_fail(op, op.kind == OpKind::kFdatasync ? "fdatasync" : "fsync");
      break;
    }
    case OpKind::kSync:
      return fail(EINVAL, "{}: sync(2) does not reach a FUSE daemon (fuse_safe() rewrites it)", op.text());
  }
  // close is FUSE_FLUSH: its error is the op's (a write error may only show there).
  const int fd = f.fd;
  f.fd = -1;
  if (fd >= 0 && ::close(fd) != 0) return os_fail(op, "close");
  return {};
}

NextOp fuse_safe(NextOp next) {
  return [next = std::move(next)](const FsState& now, size_t index) -> std::optional<Op> {
    std::optional<Op> op = next(now, index);
    if (op && op->kind == OpKind::kSync) {
      Op root_fsync;
      root_fsync.kind = OpKind::kFsyncDir;
      return root_fsync;
    }
    return op;
  };
}

}  // namespace ubtrfs::crash
