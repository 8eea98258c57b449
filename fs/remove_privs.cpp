// Filesystem::remove_privs: the VFS's file_remove_privs, done by the filesystem when the kernel
// leaves it to it (FUSE_HANDLE_KILLPRIV_V2: tools/daemon/fuse_init_ext.h). What a write, a size
// change, a fallocate or a copy into a regular file takes away:
// - S_ISUID, and S_ISGID when the file is group-executable or the caller is not in the file's
//   group (setattr_should_drop_suidgid / setattr_should_drop_sgid, Linux 6.2 on: before, S_ISGID
//   without group execute marked mandatory locking and always stayed; xfstests generic/683-685
//   test the newer rule), when the caller asks — the kernel tells for WRITE
//   (FUSE_WRITE_KILL_SUIDGID) and truncate (FATTR_KILL_SUIDGID): a writer without CAP_FSETID;
// - the security.capability xattr, always (cap_inode_killpriv asks no capability).
// Invariants: nothing is written when nothing is to be taken away (the common case costs the reads
// of the inode item and of one xattr name); otherwise one transaction changes the mode and/or
// removes the xattr and sets ctime, under the inode's lock.
#include <sys/stat.h>

#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "fs/xattr.h"

namespace ubtrfs::fs {

namespace {
constexpr std::string_view kCapabilityXattr = "security.capability";  // XATTR_NAME_CAPS
}  // namespace

Result<bool> Filesystem::remove_privs(uint64_t ino, const std::function<bool()>& drop_suid_sgid, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("remove privileges"));
  if (fs_->read_only() || unmounted_) return false;  // the write itself says EROFS
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  auto* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  TreeRoot& root = *rec->tree;
  auto guard = locks_.lock({id});
  InodeItem ii = UBTRFS_TRY(read_inode(*fs_, root, id.objectid));
  const uint32_t mode = ii.mode.get();
  if (!S_ISREG(mode)) return false;
  uint32_t new_mode = mode;
  if ((mode & (S_ISUID | S_ISGID)) && drop_suid_sgid && drop_suid_sgid()) {
    new_mode &= ~static_cast<uint32_t>(S_ISUID);
    if ((mode & S_ISGID) && ((mode & S_IXGRP) || !c.in_group_of(ii.gid.get())))
      new_mode &= ~static_cast<uint32_t>(S_ISGID);
  }
  const bool has_caps = UBTRFS_TRY(get_xattr(root, id.objectid, kCapabilityXattr)).has_value();
  if (new_mode == mode && !has_caps) return false;
  // Writable subvolume only: a read-only snapshot's files take no writes, so nothing reaches here
  // for them but a failing write; say nothing and let it fail.
  if (auto st = check_subvol_writable(id, "remove privileges"); !st) return false;
  auto th = UBTRFS_TRY(fs_->transactions().start(has_caps ? 2 : 1));
  if (has_caps) UBTRFS_TRY_STATUS(remove_xattr(th.tree(), root, id.objectid, kCapabilityXattr));
  ii.mode = new_mode;
  ii.ctime = now_btrfs();
  UBTRFS_TRY_OR_ABORT(th, update_inode(th, root, id.objectid, ii));
  return new_mode != mode;
}

}  // namespace ubtrfs::fs
