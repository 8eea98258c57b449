// PageCacheGuard: what makes the FUSE writeback cache (-o writeback_cache=on) keep the reservation
// rule — a write() that returned success is on disk after the next commit — although the kernel
// acknowledges cached writes without asking the daemon (FUSE has no counterpart of btrfs's
// delalloc reservation at write_begin).
//
// Owns: the open files' modes (PageCacheGuard::OpenFile is each open's fuse_file_info::fh), the
// count of cached writable opens per inode, a DATA reservation `held` for written-but-unsent pages,
// and the guard's state, open or closed.
//
// The bound. The kernel holds at most `bound` bytes of this mount's pages dirty or under writeback:
// FUSE gives each mount a strict per-device dirty limit (1 % of the dirty threshold by default;
// /sys/class/bdi/<dev>/max_bytes), and writers block in balance_dirty_pages above it. `bound` is
// dirty_bound_for(that limit) (tools/daemon/dirty_window.h: doubled plus a margin).
//
// The window (dirty_window.h says why): the limit starts at its floor (1/512 of the device, or
// dirty_limit_mb=) and, unless fixed (dirty_limit_mb= given, or not root), a thread of the guard
// (ubtrfs-wbwin, every 100 ms) moves it:
// - grows it to dirty_target_for(usable) when one file open for cached writing has pushed at least
//   half the current limit through page-cache writes since the last change, and the target is at
//   least 4x the limit: `held` is raised first (Filesystem::hold_data), the kernel limit after;
// - drops it to the floor a second after the last cached writable open was released, and only
//   then gives back what was held beyond the floor's bound (RELEASE is the one barrier: every page
//   of that open has been written by then; syncfs is not one, see dirty_window.h).
// A page-cache write that finds no space while the window is above its floor lowers the kernel
// limit to the floor at once and draws on `held` without closing the guard (what is held covers
// every unsent page); the guard closes only when a draw reaches into the floor's bound.
// df's Avail leaves `held` out (what unsent pages may need: while writers are open nothing held
// can be promised to a new write()).
//
// Invariants:
// - While open, `held` >= the bound of every limit in force since no file was open for cached
//   writing, less what draws took for the pages they wrote: every page the kernel holds can be
//   written even when the device is otherwise full, because a page-cache write (fi->writepage)
//   that finds no space draws from `held` (Filesystem::write's pool).
// - The guard closes at the first draw into the floor's bound (the device is full apart from it).
//   From then on no cached write is accepted: every cached writable open has its attributes invalidated and
//   answered with timeout 0, so the kernel asks GETATTR before each write() (its writeback-cache
//   write path refreshes size and mode first) and gets ENOSPC; new writable opens are direct I/O,
//   whose writes reserve synchronously and fail with ENOSPC in write() as without the cache.
// - Closed, the limit is at its floor and `held` is only drawn from, never refilled; it reopens
//   (refilled to the floor's bound) when no cached writable open is left and the device has twice
//   that free again.
// - Opens of append-only, immutable and sync (+a, +i, +S) inodes are always direct I/O: the kernel's
//   page cache would rewrite a partial last page below EOF or delay a write chattr +S wants synced.
//
// The one gap left (said in the README): a single write() call that had passed the kernel's size
// check before the guard closed keeps filling pages; if that one call alone writes more than the
// bound's margin beyond what was dirty, its last pages can fail in writeback (the error is then
// reported by fsync() and close(), as for every writeback filesystem).
//
// Thread safety: every member is guarded by mu_; the facade calls happen outside it except
// release of `held` and the no-wait reads of free space; hold_data (which may flush and wait) runs
// with mu_ released. The bdi's max_bytes is written only under mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "fs/filesystem.h"
#include "tools/daemon/dirty_window.h"

struct fuse_session;

namespace ubtrfs::daemon {

class PageCacheGuard {
 public:
  struct OpenFile {
    uint64_t ino = 0;
    bool writable = false;
    bool cached = false;  // writes go through the kernel's page cache (not FOPEN_DIRECT_IO)
  };

  // The kernel limit's range and where to act on it. floor 0: the writeback cache is off; every
  // open is cached for reading only and every write arrives synchronously (nothing to guard).
  // ceiling <= floor: a fixed window (no thread).
  struct Window {
    uint64_t floor = 0;
    uint64_t ceiling = 0;
    std::string bdi_dir;  // /sys/class/bdi/MAJOR:MINOR of the mount
  };

  PageCacheGuard(fs::Filesystem& fs, Window window);
  ~PageCacheGuard();
  PageCacheGuard(const PageCacheGuard&) = delete;
  PageCacheGuard& operator=(const PageCacheGuard&) = delete;

  bool enabled() const { return window_.floor != 0; }
  bool elastic() const { return window_.ceiling > window_.floor; }
  uint64_t bound();  // of the current limit

  // An open of `ino` with `flags`: decides cached or direct I/O. The caller replies with
  // direct_io = !cached and fh = the returned pointer, and calls release() when the kernel does.
  OpenFile* open(uint64_t ino, int flags);
  void release(OpenFile* f);

  // A write; `from_page_cache`: the kernel's writeback of cached pages (fi->writepage). Closes the
  // guard when such a write needed `held` (session: where to send the invalidations).
  Result<size_t> write(fuse_session* session, uint64_t ino, uint64_t off, std::span<const uint8_t> data,
                       bool from_page_cache);

  // GETATTR through an open file: ENOSPC for a cached writable open while closed (the kernel asks
  // before every cached write()). attr_timeout_for: 0 for an inode with cached writable opens while
  // closed, else `normal`.
  bool refuse_cached_write(const OpenFile* f);
  double attr_timeout_for(uint64_t ino, double normal);

  // For stats and tests.
  bool is_open();
  uint64_t held();
  struct WindowStats {
    uint64_t limit = 0, floor = 0, ceiling = 0, grows = 0, shrinks = 0, max_bound = 0;
  };
  WindowStats window_stats();

 private:
  void close_locked(fuse_session* session);
  void try_reopen_locked();
  void set_limit_locked(uint64_t limit);
  void window_main();
  // One step of the window thread; `lk` holds mu_ (released around hold_data).
  void window_step(std::unique_lock<std::mutex>& lk);

  fs::Filesystem& fs_;
  const Window window_;
  std::mutex mu_;
  // Written under mu_; read without it on the FUSE reply path (getattr/entry timeouts, the GETATTR
  // gate), where the common answer — open — needs no lock.
  std::atomic<bool> open_{true};
  uint64_t held_ = 0;                                   // GUARDED_BY(mu_)
  // GUARDED_BY(mu_): per inode with cached writable opens, how many, and the page-cache bytes it
  // sent since the window last changed (what grows the window: one file pushing half of it — many
  // small files, each written back at its close, never do).
  struct CachedWriter {
    unsigned opens = 0;
    uint64_t pushed = 0;
  };
  std::unordered_map<uint64_t, CachedWriter> cached_writers_;
  // The window (GUARDED_BY(mu_)): the kernel limit in force; when the last cached writer closed;
  // counters.
  uint64_t limit_ = 0;
  std::chrono::steady_clock::time_point idle_since_{};
  uint64_t grows_ = 0, shrinks_ = 0, max_bound_ = 0;
  std::condition_variable window_cv_;
  bool stop_ = false;
  std::thread window_thread_;
};

// The daemon's stats JSON with the writeback cache's under "writeback_cache": {"on": bool, and with
// a guard "bound_bytes", "held_bytes", "guard": "open"|"closed", "limit_bytes", "floor_bytes",
// "ceiling_bytes", "grows", "shrinks", "max_bound_bytes" (the largest bound since the mount)}.
// Since df's Avail leaves what is held out (op_statfs), a writer may place up to that much
// more than the last Avail said: the pages the kernel held dirty when the device filled, and a
// grown window given back at its writers' close (the fill-to-full suite reads max_bound_bytes).
std::string with_writeback_cache_stats(const std::string& stats, bool on, PageCacheGuard* guard);

}  // namespace ubtrfs::daemon
