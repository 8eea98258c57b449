// NameInvalidator: telling the kernel that a name changed behind its back — a subvolume or snapshot
// created or deleted by ioctl (ioctl.cpp, fs/subvolume.cpp) gets no dentry from the kernel, which
// caches entries, negative ones too, for entry_timeout (a day by default). The caller must see the
// new name (or the name gone) as soon as the ioctl returns.
//
// Why not simply FUSE_NOTIFY_INVAL_ENTRY from the operation: in the kernel it takes the directory's
// i_rwsem exclusively and waits for it (fuse_reverse_inval_entry, with FUSE_EXPIRE_ONLY too), while
// a lookup in that directory holds it shared until its LOOKUP is answered. libfuse's /dev/fuse loop
// starts another thread to answer it; FUSE over io_uring does not: the LOOKUP goes to the queue of
// its caller's CPU, and when that queue's entries are all held by operations waiting in that
// notification, nothing answers it — a deadlock (seen: a TSan run of the snapshot stress oracle;
// reproduced in seconds by four subvolume create/delete loops beside four stat loops in one
// directory, three ring workers asleep in fuse_reverse_inval_entry).
//
// What is done instead, for each changed name, before the operation replies:
// - the directory's attributes (size, times) are invalidated (FUSE_NOTIFY_INVAL_INODE with offset
//   -1: no lock taken);
// - off the ring (libfuse's own threads) the entry is invalidated synchronously, as before;
// - on a ring worker the entry's invalidation is handed to this object's thread (ubtrfs-inval) and
//   the worker waits for it at most kRingWait. In the common case it is done by then (nothing
//   holds the directory) and the reply follows, exact. If not, a lookup in that directory is
//   waiting for a ring entry — possibly one held by this very operation — so the worker stops
//   waiting: with kernel protocol 7.44 or later it first sends FUSE_NOTIFY_INC_EPOCH (no lock: every
//   dentry of the mount, negative ones too, fails its next revalidation and is looked up again),
//   so the reply is still exact; before 7.44 the reply goes out and the caller may, for the moment
//   until the thread's invalidation lands, still see the old entry. The thread's invalidation
//   always completes: the lookups holding the directory are answered once the workers are free.
//   An epoch costs one LOOKUP per cached name used afterwards, and a mount made on a directory of
//   this mount is detached when its dentry fails that revalidation (d_invalidate) — the price of
//   this rare path, paid only when a lookup in the same directory was stuck for kRingWait.
//
// Thread safety: name_changed is called from any operation thread; the queue is guarded by mu_.
// Lifetime: stop() (after the FUSE loop and the ring workers, before the session is destroyed)
// joins the thread; invalidations still queued then are dropped (the mount is gone).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

struct fuse_session;

namespace ubtrfs::daemon {

class NameInvalidator {
 public:
  // How long a ring worker waits for the thread's invalidation before it replies anyway.
  static constexpr std::chrono::milliseconds kRingWait{50};
  // FUSE_NOTIFY_INC_EPOCH (protocol 7.44, Linux 6.16): not in libfuse 3.14's headers.
  static constexpr int kNotifyIncEpoch = 8;
  static constexpr unsigned kIncEpochMinor = 44;

  explicit NameInvalidator(fuse_session* se);
  ~NameInvalidator();
  NameInvalidator(const NameInvalidator&) = delete;
  NameInvalidator& operator=(const NameInvalidator&) = delete;

  // The kernel's protocol minor, from INIT (op_init).
  void set_kernel_minor(unsigned minor) { kernel_minor_ = minor; }

  // `name` appeared in or vanished from directory `parent` (a FUSE node id). Returns when the
  // kernel will look the name up again (see above for the one exception before protocol 7.44).
  void name_changed(uint64_t parent, std::string_view name);

  void stop();

  struct Counts {
    uint64_t direct = 0;     // invalidated synchronously (off the ring)
    uint64_t handed = 0;     // handed to the thread and done within kRingWait
    uint64_t late = 0;       // handed and not done within kRingWait
    uint64_t epochs = 0;     // FUSE_NOTIFY_INC_EPOCH sent for a late one
  };
  Counts counts() const;

 private:
  struct Item {
    uint64_t parent;
    std::string name;
    uint64_t seq;
  };
  void run();
  bool send_epoch();

  fuse_session* se_;
  std::atomic<unsigned> kernel_minor_{0};
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Item> queue_;
  uint64_t next_seq_ = 1;  // sequence numbers of handed items; done_ the last one finished
  uint64_t done_ = 0;
  bool stopping_ = false;
  Counts counts_;
  std::thread thread_;
};

}  // namespace ubtrfs::daemon
