// ubtrfs: the FUSE daemon. This file owns the order of the lifecycle; each step's mechanism lives
// elsewhere (daemon_cli: arguments, lifecycle: lock and detaching, fuse_ops: the requests,
// logging: where messages go).
//
//   1. parse the command line and -o list (errors: one line, exit 1, nothing touched);
//   2. canonicalize IMAGE and MOUNTPOINT (the daemon later runs in /); check what a user who is
//      not root may not do (user_mount.h: /dev/fuse, allow_other, the image's mode);
//   3. background mode: fork now, before any thread exists; the parent waits for the verdict;
//      then choose where messages go (logging.h; a -o log_file that cannot be opened: exit 32);
//   4. flock the image (EBUSY: another daemon), Filesystem::mount (feature gate, subvolume,
//      orphan cleanup, commit thread), fuse_session_new + fuse_session_mount with
//      fsname=IMAGE,subtype=ubtrfs,default_permissions — any failure: one line on stderr, exit 32;
//   5. report success (the parent exits 0), detach; from then on messages go where logging.h chose
//      (syslog, the journal, or a file named on stderr before detaching) and to the in-memory
//      ring that `ubtrfs-inspect log MNT` reads;
//   6. multi-threaded loop until `fusermount3 -u`/`umount` or SIGTERM/SIGINT/SIGHUP
//      (fuse_set_signal_handlers turns them into fuse_session_exit; SIGHUP only when not
//      inherited as ignored, e.g. under nohup);
//   7. remove the kernel mount, ignore further termination signals, Filesystem::unmount() (the
//      final commit), release the lock by exiting. Exit 2 with an error log when that commit
//      fails (the image then still holds the previous commit, intact).
// Exit codes follow mount(8): 1 usage, 32 mount failure; mount.fuse3 passes them through.
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "fs/filesystem.h"
#include "fs/scrub.h"
#include "io/nbd_device.h"
#include "tools/daemon/daemon_cli.h"
#include "tools/daemon/caller_fd.h"
#include "tools/daemon/fuse_ops.h"
#include "tools/daemon/fuse_uring.h"
#include "tools/daemon/name_invalidation.h"
#include "tools/daemon/page_cache_guard.h"
#include "tools/daemon/lifecycle.h"
#include "tools/daemon/logging.h"
#include "tools/daemon/user_mount.h"

namespace {

using namespace ubtrfs;
using namespace ubtrfs::daemon;

constexpr int kExitUsage = 1;
constexpr int kExitMountFailed = 32;
constexpr int kExitUnmountFailed = 2;

int error_exit(int code, const std::string& message) {
  fmt::print(stderr, "ubtrfs: error: {}\n", message);
  return code;
}

std::string canonical(const std::string& path) {
  char buf[PATH_MAX];
  return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

uint64_t committed_generation(fs::Filesystem& fs) {
  std::lock_guard lock(fs.info().super_mu());
  return fs.info().super().generation.get();
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

// stats_file=PATH: the counters as `ubtrfs-inspect stats --json` would show them, after the final
// commit (so the commit's own work is counted). A failure is logged, not fatal: the data is safe.
void write_stats_file(const std::string& path, const std::string& json) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    spdlog::error("cannot write the stats file {}: {}", path, std::strerror(errno));
    return;
  }
  const bool written = std::fwrite(json.data(), 1, json.size(), f) == json.size() && std::fputc('\n', f) != EOF;
  const int saved = errno;
  if (std::fclose(f) != 0 || !written) {
    spdlog::error("cannot write the stats file {}: {}", path, std::strerror(written ? errno : saved));
    return;
  }
  spdlog::info("counters written to {}", path);
}

// Where the last scrub's status is kept between mounts (fs/scrub.h; btrfs-progs keeps its own in
// /var/lib/btrfs/scrub.status.FSID): $UBTRFS_STATE_DIR, else /var/lib/ubtrfs for root, else
// $XDG_STATE_HOME/ubtrfs (~/.local/state/ubtrfs); the file is scrub.status.FSID.
std::string scrub_status_file(fs::Filesystem& filesystem) {
  std::string dir;
  if (const char* d = std::getenv("UBTRFS_STATE_DIR"); d && *d) dir = d;
  else if (geteuid() == 0) dir = "/var/lib/ubtrfs";
  else if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) dir = std::string(x) + "/ubtrfs";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = std::string(h) + "/.local/state/ubtrfs";
  else return "";
  std::string fsid;
  {
    std::lock_guard g(filesystem.info().super_mu());
    const uint8_t* u = filesystem.info().super().fsid;
    for (int i = 0; i < 16; ++i) fsid += fmt::format("{}{:02x}", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", u[i]);
  }
  return dir + "/scrub.status." + fsid;
}

int run(const DaemonArgs& args) {
  // 2. Canonical paths: /proc/mounts shows the image as given to fsname, and the unmount path
  //    must still resolve after the daemon chdir()s to /.
  //    An NBD URI (io/nbd_device.h) names an export on a server: it is used as given.
  const bool nbd = io::is_nbd_uri(args.source);
  const std::string source = nbd ? args.source : canonical(args.source);
  if (source.empty()) return error_exit(kExitMountFailed, fmt::format("cannot open {}: {}", args.source, strerror(errno)));
  const std::string mountpoint = canonical(args.mountpoint);
  struct stat mst;
  if (mountpoint.empty() || stat(mountpoint.c_str(), &mst) != 0)
    return error_exit(kExitMountFailed, fmt::format("cannot mount {}: mount point {} does not exist", source, args.mountpoint));
  if (!S_ISDIR(mst.st_mode))
    return error_exit(kExitMountFailed, fmt::format("cannot mount {}: mount point {} is not a directory", source, args.mountpoint));

  // 2b. What a user who is not root cannot do (user_mount.h): one line each, nothing touched.
  UserMountCheck user_check;
  user_check.source = source;
  user_check.mountpoint = mountpoint;
  user_check.read_only = args.options.read_only;
  user_check.allow_other = args.options.allow_other;
  user_check.uid = geteuid();
  if (auto s = check_user_mount(user_check); !s) return error_exit(kExitMountFailed, s.error().message);

  // 3. Fork before any thread exists.
  Detacher detacher;
  if (!args.foreground) {
    if (auto s = detacher.fork_and_wait(); !s) return error_exit(kExitMountFailed, s.error().message);
  }
  LogConfig log_config;
  log_config.level = args.options.log_level;
  log_config.background = !args.foreground;
  log_config.log_file = args.options.log_file;
  log_config.image = source;
  auto log_dest = init_logging(log_config);
  if (!log_dest)
    return error_exit(kExitMountFailed, fmt::format("cannot mount {}: {}", source, log_dest.error().message));

  // 4. Lock, open, mount.
  //    NBD has no lock to take: one writer per export is the user's rule (README, ubtrfs(8)).
  ImageLock lock;
  if (nbd) {
    spdlog::info("{} is an NBD export: no image lock, it must not be mounted read-write anywhere else", source);
  } else if (auto s = lock.acquire(source, args.options.read_only); !s) {
    return error_exit(kExitMountFailed, s.error().message);
  }

  fs::OpenOptions open;
  open.path = source;
  open.read_only = args.options.read_only;
  open.nologreplay = args.options.nologreplay;
  open.cache_bytes = args.options.cache_mb << 20;
  open.cow_overwrite = args.options.cow_overwrite;
  open.wb_inhibit = args.options.wb_inhibit;
  open.wb_hold_recopied = args.options.wb_hold_recopied;
  open.writeback.enabled = args.options.writeback;
  open.writeback.thresh_bytes = args.options.wb_thresh_mb << 20;
  open.writeback.ratio_pct = args.options.wb_ratio;
  open.writeback.interval_ms = args.options.wb_interval_s * 1000;
  open.writeback.expire_ms = args.options.wb_expire_s * 1000;
  open.writeback.coldest_first = args.options.wb_lru;
  open.write_behind = args.options.write_behind;
  auto mounted = fs::Filesystem::mount(open, args.options);
  if (!mounted) {
    // The filesystem's messages mostly start with the image's name already: say it once.
    const std::string& why = mounted.error().message;
    return error_exit(kExitMountFailed, why.starts_with(source + ": ") ? fmt::format("cannot mount {}", why)
                                                                       : fmt::format("cannot mount {}: {}", source, why));
  }
  std::unique_ptr<fs::Filesystem> filesystem = std::move(*mounted);
  const bool read_only = filesystem->read_only();
  const char* mode = read_only ? "ro" : "rw";
  filesystem->scrub().set_status_file(scrub_status_file(*filesystem));
  DaemonContext ctx{filesystem.get(), read_only};
  ctx.entry_timeout = args.entry_timeout;
  ctx.attr_timeout = args.attr_timeout;
  ctx.writeback_cache = args.options.writeback_cache && !read_only;

  // Shuts the filesystem down when the FUSE side could not be set up (nothing was visible yet).
  auto abandon = [&](const std::string& why) {
    if (auto s = filesystem->unmount(); !s) spdlog::error("closing {} after a failed mount: {}", source, s.error().message);
    return error_exit(kExitMountFailed, why);
  };

  const std::string session_opts = fuse_session_options(args, source, read_only);
  fuse_args fargs = FUSE_ARGS_INIT(0, nullptr);
  fuse_opt_add_arg(&fargs, "ubtrfs");
  fuse_opt_add_arg(&fargs, "-o");
  fuse_opt_add_arg(&fargs, session_opts.c_str());
  if (args.debug) fuse_opt_add_arg(&fargs, "-d");
  spdlog::debug("fuse session options: {}", session_opts);
  std::unique_ptr<fuse_session, SessionDeleter> se(
      fuse_session_new(&fargs, &ubtrfs_fuse_ops(), sizeof(fuse_lowlevel_ops), &ctx));
  fuse_opt_free_args(&fargs);
  if (!se) return abandon(fmt::format("cannot create the FUSE session for {} (options: {})", source, session_opts));
  ctx.session = se.get();
  // libfuse only catches signals whose disposition is the default. A shell starts `cmd &` with
  // SIGINT ignored, which would make `kill -INT` a no-op: SIGINT and SIGTERM always unmount.
  // SIGHUP keeps an inherited SIG_IGN (nohup means "survive the terminal").
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (fuse_set_signal_handlers(se.get()) != 0) return abandon("cannot install the signal handlers");
  if (fuse_session_mount(se.get(), mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(se.get());
    return abandon(fmt::format("cannot mount {} on {}: the FUSE mount was refused", source, mountpoint));
  }
  // FUSE over io_uring (fuse_uring.h): the hooks go in before the loop reads INIT.
  // The hooks also add INIT flags libfuse 3.14 cannot (fuse_init_ext.h), so they go in with the
  // ring off too.
  std::unique_ptr<FuseUring> uring;
  {
    FuseUringOptions uo;
    uo.ring = args.fuse_uring != DaemonArgs::FuseUringMode::kOff;
    uo.threads_per_queue = args.fuse_uring_threads;
    uo.required = args.fuse_uring == DaemonArgs::FuseUringMode::kOn;
    uring = FuseUring::install(se.get(), fuse_session_fd(se.get()), uo);
    if (!uring) spdlog::warn("cannot install libfuse's custom-I/O hooks: serving through /dev/fuse, without FUSE over io_uring or FUSE_HANDLE_KILLPRIV_V2");
    ctx.uring = uring.get();
  }
  // Before the loop reads INIT (op_init tells it the kernel's protocol minor).
  NameInvalidator names(se.get());
  ctx.names = &names;
  ctx.mount_dev = mounted_device(mountpoint);  // snapshot sources are recognised by it (caller_fd.h)

  // The writeback cache's guard holds data space for what the kernel may keep dirty of this mount
  // (page_cache_guard.h); without the cache it only records the open files.
  PageCacheGuard::Window window;
  if (ctx.writeback_cache) {
    // The window's floor: what the user asked for, else at most 1/512 of the device (what is held
    // for it is space a cached writer cannot use once the device is full: ENOSPC comes that much
    // early for it), and never more than the kernel's own default (1 % of its dirty threshold).
    // Without dirty_limit_mb= the window is elastic (dirty_window.h) when the limit can be set.
    const auto sfs = filesystem->statfs();
    const uint64_t device_bytes = sfs ? uint64_t{sfs->f_blocks} * sfs->f_frsize : 0;
    window.bdi_dir = mount_bdi_dir(ctx.mount_dev);
    uint64_t want = args.options.dirty_limit_mb << 20;
    const bool fixed = want != 0;
    if (!want) {
      const uint64_t dflt = read_bdi_max_bytes(window.bdi_dir);
      want = std::min<uint64_t>(dflt ? dflt : (64ull << 20), std::max<uint64_t>(device_bytes / 512, 256ull << 10));
    }
    const bool settable = write_bdi_max_bytes(window.bdi_dir, want);
    if (window.bdi_dir.empty())
      spdlog::warn("writeback cache: {} is not in /proc/self/mountinfo, so its dirty limit is unknown", mountpoint);
    else if (!settable)
      spdlog::warn("writeback cache: cannot set {}/max_bytes to {} (needs root); the kernel's limit stays",
                   window.bdi_dir, want);
    const uint64_t limit = read_bdi_max_bytes(window.bdi_dir);
    // Held: dirty_bound_for(limit) (what a cached writer cannot use once the device is full: at
    // 1 GiB, 12 MiB, 1.2 %).
    const uint64_t floor_bound = limit ? dirty_bound_for(limit) : 0;
    if (!floor_bound || floor_bound > device_bytes / 64) {
      // Unknown, or too large a share of this device (a user mount cannot lower the kernel's limit):
      // over 1/64 a cached writer would find the device full 1.6 % early (below about 700 MiB).
      spdlog::info("writeback cache off: the kernel may keep {} MiB of this mount dirty, too much for a {} MiB device",
                   limit >> 20, device_bytes >> 20);
      ctx.writeback_cache = false;
    } else {
      window.floor = limit;
      window.ceiling = fixed || !settable ? limit : std::max(limit, dirty_ceiling_for_machine());
      spdlog::info("writeback cache on: the kernel may keep {} KiB of this mount dirty ({}); {} KiB of data space held "
                   "for it",
                   limit >> 10,
                   window.ceiling > limit ? fmt::format("growing up to {} MiB while cached writers need it",
                                                        window.ceiling >> 20)
                                          : std::string("fixed"),
                   floor_bound >> 10);
    }
  }
  std::optional<PageCacheGuard> guard;
  guard.emplace(*filesystem, window);
  ctx.guard = &*guard;

  // 5. Mounted: report, detach. Without syslog or journal, the terminal learns where the log is.
  if (!args.foreground) {
    if (log_dest->target == LogTarget::kFile && log_dest->automatic && log_dest->created)
      fmt::print(stderr, "ubtrfs: {}: logging to {}\n", log_dest->why, log_dest->path);
    else if (log_dest->target == LogTarget::kNone)
      fmt::print(stderr, "ubtrfs: warning: {}: messages are kept in memory only (ubtrfs-inspect log {})\n",
                 log_dest->why, mountpoint);
    std::fflush(stderr);
    detach_stderr_logging();
  }
  spdlog::info("mounted {} on {} ({}, subvolume {}, generation {})", source, mountpoint, mode,
               filesystem->numbers().mounted_subvol(), committed_generation(*filesystem));
  detacher.ready();

  // 6. Serve.
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, args.clone_fd ? 1 : 0);
  fuse_loop_cfg_set_idle_threads(cfg, args.max_idle_threads);
  if (args.max_threads) fuse_loop_cfg_set_max_threads(cfg, args.max_threads);
  const int loop_rc = fuse_session_loop_mt(se.get(), cfg);
  fuse_loop_cfg_destroy(cfg);
  if (uring) uring->stop();  // no ring worker may run an operation past this point

  // 7. Shut down: the kernel mount goes first (no request can arrive any more), then the final
  //    commit, which no termination signal may interrupt.
  fuse_remove_signal_handlers(se.get());
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  if (loop_rc > 0) spdlog::info("signal {} received: unmounting {}", loop_rc, mountpoint);
  else if (loop_rc < 0) spdlog::error("FUSE loop on {} failed: {}", mountpoint, strerror(-loop_rc));
  fuse_session_unmount(se.get());
  ctx.names = nullptr;
  names.stop();  // before the session goes: its thread writes to the session's /dev/fuse
  const bool cached = ctx.writeback_cache;
  ctx.guard = nullptr;
  guard.reset();  // its held space goes back before the final commit
  auto unmounted = filesystem->unmount();
  if (!args.options.stats_file.empty())
    write_stats_file(args.options.stats_file,
                     with_writeback_cache_stats(with_transport_stats(filesystem->stats_json(), uring.get()), cached,
                                                nullptr));
  se.reset();
  if (!unmounted) {
    spdlog::error("final commit of {} failed, the image keeps generation {}: {}", source,
                  committed_generation(*filesystem), unmounted.error().message);
    return kExitUnmountFailed;
  }
  spdlog::info("unmounted {} from {} ({}, generation {})", source, mountpoint, mode,
               committed_generation(*filesystem));
  filesystem.reset();
  spdlog::default_logger()->flush();
  return loop_rc < 0 ? kExitUnmountFailed : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // libfuse serves requests from a pool of worker threads; glibc gives each its own malloc arena,
  // and each arena keeps the pages its thread freed (measured: 8 writers at cache_mb=16 held
  // ~10 MB more in arenas than with one). Two arenas on this 2-core target keep contention low and
  // the resident size within cache_mb + 64 MiB (issue 8); MALLOC_ARENA_MAX still overrides.
  if (!std::getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
  auto args = parse_daemon_args(argc, argv);
  if (!args) return error_exit(kExitUsage, args.error().message);
  if (args->help) {
    fmt::print("{}", usage_text("ubtrfs"));
    return 0;
  }
  if (args->version) {
    fmt::print("ubtrfs {} (libfuse {})\n", UBTRFS_VERSION, fuse_pkgversion());
    return 0;
  }
  return run(*args);
}
