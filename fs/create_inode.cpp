// Filesystem: new inodes and new names (btrfs inode.c btrfs_create_new_inode + btrfs_add_link:
// btrfs_mknod, btrfs_create, btrfs_mkdir, btrfs_symlink; btrfs_link), and readlink, which reads back
// the inline extent symlink writes. The rules shared by every namespace operation (checks before the
// first change, aborts, lock order) are in the essay at the top of filesystem_ns.cpp.
//
// Invariants: a new inode, its ACL and compression xattrs, a symlink's inline extent and its name go
// in one handle, the inode item being the first change; a symlink target fits one inline extent.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "fs/filesystem.h"
#include "fs/filesystem_ns_internal.h"
#include "fs/inode_flags.h"
#include "fs/posix_acl.h"
#include "fs/xattr.h"

namespace ubtrfs::fs {
namespace {

constexpr size_t kPathMax = 4096;  // PATH_MAX: a symlink target is at most PATH_MAX - 1 bytes

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
    else if ((mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && c.uid != 0 && !c.in_group_of(gid))
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

}  // namespace ubtrfs::fs
