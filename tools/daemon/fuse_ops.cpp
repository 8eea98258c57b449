// FUSE low-level operations over the Filesystem facade; see fuse_ops.h.
//
// Shape of every op (after libfuse's passthrough_hp): call the facade, then one reply. Errors are
// logged at debug level (ENOENT on lookup is the normal negative answer), EIO/EUCLEAN at error
// level because they mean corruption or a device failure the user must see.
#include "tools/daemon/fuse_ops.h"
#include "tools/daemon/fuse_uring.h"
#include "tools/daemon/name_invalidation.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fuse.h>
#include <sys/xattr.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "alloc/space_info.h"
#include "tools/daemon/caller_caps.h"
#include "tools/daemon/fuse_init_ext.h"
#include "tools/daemon/ioctl.h"
#include "tools/daemon/posix_acl.h"

namespace ubtrfs::daemon {

namespace {

DaemonContext& ctx_of(fuse_req_t req) { return *static_cast<DaemonContext*>(fuse_req_userdata(req)); }
fs::Filesystem& fs_of(fuse_req_t req) { return *ctx_of(req).fs; }

PageCacheGuard::OpenFile* open_file(const fuse_file_info* fi) {
  return fi ? reinterpret_cast<PageCacheGuard::OpenFile*>(fi->fh) : nullptr;
}

double attr_timeout_for(fuse_req_t req, uint64_t ino) {
  DaemonContext& ctx = ctx_of(req);
  return ctx.guard ? ctx.guard->attr_timeout_for(ino, ctx.attr_timeout) : ctx.attr_timeout;
}

// The open file's record and mode (page_cache_guard.h): cached unless the guard says direct I/O.
// `read_updates_atime`: Filesystem::open's answer for this open.
void set_open_mode(fuse_req_t req, uint64_t ino, fuse_file_info* fi, bool read_updates_atime) {
  DaemonContext& ctx = ctx_of(req);
  fi->fh = 0;
  // The kernel's page cache of this file stays true from open to open: every write, truncate,
  // hole punch and copy_file_range goes through the kernel, which updates or drops its pages.
  // Unless a read through this open would update the access time: the kernel does not keep atime
  // for FUSE, so the open's first read must reach the daemon.
  fi->keep_cache = read_updates_atime ? 0 : 1;
  if (!ctx.guard) return;
  PageCacheGuard::OpenFile* f = ctx.guard->open(ino, fi->flags);
  fi->fh = reinterpret_cast<uint64_t>(f);
  if (!f->cached) {
    fi->direct_io = 1;
    fi->keep_cache = 0;
  }
}

void drop_open_mode(fuse_req_t req, fuse_file_info* fi) {
  DaemonContext& ctx = ctx_of(req);
  if (ctx.guard && fi) ctx.guard->release(open_file(fi));
  if (fi) fi->fh = 0;
}

// The errno a request fails with. ENOSYS would permanently disable the op in the kernel and 0 or
// a negative value is a facade bug: both become something the caller can act on.
// A corrupt tree block (EUCLEAN inside: the tree checker or a checksum) is EIO for the caller, as
// issue 3 asks and as most callers expect; the log line keeps the precise reason.
int reply_errno(const Error& e) {
  if (e.err <= 0) return EIO;
  if (e.err == ENOSYS) return EOPNOTSUPP;
  if (e.err == EUCLEAN) return EIO;
  return e.err;
}

void reply_error(fuse_req_t req, const Error& e, const char* op, uint64_t ino) {
  const int err = reply_errno(e);
  // After a shutdown every operation is EIO by design: the one warning about it is enough.
  if (err == EIO && !fs_of(req).is_shutdown())
    spdlog::error("{} inode {}: {}", op, ino, e.message);
  else
    spdlog::debug("{} inode {}: {} ({})", op, ino, e.message, strerror(err));
  fuse_reply_err(req, err);
}

void reply_status(fuse_req_t req, const Status& s, const char* op, uint64_t ino) {
  if (s) fuse_reply_err(req, 0);
  else reply_error(req, s.error(), op, ino);
}

// A request that may wait for space (a reservation ticket) can be interrupted: FUSE_INTERRUPT
// arrives when the calling process got a signal (or was killed); the ticket then leaves its queue
// with EINTR (alloc/space_info.h). The callback is registered for the duration of the facade call
// only and unregistered before the reply (libfuse runs it under the request's lock, which the
// unregistration takes, so it can never run on a finished frame).
class InterruptScope {
 public:
  explicit InterruptScope(fuse_req_t req) : req_(req) {
    alloc::set_current_wait_interrupt(&flag_);
    fuse_req_interrupt_func(req_, &on_interrupt, this);
  }
  ~InterruptScope() {
    fuse_req_interrupt_func(req_, nullptr, nullptr);
    alloc::set_current_wait_interrupt(nullptr);
  }
  InterruptScope(const InterruptScope&) = delete;
  InterruptScope& operator=(const InterruptScope&) = delete;

 private:
  static void on_interrupt(fuse_req_t req, void* data) {
    auto* self = static_cast<InterruptScope*>(data);
    self->flag_.interrupted.store(true, std::memory_order_release);
    fs_of(req).wake_space_waiters();
  }
  fuse_req_t req_;
  alloc::WaitInterrupt flag_;
};

// Runs a facade call that may wait for space inside an InterruptScope.
template <class F>
auto interruptible(fuse_req_t req, F&& f) {
  InterruptScope scope(req);
  return f();
}

fs::Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  fs::Caller c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  // FUSE_CAP_DONT_MASK: the kernel passes the umask instead of applying it, so that the filesystem
  // can leave it out when a default ACL applies (fs/posix_acl.h). 0 for requests that carry none.
  c.umask = ctx->umask;
  c.in_group = [pid = ctx->pid, gid = ctx->gid](uint32_t g) { return caller_in_group(pid, gid, g); };
  return c;
}

// The entry the kernel caches. Its generation is the inode item's: a file handle carries node id
// and generation, and btrfs reuses the number of a deleted highest inode after a remount (objectids
// continue from the highest one left), so the generation tells the two apart (ESTALE). Every entry
// of one inode must carry the same one (the kernel marks an inode bad whose generation changes).
fuse_entry_param entry_of(fuse_req_t req, const struct stat& st) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = st.st_ino;
  e.generation = fs_of(req).generation(st.st_ino);
  e.attr = st;
  e.attr_timeout = attr_timeout_for(req, st.st_ino);
  e.entry_timeout = ctx_of(req).entry_timeout;
  return e;
}

// Replies an entry the facade has already counted a lookup for; if the kernel cannot take the
// reply (the request was interrupted), it never learns the inode, so the count is dropped here.
void reply_counted_entry(fuse_req_t req, const struct stat& st) {
  fuse_entry_param e = entry_of(req, st);
  if (fuse_reply_entry(req, &e) != 0) fs_of(req).forget(st.st_ino, 1);
}

void reply_entry_result(fuse_req_t req, const Result<struct stat>& r, const char* op, uint64_t parent) {
  if (r) reply_counted_entry(req, *r);
  else reply_error(req, r.error(), op, parent);
}

// ---- init ------------------------------------------------------------------------------------

void op_init(void* userdata, fuse_conn_info* conn) {
  auto* ctx = static_cast<DaemonContext*>(userdata);
  // The kernel clears suid/sgid itself (by a setattr) on write, truncate and chown.
  conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
  // O_TRUNC arrives as a setattr(size=0) before open, with the kernel's permission checks.
  conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
  if (ctx->writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE)) conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // The cache makes the kernel the owner of regular files' mtime/ctime (fs FileData).
  if (ctx->fs) ctx->fs->set_kernel_owns_file_times((conn->want & FUSE_CAP_WRITEBACK_CACHE) != 0);
  // The kernel enforces POSIX ACLs stored as system.posix_acl_* xattrs (with default_permissions).
  if (conn->capable & FUSE_CAP_POSIX_ACL) conn->want |= FUSE_CAP_POSIX_ACL;
  // The umask is the filesystem's to apply (not with a default ACL): fs/posix_acl.h.
  if (conn->capable & FUSE_CAP_DONT_MASK) conn->want |= FUSE_CAP_DONT_MASK;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
  // File handles (name_to_handle_at, NFS export): node ids are a pure function of (subvolume,
  // objectid), stable across remounts, and LOOKUP(ino, ".") / (dir, "..") are answered.
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
  // Directories receive ioctls too: the control channel is asked on the mount's root.
  if (conn->capable & FUSE_CAP_IOCTL_DIR) conn->want |= FUSE_CAP_IOCTL_DIR;
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  // No asynchronous direct I/O (FUSE_ASYNC_DIO, libfuse's default): with it an io_submit O_DIRECT
  // write returns -EIOCBQUEUED from fuse_direct_IO, so the VFS skips the page-cache invalidation
  // it does after a direct write, and the kernel's FUSE completion does not do it either: a
  // buffered read racing the write leaves the old data cached, and a later buffered read returns
  // it (xfstests generic/451: "get stale data from buffer read"). Synchronous, each direct write
  // is followed by the invalidation. The cost: an AIO O_DIRECT request blocks its submitter, and a
  // direct request larger than max_write is sent in pieces one after another.
  conn->want &= ~FUSE_CAP_ASYNC_DIO;
  conn->max_write = kMaxWrite;
  conn->time_gran = 1;  // btrfs keeps nanoseconds
  if (ctx->names) ctx->names->set_kernel_minor(conn->proto_minor);
  spdlog::debug("fuse: protocol {}.{}, capable 0x{:x}, want 0x{:x}, max_write {}, read_only {}", conn->proto_major,
                conn->proto_minor, conn->capable, conn->want, conn->max_write, ctx->read_only);
}

// ---- names and inodes ------------------------------------------------------------------------

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto r = fs_of(req).lookup(parent, name);
  if (r) {
    reply_counted_entry(req, *r);
  } else if (r.error().err == ENOENT) {
    // A negative entry: the kernel caches the absence for entry_timeout.
    fuse_entry_param e;
    std::memset(&e, 0, sizeof e);
    e.ino = 0;
    e.entry_timeout = ctx_of(req).entry_timeout;
    fuse_reply_entry(req, &e);
  } else {
    reply_error(req, r.error(), "lookup", parent);
  }
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  fs_of(req).forget(ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  auto& fs = fs_of(req);
  for (size_t i = 0; i < count; ++i) fs.forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  DaemonContext& ctx = ctx_of(req);
  // The writeback cache asks through the open file before every cached write(): a full device
  // answers here (page_cache_guard.h).
  if (ctx.guard && fi && ctx.guard->refuse_cached_write(open_file(fi))) return fuse_reply_err(req, ENOSPC), void();
  auto r = fs_of(req).getattr(ino);
  if (r) fuse_reply_attr(req, &*r, attr_timeout_for(req, ino));
  else reply_error(req, r.error(), "getattr", ino);
}

// ---- FUSE_HANDLE_KILLPRIV_V2 (fuse_init_ext.h) -----------------------------------------------

// The WRITE's write_flags, which libfuse 3.14 does not hand on: its data follows the fuse_write_in
// in the request buffer (/dev/fuse's layout, which the ring transport rebuilds too), trusted only
// when that argument's size and offset are this write's. nullopt otherwise.
std::optional<uint32_t> write_flags_of(const char* data, size_t size, off_t off) {
  static_assert(sizeof(fuse_write_in) == 40 && offsetof(fuse_write_in, write_flags) == 20);
  fuse_write_in in;
  std::memcpy(&in, data - sizeof in, sizeof in);
  if (in.size != size || in.offset != static_cast<uint64_t>(off)) return std::nullopt;
  return in.write_flags;
}

// What writing into `ino` takes away when the kernel leaves it to the filesystem (fs remove_privs:
// security.capability always, S_ISUID / S_ISGID when `drop_suid_sgid`, S_ISGID without group
// execute only from a caller outside the file's group). A changed mode makes the kernel's cached
// one stale: its attributes are invalidated (attributes only, no page lock: safe inside a WRITE,
// whose writer holds the inode lock) unless `reply_has_attrs`.
Status remove_privs(fuse_req_t req, fuse_ino_t ino, const std::function<bool()>& drop_suid_sgid,
                    bool reply_has_attrs = false) {
  if (!init_ext::kill_priv_v2()) return {};
  const bool mode_changed = UBTRFS_TRY(fs_of(req).remove_privs(ino, drop_suid_sgid, caller_of(req)));
  if (mode_changed && !reply_has_attrs && ctx_of(req).session)
    (void)fuse_lowlevel_notify_inval_inode(ctx_of(req).session, ino, -1, 0);
  return {};
}

// The caller lacks CAP_FSETID (asked only for a file with S_ISUID or S_ISGID set).
std::function<bool()> caller_lacks_cap_fsetid(fuse_req_t req) {
  const fuse_ctx* c = fuse_req_ctx(req);
  return [pid = c->pid, uid = c->uid] { return !caller_has_cap_fsetid(pid, uid); };
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  fs::SetAttr a;
  if (to_set & FUSE_SET_ATTR_MODE) a.mode = attr->st_mode & 07777;
  if (to_set & FUSE_SET_ATTR_UID) a.uid = attr->st_uid;
  if (to_set & FUSE_SET_ATTR_GID) a.gid = attr->st_gid;
  if (to_set & FUSE_SET_ATTR_SIZE) a.size = static_cast<uint64_t>(attr->st_size);
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
    a.atime = fs::SetAttr::Time::kNow;
  } else if (to_set & FUSE_SET_ATTR_ATIME) {
    a.atime = fs::SetAttr::Time::kValue;
    a.atime_value = attr->st_atim;
  }
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
    a.mtime = fs::SetAttr::Time::kNow;
  } else if (to_set & FUSE_SET_ATTR_MTIME) {
    a.mtime = fs::SetAttr::Time::kValue;
    a.mtime_value = attr->st_mtim;
  }
  if (to_set & FUSE_SET_ATTR_CTIME) a.ctime = attr->st_ctim;
  if (a.size) {
    // do_truncate's file_remove_privs, ours with FUSE_HANDLE_KILLPRIV_V2: the kernel marks a
    // truncate by a caller without CAP_FSETID with FATTR_KILL_SUIDGID (libfuse's KILL_SUID bit).
    const bool kill = (to_set & FUSE_SET_ATTR_KILL_SUID) != 0;
    std::function<bool()> drop = kill ? std::function<bool()>([] { return true; }) : caller_lacks_cap_fsetid(req);
    if (auto st = remove_privs(req, ino, drop, true); !st) return reply_error(req, st.error(), "setattr", ino);
  }
  auto r = interruptible(req, [&] { return fs_of(req).setattr(ino, a, caller_of(req)); });
  if (r) fuse_reply_attr(req, &*r, ctx_of(req).attr_timeout);
  else reply_error(req, r.error(), "setattr", ino);
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  auto r = fs_of(req).readlink(ino);
  if (r) fuse_reply_readlink(req, r->c_str());
  else reply_error(req, r.error(), "readlink", ino);
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  reply_entry_result(req, interruptible(req, [&] { return fs_of(req).mknod(parent, name, mode, rdev, caller_of(req)); }),
                     "mknod", parent);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  reply_entry_result(req, interruptible(req, [&] { return fs_of(req).mkdir(parent, name, mode, caller_of(req)); }),
                     "mkdir", parent);
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  reply_entry_result(req,
                     interruptible(req, [&] { return fs_of(req).symlink(parent, name, target, caller_of(req)); }),
                     "symlink", parent);
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  reply_entry_result(req, interruptible(req, [&] { return fs_of(req).link(ino, newparent, newname); }), "link", ino);
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).unlink(parent, name); }), "unlink", parent);
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).rmdir(parent, name); }), "rmdir", parent);
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
               unsigned int flags) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).rename(parent, name, newparent, newname, flags, caller_of(req)); }),
               "rename", parent);
}

// ---- files ----------------------------------------------------------------------------------

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  auto& fs = fs_of(req);
  auto r = interruptible(req, [&] { return fs.create(parent, name, mode, caller_of(req)); });
  if (!r) return reply_error(req, r.error(), "create", parent);
  // The kernel treats the new file as opened; open it in the facade too so release() pairs up.
  bool atime = false;
  auto opened = fs.open(r->st_ino, fi->flags & ~(O_CREAT | O_EXCL | O_TRUNC), &atime);
  if (!opened) {
    fs.forget(r->st_ino, 1);
    return reply_error(req, opened.error(), "create/open", r->st_ino);
  }
  set_open_mode(req, r->st_ino, fi, atime);
  fuse_entry_param e = entry_of(req, *r);
  if (fuse_reply_create(req, &e, fi) != 0) {
    // Interrupted: the kernel has neither the reference nor the open file.
    drop_open_mode(req, fi);
    (void)fs.release(r->st_ino);
    fs.forget(r->st_ino, 1);
  }
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto& fs = fs_of(req);
  bool atime = false;
  auto s = fs.open(ino, fi->flags, &atime);
  if (!s) return reply_error(req, s.error(), "open", ino);
  set_open_mode(req, ino, fi, atime);
  if (fuse_reply_open(req, fi) != 0) {
    drop_open_mode(req, fi);
    (void)fs.release(ino);
  }
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  // The data goes where the reply is sent from: the ring entry's payload (no copy into the ring),
  // else a buffer this thread keeps (a fresh 1 MiB vector was an mmap, 256 page faults and a
  // memset per read). Filesystem::read fills every byte it returns (holes as zeros).
  std::span<uint8_t> out = current_ring_reply_area();
  if (out.size() >= size) {
    out = out.first(size);
  } else {
    thread_local std::vector<uint8_t> buf;
    if (buf.size() < size) buf.resize(size);
    out = std::span<uint8_t>(buf.data(), size);
  }
  auto r = fs_of(req).read(ino, static_cast<uint64_t>(off), out, !(fi && (fi->flags & O_NOATIME)));
  if (r) fuse_reply_buf(req, reinterpret_cast<const char*>(out.data()), *r);
  else reply_error(req, r.error(), "read", ino);
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off, fuse_file_info* fi) {
  DaemonContext& ctx = ctx_of(req);
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(data), size);
  if (init_ext::kill_priv_v2()) {
    // The kernel's writeback of cached pages carries no writer: their write() calls went
    // writethrough when the file had S_ISUID/S_ISGID (fuse_cache_write_iter), so only capabilities
    // can be left to take away here.
    const bool writepage = fi && fi->writepage;
    const std::optional<uint32_t> flags = writepage ? std::optional<uint32_t>(0) : write_flags_of(data, size, off);
    std::function<bool()> drop;
    if (flags) {
      drop = [kill = (*flags & FUSE_WRITE_KILL_SUIDGID) != 0] { return kill; };
    } else {
      init_ext::count_unreadable_write_flags();
      drop = caller_lacks_cap_fsetid(req);
    }
    if (auto st = remove_privs(req, ino, drop); !st) return reply_error(req, st.error(), "write", ino);
  }
  auto r = interruptible(req, [&] {
    if (ctx.guard) return ctx.guard->write(ctx.session, ino, static_cast<uint64_t>(off), bytes, fi && fi->writepage);
    return fs_of(req).write(ino, static_cast<uint64_t>(off), bytes);
  });
  if (r) fuse_reply_write(req, *r);
  else reply_error(req, r.error(), "write", ino);
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  drop_open_mode(req, fi);
  reply_status(req, fs_of(req).release(ino), "release", ino);
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).fsync(ino, datasync != 0); }), "fsync", ino);
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info*) {
  if (offset < 0 || length <= 0) return fuse_reply_err(req, EINVAL), void();
  // vfs_fallocate's file_modified: the kernel leaves it to us with FUSE_HANDLE_KILLPRIV_V2 and
  // says nothing of the caller's CAP_FSETID here.
  if (auto st = remove_privs(req, ino, caller_lacks_cap_fsetid(req)); !st)
    return reply_error(req, st.error(), "fallocate", ino);
  reply_status(req, interruptible(req, [&] {
                 return fs_of(req).fallocate(ino, mode, static_cast<uint64_t>(offset), static_cast<uint64_t>(length));
               }),
               "fallocate", ino);
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  // With the writeback cache the kernel may hold data the daemon has not seen (it does not write
  // back before FUSE_LSEEK), so the daemon's holes would be wrong. ENOSYS, once: the kernel then
  // answers SEEK_DATA/SEEK_HOLE itself the generic way (all data up to EOF), which POSIX allows.
  if (ctx_of(req).writeback_cache) return fuse_reply_err(req, ENOSYS), void();
  if (off < 0) return fuse_reply_err(req, ENXIO), void();
  auto r = fs_of(req).lseek(ino, static_cast<uint64_t>(off), whence);
  if (r) fuse_reply_lseek(req, static_cast<off_t>(*r));
  else reply_error(req, r.error(), "lseek", ino);
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*, fuse_ino_t ino_out,
                        off_t off_out, fuse_file_info*, size_t len, int flags) {
  if (off_in < 0 || off_out < 0) return fuse_reply_err(req, EINVAL), void();
  // The destination's file_modified, as for fallocate.
  if (auto st = remove_privs(req, ino_out, caller_lacks_cap_fsetid(req)); !st)
    return reply_error(req, st.error(), "copy_file_range", ino_out);
  auto r = interruptible(req, [&] {
    return fs_of(req).copy_file_range(ino_in, static_cast<uint64_t>(off_in), ino_out, static_cast<uint64_t>(off_out),
                                      len, static_cast<unsigned>(flags));
  });
  if (r) fuse_reply_write(req, *r);
  else reply_error(req, r.error(), "copy_file_range", ino_in);
}

// ---- directories ----------------------------------------------------------------------------

// An open directory (its fh): the last DIR_INDEX when its listing began (btrfs_file_private's
// last_index), so a listing racing renames ends. opendir takes it, and so does every read from
// offset 0: the kernel keeps a rewinddir's lseek to itself (a FUSE directory's llseek never reaches
// the daemon), so a read from 0 is the only sign of a rewind, where btrfs_dir_llseek takes a fresh
// bound and POSIX wants the names added since opendir (xfstests generic/471 rewinds before its
// first read). The kernel serializes the reads of one open directory (fuse_readdir's lock); the
// atomic only keeps that assumption out of TSan's way.
struct DirStream {
  std::atomic<uint64_t> last_index;
};

DirStream* dir_stream(const fuse_file_info* fi) { return fi ? reinterpret_cast<DirStream*>(fi->fh) : nullptr; }

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto last = fs_of(req).opendir(ino);
  if (!last) return reply_error(req, last.error(), "opendir", ino);
  auto* d = new DirStream{};
  d->last_index = *last;
  fi->fh = reinterpret_cast<uint64_t>(d);
  if (fuse_reply_open(req, fi) != 0) delete d;  // interrupted: no releasedir will come
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete dir_stream(fi);
  fuse_reply_err(req, 0);
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).fsyncdir(ino, datasync != 0); }), "fsyncdir", ino);
}

bool is_dot_or_dotdot(std::string_view name) { return name == "." || name == ".."; }

// readdir and readdirplus: entries go into a reply buffer of the kernel's size; an entry that
// does not fit is not taken (the facade then does not count it, and the next call resumes there).
void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus, DirStream* dir) {
  auto& fs = fs_of(req);
  uint64_t last_index = UINT64_MAX;
  if (dir) {
    if (off <= 0) {
      auto fresh = fs.opendir(ino);
      if (!fresh) return reply_error(req, fresh.error(), plus ? "readdirplus" : "readdir", ino);
      dir->last_index = *fresh;
    }
    last_index = dir->last_index;
  }
  std::vector<char> buf(size);
  size_t used = 0;
  std::vector<uint64_t> counted;  // readdirplus entries the facade counted a lookup for
  auto fill = [&](const fs::DirEntryOut& d) -> bool {
    const std::string name(d.name);
    size_t need;
    if (plus) {
      fuse_entry_param e = entry_of(req, d.attr);
      need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                    static_cast<off_t>(d.next_offset));
    } else {
      need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &d.attr,
                               static_cast<off_t>(d.next_offset));
    }
    if (need > size - used) return false;
    used += need;
    if (plus && !is_dot_or_dotdot(d.name)) counted.push_back(d.attr.st_ino);
    return true;
  };
  auto s = fs.readdir(ino, off < 0 ? 0 : static_cast<uint64_t>(off), plus, fill, last_index);
  if (!s && used == 0) {
    for (auto c : counted) fs.forget(c, 1);
    return reply_error(req, s.error(), plus ? "readdirplus" : "readdir", ino);
  }
  // A failure after some entries were taken: return those; the next call hits the error again.
  if (fuse_reply_buf(req, buf.data(), used) != 0)
    for (auto c : counted) fs.forget(c, 1);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, false, dir_stream(fi));
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, true, dir_stream(fi));
}

// ---- whole filesystem and xattrs ------------------------------------------------------------

void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  auto r = fs_of(req).statfs();
  // The writeback cache's held space (page_cache_guard.h) is not used — nothing is written in it
  // until the device is full apart from it — so df's Used leaves it out; but it is not available
  // either: it backs the pages the kernel may hold dirty (a grown window's held space included,
  // until its writers close), and once the rest is full a cached writer gets ENOSPC while it is
  // still held. Avail is what a new write() can place (the fill-to-full suite measures it against
  // what is then written), as btrfs leaves delalloc reservations out.
  if (r && ctx_of(req).guard && r->f_frsize) {
    const uint64_t held_blocks = ctx_of(req).guard->held() / r->f_frsize;
    r->f_bfree = std::min<uint64_t>(r->f_blocks, r->f_bfree + held_blocks);
  }
  if (r) fuse_reply_statfs(req, &*r);
  else reply_error(req, r.error(), "statfs", ino);
}

// An access ACL also sets the mode (see posix_acl.h); an ACL equivalent to the mode is not stored.
Status set_access_acl(fs::Filesystem& fs, uint64_t ino, std::span<const uint8_t> value, int flags,
                      const AclModeUpdate& u, const fs::Caller& caller) {
  auto st = fs.getattr(ino);
  if (!st) return std::unexpected(st.error());
  if (u.equivalent) {
    auto removed = fs.removexattr(ino, kAclAccessXattr);
    if (!removed && removed.error().err != ENODATA) return removed;
  } else {
    UBTRFS_TRY_STATUS(fs.setxattr(ino, kAclAccessXattr, value, flags));
  }
  fs::SetAttr a;
  a.mode = (static_cast<uint32_t>(st->st_mode) & 07000) | u.mode_bits;
  auto changed = fs.setattr(ino, a, caller);
  if (!changed) return std::unexpected(changed.error());
  return {};
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  auto& fs = fs_of(req);
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(value), size);
  if (std::strcmp(name, kAclAccessXattr) == 0) {
    if (auto u = acl_mode_update(bytes))
      return reply_status(req, interruptible(req, [&] { return set_access_acl(fs, ino, bytes, flags, *u, caller_of(req)); }),
                          "setxattr(acl)", ino);
  }
  reply_status(req, interruptible(req, [&] { return fs.setxattr(ino, name, bytes, flags); }), "setxattr", ino);
}

// size 0 asks for the length only; a buffer too small is ERANGE (getxattr(2)).
void reply_sized(fuse_req_t req, const char* data, size_t len, size_t size) {
  if (size == 0) fuse_reply_xattr(req, len);
  else if (len > size) fuse_reply_err(req, ERANGE);
  else fuse_reply_buf(req, data, len);
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto r = fs_of(req).getxattr(ino, name);
  if (!r) {
    // ENODATA is the ordinary "no such attribute" answer.
    if (r.error().err == ENODATA) return fuse_reply_err(req, ENODATA), void();
    return reply_error(req, r.error(), "getxattr", ino);
  }
  reply_sized(req, reinterpret_cast<const char*>(r->data()), r->size(), size);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  auto r = fs_of(req).listxattr(ino);
  if (!r) return reply_error(req, r.error(), "listxattr", ino);
  std::string list;
  for (const auto& n : *r) {
    list += n;
    list.push_back('\0');
  }
  reply_sized(req, list.data(), list.size(), size);
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  reply_status(req, interruptible(req, [&] { return fs_of(req).removexattr(ino, name); }), "removexattr", ino);
}

// ---- ioctl ----------------------------------------------------------------------------------

void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*, unsigned flags,
              const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  IoctlRequest r;
  r.ino = ino;
  r.cmd = cmd;
  r.flags = flags;
  r.in = std::span<const uint8_t>(static_cast<const uint8_t*>(in_buf), in_buf ? in_bufsz : 0);
  r.out_size = out_bufsz;
  const fuse_ctx* caller = fuse_req_ctx(req);
  r.uid = caller->uid;
  r.gid = caller->gid;
  r.pid = caller->pid;
  // What arrives is the kernel's own framing (for the inode flags: a 4-byte int although the
  // command says long, see ioctl.cpp); the debug log shows it.
  spdlog::debug("ioctl 0x{:08x} ({}) on inode {}: flags {:#x}, {} bytes in, room for {} out, pid {} uid {}", cmd,
                ioctl_name(cmd) ? ioctl_name(cmd) : "unknown", ino, flags, r.in.size(), out_bufsz, r.pid, r.uid);
  auto reply = dispatch_ioctl(*static_cast<DaemonContext*>(fuse_req_userdata(req)), r);
  if (!reply) {
    const char* name = ioctl_name(cmd);
    return reply_error(req, reply.error(), name ? name : "ioctl", ino);
  }
  fuse_reply_ioctl(req, reply->result, reply->out.data(), reply->out.size());
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops o;
  std::memset(&o, 0, sizeof o);
  o.init = op_init;
  o.lookup = op_lookup;
  o.forget = op_forget;
  o.forget_multi = op_forget_multi;
  o.getattr = op_getattr;
  o.setattr = op_setattr;
  o.readlink = op_readlink;
  o.mknod = op_mknod;
  o.mkdir = op_mkdir;
  o.unlink = op_unlink;
  o.rmdir = op_rmdir;
  o.symlink = op_symlink;
  o.rename = op_rename;
  o.link = op_link;
  o.open = op_open;
  o.read = op_read;
  o.write = op_write;
  // No flush: see fuse_ops.h (ENOSYS once, then the kernel stops sending it).
  o.release = op_release;
  o.fsync = op_fsync;
  o.opendir = op_opendir;
  o.readdir = op_readdir;
  o.readdirplus = op_readdirplus;
  o.releasedir = op_releasedir;
  o.fsyncdir = op_fsyncdir;
  o.statfs = op_statfs;
  o.setxattr = op_setxattr;
  o.getxattr = op_getxattr;
  o.listxattr = op_listxattr;
  o.removexattr = op_removexattr;
  o.create = op_create;
  o.fallocate = op_fallocate;
  o.lseek = op_lseek;
  o.copy_file_range = op_copy_file_range;
  o.ioctl = op_ioctl;
  return o;
}

}  // namespace

const fuse_lowlevel_ops& ubtrfs_fuse_ops() {
  static const fuse_lowlevel_ops ops = make_ops();
  return ops;
}

}  // namespace ubtrfs::daemon
