// Private to the Filesystem namespace operations (filesystem_ns.cpp, create_inode.cpp, rename.cpp,
// readdir.cpp): the helpers they share. Not part of the fs layer's interface.
//
// Invariants: TouchedInodes writes each inode item it loaded back once, in the operation's handle;
// add_name and remove_name make a first tree change of their own and abort the handle when a later
// step fails (add_name undoes its inode ref instead when the directory cannot take the name; the
// abort rules are in the essay at the top of filesystem_ns.cpp); evict_if_unused REQUIRES the
// inode's lock held exclusively and no handle open.
#pragma once

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string_view>

#include "alloc/block_rsv.h"
#include "fs/delayed_inode.h"
#include "fs/dir_item.h"
#include "fs/evict.h"
#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/namespace_state.h"
#include "fs/tree_log.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

inline Key orphan_key(uint64_t objectid) { return Key{kOrphanObjectid, kOrphanItemKey, objectid}; }
inline Key inode_location(uint64_t objectid) { return Key{objectid, kInodeItemKey, 0}; }

inline Result<TreeRoot*> tree_of(FsInfo& fs, uint64_t subvol) {
  auto* rec = UBTRFS_TRY(fs.fs_root(subvol));
  return rec->tree.get();
}

inline Status check_name(std::string_view name) {
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "name of {} bytes is longer than {}", name.size(), kNameLen);
  if (name.empty() || name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    return fail(EINVAL, "invalid name '{}'", name);
  return {};
}

// The inode a directory entry names: an inode of the same tree, or the root directory of the
// subvolume a ROOT_ITEM location names.
inline InodeId entry_target(InodeId dir, const DirEntryRecord& e) {
  if (e.location.type == kRootItemKey) return InodeId{e.location.objectid, kFirstFreeObjectid};
  return InodeId{dir.subvol, e.location.objectid};
}

// btrfs fixup_tree_root_location: a subvolume entry leads into the subvolume only from the
// directory its ROOT_REF names (dirid and name); an entry a snapshot inherited from its source
// leads to the empty stand-in directory instead (kEmptySubvolDirObjectid, fs/inode.h).
inline Result<InodeId> resolve_entry(FsInfo& fs, InodeId dir, const DirEntryRecord& e) {
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
inline Status check_not_stand_in(InodeId id, std::string_view what) {
  if (id.objectid == kEmptySubvolDirObjectid)
    return fail(EPERM, "{}: inode {} of subvolume {} is the empty stand-in of a subvolume entry", what, id.objectid,
                id.subvol);
  return {};
}

inline bool is_dir(const InodeItem& ii) { return S_ISDIR(ii.mode.get()); }

inline Status insert_orphan(TreeHandle& h, TreeRoot& root, uint64_t objectid) {
  auto st = insert_item(h, root, orphan_key(objectid), std::span<const uint8_t>{});
  if (!st && st.error().err != EEXIST) return st;
  return {};
}

// A directory's parent: the key offset of its (only) INODE_REF (the root's points to itself).
inline Result<uint64_t> parent_of_dir(TreeRoot& root, uint64_t dir) {
  auto refs = UBTRFS_TRY(list_inode_refs(root, dir));
  if (refs.empty()) return fail(EUCLEAN, "directory {} of root {} has no inode ref", dir, root.objectid());
  return refs[0].parent;
}

// btrfs_evict_inode, at once, for an inode an unlink or rename left without a link: evicted if no
// FUSE lookup holds it either (evict_inodes re-checks both under the lock; the FORGET path queues
// a delayed iput instead). REQUIRES: its lock held exclusively, no handle open, read-write.
inline Status evict_if_unused(NamespaceState& ns, TreeRoot& root, InodeId id) {
  if (ns.lookup_count(id) != 0) return {};  // the common case: the kernel still holds it
  UBTRFS_TRY(evict_inodes(ns, root, id.subvol, {id.objectid}));
  return {};
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

inline void add_dir_size(InodeItem& dir, std::string_view name, int sign, const Timespec& now) {
  const uint64_t delta = 2 * name.size();  // DIR_ITEM + DIR_INDEX name bytes (FORMAT.md §4.5)
  dir.size = sign > 0 ? dir.size.get() + delta : dir.size.get() - std::min<uint64_t>(delta, dir.size.get());
  dir.mtime = now;
  dir.ctime = now;
}

// btrfs_unlink_inode's tree part: the name's refs and entries go, link count drops, an orphan item
// is added at 0. Returns the new link count. Its first change is the inode ref; failures after it
// abort `th`.
inline Result<uint32_t> remove_name(TransHandle& th, TreeRoot& root, TouchedInodes& inodes, uint64_t dir,
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
inline Status add_name(NamespaceState& ns, TransHandle& th, TreeRoot& root, TouchedInodes& inodes, uint64_t dir,
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

}  // namespace ubtrfs::fs
