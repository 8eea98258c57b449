// Command-line parsing of the ubtrfs daemon and the libfuse option list; see daemon_cli.h.
#include "tools/daemon/daemon_cli.h"

#include <charconv>
#include <string_view>

#include <fmt/format.h>

namespace ubtrfs::daemon {

namespace {

// Generic VFS flags that the kernel enforces on the mount itself and that libfuse 3.14's mount
// code turns into MS_* flags. fs/mount_options.cpp accepts and drops them, so they are collected
// from the raw list here ("ro"/"rw" are decided from the opened filesystem instead). libfuse
// refuses the other atime variants (relatime, nodiratime, strictatime...): those are accepted and
// dropped (the kernel default relatime applies).
bool is_kernel_flag(std::string_view name) {
  static constexpr std::string_view kFlags[] = {"suid",  "nosuid", "dev",     "nodev", "exec",   "noexec",
                                                "async", "sync",   "dirsync", "atime", "noatime"};
  for (auto f : kFlags)
    if (name == f) return true;
  return false;
}

std::optional<unsigned> parse_unsigned(std::string_view s) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_seconds(std::string_view s) {
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || !(v >= 0 && v <= 1e6)) return std::nullopt;
  return v;
}

// libfuse splits -o lists at commas; a backslash protects a comma (or itself) inside a value.
std::string escape_option_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

}  // namespace

Result<DaemonArgs> parse_daemon_args(int argc, char** argv) {
  DaemonArgs a;
  std::vector<std::string> positional;
  std::vector<std::string> lists;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
      positional.emplace_back(arg);
    } else if (arg == "--") {
      options_done = true;
    } else if (arg == "-h" || arg == "--help") {
      a.help = true;
    } else if (arg == "-V" || arg == "--version") {
      a.version = true;
    } else if (arg == "-f") {
      a.foreground = true;
    } else if (arg == "-d") {
      a.debug = true;
      a.foreground = true;
    } else if (arg == "-o") {
      if (i + 1 >= argc) return fail(EINVAL, "option '-o' needs an argument");
      lists.emplace_back(argv[++i]);
    } else if (arg.starts_with("-o")) {
      lists.emplace_back(arg.substr(2));
    } else {
      return fail(EINVAL, "unknown command-line option '{}' (see --help)", arg);
    }
  }
  if (a.help || a.version) return a;
  if (positional.size() != 2)
    return fail(EINVAL, "expected IMAGE and MOUNTPOINT, got {} argument{} (see --help)", positional.size(),
                positional.size() == 1 ? "" : "s");
  a.source = positional[0];
  a.mountpoint = positional[1];
  for (const auto& l : lists) {
    if (l.empty()) continue;
    if (!a.option_list.empty()) a.option_list += ',';
    a.option_list += l;
  }
  a.options = UBTRFS_TRY(fs::parse_mount_options(a.option_list));
  if (a.debug) a.options.log_level = "debug";

  // Loop options travel in the -o list like mount options but belong to the session loop.
  std::vector<std::string> session_passthrough;
  for (const auto& opt : a.options.fuse_passthrough) {
    auto eq = opt.find('=');
    std::string_view name = std::string_view(opt).substr(0, eq);
    if (name == "entry_timeout" || name == "attr_timeout") {
      auto v = eq == std::string::npos ? std::nullopt : parse_seconds(std::string_view(opt).substr(eq + 1));
      if (!v) return fail(EINVAL, "invalid value for mount option '{}' (seconds, 0 to 1000000)", opt);
      (name == "entry_timeout" ? a.entry_timeout : a.attr_timeout) = *v;
    } else if (name == "max_idle_threads" || name == "max_threads") {
      auto v = eq == std::string::npos ? std::nullopt : parse_unsigned(std::string_view(opt).substr(eq + 1));
      if (!v || (name == "max_threads" && *v == 0))
        return fail(EINVAL, "invalid value for mount option '{}'", opt);
      (name == "max_idle_threads" ? a.max_idle_threads : a.max_threads) = *v;
    } else if (name == "fuse_uring") {
      const std::string_view v = eq == std::string::npos ? "on" : std::string_view(opt).substr(eq + 1);
      if (v == "on") a.fuse_uring = DaemonArgs::FuseUringMode::kOn;
      else if (v == "off") a.fuse_uring = DaemonArgs::FuseUringMode::kOff;
      else if (v == "auto") a.fuse_uring = DaemonArgs::FuseUringMode::kAuto;
      else return fail(EINVAL, "invalid value for mount option '{}' (auto, on or off)", opt);
    } else if (name == "fuse_uring_threads") {
      auto v = eq == std::string::npos ? std::nullopt : parse_unsigned(std::string_view(opt).substr(eq + 1));
      if (!v || *v == 0 || *v > 64) return fail(EINVAL, "invalid value for mount option '{}' (1 to 64)", opt);
      a.fuse_uring_threads = *v;
    } else {
      session_passthrough.push_back(opt);
    }
  }
  a.options.fuse_passthrough = std::move(session_passthrough);
  for (const auto& opt : fs::split_option_list(a.option_list))
    if (is_kernel_flag(opt)) a.kernel_flags.push_back(opt);
  return a;
}

std::string fuse_session_options(const DaemonArgs& args, const std::string& source_path, bool read_only) {
  std::vector<std::string> opts;
  bool user_fsname = false, user_subtype = false;
  for (const auto& p : args.options.fuse_passthrough) {
    user_fsname |= p.starts_with("fsname=");
    user_subtype |= p.starts_with("subtype=");
  }
  if (!user_fsname) opts.push_back("fsname=" + escape_option_value(source_path));
  if (!user_subtype) opts.push_back("subtype=ubtrfs");
  opts.push_back("default_permissions");
  if (args.options.allow_other) opts.push_back("allow_other");
  opts.push_back(read_only ? "ro" : "rw");
  for (const auto& f : args.kernel_flags) opts.push_back(f);
  for (const auto& p : args.options.fuse_passthrough) opts.push_back(p);
  std::string out;
  for (const auto& o : opts) {
    if (!out.empty()) out += ',';
    out += o;
  }
  return out;
}

std::string usage_text(const char* prog) {
  return fmt::format(
      R"(usage: {0} IMAGE|DEVICE MOUNTPOINT [-o OPTIONS] [-f] [-d]
       {0} -h|--help | -V|--version

Mounts a btrfs image or block device with the ubtrfs FUSE daemon. Also reachable as
`mount -t fuse.ubtrfs IMAGE MOUNTPOINT -o OPTIONS` and through fstab (type fuse.ubtrfs).
IMAGE may be an NBD URI (nbd://host/export, nbd+unix:///?socket=PATH): no lock, one writer.

  -o OPTIONS     comma-separated mount options (may be repeated), see below
  -f             stay in the foreground, log to stderr
  -d             debug: foreground, log_level=debug, trace every FUSE request
  -h, --help     print this help
  -V, --version  print the version

ubtrfs options:
  ro                    open the image read-only (nothing is ever written)
  rw                    read-write (default); later options override earlier ones
  commit=SECONDS        periodic commit interval, 1..300 (default 30)
  cache_mb=N            tree block cache budget in MiB (default 256)
  log_level=LEVEL       trace|debug|info|warn|error|critical|off (default info)
  subvolid=ID           mount this subvolume (default: the default subvolume)
  subvol=PATH           mount the subvolume at PATH
  nologreplay           refuse a read-write mount of an image with a log tree (left by fsync
                        before a crash) instead of replaying it; also rescue=nologreplay and
                        norecovery
  cow_overwrite=on|off  fix 1: overwrite a tree block written earlier in the same transaction in
                        place instead of copying it again (default off; see README)
  wb_inhibit=on|off|handle
                        fix 2: background writeback leaves the tree blocks a running operation
                        copied or reused alone until it ends, and a block copied a second time
                        in a transaction alone until the commit (default on); `handle` is the
                        patch series' handle-scoped inhibition alone
  write_behind=on|off   file data goes to the image through a queue and a worker thread, so the
                        thread that flushes it goes on at once (default on)
  notreelog             fsync by full commit instead of the tree log (the kernel's option;
                        `treelog`, the default, turns the log back on)
  discard[=async|sync]  discard what each commit frees, in the background (btrfs discard=async;
                        `sync` is the same); `nodiscard`, the default, turns it off. `fstrim
                        MOUNTPOINT` trims all free space at once in either case
  compress[=TYPE[:LEVEL]]
                        compress newly written data: TYPE zlib (default; LEVEL 1-9, default 3),
                        lzo or zstd (LEVEL 1-15, default 3); no/none turns it off (default off).
                        Incompressible data (the kernel's heuristic) is stored as it is
  compress-force[=TYPE[:LEVEL]]
                        the same, skipping the heuristic, and without ever marking a file
                        NOCOMPRESS (chattr +c / btrfs.compression compress single files)
  writeback=on|off      background writeback of dirty tree blocks through io_uring (default on)
  wb_thresh_mb=N        write back in the background above N MiB of dirty tree blocks (default 32)
  wb_ratio=PCT          ... or above PCT % of cache_mb, whichever is lower (default 10; 0: off)
  wb_interval=SECONDS   periodic writeback wakeup (default 5)
  wb_expire=SECONDS     the periodic pass writes blocks dirty for this long (default 30)
  wb_order=lru|address  background writeback order: least recently used blocks first
                        (default), or by address from a cyclic cursor as the kernel's
                        btree inode does (more hot blocks written, then copied again)
  writeback_cache=on|off  the kernel's page cache keeps written data and sends it merged, later
                        (default off); write() still gets ENOSPC when the device is full: space
                        for what the kernel may hold dirty is held apart (see README)
  dirty_limit_mb=N      how much of this mount the kernel may keep dirty with the writeback cache
                        (root; default: 1/512 of the device, at most the kernel's own limit)
  stats_file=PATH       write the live counters (ubtrfs-inspect stats) as JSON to PATH at unmount
  log_file=PATH         always log to PATH (appended; created 0640), in the foreground besides stderr
  allow_other           let other users access the mount (non-root: needs user_allow_other
                        in /etc/fuse.conf)
  default_permissions   accepted; always on: the kernel checks permissions and POSIX ACLs
FUSE options: fsname=, subtype=, max_read=, blksize=, auto_unmount,
              max_idle_threads=N (default 10), max_threads=N,
              fuse_uring=auto|on|off: requests through FUSE over io_uring when the kernel offers
              it (Linux 6.14+ with the fuse module parameter enable_uring=Y); auto (default)
              uses it when offered, on also says when it is not; fuse_uring_threads=N worker
              threads per CPU (default 2)
              entry_timeout=SECONDS, attr_timeout=SECONDS: how long the kernel caches names
              and attributes (default 86400: every change passes through this mount)
Generic options passed to the kernel mount: nosuid, suid, nodev, dev, noexec, exec, sync,
  async, dirsync, noatime, atime. Accepted and ignored (mount(8) or kernel defaults): relatime,
  norelatime, diratime, nodiratime, strictatime, nostrictatime, lazytime, defaults, auto,
  noauto, user, users, nofail, _netdev, x-*, comment=
Unknown options are refused and nothing is mounted.

Messages: in the foreground on stderr. In the background to syslog when its socket accepts a
connection, else to the systemd journal, else to /run/ubtrfs/<image path with '/' as '-'>.log
(a user who is not root: $XDG_RUNTIME_DIR/ubtrfs/, or memory only without XDG_RUNTIME_DIR; the
daemon names that file on stderr before detaching); warnings and errors also go to stderr
until the mount is made. The sockets and the directory can be moved with UBTRFS_SYSLOG_SOCKET
(default /dev/log), UBTRFS_JOURNAL_SOCKET (default /run/systemd/journal/socket) and
UBTRFS_LOG_DIR (default /run/ubtrfs). Whatever the destination, the last 512 messages at info
level and above are kept in memory: `ubtrfs-inspect log MOUNTPOINT` shows them, and
`ubtrfs-inspect stats MOUNTPOINT` the live counters (as another user: mount with allow_other).

Exit status: 0 mounted (and, in the foreground, unmounted cleanly); 1 invalid command line or
options; 32 the mount failed (image cannot be opened, in use by another daemon, unsupported
features, FUSE mount refused, log_file cannot be opened); 2 the final commit at unmount failed
(the image keeps the previous commit).
A user who is not root mounts through fusermount3 (libfuse runs it) and unmounts with
`fusermount3 -u MOUNTPOINT`; it needs read-write access to the image (read for -o ro) and
to /dev/fuse, and allow_other needs user_allow_other in /etc/fuse.conf.
The image is flock()ed while mounted (exclusive read-write, shared read-only); the lock is
released only after the final commit, so `flock IMAGE true` waits for an unmount to finish.
)",
      prog);
}

}  // namespace ubtrfs::daemon
