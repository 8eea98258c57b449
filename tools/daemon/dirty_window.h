// The dirty window of the FUSE writeback cache: how much of this mount the kernel may keep dirty in
// its page cache (the mount's bdi max_bytes), and what the daemon must hold for it.
//
// Owns: the sizing rules (pure functions, unit-tested) and the kernel knob they act through —
// /sys/class/bdi/MAJOR:MINOR/max_bytes (root only).
//
// Why it is elastic (PageCacheGuard runs it): a small fixed window (1/512 of the device) costs
// little space but makes random writes no faster than without the cache — the kernel throttles at
// the window and writes scattered pages back one FUSE request each (0.8-1.1x the uncached daemon,
// measured). A window as large as the working set lets the kernel merge them (126,000 random 4 KiB
// IOPS against 37,000 with the small window, a 700 MiB window on this machine). Holding that much
// all the time would take a quarter of the device from every writer and turn it into data chunks;
// so the window grows only while cached writers push data through it, stays below a quarter of
// the data space a writer could still use, and goes back to its floor when no file is open for
// cached writing.
//
// Why it never shrinks while a cached writer is open: the guard may give held space back only once
// no page dirtied under a larger limit can still be unsent, and the only barrier the daemon sees
// is the RELEASE of the last cached writable open (FUSE writes an inode's pages back at close and
// sends RELEASE only after every write holding that open's file has completed). syncfs(2) is not
// one: on this kernel it returned with up to 49 MiB of a 400 MiB window's pages not yet received
// (measured: 1 MiB writes, syncfs, statvfs). While writers stay open, what is held is theirs: a
// page-cache write that finds the device otherwise full draws on it (page_cache_guard.h).
//
// Invariant (what the guard's held space covers): the kernel never holds more than
// dirty_bound_for(L) bytes of unsent pages, where L is the largest limit in force since the last
// moment no file was open for cached writing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace ubtrfs::daemon {

// Held bytes for a kernel limit: doubled (the limit is a share of a dirty threshold that follows
// free memory) plus a margin for the writers' overshoot, at least 8 MiB (a small limit is overshot
// by a whole write() call's pages: 300 KiB past a 256 KiB limit was seen on a 128 MiB image; and a
// write() call that passed the kernel's size check before the guard closed keeps filling pages —
// the margin is what it may add safely) and at most 16 MiB.
uint64_t dirty_bound_for(uint64_t limit);

// The largest limit, in whole MiB and within [floor, ceiling], whose bound is at most a quarter of
// `usable` (the data space a writer could still use, the guard's own holding included).
uint64_t dirty_target_for(uint64_t usable, uint64_t floor, uint64_t ceiling);

// One decision of the window thread (PageCacheGuard), for the limit in force:
// - no cached writer open: back to the floor once that has lasted a second (`idle_a_second`);
// - one file open for cached writing pushed (`pushed`) at least half the limit through page-cache
//   writes since it last changed, and the target for `usable` is at least 4x the limit: grow to
//   the target;
// - otherwise stay (never smaller while writers are open: see above).
struct DirtyWindowStep {
  enum Kind { kStay, kGrow, kToFloor } kind = kStay;
  uint64_t to = 0;
};
DirtyWindowStep next_dirty_window(uint64_t limit, uint64_t floor, uint64_t ceiling, uint64_t usable, uint64_t pushed,
                                  bool cached_writers, bool idle_a_second);

// The ceiling of an elastic window on this machine: 1 GiB, or a sixteenth of RAM if less.
uint64_t dirty_ceiling_for_machine();

// /sys/class/bdi/MAJOR:MINOR of the FUSE mount whose device number is `mount_dev` (caller_fd.h's
// mounted_device: from /proc/self/mountinfo, never a stat of the mount itself); empty for 0.
std::string mount_bdi_dir(dev_t mount_dev);

// The bdi's max_bytes: write (false when refused: not root) and read (what the kernel reports; it
// rounds through a ratio of its dirty threshold; 0 when it cannot be read).
bool write_bdi_max_bytes(const std::string& bdi_dir, uint64_t bytes);
uint64_t read_bdi_max_bytes(const std::string& bdi_dir);

}  // namespace ubtrfs::daemon
