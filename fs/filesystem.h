// Filesystem: the POSIX operations of one mounted subvolume, as the FUSE daemon calls them
// (btrfs inode.c / namei / xattr.c / file.c seen through the VFS).
//
// Inode numbers are FUSE numbers (fs/inode.h InodeNumbers). Lookup counts follow the forget
// contract of fuse_lowlevel.h: every successful lookup, create, mknod, mkdir, symlink, link and every
// readdirplus entry other than "." and ".." adds one; forget(ino, n) removes n. An inode whose link
// count dropped to 0 is kept (with an ORPHAN_ITEM, as btrfs does) until its lookup count reaches 0,
// then its items and extents are deleted (eviction). Orphans left by a crash are cleaned at mount.
//
// Permission checks are the kernel's (the daemon always mounts with default_permissions); the
// filesystem still enforces what the VFS leaves to it (setattr rules on suid/sgid bits, sticky
// directories are checked by the kernel too, RENAME_* flags, name length, directory emptiness).
//
// Files: filesystem.cpp (mount/unmount/statfs/stats), filesystem_ns.cpp with create_inode.cpp,
// rename.cpp and readdir.cpp (names, inodes, xattrs: NamespaceState in fs/namespace_state.h),
// filesystem_data.cpp (file contents: FileData in fs/file_data.h), shutdown.cpp (emergency
// shutdown), label.cpp (the filesystem label), discard.cpp (FITRIM and -o discard),
// inode_flags.cpp (chattr/lsattr flags; their enforcement is in the operations).
// After a shutdown every operation fails with EIO except getattr, statfs, forget, flush, release
// and unmount (fs/shutdown.cpp).
// Thread safety: every method may be called concurrently from FUSE workers.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fs/fs_info.h"
#include "fs/inode.h"
#include "fs/inode_flags.h"
#include "fs/mount_options.h"
#include "io/status.h"

namespace ubtrfs::fs {

struct NamespaceState;
class FileData;
class DelayedInodes;
class TreeLog;
struct DiscardCounters;
class AsyncDiscard;
class Scrub;
class SubvolumeCleaner;
class DelayedIputs;

// Who asks (fuse_ctx): new inodes are owned by uid / gid (or the parent's gid when it is setgid).
struct Caller {
  uint32_t uid = 0, gid = 0;
  uint32_t umask = 0;  // already applied by the kernel unless the daemon asked otherwise
  // The caller's effective capabilities, where an operation needs them (inode flags: fs/inode_flags.h).
  bool cap_fowner = false;           // CAP_FOWNER: act as the owner of any inode
  bool cap_linux_immutable = false;  // CAP_LINUX_IMMUTABLE: change the immutable / append-only flags
  // in_group_p: whether `g` is the caller's filesystem group or one of its supplementary groups
  // (FUSE sends the first only; the daemon reads the rest from /proc when asked). Unset: gid only.
  std::function<bool(uint32_t g)> in_group;
  [[nodiscard]] bool in_group_of(uint32_t g) const { return in_group ? in_group(g) : g == gid; }
};

struct SetAttr {
  enum class Time { kOmit, kNow, kValue };
  std::optional<uint32_t> mode;  // permission bits and suid/sgid/sticky (type bits ignored)
  std::optional<uint32_t> uid, gid;
  std::optional<uint64_t> size;
  Time atime = Time::kOmit, mtime = Time::kOmit;
  struct timespec atime_value {}, mtime_value{};
  std::optional<struct timespec> ctime;  // explicit ctime (FUSE_SET_ATTR_CTIME)
};

// FS_IOC_GOINGDOWN's flags (XFS_FSOP_GOING_FLAGS_DEFAULT 0, _LOGFLUSH 1, _NOLOGFLUSH 2): fs/shutdown.cpp.
enum class ShutdownMode : uint32_t { kSyncFirst = 0, kFlushLog = 1, kNoFlush = 2 };

// BTRFS_IOC_TREE_SEARCH's range (fs/tree_search.cpp): keys from min to max (lexicographic), in
// leaves whose generation is in [min_transid, max_transid].
struct TreeSearchRange {
  Key min{}, max = kMaxKey;
  uint64_t min_transid = 0, max_transid = ~0ull;
};
struct TreeSearchItem {
  uint64_t transid = 0;  // the generation of the leaf holding it
  Key key{};
  std::vector<uint8_t> data;
};
struct TreeSearchResult {
  std::vector<TreeSearchItem> items;
};

// What GET_SUBVOL_INFO and `subvolume show` report of one subvolume (fs/subvolume.cpp).
struct SubvolumeInfo {
  uint64_t id = 0;
  RootItem item{};             // the in-memory ROOT_ITEM (the running transaction's view)
  uint64_t key_offset = 0;     // the ROOT_ITEM key's offset (a snapshot's creation transid)
  uint64_t parent_id = 0;      // ROOT_BACKREF: the subvolume holding its name (0 for FS_TREE)
  uint64_t dirid = 0;          // the directory holding the name
  std::string name;
};

struct DirEntryOut {
  std::string_view name;
  struct stat attr;  // st_ino and the type bits of st_mode always; the rest only for readdirplus
  uint64_t next_offset;
};

class Filesystem {
 public:
  // Opens the image (FsInfo::open), resolves the subvolume (subvolid=/subvol=/default subvolume),
  // cleans orphans (read-write only), starts the commit thread. Nothing is written when it fails.
  [[nodiscard]] static Result<std::unique_ptr<Filesystem>> mount(const OpenOptions& open, const MountOptions& opts);
  // Flushes delalloc, runs the final commit, stops the commit thread. After it, every method fails
  // with EROFS/EIO. Errors: the commit's (the image then holds the previous commit).
  [[nodiscard]] Status unmount();
  ~Filesystem();

  FsInfo& info() { return *fs_; }
  const InodeNumbers& numbers() const { return numbers_; }
  // The file data layer itself, for tests of its rules (every caller here goes through write()).
  FileData& file_data() { return *data_; }
  bool read_only() const { return fs_->read_only(); }

  // ---- names and inodes (filesystem_ns.cpp, create_inode.cpp, rename.cpp, readdir.cpp) ---------
  [[nodiscard]] Result<struct stat> lookup(uint64_t parent, std::string_view name);
  // The kernel dropped nlookup references. An inode left with no reference and no link is queued
  // for eviction (a delayed iput, fs/delayed_iput.h), evicted in a batch a moment later.
  void forget(uint64_t ino, uint64_t nlookup);
  // btrfs_run_delayed_iputs: evicts every inode queued so far, now (the sync ioctls call it before
  // their commit, so that "rm; sync" frees the space). Returns how many went. Errors: the first
  // failed batch's (its inodes keep their orphan items).
  [[nodiscard]] Result<size_t> run_delayed_iputs();
  [[nodiscard]] Result<struct stat> getattr(uint64_t ino);
  // The inode item's generation (the transaction that created it): what a FUSE entry carries, so
  // that a file handle (name_to_handle_at) of a deleted inode whose number a later inode reuses
  // is ESTALE rather than the new inode. 0 if the inode cannot be read.
  uint64_t generation(uint64_t ino);
  [[nodiscard]] Result<struct stat> setattr(uint64_t ino, const SetAttr& a, const Caller& c);
  [[nodiscard]] Result<struct stat> mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                          const Caller& c);
  [[nodiscard]] Result<struct stat> mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c);
  [[nodiscard]] Result<struct stat> symlink(uint64_t parent, std::string_view name, std::string_view target,
                                            const Caller& c);
  [[nodiscard]] Result<std::string> readlink(uint64_t ino);
  [[nodiscard]] Result<struct stat> link(uint64_t ino, uint64_t newparent, std::string_view newname);
  [[nodiscard]] Status unlink(uint64_t parent, std::string_view name);
  [[nodiscard]] Status rmdir(uint64_t parent, std::string_view name);
  // flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT (with or without NOREPLACE; the
  // whiteout left at the old name is owned by `c`). Other combinations: EINVAL, as the VFS says.
  [[nodiscard]] Status rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname,
                              unsigned flags, const Caller& c = {});
  // A new regular file (EEXIST if the name exists).
  [[nodiscard]] Result<struct stat> create(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c);
  // Opening checks (EISDIR for a directory opened for writing is the kernel's; EROFS for write on ro).
  // `read_updates_atime`, when given, says whether a read through this open would change the
  // file's access time now (the mount's atime rules, as touch_atime applies them; false for an
  // open that cannot read), from the inode item the checks read. FUSE inodes are S_NOATIME in the
  // kernel: a read the kernel serves from its page cache never reaches the daemon, so the daemon
  // drops the cache (no keep_cache) for such an open, and its first read comes here (strictatime:
  // every open for reading; relatime: when the access time is older than the last change or a
  // day old).
  [[nodiscard]] Status open(uint64_t ino, int flags, bool* read_updates_atime = nullptr);
  // btrfs_opendir: returns the directory's last DIR_INDEX now (btrfs_get_dir_last_index), the bound
  // to pass to every readdir of this open directory; call again on a rewind (btrfs_dir_llseek).
  [[nodiscard]] Result<uint64_t> opendir(uint64_t ino);
  // Entries from `offset` on (0 = start; "." and ".." first, then DIR_INDEX order; next_offset of
  // an entry resumes after it, and stays valid while the directory changes). `fill` returns false
  // when the reply buffer is full (that entry was not taken). plus: full attributes and a lookup
  // count per taken entry other than "." and "..". last_index: opendir's bound; entries with a
  // higher index (added or renamed since) are not returned, so a reader racing renames ends
  // (btrfs_real_readdir's private->last_index).
  [[nodiscard]] Status readdir(uint64_t ino, uint64_t offset, bool plus,
                               const std::function<bool(const DirEntryOut&)>& fill,
                               uint64_t last_index = UINT64_MAX);
  // Tests only: runs between readdir's two reads (the delayed index view, then the tree), where a
  // delayed-items run could otherwise slip in (readdir_takes_the_delayed_view_before_the_tree).
  void set_readdir_between_reads_for_test(std::function<void()> f) { readdir_between_reads_for_test_ = std::move(f); }
  [[nodiscard]] Status setxattr(uint64_t ino, std::string_view name, std::span<const uint8_t> value, int flags);
  [[nodiscard]] Result<std::vector<uint8_t>> getxattr(uint64_t ino, std::string_view name);
  [[nodiscard]] Result<std::vector<std::string>> listxattr(uint64_t ino);
  [[nodiscard]] Status removexattr(uint64_t ino, std::string_view name);
  // file_remove_privs (remove_privs.cpp), for when the kernel leaves it to the filesystem
  // (FUSE_HANDLE_KILLPRIV_V2): on a regular file, S_ISUID and S_ISGID go if `drop_suid_sgid` says
  // so (the caller lacks CAP_FSETID) — S_ISGID without group execute only when the caller is not
  // in the file's group either (`c.in_group_of`: setattr_should_drop_sgid); both asked only when
  // such a bit is set, since they look at the caller's /proc — and security.capability always; one
  // transaction with a new ctime when anything changes. Returns whether the mode changed (the
  // kernel's cached mode is then stale).
  [[nodiscard]] Result<bool> remove_privs(uint64_t ino, const std::function<bool()>& drop_suid_sgid,
                                          const Caller& c = {});

  // ---- inode flags (inode_flags.cpp; btrfs_fileattr_get / btrfs_fileattr_set) -----------------
  // FS_IOC_GETFLAGS: the inode's flags as FS_*_FL. FS_IOC_FSGETXATTR: the same as FS_XFLAG_*.
  [[nodiscard]] Result<uint32_t> get_fsflags(uint64_t ino);
  [[nodiscard]] Result<FsXattr> get_fsxattr(uint64_t ino);
  // FS_IOC_SETFLAGS / FS_IOC_FSSETXATTR with btrfs's rules (fs/inode_flags.h). Errors: EPERM (not
  // the owner without CAP_FOWNER; immutable or append-only changed without CAP_LINUX_IMMUTABLE),
  // EOPNOTSUPP (a flag or fsxattr field btrfs does not store), EINVAL (conflicting compression and
  // nocow flags), EROFS, ENOSPC.
  [[nodiscard]] Status set_fsflags(uint64_t ino, uint32_t fsflags, const Caller& c);
  [[nodiscard]] Status set_fsxattr(uint64_t ino, const FsXattr& x, const Caller& c);

  // ---- file contents (filesystem_data.cpp) -------------------------------------------------------
  // Also updates the access time by the mount's atime rules (`update_atime` false: O_NOATIME).
  [[nodiscard]] Result<size_t> read(uint64_t ino, uint64_t offset, std::span<uint8_t> out, bool update_atime = true);
  // `pool`: data space held for this write beforehand (a DataHold, see below), drawn from when the
  // ordinary reservation finds no space; what the write does not use stays in the pool.
  // With the FUSE writeback cache: the kernel owns regular files' mtime/ctime, the data operations
  // leave them alone (FileData::set_kernel_owns_file_times). Set at INIT, before any request.
  void set_kernel_owns_file_times(bool on);
  // `keep_times`: the kernel's writeback cache owns mtime/ctime (FileData::write).
  [[nodiscard]] Result<size_t> write(uint64_t ino, uint64_t offset, std::span<const uint8_t> data,
                                     uint64_t* pool = nullptr, bool keep_times = false);
  // Data space held apart for writes the kernel has acknowledged from its page cache but not yet
  // sent (the writeback cache; tools/daemon/page_cache_guard.h): hold_data reserves up to `bytes`
  // of DATA (flushing and waiting as a write would) and returns what it got; release_data gives
  // held bytes back. data_headroom: DATA bytes reservable right now without flushing (free space
  // in data chunks less every reservation, plus the unallocated space a data chunk may take).
  [[nodiscard]] Result<uint64_t> hold_data(uint64_t bytes);
  void release_data(uint64_t bytes);
  uint64_t data_headroom();
  [[nodiscard]] Status flush(uint64_t ino);
  [[nodiscard]] Status release(uint64_t ino);
  // fsync: the file's data and metadata are on disk when it returns: through the tree log when it
  // can express the inode's state (fs/tree_log.h), else a full commit.
  [[nodiscard]] Status fsync(uint64_t ino, bool datasync);
  [[nodiscard]] Status fsyncdir(uint64_t ino, bool datasync);
  // mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE (others: EOPNOTSUPP).
  [[nodiscard]] Status fallocate(uint64_t ino, int mode, uint64_t offset, uint64_t len);
  // SEEK_DATA / SEEK_HOLE (SEEK_SET/CUR/END are the kernel's). Errors: ENXIO past the end.
  [[nodiscard]] Result<uint64_t> lseek(uint64_t ino, uint64_t offset, int whence);
  // Shares the sector-aligned part of the range (reflink: FileData::clone_range) and copies the
  // rest; at most 0xFFFFF000 bytes per call (the FUSE reply is 32 bits). Returns the bytes done.
  [[nodiscard]] Result<size_t> copy_file_range(uint64_t ino_in, uint64_t off_in, uint64_t ino_out, uint64_t off_out,
                                               size_t len, unsigned flags);

  // ---- whole filesystem (filesystem.cpp) ---------------------------------------------------------
  [[nodiscard]] Result<struct statvfs> statfs();
  // Counters as JSON (ubtrfs-inspect stats; the daemon writes it on unmount when asked).
  std::string stats_json();
  // Wakes every thread waiting for a space reservation (an interrupted request re-checks its flag).
  void wake_space_waiters();
  // Emergency shutdown (shutdown.cpp): kSyncFirst commits first; then nothing more is written and
  // later operations fail with EIO. `who` names the requester in the one warning logged.
  // Idempotent; always succeeds (a failed sync is logged and the shutdown still happens).
  [[nodiscard]] Status shutdown(ShutdownMode mode, const std::string& who);
  bool is_shutdown() const { return fs_->is_shutdown(); }

  // ---- the label (label.cpp; btrfs_ioctl_get_fslabel / btrfs_ioctl_set_fslabel) ---------------
  // The superblock's label, up to its first NUL (at most kLabelSize - 1 = 255 bytes).
  [[nodiscard]] Result<std::string> label();
  // Sets the label and commits, so it is in every superblock copy when this returns.
  // Errors: EINVAL (longer than 255 bytes or holding a NUL), EROFS, EIO (shut down), the commit's.
  [[nodiscard]] Status set_label(std::string_view label);

  // ---- discard (discard.cpp; btrfs_ioctl_fitrim) -------------------------------------------------
  // FITRIM: discards the free space meeting [start, start+len) (fs/discard.h trim_fs) and returns
  // the bytes discarded (fstrim's range.len). Does not commit first: `sync` first to include what
  // was freed since the last commit. Errors: EINVAL, EROFS, EOPNOTSUPP, EIO.
  [[nodiscard]] Result<uint64_t> trim(uint64_t start, uint64_t len, uint64_t minlen);

  // ---- subvolumes (subvolume.cpp; btrfs ioctl.c create_subvol, btrfs_mksubvol) ---------------------
  // BTRFS_IOC_SUBVOL_CREATE: a new, empty subvolume named `name` in directory `parent` (a FUSE
  // inode number); returns its id. Errors: ENOTDIR, ENOENT (parent removed), EEXIST, EACCES (no
  // write and search permission on the parent for `c`, or the name "." / ".."), EINVAL (a '/' in
  // the name), ENAMETOOLONG, EPERM (immutable parent), EROFS, ENOSPC (at the call: nothing made),
  // EIO.
  [[nodiscard]] Result<uint64_t> create_subvolume(uint64_t parent, std::string_view name, const Caller& c);

  // BTRFS_IOC_SUBVOL_SETFLAGS (btrfs_ioctl_subvol_setflags): makes the subvolume whose root
  // directory is `ino` read-only or read-write (BTRFS_ROOT_SUBVOL_RDONLY in its ROOT_ITEM), committed
  // before it returns. Errors: EINVAL (not a subvolume's root directory), EPERM (not the owner of
  // that directory, and not uid 0), EROFS, ENOSPC. While a subvolume is read-only every change to
  // it fails with EROFS (btrfs_permission, btrfs_setattr, ...): check_subvol_writable.
  [[nodiscard]] Status set_subvolume_readonly(uint64_t ino, bool readonly, const Caller& c);
  // EROFS when the subvolume holding FUSE inode `ino` (or `id`) is read-only; `what` names the
  // operation in the message.
  [[nodiscard]] Status check_subvol_writable(uint64_t ino, std::string_view what);
  [[nodiscard]] Status check_subvol_writable(InodeId id, std::string_view what);
  // BTRFS_IOC_SNAP_CREATE(_V2) (btrfs_mksnapshot): a snapshot of subvolume `source` named `name`
  // in directory `parent`, read-only with `readonly`, taken inside a commit (it shares every block
  // of the source) and on disk when this returns. Every check of create_subvolume plus the
  // source's (EINVAL: not a subvolume id, ENOENT: deleted). Returns the new id.
  [[nodiscard]] Result<uint64_t> create_snapshot(uint64_t parent, std::string_view name, uint64_t source, bool readonly,
                                                 const Caller& c);
  // BTRFS_IOC_SNAP_DESTROY (btrfs_delete_subvolume): removes subvolume `name` of directory `parent`
  // (or, by_id, the subvolume `id` wherever it is named): its dir entries and root refs go, its
  // ROOT_ITEM gets refs 0 and an ORPHAN_ITEM (-5, 48, id) in the root tree (a dead root, which the
  // cleaner drops: at once or at a later mount), its UUID tree entry goes. Returns the id.
  // Errors: EPERM (not uid 0 — no user_subvol_rm_allowed —, the default subvolume, immutable or
  // append-only parent), ENOTEMPTY (it holds subvolumes), EBUSY (the mounted subvolume), EINVAL
  // (the name is not a subvolume, FS_TREE), ENOENT, EROFS, ENOSPC (at the call: nothing changed).
  [[nodiscard]] Result<uint64_t> delete_subvolume(uint64_t parent, std::string_view name, const Caller& c);
  [[nodiscard]] Result<uint64_t> delete_subvolume_by_id(uint64_t id, const Caller& c);
  // Where subvolume `id` is named: its parent subvolume, directory and name (ROOT_BACKREF).
  // Errors: ENOENT (none: FS_TREE or deleted).
  [[nodiscard]] Result<std::pair<InodeId, std::string>> subvolume_name(uint64_t id);

  // The subvolume and objectid behind a FUSE inode number. Errors: ENOENT.
  [[nodiscard]] Result<InodeId> inode_id(uint64_t ino) const { return numbers_.from_fuse(ino); }
  // BTRFS_IOC_INO_LOOKUP (btrfs_search_path_in_tree): the path of directory `dirid` of subvolume
  // `subvol` from that subvolume's root, each component followed by '/' ("" for the root, 256).
  // Errors: ENOENT (no such subvolume or directory), ENAMETOOLONG (longer than `max_len`), EIO.
  [[nodiscard]] Result<std::string> inode_path(uint64_t subvol, uint64_t dirid, size_t max_len);
  // GET_SUBVOL_INFO / `subvolume show`: the ROOT_ITEM and the ROOT_BACKREF of `subvol`.
  // Errors: ENOENT, EIO.
  [[nodiscard]] Result<SubvolumeInfo> subvolume_info(uint64_t subvol);
  // BTRFS_IOC_DEFAULT_SUBVOL (btrfs_ioctl_default_subvol): the subvolume a mount without subvol= /
  // subvolid= gets: the root tree's "default" DIR_ITEM (objectid 6) now names (id, ROOT_ITEM, -1),
  // and the DEFAULT_SUBVOL incompat bit is set. 0 means FS_TREE (5). Errors: ENOENT (not a live
  // subvolume), EROFS, ENOSPC.
  [[nodiscard]] Status set_default_subvolume(uint64_t id);
  // BTRFS_IOC_TREE_SEARCH (fs/tree_search.cpp): at most max_items items and max_bytes bytes of
  // (32-byte header + data) of tree `tree_id` in `range`. Errors: ENOENT (no such tree),
  // EOVERFLOW (the first item alone does not fit max_bytes), EIO.
  [[nodiscard]] Result<TreeSearchResult> tree_search(uint64_t tree_id, const TreeSearchRange& range, size_t max_items,
                                                     size_t max_bytes);

  // ---- scrub (fs/scrub.h; BTRFS_IOC_SCRUB) ------------------------------------------------------
  // The filesystem's scrubber; unmount cancels a running scrub before the final commit.
  Scrub& scrub() { return *scrub_; }
  // The deleted-subvolume cleaner; null on a read-only mount.
  SubvolumeCleaner* cleaner() { return cleaner_.get(); }

 private:
  std::function<void()> readdir_between_reads_for_test_;
  Filesystem(std::unique_ptr<FsInfo> fs, uint64_t subvol);
  [[nodiscard]] Result<TreeRoot*> search_tree_of(uint64_t tree_id);  // tree_search.cpp
  // btrfs_may_create and the rest of btrfs_mksubvol's checks for a new subvolume name (subvolume.cpp).
  // REQUIRES: subvol_mu_ and the parent's inode lock held.
  [[nodiscard]] Result<InodeItem> check_new_subvolume(RootRecord& prec, InodeId pid, std::string_view name,
                                                      const Caller& c);
  // Seeds the next subvolume id from the root tree (subvolume.cpp). REQUIRES: at mount, before the
  // cleaner starts.
  [[nodiscard]] Status seed_subvolume_ids();
  // A snapshot asked for, taken by the next commit (subvolume.cpp).
  struct PendingSnapshot {
    InodeId parent;
    std::string name;
    uint64_t source = 0, id = 0, index = 0;
    bool readonly = false;
    uint8_t uuid[16]{};
  };
  // btrfs create_pending_snapshot (subvolume.cpp). REQUIRES: inside a commit, gate closed.
  [[nodiscard]] Status take_snapshot(TreeHandle& h, const PendingSnapshot& s);
  // delete_subvolume's work once the name is known (subvolume.cpp). REQUIRES: subvol_mu_ held.
  // by_rmdir: rmdir(2)'s rules instead of the ioctl's (no capability needed, the subvolume must be
  // empty: ENOTEMPTY).
  [[nodiscard]] Result<uint64_t> delete_subvolume_locked(InodeId dir, std::string_view name, const Caller& c,
                                                         bool by_rmdir = false);
  // rmdir of a subvolume entry (btrfs_rmdir): deletes the subvolume when it is empty, or removes
  // the entry alone when it leads to the empty stand-in (subvolume.cpp).
  [[nodiscard]] Status rmdir_subvolume(InodeId dir, std::string_view name);
  [[nodiscard]] Status change_flags(uint64_t ino, std::optional<FsXattr> x, uint32_t fsflags, const Caller& c);
  [[nodiscard]] Status cleanup_orphans();  // filesystem_ns.cpp; REQUIRES: read-write, before FUSE starts
  // touch_atime (filesystem.cpp): the access time of a file read or a directory listed, by the
  // mount's rules — relatime (updated when older than mtime or ctime, or a day old), strictatime,
  // noatime, nodiratime — as a delayed item; best effort (a full filesystem skips it).
  // REQUIRES: the inode's lock held (shared is enough) or none for a directory.
  void touch_atime(InodeId id, bool is_dir);
  // touch_atime's decision in two parts, shared with open(): whether the mount keeps access times
  // for this inode at all (mode, read-only, writable subvolume), and whether an access at `now`
  // changes this item's (chattr +A, relatime).
  [[nodiscard]] bool atime_kept(InodeId id, bool is_dir);
  [[nodiscard]] bool atime_due(const InodeItem& ii, const Timespec& now) const;
  // copy_file_range's copy of what it does not share: read then write, one inode lock at a time.
  [[nodiscard]] Result<size_t> copy_through_buffer(InodeId in, uint64_t off_in, InodeId out, uint64_t off_out,
                                                   size_t len);

  std::unique_ptr<FsInfo> fs_;
  InodeNumbers numbers_;
  InodeLocks locks_;
  std::unique_ptr<DelayedInodes> delayed_;  // fs/delayed_inode.h (before ns_ and data_, which use it)
  std::unique_ptr<NamespaceState> ns_;   // fs/namespace_state.h
  std::unique_ptr<FileData> data_;       // fs/file_data.h
  std::unique_ptr<TreeLog> log_;         // fs/tree_log.h: fsync's fast path (null: read-only or notreelog)
  std::unique_ptr<DiscardCounters> discard_counters_;  // fs/discard.h: FITRIM and -o discard
  std::unique_ptr<AsyncDiscard> async_discard_;        // -o discard's worker (null without it)
  std::unique_ptr<Scrub> scrub_;                       // fs/scrub.h
  std::unique_ptr<SubvolumeCleaner> cleaner_;          // fs/subvolume_cleaner.h; read-write only
  std::unique_ptr<DelayedIputs> delayed_iputs_;        // fs/delayed_iput.h; read-write only
  // Evicts a batch of delayed iputs (the DelayedIputs evictor): locks them, then evict_inodes.
  [[nodiscard]] Result<size_t> evict_batch(std::vector<InodeId> ids);
  bool unmounted_ = false;
  // btrfs_get_free_objectid on the root tree: the next subvolume id (0 until seeded from the root
  // tree's highest objectid + 1, at least 256; never reused while mounted).
  std::mutex subvol_mu_;
  uint64_t next_subvol_id_ = 0;  // GUARDED_BY(subvol_mu_)
  MountOptions::Atime atime_ = MountOptions::Atime::kRelatime;
  bool nodiratime_ = false;
};

}  // namespace ubtrfs::fs
