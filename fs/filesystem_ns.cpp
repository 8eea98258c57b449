// Filesystem, names and inodes (btrfs inode.c / namei side: btrfs_lookup, btrfs_create_new_inode,
// btrfs_add_link, btrfs_unlink_inode, btrfs_rename, btrfs_rename_exchange, btrfs_setattr,
// btrfs_real_readdir, btrfs_orphan_add / btrfs_orphan_cleanup / btrfs_evict_inode): see filesystem.h.
// The item-level work is in dir_item.cpp and xattr.cpp; the namespace operations hold the POSIX
// rules and the order of operations, in:
// - this file: lookup, forget, getattr, setattr, open, unlink and rmdir, xattrs, orphan cleanup;
// - create_inode.cpp: mknod, mkdir, create, symlink (and readlink), link;
// - rename.cpp: rename, with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT;
// - readdir.cpp: opendir, readdir;
// - filesystem_ns_internal.h: the helpers they share (TouchedInodes, add_name, remove_name, the
//   eviction of an unlinked inode).
// The rules, for all of them:
//
// - Every modifying operation checks everything it can (names, types, existence, emptiness) before
//   it starts a transaction handle, so the only failures after the first tree change are tree
//   errors (ENOSPC/EIO), as in the kernel where those abort the transaction.
// - Aborts (btrfs_abort_transaction, TransHandle::abort): a step that fails after the operation's
//   first tree change leaves a half-done change in the running transaction, so it goes through
//   UBTRFS_TRY_OR_ABORT, which aborts (the filesystem turns read-only, the disk keeps the last
//   commit). The first change itself is one item write that changes nothing when it fails, and
//   checks before it end the handle normally. Helpers that make the first change of their own
//   (add_name, remove_name) abort after it; their callers abort on any failure once they have
//   changed something themselves.
// - Locks (InodeLocks, inode.h): the directories and inodes an operation changes are locked
//   exclusively, all at once and in InodeId order; an operation that found an inode through an
//   unlocked lookup re-checks the name under the locks. Cross-directory renames first take
//   NamespaceState::rename_mu (the VFS's s_vfs_rename_mutex) so the "not into its own subtree"
//   walk sees a stable tree. Order: rename_mu -> inode locks -> tree locks.
// - Link count 0 (FORMAT.md §6.1 rule 5): the inode gets an ORPHAN_ITEM (-5, 48, ino) in the same
//   handle; it is evicted (FileData::evict, then every item of the inode and the orphan item) once
//   no FUSE lookup references it: at once when its lookup count is 0, else at the last forget.
//   cleanup_orphans does the same at mount for orphans a crash left behind.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "alloc/block_rsv.h"
#include "fs/delayed_iput.h"
#include "fs/dir_item.h"
#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/filesystem_ns_internal.h"
#include "fs/inode_flags.h"
#include "fs/namespace_state.h"
#include "fs/xattr.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

// ---- lookup, forget, getattr ----------------------------------------------------------------------

Result<struct stat> Filesystem::lookup(uint64_t parent, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("lookup"));
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "name of {} bytes is longer than {}", name.size(), kNameLen);
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  auto* proot = UBTRFS_TRY(tree_of(*fs_, pid.subvol));
  InodeId cid;
  if (name == "." || name == "..") {
    const InodeItem pii = UBTRFS_TRY(read_inode(*fs_, *proot, pid.objectid));
    // "." of any inode is how the kernel resolves a file handle whose inode it no longer caches
    // (fuse_get_dentry with FUSE_CAP_EXPORT_SUPPORT): the inode itself, if it still has a name
    // (ENOENT otherwise, which the kernel answers with ESTALE).
    if (name == "." && !is_dir(pii)) {
      if (pii.nlink.get() == 0) return fail(ENOENT, "inode {} has no name left", parent);
      auto guard = locks_.lock_shared(pid);
      const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *proot, pid.objectid));
      if (ii.nlink.get() == 0) return fail(ENOENT, "inode {} has no name left", parent);
      ns_->add_lookup(pid, ii.generation.get());
      return inode_to_stat(ii, parent, fs_->params().sectorsize, data_->pending_bytes(pid));
    }
    if (!is_dir(pii)) return fail(ENOTDIR, "inode {} is not a directory", parent);
    if (name == ".")
      cid = pid;
    else if (pid.objectid == kEmptySubvolDirObjectid)
      cid = InodeId{pid.subvol, kFirstFreeObjectid};
    else
      cid = InodeId{pid.subvol, UBTRFS_TRY(parent_of_dir(*proot, pid.objectid))};
  } else {
    // The name first: only a directory has DIR_ITEMs, so a hit needs no read of the parent's
    // inode (one tree search fewer on the stat path); a miss reads it for ENOTDIR.
    auto e = UBTRFS_TRY(lookup_dir_entry(*proot, pid.objectid, name));
    if (!e) {
      const InodeItem pii = UBTRFS_TRY(read_inode(*fs_, *proot, pid.objectid));
      if (!is_dir(pii)) return fail(ENOTDIR, "inode {} is not a directory", parent);
      return fail(ENOENT, "no entry '{}' in directory {}", name, parent);
    }
    cid = UBTRFS_TRY(resolve_entry(*fs_, pid, *e));
  }
  auto* croot = UBTRFS_TRY(tree_of(*fs_, cid.subvol));
  // The shared lock orders this lookup's count against an eviction (which holds it exclusively).
  auto guard = locks_.lock_shared(cid);
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *croot, cid.objectid));
  if (ii.nlink.get() == 0 && name != "." && name != "..") {
    // A name leading to an inode with no link left: an unlink ran between the entry and the inode
    // (the name is gone now), or the image is corrupt. No lookup count either way: its forget
    // would evict (delete) an inode that a directory still names.
    auto again = UBTRFS_TRY(lookup_dir_entry(*proot, pid.objectid, name));
    if (!again || UBTRFS_TRY(resolve_entry(*fs_, pid, *again)) != cid)
      return fail(ENOENT, "no entry '{}' in directory {}", name, parent);
    return fail(EUCLEAN, "directory {} of root {}: entry '{}' names inode {} whose link count is 0", pid.objectid,
                pid.subvol, name, cid.objectid);
  }
  ns_->add_lookup(cid, ii.generation.get());
  return inode_to_stat(ii, numbers_.to_fuse(cid), fs_->params().sectorsize, data_->pending_bytes(cid));
}

void Filesystem::forget(uint64_t ino, uint64_t nlookup) {
  auto id = numbers_.from_fuse(ino);
  if (!id) return;
  if (ns_->drop_lookup(*id, nlookup) != 0 || fs_->read_only() || unmounted_ || fs_->is_shutdown()) return;
  auto root = tree_of(*fs_, id->subvol);
  if (!root) return;
  // Every read-write mount has the queue (made before FUSE starts; read-only returned above).
  // Link count 0 with no reference left is final (a lookup of such an inode fails, link(2) needs
  // a reference), so the inode can wait for the worker: btrfs_add_delayed_iput. The shared lock
  // orders this read against an eviction in progress.
  auto guard = locks_.lock_shared(*id);
  auto ii = read_inode(*fs_, **root, id->objectid);
  if (!ii) {
    if (ii.error().err != ENOENT)
      spdlog::error("{}: forget of inode {} of root {}: {}", fs_->path(), id->objectid, id->subvol, ii.error().message);
    return;
  }
  if (ii->nlink.get() == 0 && delayed_iputs_) delayed_iputs_->add(*id);
}

Result<size_t> Filesystem::run_delayed_iputs() {
  if (!delayed_iputs_) return size_t{0};
  return delayed_iputs_->run_all();
}

Result<size_t> Filesystem::evict_batch(std::vector<InodeId> ids) {
  if (fs_->read_only() || fs_->is_shutdown() || fs_->transactions().aborted()) return size_t{0};
  std::sort(ids.begin(), ids.end());
  size_t evicted = 0;
  for (size_t i = 0; i < ids.size();) {
    size_t e = i;
    while (e < ids.size() && ids[e].subvol == ids[i].subvol) ++e;
    const uint64_t subvol = ids[i].subvol;
    std::vector<InodeId> group(ids.begin() + static_cast<std::ptrdiff_t>(i),
                               ids.begin() + static_cast<std::ptrdiff_t>(e));
    i = e;
    auto root = tree_of(*fs_, subvol);
    if (!root) continue;  // the subvolume is gone, and its inodes with it
    std::vector<uint64_t> objectids;
    for (const InodeId& id : group) objectids.push_back(id.objectid);
    auto guard = locks_.lock(std::move(group));  // evict_inodes' REQUIRES
    evicted += UBTRFS_TRY(evict_inodes(*ns_, **root, subvol, std::move(objectids))).evicted;
  }
  return evicted;
}

uint64_t Filesystem::generation(uint64_t ino) {
  auto id = numbers_.from_fuse(ino);
  if (!id) return 0;
  // Entry replies come right after the facade counted the reference: no second tree search.
  if (auto g = ns_->referenced_generation(*id)) return *g;
  auto root = tree_of(*fs_, id->subvol);
  if (!root) return 0;
  auto ii = read_inode(*fs_, **root, id->objectid);
  return ii ? ii->generation.get() : 0;
}

Result<struct stat> Filesystem::getattr(uint64_t ino) {
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  return inode_to_stat(ii, ino, fs_->params().sectorsize, data_->pending_bytes(id));
}

// ---- setattr --------------------------------------------------------------------------------------

Result<struct stat> Filesystem::setattr(uint64_t ino, const SetAttr& a, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("setattr"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "setattr on inode {}: read-only filesystem", ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "setattr"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  UBTRFS_TRY_STATUS(check_not_stand_in(id, "setattr"));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto guard = locks_.lock({id});
  InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  {
    // may_setattr / do_truncate against the inode flags (fs/inode_flags.h).
    SetAttrKinds k;
    k.size = a.size.has_value();
    k.mode_or_owner = a.mode || a.uid || a.gid;
    k.times_set = a.atime == SetAttr::Time::kValue || a.mtime == SetAttr::Time::kValue;
    k.times_now = a.atime == SetAttr::Time::kNow || a.mtime == SetAttr::Time::kNow;
    UBTRFS_TRY_STATUS(check_may_setattr(ii, id.objectid, k));
  }
  if (a.size) {
    if (is_dir(ii)) return fail(EISDIR, "cannot truncate directory {}", ino);
    if (!S_ISREG(ii.mode.get())) return fail(EINVAL, "cannot truncate inode {} of mode {:o}", ino, ii.mode.get());
    UBTRFS_TRY_STATUS(data_->set_size(id, *a.size));  // updates size, nbytes, mtime, ctime itself
    ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  }
  const bool other = a.mode || a.uid || a.gid || a.atime != SetAttr::Time::kOmit ||
                     a.mtime != SetAttr::Time::kOmit || a.ctime;
  if (other) {
    const Timespec now = now_btrfs();
    uint32_t mode = ii.mode;
    if (a.uid) ii.uid = *a.uid;
    if (a.gid) ii.gid = *a.gid;
    if (a.mode) {
      mode = (mode & S_IFMT) | (*a.mode & 07777);
      // setattr_copy: S_ISGID goes unless the caller is in the file's group or privileged.
      if ((mode & S_ISGID) && c.uid != 0 && !c.in_group_of(ii.gid.get())) mode &= ~S_ISGID;
    }
    if ((a.uid || a.gid) && !S_ISDIR(mode)) {
      // chown(2) on a non-directory: ATTR_KILL_SUID, and ATTR_KILL_SGID when group-executable.
      mode &= ~S_ISUID;
      if (mode & S_IXGRP) mode &= ~S_ISGID;
    }
    ii.mode = mode;
    if (a.atime == SetAttr::Time::kNow) ii.atime = now;
    if (a.atime == SetAttr::Time::kValue) ii.atime = to_btrfs(a.atime_value);
    if (a.mtime == SetAttr::Time::kNow) ii.mtime = now;
    if (a.mtime == SetAttr::Time::kValue) ii.mtime = to_btrfs(a.mtime_value);
    ii.ctime = a.ctime ? to_btrfs(*a.ctime) : now;
    auto th = UBTRFS_TRY(fs_->transactions().start(1));
    UBTRFS_TRY_STATUS(update_inode(th, *root, id.objectid, ii));
    th.end();
    ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  }
  return inode_to_stat(ii, ino, fs_->params().sectorsize, data_->pending_bytes(id));
}

// ---- open -----------------------------------------------------------------------------------------

Status Filesystem::open(uint64_t ino, int flags, bool* read_updates_atime) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("open"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  const bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (writes && is_dir(ii)) return fail(EISDIR, "cannot open directory {} for writing", ino);
  if (writes && (fs_->read_only() || unmounted_)) return fail(EROFS, "open inode {} for writing: read-only filesystem", ino);
  if (writes) UBTRFS_TRY_STATUS(check_subvol_writable(id, "open for writing"));
  UBTRFS_TRY_STATUS(check_may_open(ii, id.objectid, flags));
  if (read_updates_atime)
    *read_updates_atime = (flags & O_ACCMODE) != O_WRONLY && atime_kept(id, false) && atime_due(ii, now_btrfs());
  return {};
}

// ---- removing names -------------------------------------------------------------------------------

namespace {

// unlink (dir = false) / rmdir (dir = true).
Status remove_entry(NamespaceState& ns, InodeId pid, std::string_view name, bool dir) {
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "name of {} bytes is longer than {}", name.size(), kNameLen);
  if (dir && name == ".") return fail(EINVAL, "cannot rmdir '.'");
  if (dir && name == "..") return fail(ENOTEMPTY, "cannot rmdir '..'");
  auto* root = UBTRFS_TRY(tree_of(ns.fs, pid.subvol));
  for (int attempt = 0; attempt < 64; ++attempt) {
    auto e = UBTRFS_TRY(lookup_dir_entry(*root, pid.objectid, name));
    if (!e) return fail(ENOENT, "no entry '{}' in directory {}", name, pid.objectid);
    if (e->location.type == kRootItemKey)
      return fail(dir ? EPERM : EISDIR, "'{}' is subvolume {} (deleting subvolumes is not supported)", name,
                  e->location.objectid);
    const InodeId cid = entry_target(pid, *e);
    auto guard = ns.locks.lock({pid, cid});
    auto again = UBTRFS_TRY(lookup_dir_entry(*root, pid.objectid, name));
    if (!again || again->location != e->location) continue;  // renamed meanwhile: look again
    const InodeItem cii = UBTRFS_TRY(read_inode(ns.fs, *root, cid.objectid));
    // may_delete's flag checks come before its type checks and the filesystem's emptiness check.
    const InodeItem pii = UBTRFS_TRY(read_inode(ns.fs, *root, pid.objectid));
    UBTRFS_TRY_STATUS(check_may_delete(pii, pid.objectid, cii, cid.objectid));
    if (!dir && is_dir(cii)) return fail(EISDIR, "'{}' in directory {} is a directory", name, pid.objectid);
    if (dir && !is_dir(cii)) return fail(ENOTDIR, "'{}' in directory {} is not a directory", name, pid.objectid);
    if (dir && cii.size.get() != 0)
      return fail(ENOTEMPTY, "directory '{}' ({}) is not empty: size {}", name, cid.objectid, cii.size.get());
    // btrfs __unlink_start_trans: BTRFS_UNLINK_METADATA_UNITS with the global reserve as fallback,
    // so unlink and rmdir succeed on a full filesystem.
    auto th = UBTRFS_TRY(ns.fs.transactions().start(alloc::kUnlinkMetadataUnits, alloc::FlushMode::kFlushAllSteal));
    const Timespec now = now_btrfs();
    TouchedInodes inodes(ns.fs, *root);
    const uint32_t nlink = UBTRFS_TRY(remove_name(th, *root, inodes, pid.objectid, name, cid.objectid, now));
    UBTRFS_TRY_OR_ABORT(th, inodes.write(th));
    th.end();
    if (nlink == 0) UBTRFS_TRY_STATUS(evict_if_unused(ns, *root, cid));
    return {};
  }
  return fail(EAGAIN, "'{}' in directory {} keeps changing", name, pid.objectid);
}

}  // namespace

Status Filesystem::unlink(uint64_t parent, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("unlink"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "unlink '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "unlink"));
  return remove_entry(*ns_, UBTRFS_TRY(numbers_.from_fuse(parent)), name, false);
}

Status Filesystem::rmdir(uint64_t parent, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("rmdir"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "rmdir '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "rmdir"));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  {
    // btrfs_rmdir on a subvolume entry: an empty subvolume is deleted, a stand-in's entry removed
    // (fs/subvolume.cpp rmdir_subvolume).
    auto* root = UBTRFS_TRY(tree_of(*fs_, pid.subvol));
    if (name.size() <= kNameLen)
      if (auto e = UBTRFS_TRY(lookup_dir_entry(*root, pid.objectid, name)); e && e->location.type == kRootItemKey)
        return rmdir_subvolume(pid, name);
  }
  return remove_entry(*ns_, pid, name, true);
}

// ---- xattrs ---------------------------------------------------------------------------------------

Status Filesystem::setxattr(uint64_t ino, std::string_view name, std::span<const uint8_t> value, int flags) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("setxattr"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "setxattr '{}' on inode {}: read-only filesystem", name, ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "setxattr"));
  UBTRFS_TRY_STATUS(check_xattr_name(name));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  UBTRFS_TRY_STATUS(check_not_stand_in(id, "setxattr"));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto guard = locks_.lock({id});
  InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  UBTRFS_TRY_STATUS(check_may_write_xattr(ii, id.objectid));
  // Checks that need no handle first (existence for CREATE/REPLACE, sizes) are inside set_xattr
  // and happen before its only tree change.
  if (name == kCompressionProp) {
    // The btrfs.compression property changes the inode's compression flags (fs/compress_policy.h).
    const std::string_view v(reinterpret_cast<const char*>(value.data()), value.size());
    auto applied = UBTRFS_TRY(apply_compression_prop(ii.flags.get(), ii.mode.get(), v));
    if (!applied) return {};  // ignored for this type of inode, as the kernel does
    ii.flags = *applied;
  }
  auto th = UBTRFS_TRY(fs_->transactions().start(2));
  UBTRFS_TRY_STATUS(set_xattr(th.tree(), *root, id.objectid, name, value, flags));
  ii.ctime = now_btrfs();
  UBTRFS_TRY_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
  return {};
}

Result<std::vector<uint8_t>> Filesystem::getxattr(uint64_t ino, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("getxattr"));
  UBTRFS_TRY_STATUS(check_xattr_name(name));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto v = UBTRFS_TRY(get_xattr(*root, id.objectid, name));
  if (!v) {
    UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));  // ENOENT for a vanished inode, not ENODATA
    return fail(ENODATA, "inode {} has no xattr '{}'", ino, name);
  }
  return std::move(*v);
}

Result<std::vector<std::string>> Filesystem::listxattr(uint64_t ino) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("listxattr"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  return list_xattrs(*root, id.objectid);
}

Status Filesystem::removexattr(uint64_t ino, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("removexattr"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "removexattr '{}' on inode {}: read-only filesystem", name, ino);
  UBTRFS_TRY_STATUS(check_subvol_writable(ino, "removexattr"));
  UBTRFS_TRY_STATUS(check_xattr_name(name));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  UBTRFS_TRY_STATUS(check_not_stand_in(id, "removexattr"));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto guard = locks_.lock({id});
  InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  UBTRFS_TRY_STATUS(check_may_write_xattr(ii, id.objectid));
  if (!UBTRFS_TRY(get_xattr(*root, id.objectid, name))) return fail(ENODATA, "inode {} has no xattr '{}'", ino, name);
  if (name == kCompressionProp)
    if (auto applied = UBTRFS_TRY(apply_compression_prop(ii.flags.get(), ii.mode.get(), std::nullopt))) ii.flags = *applied;
  auto th = UBTRFS_TRY(fs_->transactions().start(2));
  UBTRFS_TRY_STATUS(remove_xattr(th.tree(), *root, id.objectid, name));
  ii.ctime = now_btrfs();
  UBTRFS_TRY_OR_ABORT(th, update_inode(th, *root, id.objectid, ii));
  return {};
}

// ---- orphans ----------------------------------------------------------------------------------------

Status Filesystem::cleanup_orphans() {
  auto* root = UBTRFS_TRY(tree_of(*fs_, numbers_.mounted_subvol()));
  // btrfs_orphan_cleanup: every ORPHAN_ITEM (-5, 48, ino) of the mounted tree.
  std::vector<uint64_t> orphans;
  {
    Path p;
    UBTRFS_TRY(search_slot(nullptr, *root, Key{kOrphanObjectid, kOrphanItemKey, 0}, p, 0, false));
    bool valid = p.leaf().nritems() > 0;
    if (valid && p.slots[0] >= static_cast<int>(p.leaf().nritems())) valid = UBTRFS_TRY(next_leaf(*root, p));
    while (valid) {
      const Key k = p.leaf().item_key(p.slots[0]);
      if (k.objectid != kOrphanObjectid || k.type != kOrphanItemKey) break;
      orphans.push_back(k.offset);
      valid = UBTRFS_TRY(next_item(*root, p));
    }
  }
  // In batches of consecutive inodes (fs/evict.h): a crash in the middle of `rm -r` leaves many.
  constexpr size_t kBatch = 1024;
  for (size_t i = 0; i < orphans.size(); i += kBatch) {
    const size_t e = std::min(orphans.size(), i + kBatch);
    std::vector<uint64_t> batch(orphans.begin() + static_cast<std::ptrdiff_t>(i),
                                orphans.begin() + static_cast<std::ptrdiff_t>(e));
    std::vector<InodeId> ids;
    for (uint64_t objectid : batch) ids.push_back(InodeId{numbers_.mounted_subvol(), objectid});
    auto guard = locks_.lock(std::move(ids));
    const EvictOutcome out = UBTRFS_TRY(evict_inodes(*ns_, *root, numbers_.mounted_subvol(), std::move(batch)));
    if (out.evicted || out.stale_orphans)
      spdlog::info("{}: cleaned {} orphan inodes and {} stale orphan items of root {}", fs_->path(), out.evicted,
                   out.stale_orphans, numbers_.mounted_subvol());
  }
  return {};
}

}  // namespace ubtrfs::fs
