// Filesystem::rename: btrfs_rename, btrfs_rename_exchange (RENAME_EXCHANGE) and
// btrfs_whiteout_for_rename (RENAME_WHITEOUT), with do_renameat2's flag rules. The rules shared by
// every namespace operation are in the essay at the top of filesystem_ns.cpp.
//
// Invariants: a cross-directory rename holds NamespaceState::rename_mu, so the "not into its own
// subtree" walk sees a stable tree; both names are re-checked under the inode locks; the names go,
// come and (for a whiteout) are left behind in one handle, with link counts and orphan items as
// they were for the inodes that keep a name.
#include <linux/fs.h>
#include <sys/stat.h>

#include <mutex>
#include <optional>
#include <vector>

#include "fs/filesystem.h"
#include "fs/filesystem_ns_internal.h"
#include "fs/inode_flags.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#define RENAME_EXCHANGE (1 << 1)
#define RENAME_WHITEOUT (1 << 2)
#endif

namespace ubtrfs::fs {
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

}  // namespace ubtrfs::fs
