// Filesystem::opendir and readdir (btrfs_opendir, btrfs_real_readdir): "." and "..", then the
// DIR_INDEX items in index order, with the delayed index changes (fs/delayed_inode.h) merged in.
// The rules shared by every namespace operation are in the essay at the top of filesystem_ns.cpp.
//
// Invariants: a listing ends at the last index opendir saw (entries added later are not listed);
// the delayed view is taken before the tree is read; readdirplus counts a lookup only on an inode
// that still has a link.
#include <sys/stat.h>

#include <map>
#include <set>
#include <vector>

#include "fs/delayed_inode.h"
#include "fs/dir_item.h"
#include "fs/filesystem.h"
#include "fs/filesystem_ns_internal.h"

namespace ubtrfs::fs {

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

}  // namespace ubtrfs::fs
