// The filesystem label: Filesystem::label and Filesystem::set_label (btrfs ioctl.c
// btrfs_ioctl_get_fslabel / btrfs_ioctl_set_fslabel, reached by FS_IOC_GETFSLABEL /
// FS_IOC_SETFSLABEL, which are also BTRFS_IOC_GET_FSLABEL / BTRFS_IOC_SET_FSLABEL).
//
// Where it lives: btrfs_super_block.label, 256 bytes (BTRFS_LABEL_SIZE) at offset 0x12b, NUL
// padded; a label holds at most 255 bytes so that it always ends with a NUL. Every superblock copy
// carries it: the commit writes the in-memory superblock to all of them (tree/superblock.h).
// Setting it (as the kernel does): change the in-memory superblock inside a transaction handle, so no
// commit is writing it concurrently (the committer waits for running handles), then commit, so the
// new label is durable in every copy when the call returns. A commit only writes a superblock
// whose generation the root tree block carries (the kernel reads the tree root with the
// superblock's generation as its expected transid, and btrfs commit_cowonly_roots COWs the tree
// root in every commit for that reason, as ubtrfs's commit does); but a commit with no dirty block
// writes nothing at all, so the handle COWs the root tree's path to the FS_TREE ROOT_ITEM itself —
// then the commit has a dirty block and writes a new generation, as for any other change.
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "tree/ctree.h"
#include "tree/format.h"

namespace ubtrfs::fs {

Result<std::string> Filesystem::label() {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("get label"));
  std::lock_guard g(fs_->super_mu());
  const Superblock& sb = fs_->super();
  return std::string(sb.label, strnlen(sb.label, kLabelSize));
}

Status Filesystem::set_label(std::string_view label) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("set label"));
  if (label.size() >= kLabelSize)
    return fail(EINVAL, "{}: unable to set label with more than {} bytes", fs_->path(), kLabelSize - 1);
  if (label.find('\0') != std::string_view::npos)
    return fail(EINVAL, "{}: a label cannot contain a NUL byte", fs_->path());
  if (read_only() || unmounted_) return fail(EROFS, "{}: set label: read-only filesystem", fs_->path());
  auto& txm = fs_->transactions();
  {
    auto th = UBTRFS_TRY(txm.start(1));
    Path path;
    auto r = search_slot(&th.tree(), fs_->root_tree(), Key{kFsTreeObjectid, kRootItemKey, 0}, path, 0, true);
    if (!r) return th.abort(r.error());
    path.release();
    std::lock_guard g(fs_->super_mu());
    Superblock& sb = fs_->super();
    std::memset(sb.label, 0, kLabelSize);
    std::memcpy(sb.label, label.data(), label.size());
  }
  UBTRFS_TRY_STATUS(txm.commit(CommitCause::kRequested));
  spdlog::info("{}: label set to '{}'", fs_->path(), label);
  return {};
}

}  // namespace ubtrfs::fs
