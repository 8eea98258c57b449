// Recording through the daemon: an OpRunner (recorder.h) that serves a real kernel FUSE mount with
// the daemon's operation table (tools/daemon/fuse_ops.h) over the filesystem the recorder mounted
// on its recording device, and runs each op as the POSIX calls a program would make on that mount
// (open/pwrite/close, fallocate, truncate, rename, link, setxattr, fsync on a descriptor, ...).
// So the crash states judged are those of the whole daemon path — kernel FUSE requests, libfuse,
// the operation table, the facade — not only of the library calls (issue 9: "and, for a sample,
// through the daemon with the recording device behind it").
//
// Owns: the FUSE session (new, mount on a fresh directory, a loop thread, unmount, destroy) and
// the op-to-syscall translation. sync(2) and syncfs(2) never reach a FUSE daemon, so a workload
// run through FUSE must not contain kSync (fuse_safe() rewrites it to an fsync of the root).
// Needs root (a FUSE mount without fusermount3) and /dev/fuse: available() says why not.
// Thread safety: one recording at a time; the loop thread only serves requests.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "tests/crash/recorder.h"

struct fuse_session;

namespace ubtrfs::crash {

class FuseRunner final : public OpRunner {
 public:
  explicit FuseRunner(std::string scratch_dir);
  ~FuseRunner() override;
  // Empty when this process can serve FUSE mounts, else why not.
  static std::string unavailable_reason();

  std::string name() const override { return "fuse"; }
  [[nodiscard]] Status start(fs::Filesystem& fs) override;
  [[nodiscard]] Status run(fs::Filesystem& fs, const Op& op, uint64_t* new_ino) override;
  [[nodiscard]] Status stop() override;

 private:
  struct Context;
  std::string scratch_;
  std::string mnt_;
  std::unique_ptr<Context> ctx_;
  fuse_session* se_ = nullptr;
  std::thread loop_;
};

// The workload without sync (see above): each kSync becomes an fsync of the root directory.
NextOp fuse_safe(NextOp next);

}  // namespace ubtrfs::crash
