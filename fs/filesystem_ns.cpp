// Filesystem, names and inodes (btrfs inode.c / namei side: btrfs_lookup, btrfs_create_new_inode,
// btrfs_add_link, btrfs_unlink_inode, btrfs_rename, btrfs_rename_exchange, btrfs_setattr,
// btrfs_real_readdir, btrfs_orphan_add / btrfs_orphan_cleanup / btrfs_evict_inode): see filesystem.h.
// The item-level work is in dir_item.cpp and xattr.cpp; this file holds the POSIX rules and the
// order of operations:
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
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "alloc/block_rsv.h"
#include "fs/delayed_inode.h"
#include "fs/dir_item.h"
#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/inode_flags.h"
#include "fs/posix_acl.h"
#include "fs/tree_log.h"
#include "fs/namespace_state.h"
#include "fs/xattr.h"
#include "io/checksum.h"
#include "tree/ctree.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#define RENAME_WHITEOUT (1 << 2)
#endif

namespace ubtrfs::fs {
namespace {

constexpr size_t kPathMax = 4096;  // PATH_MAX: a symlink target is at most PATH_MAX - 1 bytes

Key orphan_key(uint64_t objectid) { return Key{kOrphanObjectid, kOrphanItemKey, objectid}; }
Key inode_location(uint64_t objectid) { return Key{objectid, kInodeItemKey, 0}; }

Result<TreeRoot*> tree_of(FsInfo& fs, uint64_t subvol) {
  auto* rec = UBTRFS_TRY(fs.fs_root(subvol));
  return rec->tree.get();
}

Status check_name(std::string_view name) {
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "name of {} bytes is longer than {}", name.size(), kNameLen);
  if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return fail(EINVAL, "invalid name '{}'", name);
  return {};
}

// The inode a directory entry names: an inode of the same tree, or the root directory of the
// subvolume a ROOT_ITEM location names.
InodeId entry_target(InodeId dir, const DirEntryRecord& e) {
  if (e.location.type == kRootItemKey) return InodeId{e.location.objectid, kFirstFreeObjectid};
  return InodeId{dir.subvol, e.location.objectid};
}

// btrfs fixup_tree_root_location: a subvolume entry leads into the subvolume only from the
// directory its ROOT_REF names (dirid and name); an entry a snapshot inherited from its source
// leads to the empty stand-in directory instead (kEmptySubvolDirObjectid, fs/inode.h).
Result<InodeId> resolve_entry(FsInfo& fs, InodeId dir, const DirEntryRecord& e) {
  if (e.location.type != kRootItemKey) return entry_target(dir, e);
  const uint64_t sub = e.location.objectid;
  auto body = UBTRFS_TRY(lookup_item(fs.root_tree(), Key{dir.subvol, kRootRefKey, sub}));
  if (body && body->size() >= sizeof(RootRef)) {
    RootRef r;
    std::memcpy(&r, body->data(), sizeof r);
    const std::string_view name(reinterpret_cast<const char*>(body->data()) + sizeof r,
                                std::min<size_t>(r.name_len.get(), body->size() - sizeof r));
    if (r.dirid.get() == dir.objectid && name == e.name) return InodeId{sub, kFirstFreeObjectid};
  }
  return InodeId{dir.subvol, kEmptySubvolDirObjectid};
}

// Nothing is created in, linked into, renamed from or into, or changed on the stand-in directory
// (its inode operations are simple_dir_inode_operations in the kernel).
Status check_not_stand_in(InodeId id, std::string_view what) {
  if (id.objectid == kEmptySubvolDirObjectid)
    return fail(EPERM, "{}: inode {} of subvolume {} is the empty stand-in of a subvolume entry", what, id.objectid,
                id.subvol);
  return {};
}

bool is_dir(const InodeItem& ii) { return S_ISDIR(ii.mode.get()); }

Status insert_orphan(TreeHandle& h, TreeRoot& root, uint64_t objectid) {
  auto st = insert_item(h, root, orphan_key(objectid), std::span<const uint8_t>{});
  if (!st && st.error().err != EEXIST) return st;
  return {};
}

// A directory's parent: the key offset of its (only) INODE_REF (the root's points to itself).
Result<uint64_t> parent_of_dir(TreeRoot& root, uint64_t dir) {
  auto refs = UBTRFS_TRY(list_inode_refs(root, dir));
  if (refs.empty()) return fail(EUCLEAN, "directory {} of root {} has no inode ref", dir, root.objectid());
  return refs[0].parent;
}

// btrfs_evict_inode for an inode with no link and no lookup left. REQUIRES: the inode's lock held
// exclusively, no handle open, read-write.
Status evict_inode(NamespaceState& ns, TreeRoot& root, InodeId id) {
  UBTRFS_TRY_STATUS(ns.data.evict(id));
  // btrfs_evict_inode: FLUSH_EVICT, a priority reservation that may commit and steal; the items go
  // in a handle of a few units (the kernel's evict reserve is metadata_size(1) plus the orphan).
  auto th = UBTRFS_TRY(ns.fs.transactions().start(2, alloc::FlushMode::kFlushEvict));
  // Nothing delayed may recreate what is about to be deleted (btrfs_kill_delayed_inode_items) —
  // dropped only now that the deletion is sure to run: had the reservation failed, the pending
  // item (nbytes after the extents went) must still reach the tree.
  if (DelayedInodes* d = ns.fs.delayed_inodes()) d->forget(id);
  // delete_items_of may have deleted some items when it fails: abort from the first step on.
  UBTRFS_TRY_OR_ABORT(th, delete_items_of(th.tree(), root, id.objectid));
  if (auto st = delete_item(th.tree(), root, orphan_key(id.objectid)); !st && st.error().err != ENOENT)
    return th.abort(st.error());
  th.end();
  ns.forget_dir(id);
  return {};
}

// Evicts `id` if it has no link and no lookup. REQUIRES: its lock held exclusively, no handle.
Status evict_if_unused(NamespaceState& ns, TreeRoot& root, InodeId id) {
  if (ns.lookup_count(id) != 0) return {};
  auto ii = read_inode(ns.fs, root, id.objectid);
  if (!ii) return ii.error().err == ENOENT ? Status{} : fail(ii.error());
  if (ii->nlink.get() != 0) return {};
  return evict_inode(ns, root, id);
}

// Inode items an operation loads, changes and writes back once (a directory may be touched twice
// in one rename).
class TouchedInodes {
 public:
  TouchedInodes(FsInfo& fs, TreeRoot& root) : fs_(fs), root_(root) {}
  Result<InodeItem*> get(uint64_t objectid) {
    auto it = items_.find(objectid);
    if (it == items_.end()) it = items_.emplace(objectid, UBTRFS_TRY(read_inode(fs_, root_, objectid))).first;
    return &it->second;
  }
  Status write(TransHandle& th) {
    for (auto& [objectid, ii] : items_) UBTRFS_TRY_STATUS(update_inode(th, root_, objectid, ii));
    return {};
  }

 private:
  FsInfo& fs_;
  TreeRoot& root_;
  std::map<uint64_t, InodeItem> items_;
};

void add_dir_size(InodeItem& dir, std::string_view name, int sign, const Timespec& now) {
  const uint64_t delta = 2 * name.size();  // DIR_ITEM + DIR_INDEX name bytes (FORMAT.md §4.5)
  dir.size = sign > 0 ? dir.size.get() + delta : dir.size.get() - std::min<uint64_t>(delta, dir.size.get());
  dir.mtime = now;
  dir.ctime = now;
}

// btrfs_unlink_inode's tree part: the name's refs and entries go, link count drops, an orphan item
// is added at 0. Returns the new link count. Its first change is the inode ref; failures after it
// abort `th`.
Result<uint32_t> remove_name(TransHandle& th, TreeRoot& root, TouchedInodes& inodes, uint64_t dir,
                             std::string_view name, uint64_t child, const Timespec& now) {
  auto* d = UBTRFS_TRY(inodes.get(dir));
  auto* c = UBTRFS_TRY(inodes.get(child));
  const uint64_t index = UBTRFS_TRY(delete_inode_ref(th.tree(), root, child, dir, name));
  // btrfs_record_unlink_dir: an fsync of the inode in this transaction must commit (tree_log.h).
  if (TreeLog* log = th.fs()->tree_log()) log->note_unlink(InodeId{root.objectid(), child}, th.transid());
  std::optional<DelayedIndexQueue> queue;
  if (DelayedInodes* d = th.fs()->delayed_inodes()) queue.emplace(*d, th, root);
  UBTRFS_TRY_OR_ABORT(th, delete_dir_entry(th.tree(), root, dir, name, index, queue ? &*queue : nullptr));
  add_dir_size(*d, name, -1, now);
  const uint32_t nlink = is_dir(*c) ? 0 : c->nlink.get() - std::min<uint32_t>(1, c->nlink.get());
  c->nlink = nlink;
  if (is_dir(*c)) c->size = 0;
  c->ctime = now;
  if (nlink == 0) UBTRFS_TRY_OR_ABORT(th, insert_orphan(th.tree(), root, child));
  return nlink;
}

// btrfs_add_link: a new name `name` in `dir` for `child` with a fresh index. Its first change is
// the inode ref (EMLINK/EEXIST/EOVERFLOW there change nothing); a name the directory then cannot
// take (EEXIST, EOVERFLOW of a full item of colliding hashes) undoes the ref as btrfs_add_link
// does; any other failure after the ref aborts `th`.
Status add_name(NamespaceState& ns, TransHandle& th, TreeRoot& root, TouchedInodes& inodes, uint64_t dir,
                std::string_view name, uint64_t child, const Timespec& now) {
  auto* c = UBTRFS_TRY(inodes.get(child));
  auto* d = UBTRFS_TRY(inodes.get(dir));
  const uint64_t index = UBTRFS_TRY(ns.new_dir_index(root, dir));
  const bool extended_iref = ns.fs.params().incompat_flags & kIncompatExtendedIref;
  UBTRFS_TRY_STATUS(insert_inode_ref(th.tree(), root, child, dir, name, index, extended_iref));
  std::optional<DelayedIndexQueue> queue;
  if (DelayedInodes* d = ns.fs.delayed_inodes()) queue.emplace(*d, th, root);
  auto entry = insert_dir_entry(th.tree(), root, dir, name, inode_location(child), file_type_of_mode(c->mode), index,
                                queue ? &*queue : nullptr);
  if (!entry) {
    if (entry.error().err != EEXIST && entry.error().err != EOVERFLOW) return th.abort(entry.error());
    UBTRFS_TRY_OR_ABORT(th, delete_inode_ref(th.tree(), root, child, dir, name));
    return entry;
  }
  add_dir_size(*d, name, +1, now);
  return {};
}

}  // namespace

// ---- lookup, forget, getattr ----------------------------------------------------------------------

Result<struct stat> Filesystem::lookup(uint64_t parent, std::string_view name) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("lookup"));
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "name of {} bytes is longer than {}", name.size(), kNameLen);
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  auto* proot = UBTRFS_TRY(tree_of(*fs_, pid.subvol));
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
  InodeId cid;
  if (name == ".") {
    cid = pid;
  } else if (name == "..") {
    cid = pid.objectid == kEmptySubvolDirObjectid ? InodeId{pid.subvol, kFirstFreeObjectid}
                                                   : InodeId{pid.subvol, UBTRFS_TRY(parent_of_dir(*proot, pid.objectid))};
  } else {
    auto e = UBTRFS_TRY(lookup_dir_entry(*proot, pid.objectid, name));
    if (!e) return fail(ENOENT, "no entry '{}' in directory {}", name, parent);
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
  auto guard = locks_.lock({*id});
  if (auto st = evict_if_unused(*ns_, **root, *id); !st)
    spdlog::error("{}: evicting inode {} of root {}: {}", fs_->path(), id->objectid, id->subvol, st.error().message);
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
      // setattr_copy: S_ISGID goes unless the caller is in the file's group or privileged (only the
      // primary group is known here).
      if ((mode & S_ISGID) && c.uid != 0 && c.gid != ii.gid.get()) mode &= ~S_ISGID;
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

// ---- creating names -------------------------------------------------------------------------------

namespace {

struct NewInode {
  uint32_t mode = 0;
  uint64_t rdev = 0;
  std::string_view symlink_target;
};

// btrfs_create_new_inode + btrfs_add_link: a new inode named `name` in `parent`.
Result<std::pair<InodeId, InodeItem>> create_inode(NamespaceState& ns, InodeId pid, std::string_view name,
                                                   const NewInode& spec, const Caller& c) {
  FsInfo& fs = ns.fs;
  UBTRFS_TRY_STATUS(check_name(name));
  // vfs_create answers EACCES where the directory has no create op, vfs_mkdir/mknod/symlink EPERM.
  if (auto st = check_not_stand_in(pid, "create"); !st)
    return fail(S_ISREG(spec.mode) ? EACCES : EPERM, "{}", st.error().message);
  auto* root = UBTRFS_TRY(tree_of(fs, pid.subvol));
  auto guard = ns.locks.lock({pid});
  const InodeItem pii = UBTRFS_TRY(read_inode(ns.fs, *root, pid.objectid));
  if (!is_dir(pii)) return fail(ENOTDIR, "inode {} of root {} is not a directory", pid.objectid, pid.subvol);
  if (pii.nlink.get() == 0) return fail(ENOENT, "directory {} of root {} was removed", pid.objectid, pid.subvol);
  if (name == "." || name == ".." || UBTRFS_TRY(lookup_dir_entry(*root, pid.objectid, name)))
    return fail(EEXIST, "'{}' already exists in directory {}", name, pid.objectid);
  UBTRFS_TRY_STATUS(check_may_create(pii, pid.objectid));
  // btrfs_check_dir_item_collision: a name whose hash's DIR_ITEM is full is refused before the
  // transaction starts, so the failure leaves nothing half-done.
  UBTRFS_TRY_STATUS(check_dir_item_room(*root, pid.objectid, name));

  // POSIX ACL inheritance (btrfs_init_acl / posix_acl_create): a default ACL on the parent becomes
  // the new inode's access ACL masked by the create mode, and the umask does not apply; without
  // one the umask does (the daemon asks the kernel not to apply it: FUSE_CAP_DONT_MASK).
  std::optional<AclCreateResult> acl;
  if (spec.symlink_target.empty()) {
    auto def = UBTRFS_TRY(get_xattr(*root, pid.objectid, kAclDefaultXattr));
    if (def) acl = acl_for_new_inode(spec.mode, *def);
  }
  // inode_init_owner: the caller owns it; a setgid directory passes its group (and, to
  // subdirectories, its setgid bit) on.
  uint32_t mode = acl ? acl->mode : spec.symlink_target.empty() ? (spec.mode & ~(c.umask & 0777)) : spec.mode;
  uint32_t gid = c.gid;
  if (pii.mode.get() & S_ISGID) {
    gid = pii.gid;
    if (S_ISDIR(mode))
      mode |= S_ISGID;
    else if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && c.uid != 0 && c.gid != gid)
      mode &= ~S_ISGID;  // mode_strip_sgid
  }
  const uint64_t objectid = UBTRFS_TRY(ns.new_objectid(*root));
  const InodeId cid{pid.subvol, objectid};
  // btrfs_inherit_iflags, and btrfs_inode_inherit_props for the one inheritable property
  // (compression: regular files and directories that are not NODATACOW). A directory holding the
  // property has COMPRESS set (the kernel's prop_compression_apply sets it with the property), so
  // only those are searched.
  uint64_t flags = inherit_flags(pii.flags.get(), mode);
  std::optional<std::vector<uint8_t>> compression_prop;
  if ((pii.flags.get() & kInodeCompress) && (S_ISREG(mode) || S_ISDIR(mode)) && !(flags & kInodeNodatacow)) {
    compression_prop = UBTRFS_TRY(get_xattr(*root, pid.objectid, kCompressionProp));
    if (compression_prop) flags = (flags & ~kInodeNocompress) | kInodeCompress;
  }

  // btrfs_new_inode_prepare's count: the inode item (its inode ref goes in the same batch), the dir
  // item, the dir index, the parent's inode update, one per ACL xattr, and a symlink's inline extent.
  unsigned items = 4;
  if (acl && acl->access) items++;
  if (acl && acl->default_acl) items++;
  if (!spec.symlink_target.empty()) items++;
  if (compression_prop) items++;
  auto th = UBTRFS_TRY(fs.transactions().start(items));
  const Timespec now = now_btrfs();
  InodeItem ii{};
  ii.generation = th.transid();
  ii.transid = th.transid();
  ii.size = spec.symlink_target.size();
  ii.nbytes = spec.symlink_target.size();
  ii.nlink = 1;
  ii.uid = c.uid;
  ii.gid = gid;
  ii.mode = mode;
  ii.rdev = (S_ISCHR(mode) || S_ISBLK(mode)) ? spec.rdev : 0;
  ii.flags = flags;
  ii.atime = now;
  ii.ctime = now;
  ii.mtime = now;
  ii.otime = now;
  UBTRFS_TRY_STATUS(insert_inode(th, *root, objectid, ii));  // the first change
  if (!spec.symlink_target.empty()) {
    // btrfs_symlink: the target as an uncompressed inline extent at offset 0 (FORMAT.md §3.7).
    std::vector<uint8_t> body(kFileExtentInlineDataStart + spec.symlink_target.size());
    FileExtentItem fe{};
    fe.generation = th.transid();
    fe.ram_bytes = spec.symlink_target.size();
    fe.compression = kCompressNone;
    fe.type = kFileExtentInline;
    std::memcpy(body.data(), &fe, kFileExtentInlineDataStart);
    std::memcpy(body.data() + kFileExtentInlineDataStart, spec.symlink_target.data(), spec.symlink_target.size());
    UBTRFS_TRY_OR_ABORT(th, insert_item(th.tree(), *root, Key{objectid, kExtentDataKey, 0}, body));
  }
  if (acl && acl->access)
    UBTRFS_TRY_OR_ABORT(th, set_xattr(th.tree(), *root, objectid, kAclAccessXattr, *acl->access, 0));
  if (acl && acl->default_acl)
    UBTRFS_TRY_OR_ABORT(th, set_xattr(th.tree(), *root, objectid, kAclDefaultXattr, *acl->default_acl, 0));
  if (compression_prop)
    UBTRFS_TRY_OR_ABORT(th, set_xattr(th.tree(), *root, objectid, kCompressionProp, *compression_prop, 0));
  TouchedInodes inodes(fs, *root);
  UBTRFS_TRY_OR_ABORT(th, add_name(ns, th, *root, inodes, pid.objectid, name, objectid, now));
  auto* dir_item = UBTRFS_TRY_OR_ABORT(th, inodes.get(pid.objectid));
  UBTRFS_TRY_OR_ABORT(th, update_inode(th, *root, pid.objectid, *dir_item));
  th.end();
  const InodeItem created = UBTRFS_TRY(read_inode(ns.fs, *root, objectid));
  ns.add_lookup(cid, created.generation.get());
  return std::pair{cid, created};
}

}  // namespace

Result<struct stat> Filesystem::mknod(uint64_t parent, std::string_view name, uint32_t mode, uint64_t rdev,
                                      const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("mknod"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "mknod '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "mknod"));
  if ((mode & S_IFMT) == 0) mode |= S_IFREG;
  const uint32_t type = mode & S_IFMT;
  if (type != S_IFREG && type != S_IFCHR && type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK)
    return fail(EINVAL, "mknod '{}': invalid file type in mode {:o}", name, mode);
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  NewInode spec;
  spec.mode = mode;
  spec.rdev = encode_rdev(static_cast<dev_t>(rdev));
  auto [cid, ii] = UBTRFS_TRY(create_inode(*ns_, pid, name, spec, c));
  return inode_to_stat(ii, numbers_.to_fuse(cid), fs_->params().sectorsize, 0);
}

Result<struct stat> Filesystem::mkdir(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("mkdir"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "mkdir '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "mkdir"));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  NewInode spec;
  spec.mode = S_IFDIR | (mode & 07777);
  auto [cid, ii] = UBTRFS_TRY(create_inode(*ns_, pid, name, spec, c));
  return inode_to_stat(ii, numbers_.to_fuse(cid), fs_->params().sectorsize, 0);
}

Result<struct stat> Filesystem::create(uint64_t parent, std::string_view name, uint32_t mode, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("create"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "create '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "create"));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  NewInode spec;
  spec.mode = S_IFREG | (mode & 07777);
  auto [cid, ii] = UBTRFS_TRY(create_inode(*ns_, pid, name, spec, c));
  return inode_to_stat(ii, numbers_.to_fuse(cid), fs_->params().sectorsize, 0);
}

Result<struct stat> Filesystem::symlink(uint64_t parent, std::string_view name, std::string_view target,
                                        const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("symlink"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "symlink '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "symlink"));
  if (target.empty()) return fail(ENOENT, "symlink '{}' with an empty target", name);
  // btrfs_symlink: the target must fit one inline extent (BTRFS_MAX_INLINE_DATA_SIZE), and the VFS
  // takes at most PATH_MAX - 1 bytes.
  const size_t limit = std::min<size_t>(kPathMax - 1, max_item_size(fs_->params().nodesize) - kFileExtentInlineDataStart);
  if (target.size() > limit)
    return fail(ENAMETOOLONG, "symlink target of {} bytes is longer than {}", target.size(), limit);
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  NewInode spec;
  spec.mode = S_IFLNK | 0777;
  spec.symlink_target = target;
  auto [cid, ii] = UBTRFS_TRY(create_inode(*ns_, pid, name, spec, c));
  return inode_to_stat(ii, numbers_.to_fuse(cid), fs_->params().sectorsize, 0);
}

Result<std::string> Filesystem::readlink(uint64_t ino) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("readlink"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  if (!S_ISLNK(ii.mode.get())) return fail(EINVAL, "inode {} is not a symlink", ino);
  const Key key{id.objectid, kExtentDataKey, 0};
  auto body = UBTRFS_TRY(lookup_item(*root, key));
  if (!body || body->size() < kFileExtentInlineDataStart)
    return fail(EUCLEAN, "symlink {} of root {} has no inline extent", id.objectid, id.subvol);
  FileExtentItem fe{};
  std::memcpy(&fe, body->data(), kFileExtentInlineDataStart);
  if (fe.type != kFileExtentInline || fe.compression != kCompressNone)
    return fail(EUCLEAN, "symlink {} of root {} extent has type {} compression {}", id.objectid, id.subvol, fe.type,
                fe.compression);
  const size_t len = body->size() - kFileExtentInlineDataStart;
  return std::string(reinterpret_cast<const char*>(body->data() + kFileExtentInlineDataStart), len);
}

Result<struct stat> Filesystem::link(uint64_t ino, uint64_t newparent, std::string_view newname) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("link"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "link '{}': read-only filesystem", newname);
  UBTRFS_TRY_STATUS(check_subvol_writable(newparent, "link"));
  UBTRFS_TRY_STATUS(check_name(newname));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(newparent));
  UBTRFS_TRY_STATUS(check_not_stand_in(pid, "link"));
  if (id.subvol != pid.subvol) return fail(EXDEV, "link across subvolumes {} and {}", id.subvol, pid.subvol);
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto guard = locks_.lock({id, pid});
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  if (is_dir(ii)) return fail(EPERM, "cannot hard-link directory {}", ino);
  if (ii.nlink.get() == 0) return fail(ENOENT, "inode {} has no name left to link", ino);
  UBTRFS_TRY_STATUS(check_may_link(ii, id.objectid));
  if (ii.nlink.get() >= kLinkMax) return fail(EMLINK, "inode {} already has {} links", ino, ii.nlink.get());
  const InodeItem pii = UBTRFS_TRY(read_inode(*fs_, *root, pid.objectid));
  if (!is_dir(pii)) return fail(ENOTDIR, "inode {} is not a directory", newparent);
  if (pii.nlink.get() == 0) return fail(ENOENT, "directory {} was removed", newparent);
  UBTRFS_TRY_STATUS(check_may_create(pii, pid.objectid));
  if (UBTRFS_TRY(lookup_dir_entry(*root, pid.objectid, newname)))
    return fail(EEXIST, "'{}' already exists in directory {}", newname, newparent);
  UBTRFS_TRY_STATUS(check_dir_item_room(*root, pid.objectid, newname));
  auto th = UBTRFS_TRY(fs_->transactions().start(5));
  const Timespec now = now_btrfs();
  TouchedInodes inodes(*fs_, *root);
  UBTRFS_TRY_STATUS(add_name(*ns_, th, *root, inodes, pid.objectid, newname, id.objectid, now));  // aborts itself
  auto* c = UBTRFS_TRY_OR_ABORT(th, inodes.get(id.objectid));
  c->nlink = c->nlink.get() + 1;
  c->ctime = now;
  UBTRFS_TRY_OR_ABORT(th, inodes.write(th));
  th.end();
  const InodeItem out = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  ns_->add_lookup(id, out.generation.get());
  return inode_to_stat(out, ino, fs_->params().sectorsize, data_->pending_bytes(id));
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

// ---- rename ---------------------------------------------------------------------------------------

namespace {

// True if directory `dir` is `ancestor` or lies below it (walks ".." = INODE_REF key offsets up to
// the subvolume root, which refers to itself). REQUIRES: rename_mu held (no concurrent moves).
Result<bool> is_in_subtree(TreeRoot& root, uint64_t dir, uint64_t ancestor) {
  for (int depth = 0; depth < 1 << 16; ++depth) {
    if (dir == ancestor) return true;
    const uint64_t up = UBTRFS_TRY(parent_of_dir(root, dir));
    if (up == dir) return false;
    dir = up;
  }
  return fail(ELOOP, "directory {} of root {} has no path to the root", dir, root.objectid());
}

// btrfs_whiteout_for_rename: the name a RENAME_WHITEOUT leaves behind is a new character device
// 0:0 with no permission bits (WHITEOUT_MODE, WHITEOUT_DEV), owned by the caller — what overlayfs
// reads as "deleted in the lower layer". Created in the rename's own transaction, so no reader
// ever sees the old name missing. Failures abort `th` (the rename has changed the tree already).
Status add_whiteout(NamespaceState& ns, TransHandle& th, TreeRoot& root, TouchedInodes& inodes, uint64_t dir,
                    std::string_view name, const Caller& c, const Timespec& now) {
  const uint64_t objectid = UBTRFS_TRY_OR_ABORT(th, ns.new_objectid(root));
  InodeItem ii{};
  ii.generation = th.transid();
  ii.transid = th.transid();
  ii.nlink = 1;
  ii.uid = c.uid;
  ii.gid = c.gid;
  ii.mode = S_IFCHR;
  ii.rdev = 0;
  ii.atime = now;
  ii.ctime = now;
  ii.mtime = now;
  ii.otime = now;
  UBTRFS_TRY_OR_ABORT(th, insert_inode(th, root, objectid, ii));
  return add_name(ns, th, root, inodes, dir, name, objectid, now);
}

}  // namespace

Status Filesystem::rename(uint64_t parent, std::string_view name, uint64_t newparent, std::string_view newname,
                          unsigned flags, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("rename"));
  // do_renameat2's rules: unknown flags, and EXCHANGE with NOREPLACE or WHITEOUT, are EINVAL.
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT))
    return fail(EINVAL, "rename flags {:#x} not supported", flags);
  if ((flags & RENAME_EXCHANGE) && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)))
    return fail(EINVAL, "RENAME_EXCHANGE together with RENAME_NOREPLACE or RENAME_WHITEOUT ({:#x})", flags);
  const bool whiteout = flags & RENAME_WHITEOUT;
  if (fs_->read_only() || unmounted_) return fail(EROFS, "rename '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_subvol_writable(parent, "rename"));
  UBTRFS_TRY_STATUS(check_subvol_writable(newparent, "rename"));
  UBTRFS_TRY_STATUS(check_not_stand_in(UBTRFS_TRY(numbers_.from_fuse(parent)), "rename"));
  UBTRFS_TRY_STATUS(check_not_stand_in(UBTRFS_TRY(numbers_.from_fuse(newparent)), "rename"));
  UBTRFS_TRY_STATUS(check_name(name));
  UBTRFS_TRY_STATUS(check_name(newname));
  const bool exchange = flags & RENAME_EXCHANGE;
  const InodeId p1 = UBTRFS_TRY(numbers_.from_fuse(parent));
  const InodeId p2 = UBTRFS_TRY(numbers_.from_fuse(newparent));
  if (p1.subvol != p2.subvol) return fail(EXDEV, "rename across subvolumes {} and {}", p1.subvol, p2.subvol);
  auto* root = UBTRFS_TRY(tree_of(*fs_, p1.subvol));
  std::unique_lock<std::mutex> cross_dir;
  if (p1 != p2) cross_dir = std::unique_lock(ns_->rename_mu);

  for (int attempt = 0; attempt < 64; ++attempt) {
    auto src = UBTRFS_TRY(lookup_dir_entry(*root, p1.objectid, name));
    if (!src) return fail(ENOENT, "no entry '{}' in directory {}", name, parent);
    auto dst = UBTRFS_TRY(lookup_dir_entry(*root, p2.objectid, newname));
    if (src->location.type == kRootItemKey || (dst && dst->location.type == kRootItemKey))
      return fail(EXDEV, "renaming subvolume entries is not supported ('{}' -> '{}')", name, newname);
    const InodeId sid = entry_target(p1, *src);
    std::vector<InodeId> ids{p1, p2, sid};
    std::optional<InodeId> did;
    if (dst) {
      did = entry_target(p2, *dst);
      ids.push_back(*did);
    }
    auto guard = locks_.lock(ids);
    // Re-check both names under the locks.
    auto src2 = UBTRFS_TRY(lookup_dir_entry(*root, p1.objectid, name));
    auto dst2 = UBTRFS_TRY(lookup_dir_entry(*root, p2.objectid, newname));
    if (!src2 || src2->location != src->location || dst2.has_value() != dst.has_value() ||
        (dst2 && dst2->location != dst->location))
      continue;

    if (exchange && !dst) return fail(ENOENT, "RENAME_EXCHANGE: no entry '{}' in directory {}", newname, newparent);
    if (dst && (flags & RENAME_NOREPLACE))
      return fail(EEXIST, "RENAME_NOREPLACE: '{}' exists in directory {}", newname, newparent);
    // Same name, or two names of one inode: POSIX says do nothing.
    if (dst && *did == sid) return {};
    const InodeItem p1ii = UBTRFS_TRY(read_inode(*fs_, *root, p1.objectid));
    const InodeItem p2ii = UBTRFS_TRY(read_inode(*fs_, *root, p2.objectid));
    if (!is_dir(p1ii) || !is_dir(p2ii)) return fail(ENOTDIR, "rename between non-directories {} and {}", parent, newparent);
    if (p2ii.nlink.get() == 0) return fail(ENOENT, "directory {} was removed", newparent);
    const InodeItem sii = UBTRFS_TRY(read_inode(*fs_, *root, sid.objectid));
    std::optional<InodeItem> dii;
    if (did) dii = UBTRFS_TRY(read_inode(*fs_, *root, did->objectid));
    // may_delete of the source (and of the target it replaces or swaps with), may_create in the
    // new directory, against the inode flags (fs/inode_flags.h).
    UBTRFS_TRY_STATUS(check_may_delete(p1ii, p1.objectid, sii, sid.objectid));
    if (dii) UBTRFS_TRY_STATUS(check_may_delete(p2ii, p2.objectid, *dii, did->objectid));
    UBTRFS_TRY_STATUS(check_may_create(p2ii, p2.objectid));
    if (dii && !exchange) {
      if (is_dir(sii) && !is_dir(*dii)) return fail(ENOTDIR, "cannot rename directory '{}' over non-directory '{}'", name, newname);
      if (!is_dir(sii) && is_dir(*dii)) return fail(EISDIR, "cannot rename non-directory '{}' over directory '{}'", name, newname);
      if (is_dir(*dii) && dii->size.get() != 0)
        return fail(ENOTEMPTY, "directory '{}' ({}) is not empty", newname, did->objectid);
    }
    // A directory must not move below itself.
    if (p1 != p2) {
      if (is_dir(sii) && UBTRFS_TRY(is_in_subtree(*root, p2.objectid, sid.objectid)))
        return fail(EINVAL, "cannot move directory {} into its own subtree ({})", sid.objectid, p2.objectid);
      if (exchange && dii && is_dir(*dii) && UBTRFS_TRY(is_in_subtree(*root, p1.objectid, did->objectid)))
        return fail(EINVAL, "cannot move directory {} into its own subtree ({})", did->objectid, p1.objectid);
    }
    // A new name must fit its hash's DIR_ITEM before anything changes (btrfs_check_dir_item_collision).
    if (!dst) UBTRFS_TRY_STATUS(check_dir_item_room(*root, p2.objectid, newname));

    // Beyond the kernel (which uses FLUSH_ALL here): a rename, like an unlink, frees as much as it
    // takes, so it may fall back on the global reserve and succeeds on a full filesystem.
    // btrfs_rename: 11 items, the worst case of two unlinks and a link; btrfs_rename_exchange 12.
    // A whiteout adds btrfs_new_inode_prepare's 4 items (inode, dir item, dir index, parent update;
    // the inode ref goes with the inode item).
    const unsigned items = exchange ? 12 : whiteout ? 15 : 11;
    auto th = UBTRFS_TRY(fs_->transactions().start(items, alloc::FlushMode::kFlushAllSteal));
    const Timespec now = now_btrfs();
    TouchedInodes inodes(*fs_, *root);
    uint32_t dst_nlink = 1;
    if (exchange) {
      // btrfs_rename_exchange: both names go, then each inode gets the other's name (new indexes).
      UBTRFS_TRY(remove_name(th, *root, inodes, p1.objectid, name, sid.objectid, now));  // the first change
      UBTRFS_TRY_OR_ABORT(th, remove_name(th, *root, inodes, p2.objectid, newname, did->objectid, now));
      UBTRFS_TRY_OR_ABORT(th, add_name(*ns_, th, *root, inodes, p2.objectid, newname, sid.objectid, now));
      UBTRFS_TRY_OR_ABORT(th, add_name(*ns_, th, *root, inodes, p1.objectid, name, did->objectid, now));
      // remove_name counted each inode's link down (a directory to 0) and added orphan items;
      // the names are back, so restore the counts and drop the orphan items again.
      for (auto [id, ii] : {std::pair{sid, sii}, std::pair{*did, *dii}}) {
        auto* t = UBTRFS_TRY_OR_ABORT(th, inodes.get(id.objectid));
        t->nlink = ii.nlink.get();
        t->size = ii.size.get();
        t->ctime = now;
        if (auto st = delete_item(th.tree(), *root, orphan_key(id.objectid)); !st && st.error().err != ENOENT)
          return th.abort(st.error());
      }
    } else {
      // The first change is the removal of the replaced name if there is one, else of the old name.
      if (dst) dst_nlink = UBTRFS_TRY(remove_name(th, *root, inodes, p2.objectid, newname, did->objectid, now));
      if (auto gone = remove_name(th, *root, inodes, p1.objectid, name, sid.objectid, now); !gone)
        return dst ? th.abort(gone.error()) : std::unexpected(gone.error());
      UBTRFS_TRY_OR_ABORT(th, add_name(*ns_, th, *root, inodes, p2.objectid, newname, sid.objectid, now));
      auto* s = UBTRFS_TRY_OR_ABORT(th, inodes.get(sid.objectid));
      s->nlink = sii.nlink.get();
      s->size = sii.size.get();
      s->ctime = now;
      if (auto st = delete_item(th.tree(), *root, orphan_key(sid.objectid)); !st && st.error().err != ENOENT)
        return th.abort(st.error());
      if (whiteout) UBTRFS_TRY_OR_ABORT(th, add_whiteout(*ns_, th, *root, inodes, p1.objectid, name, c, now));
    }
    UBTRFS_TRY_OR_ABORT(th, inodes.write(th));
    th.end();
    if (dst && !exchange && dst_nlink == 0) UBTRFS_TRY_STATUS(evict_if_unused(*ns_, *root, *did));
    return {};
  }
  return fail(EAGAIN, "rename '{}' -> '{}': entries keep changing", name, newname);
}

// ---- open, opendir, readdir -----------------------------------------------------------------------

Status Filesystem::open(uint64_t ino, int flags) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("open"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  const bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (writes && is_dir(ii)) return fail(EISDIR, "cannot open directory {} for writing", ino);
  if (writes && (fs_->read_only() || unmounted_)) return fail(EROFS, "open inode {} for writing: read-only filesystem", ino);
  if (writes) UBTRFS_TRY_STATUS(check_subvol_writable(id, "open for writing"));
  return check_may_open(ii, id.objectid, flags);
}

Result<uint64_t> Filesystem::opendir(uint64_t ino) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("opendir"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  auto guard = locks_.lock_shared(id);
  const InodeItem ii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  if (!is_dir(ii)) return fail(ENOTDIR, "inode {} is not a directory", ino);
  return ns_->last_dir_index(*root, id.objectid);
}

Status Filesystem::readdir(uint64_t ino, uint64_t offset, bool plus,
                           const std::function<bool(const DirEntryOut&)>& fill, uint64_t last_index) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("readdir"));
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* root = UBTRFS_TRY(tree_of(*fs_, id.subvol));
  const InodeItem dii = UBTRFS_TRY(read_inode(*fs_, *root, id.objectid));
  if (!is_dir(dii)) return fail(ENOTDIR, "inode {} is not a directory", ino);
  const uint32_t blksize = fs_->params().sectorsize;
  // iterate_dir -> file_accessed: the directory's access time, once per listing.
  if (offset == 0) touch_atime(id, true);
  if (offset == 0) {
    DirEntryOut out{".", inode_to_stat(dii, ino, blksize), 1};
    if (!fill(out)) return {};
    offset = 1;
  }
  if (offset == 1) {
    const InodeId pid{id.subvol, id.objectid == kEmptySubvolDirObjectid
                                     ? kFirstFreeObjectid
                                     : UBTRFS_TRY(parent_of_dir(*root, id.objectid))};
    struct stat st {};
    st.st_ino = numbers_.to_fuse(pid);
    st.st_mode = S_IFDIR;
    if (plus) {
      auto pii = read_inode(*fs_, *root, pid.objectid);
      if (pii) st = inode_to_stat(*pii, st.st_ino, blksize);
    }
    DirEntryOut out{"..", st, 2};
    if (!fill(out)) return {};
    offset = 2;
  }
  constexpr size_t kBatch = 64;
  for (;;) {
    if (offset > last_index) return {};
    // Delayed index changes (fs/delayed_inode.h) merged in: queued deletions hide tree entries,
    // queued insertions appear in index order — up to the batch's last index while the tree may
    // hold more past it (the next pass takes the rest).
    // The view is taken BEFORE the tree is read (rule
    // readdir_takes_the_delayed_view_before_the_tree): the runner writes a change to the tree
    // first and only then drops it from the view, so a view older than the tree read still holds
    // every change the tree lacks. Read the other way round, a runner finishing in between made a
    // deleted entry reappear — a renamed file listed under its old name, which readdirplus then
    // handed to the kernel as a live dentry (dbench: "rename ... No such file or directory").
    std::map<uint64_t, std::vector<uint8_t>> ins;
    std::set<uint64_t> del;
    DelayedInodes* d = fs_->delayed_inodes();
    if (d) d->index_view(id, offset, &ins, &del);
    if (readdir_between_reads_for_test_) readdir_between_reads_for_test_();
    auto batch = UBTRFS_TRY(read_dir_index(*root, id.objectid, offset, kBatch));
    // The tree may hold entries past this batch only when the batch is full.
    const bool tree_more = batch.size() == kBatch;
    if (d) {
      if (!ins.empty() || !del.empty()) {
        const uint64_t limit = tree_more ? batch.back().index : UINT64_MAX;
        std::map<uint64_t, DirEntryRecord> merged;
        for (auto& e : batch)
          if (!del.count(e.index)) merged.emplace(e.index, std::move(e.entry));
        for (auto& [index, body] : ins) {
          if (index > limit) break;
          auto parsed = UBTRFS_TRY(parse_dir_entries(body, Key{id.objectid, kDirIndexKey, index}));
          if (parsed.size() == 1) merged.insert_or_assign(index, std::move(parsed[0]));
        }
        batch.clear();
        for (auto& [index, e] : merged) batch.push_back(IndexedEntry{index, std::move(e)});
        if (batch.empty()) {
          if (!tree_more) return {};
          offset = limit + 1;  // a whole tree batch was hidden by queued deletions
          continue;
        }
      }
    }
    if (batch.empty()) return {};
    for (auto& [index, e] : batch) {
      if (index > last_index) return {};  // added (or renamed) after the directory was opened
      offset = index + 1;
      const InodeId cid = UBTRFS_TRY(resolve_entry(*fs_, id, e));
      struct stat st {};
      st.st_ino = numbers_.to_fuse(cid);
      st.st_mode = mode_of_file_type(e.type);
      if (!plus) {
        if (!fill(DirEntryOut{e.name, st, index + 1})) return {};
        continue;
      }
      auto* croot = UBTRFS_TRY(tree_of(*fs_, cid.subvol));
      auto guard = locks_.lock_shared(cid);
      auto cii = read_inode(*fs_, *croot, cid.objectid);
      if (!cii) {
        if (cii.error().err == ENOENT) continue;  // removed since the batch was read
        return fail(cii.error());
      }
      // Unlinked since the batch was read, or a corrupt entry (lookup() reports which): no lookup
      // count on an inode without links, whose forget would evict it.
      if (cii->nlink.get() == 0) continue;
      st = inode_to_stat(*cii, st.st_ino, blksize, data_->pending_bytes(cid));
      if (!fill(DirEntryOut{e.name, st, index + 1})) return {};
      ns_->add_lookup(cid, cii->generation.get());
    }
    if (!tree_more) return {};
  }
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
  for (uint64_t objectid : orphans) {
    const InodeId id{numbers_.mounted_subvol(), objectid};
    auto guard = locks_.lock({id});
    auto ii = read_inode(*fs_, *root, objectid);
    if (!ii && ii.error().err != ENOENT) return fail(ii.error());
    if (ii && ii->nlink.get() == 0) {
      UBTRFS_TRY_STATUS(evict_inode(*ns_, *root, id));
      spdlog::info("{}: cleaned orphan inode {} of root {}", fs_->path(), objectid, id.subvol);
      continue;
    }
    // A stale orphan item (inode gone, or linked again): only the item goes, as the kernel does.
    auto th = UBTRFS_TRY(fs_->transactions().start(1));
    UBTRFS_TRY_STATUS(delete_item(th.tree(), *root, orphan_key(objectid)));
  }
  return {};
}

}  // namespace ubtrfs::fs
