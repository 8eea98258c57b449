// The ubtrfs daemon's command line: `ubtrfs IMAGE|DEVICE MOUNTPOINT [-o opts] [-f] [-d] [-h] [-V]`,
// in the shape mount.fuse3 calls it (`ubtrfs SOURCE MOUNTPOINT -o OPTS`, the -o list possibly
// holding mount(8)'s generic options), and the libfuse argument vector built from it.
//
// Owns: DaemonArgs (what the user asked), parse_daemon_args(), the usage text, and
// fuse_session_options() — the one place deciding which options reach the kernel mount:
// fsname=IMAGE,subtype=ubtrfs (so /proc/mounts shows `IMAGE MNT fuse.ubtrfs`),
// default_permissions always (permission checks, including POSIX ACLs, are the kernel's: the
// filesystem facade does none, see fs/filesystem.h), allow_other when asked, ro when the image is
// opened read-only, and the generic VFS flags (nosuid, nodev, noexec, noatime, ...) the kernel
// enforces itself. ubtrfs options are parsed by fs/mount_options.h and never reach libfuse.
// Invariants: parsing is pure (no I/O); the same argv always gives the same result.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fs/mount_options.h"
#include "io/status.h"

namespace ubtrfs::daemon {

// The kernel's entry and attribute cache lifetimes (fuse_ops.h says why they can be this long).
inline constexpr double kDefaultEntryTimeout = 86400;
inline constexpr double kDefaultAttrTimeout = 86400;

struct DaemonArgs {
  std::string source;       // IMAGE or DEVICE, as given
  std::string mountpoint;   // as given
  std::string option_list;  // every -o list joined with commas
  fs::MountOptions options;  // parsed option_list
  bool foreground = false;   // -f (or -d)
  bool debug = false;        // -d: foreground, log_level=debug, libfuse request tracing
  bool help = false;         // -h/--help: print usage, exit 0
  bool version = false;      // -V/--version
  // Loop tuning taken out of the -o list (libfuse's loop options, not session options).
  unsigned max_idle_threads = 10;
  unsigned max_threads = 0;  // 0: libfuse's default
  // How long the kernel may trust an entry / the attributes it was given (fuse_ops.h).
  double entry_timeout = kDefaultEntryTimeout;
  double attr_timeout = kDefaultAttrTimeout;
  bool clone_fd = true;
  // -o fuse_uring=auto|on|off: requests through FUSE over io_uring when the kernel offers it
  // (fuse_uring.h); on also says when it does not. fuse_uring_threads=N workers per queue.
  enum class FuseUringMode { kOff, kAuto, kOn };
  FuseUringMode fuse_uring = FuseUringMode::kAuto;
  unsigned fuse_uring_threads = 2;
  // Generic kernel mount flags from the -o list, forwarded to the kernel mount (nosuid, nodev...).
  std::vector<std::string> kernel_flags;
};

// Errors: EINVAL with a one-line message naming the bad argument or option.
[[nodiscard]] Result<DaemonArgs> parse_daemon_args(int argc, char** argv);

std::string usage_text(const char* prog);

// The `-o` list given to fuse_session_new (without the leading "-o"); source_path is the
// canonical image path shown as fsname. read_only: the filesystem was opened read-only.
std::string fuse_session_options(const DaemonArgs& args, const std::string& source_path, bool read_only);

}  // namespace ubtrfs::daemon
