// FuseUring: FUSE over io_uring (protocol 7.42, Linux 6.14 and later, module parameter
// fuse.enable_uring) beneath libfuse 3.14's low-level API, which only speaks the /dev/fuse
// read()/writev() transport. Mount option `fuse_uring=auto` (the default: the ring when the kernel
// offers it), `on` (the same, and a message when it does not), `off`.
//
// How it fits: libfuse's custom-I/O hooks (fuse_session_custom_io) see every request read from
// /dev/fuse and every reply libfuse writes. The INIT request says whether the kernel offers the ring
// (it sets FUSE_OVER_IO_URING in flags2 only while enable_uring is on); if it does, the INIT reply is
// patched to accept it (FUSE_INIT_EXT + the flag) and, once the reply is written (the kernel refuses
// registrations before INIT is answered), worker threads register ring entries: for each of the
// kernel's queues (one per possible CPU; a request goes to the queue of the CPU its caller runs on)
// `threads_per_queue` threads pinned to that CPU, each with its own io_uring (128-byte SQEs) and
// one entry (a header buffer and a payload buffer). The kernel switches to the ring once every queue has an entry;
// until then, and for FORGET and INTERRUPT always, requests keep coming through /dev/fuse and
// libfuse's own loop.
//
// A ring request arrives as the completion of the entry's REGISTER or COMMIT_AND_FETCH command:
// fuse_in_header in the header area, the first argument in op_in, the other arguments in the
// payload. The worker rebuilds the /dev/fuse layout in place — header and first argument copied to
// just before the payload, which is never copied — and hands it to fuse_session_process_buf, so
// the daemon's operations run unchanged on the worker thread. Their reply reaches the writev hook;
// a reply whose unique belongs to a ring entry is copied into it (out header in the header area,
// every argument concatenated in the payload) and committed by COMMIT_AND_FETCH, which also arms
// the entry for its next request. Everything else (replies to /dev/fuse requests, notifications)
// is written to /dev/fuse as before.
//
// Invariants: an entry belongs either to the kernel (a command in flight) or to exactly one request
// (from its completion to its commit); in the second state its `owned` holds that request's
// unique, and the reply takes it back to 0 (the worker's own thread without a lookup). Only the worker thread touches its ring's submission queue: a reply written
// by another thread is queued for the worker and the worker woken through an eventfd it polls.
// If the kernel refuses a registration it leaves ring mode and requests keep coming through
// /dev/fuse (fuse_uring_register failing clears fc->io_uring); the daemon serves them as before.
// Teardown: stop() wakes the workers, which finish the request in hand and exit; the kernel
// cancels the commands of a ring that goes away.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

struct fuse_session;

namespace ubtrfs::daemon {

struct FuseUringOptions {
  bool ring = true;  // false (fuse_uring=off): the hooks only patch INIT's flags (fuse_init_ext.h)
  unsigned threads_per_queue = 2;
  bool pin = true;        // each worker on its queue's CPU
  bool required = false;  // fuse_uring=on (not auto): say so when the kernel does not offer it
};

class FuseUring {
 public:
  // Installs the custom-I/O hooks on `se` (after fuse_session_mount, before the loop). One per
  // process. The ring itself starts at INIT if the kernel offers it (and options.ring). The hooks
  // also carry INIT's flags beyond libfuse (fuse_init_ext.h): one set of hooks per session.
  static std::unique_ptr<FuseUring> install(fuse_session* se, int fuse_fd, FuseUringOptions o);
  ~FuseUring();
  FuseUring(const FuseUring&) = delete;
  FuseUring& operator=(const FuseUring&) = delete;

  // Stops and joins the workers (after the session loop returned, before the filesystem goes).
  void stop();

  struct Impl;

 private:
  friend std::string with_transport_stats(const std::string& fs_stats, const FuseUring* uring);
  explicit FuseUring(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The payload area of the ring request this thread is handling now (called from an operation run
// by a ring worker), else an empty span. An operation that builds its reply data there (op_read)
// saves the copy into the ring: the commit skips a reply argument that already lies in place.
// Valid until the operation replies; the request's own arguments are not in it any more.
std::span<uint8_t> current_ring_reply_area();

// Whether the calling thread is a ring worker: an operation it runs must not wait for anything
// that needs another request of its queue answered (name_invalidation.h).
bool on_ring_worker();

// The ring's queue count: the kernel makes one per possible CPU (num_possible_cpus).
unsigned possible_cpu_count();

// The filesystem's stats JSON (Filesystem::stats_json) with the FUSE transport's under "fuse":
// {"transport": "io_uring"|"/dev/fuse", "offered", "queues", "threads", "ring_requests",
// "replies_from_other_threads", "kill_priv_v2": {"on", "unreadable_write_flags"}} (uring null:
// the transport and kill_priv_v2 only). What `ubtrfs-inspect stats` and
// stats_file= show.
std::string with_transport_stats(const std::string& fs_stats, const FuseUring* uring);

}  // namespace ubtrfs::daemon
