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
// that limit doubled plus a margin (the limit follows free memory; writers overshoot it by their
// ratelimit pages).
//
// Invariants:
// - While open, `held` == bound: every page the kernel holds can be written even when the device
//   is otherwise full, because a page-cache write (fi->writepage) that finds no space draws from
//   `held` (Filesystem::write's pool).
// - The guard closes at the first such draw (the device is full apart from `held`). From then on
//   no cached write is accepted: every cached writable open has its attributes invalidated and
//   answered with timeout 0, so the kernel asks GETATTR before each write() (its writeback-cache
//   write path refreshes size and mode first) and gets ENOSPC; new writable opens are direct I/O,
//   whose writes reserve synchronously and fail with ENOSPC in write() as without the cache.
// - Closed, `held` is only drawn from, never refilled; it reopens (refilled to bound) when no cached
//   writable open is left and the device has 2 x bound free again.
// - Opens of append-only, immutable and sync (+a, +i, +S) inodes are always direct I/O: the kernel's
//   page cache would rewrite a partial last page below EOF or delay a write chattr +S wants synced.
//
// The one gap left (said in the README): a single write() call that had passed the kernel's size
// check before the guard closed keeps filling pages; if that one call alone writes more than the
// bound's margin beyond what was dirty, its last pages can fail in writeback (the error is then
// reported by fsync() and close(), as for every writeback filesystem).
//
// Thread safety: every member is guarded by mu_; the facade calls happen outside it except
// hold/release of `held`, which never wait while the lock is held by another caller's request.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "fs/filesystem.h"

struct fuse_session;

namespace ubtrfs::daemon {

class PageCacheGuard {
 public:
  struct OpenFile {
    uint64_t ino = 0;
    bool writable = false;
    bool cached = false;  // writes go through the kernel's page cache (not FOPEN_DIRECT_IO)
  };

  // `bound_bytes` 0: the writeback cache is off; every open is cached for reading only and every
  // write arrives synchronously (nothing to guard).
  PageCacheGuard(fs::Filesystem& fs, uint64_t bound_bytes);
  ~PageCacheGuard();
  PageCacheGuard(const PageCacheGuard&) = delete;
  PageCacheGuard& operator=(const PageCacheGuard&) = delete;

  bool enabled() const { return bound_ != 0; }
  uint64_t bound() const { return bound_; }

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

 private:
  void close_locked(fuse_session* session);
  void try_reopen_locked();

  fs::Filesystem& fs_;
  const uint64_t bound_;
  std::mutex mu_;
  // Written under mu_; read without it on the FUSE reply path (getattr/entry timeouts, the GETATTR
  // gate), where the common answer — open — needs no lock.
  std::atomic<bool> open_{true};
  uint64_t held_ = 0;                                   // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, unsigned> cached_writers_;  // GUARDED_BY(mu_): ino -> cached writable opens
};

// The kernel's dirty limit for the FUSE mount at `mountpoint` (/sys/class/bdi/MAJOR:MINOR/max_bytes,
// the device found in /proc/self/mountinfo), after setting it to `set_bytes` when that is not 0
// (root only; a warning otherwise); 0 when it cannot be read.
uint64_t kernel_dirty_limit(const std::string& mountpoint, uint64_t set_bytes);

// The daemon's stats JSON with the writeback cache's under "writeback_cache": {"on": bool, and with
// a guard "bound_bytes", "held_bytes", "guard": "open"|"closed"}. Since df's Avail leaves the held
// bytes out (op_statfs), a writer may place up to held_bytes more than the last Avail said: the
// pages the kernel held dirty when the device filled (the fill-to-full suite reads it for that).
std::string with_writeback_cache_stats(const std::string& stats, bool on, PageCacheGuard* guard);

}  // namespace ubtrfs::daemon
