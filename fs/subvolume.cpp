// Subvolumes on the mount: Filesystem::create_subvolume (btrfs ioctl.c `create_subvol` and
// `btrfs_mksubvol`, reached by BTRFS_IOC_SUBVOL_CREATE / _V2; FORMAT.md §3.13, §3.14, §4.7).
//
// A subvolume is its own fs tree, named in a directory of another one. Creating subvolume S (a new
// id) named N in directory D of subvolume P writes, in one transaction handle:
//   - S's tree: one leaf owned by S holding its root directory, INODE_ITEM 256 (040755, owned by
//     the caller, nlink 1) and INODE_REF (256, 12, 256) index 0 "..";
//   - root tree: ROOT_ITEM (S, 132, 0) — key offset 0 for a plain subvolume (a snapshot's carries
//     its creation transid) — with a fresh uuid, otransid = ctransid = the transaction, otime =
//     ctime = now, refs 1, root_dirid 256 and the embedded inode the kernel writes (generation 1,
//     size 3, nbytes = nodesize, nlink 1, 040755, ROOT_ITEM_INIT); ROOT_REF (P, 156, S) and
//     ROOT_BACKREF (S, 144, P), both {dirid D, sequence = the DIR_INDEX, N};
//   - P's tree: DIR_ITEM + DIR_INDEX of N in D whose location is (S, ROOT_ITEM, 0), type DIR, and no
//     INODE_REF (the root ref is the back reference); D's size grows by 2 x len(N), mtime/ctime now;
//   - UUID tree: UUID_KEY_SUBVOL for S's uuid holding S (appended to the item on a collision).
// Ids: btrfs_get_free_objectid on the root tree — the highest objectid below LAST_FREE + 1, at
// least 256 (FIRST_FREE), seeded at mount before the cleaner may remove a dead root's item, and
// never reused while mounted.
//
// Order and failure: everything is checked before the handle starts (existence, permission, the
// DIR_ITEM's room), and the handle reserves every item up front, so ENOSPC comes at the call with
// nothing made. The first change is the new tree's leaf; any failure after it aborts the
// transaction (nothing half-made reaches the disk). The new tree's RootRecord joins FsInfo before
// the handle ends, so the commit rewrites its ROOT_ITEM whenever its root block moves.
//
// Also here: what the list/show/get-default/set-default commands read or change — the path of a
// directory inside its subvolume (INO_LOOKUP), a subvolume's ROOT_ITEM and back reference
// (GET_SUBVOL_INFO), and the default subvolume (DEFAULT_SUBVOL: the root tree's "default"
// DIR_ITEM of objectid 6, FORMAT.md §4.6).
//
// Deletion (btrfs_delete_subvolume, btrfs_unlink_subvol, may_destroy_subvol): the same checks as
// the kernel's, then in one handle the parent's DIR_ITEM/DIR_INDEX, ROOT_REF and ROOT_BACKREF go,
// the parent's size shrinks, the ROOT_ITEM gets refs 0, an ORPHAN_ITEM (-5, 48, id) in the root tree
// marks the dead root (what the kernel's btrfs_find_orphan_roots resumes at mount), and the UUID
// tree entry goes. The tree itself stays until the cleaner drops it.
//
// Read-only subvolumes (BTRFS_ROOT_SUBVOL_RDONLY, kernel-made read-only snapshots included): the
// flag is set or cleared by set_subvolume_readonly (SUBVOL_SETFLAGS), and while it is set every
// operation that would change the subvolume fails with EROFS (check_subvol_writable, called where
// the filesystem checks for a read-only mount); access times are then not updated, as btrfs's
// update_time refuses them.
//
// Snapshots (create_snapshot, take_snapshot): checked and given an id, a uuid and the name's index
// at the call, then taken inside the next commit (TransactionManager::add_pending), as the kernel's
// create_pending_snapshot: the call returns once that commit is on disk. The parent directory's
// lock is held from the checks until then (btrfs_mksubvol holds the directory's i_rwsem): the
// commit changes the directory without taking it.
//
// Not here (issue 16, later steps): the UUID tree's creation on an image that has none (the
// kernel creates it at its next read-write mount and rescans, so the entry is only late), and the
// subvolume's ctransid/ctime following later changes inside it. rmdir of a subvolume entry
// (btrfs_rmdir) is rmdir_subvolume: an empty subvolume is deleted, a stand-in's entry removed.
#include <endian.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <optional>

#include <spdlog/spdlog.h>

#include "fs/delayed_inode.h"
#include "fs/dir_item.h"
#include "fs/file_data.h"
#include "fs/filesystem.h"
#include "fs/inode_flags.h"
#include "fs/namespace_state.h"
#include "fs/qgroups.h"
#include "fs/transaction.h"
#include "fs/tree_log.h"
#include "io/checksum.h"
#include "tree/ctree.h"
#include "tree/ctree_internal.h"

namespace ubtrfs::fs {
namespace {

// The items a create touches (btrfs create_subvol's trans_num_items, which counts the same
// things): new root's inode item and inode ref, the root item, root ref and backref, the dir item
// and dir index, the parent's inode, the uuid item; plus the new tree's first leaf.
constexpr unsigned kCreateItems = 10;

// The highest objectid of an item below LAST_FREE_OBJECTID in the root tree (the special trees and
// ORPHAN/TREE_LOG/DATA_RELOC objectids sort above it), 0 when there is none.
Result<uint64_t> highest_root_objectid(TreeRoot& tree_root) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(nullptr, tree_root, Key{kLastFreeObjectid, 0, 0}, p, 0, false));
  if (ret == 0) return kLastFreeObjectid;
  if (p.leaf().nritems() == 0) return 0;
  bool valid = true;
  if (p.slots[0] > 0)
    --p.slots[0];
  else
    valid = UBTRFS_TRY(prev_leaf(tree_root, p));
  return valid ? p.leaf().item_key(p.slots[0]).objectid : 0;
}

// A random (version 4) uuid, as the kernel's generate_random_uuid for a new subvolume.
Status random_uuid(uint8_t out[16]) {
  if (getrandom(out, 16, 0) != 16) return fail(EIO, "getrandom failed: {}", std::strerror(errno));
  out[6] = static_cast<uint8_t>((out[6] & 0x0F) | 0x40);
  out[8] = static_cast<uint8_t>((out[8] & 0x3F) | 0x80);
  return {};
}

uint64_t uuid_half(const uint8_t* u) {
  uint64_t v;
  std::memcpy(&v, u, 8);  // little-endian on disk and on every host ubtrfs builds for
  return le64toh(v);
}

// The UUID tree's key of `uuid` (FORMAT.md §3.14): both halves read little-endian.
Key uuid_key(const uint8_t* uuid, uint8_t type) { return Key{uuid_half(uuid), type, uuid_half(uuid + 8)}; }

// btrfs_uuid_tree_add: `subvol` appended to the item of `uuid` (created if absent).
Status uuid_tree_add(TreeHandle& h, TreeRoot& uuid_root, const uint8_t* uuid, uint8_t type, uint64_t subvol) {
  const Key key = uuid_key(uuid, type);
  std::vector<uint8_t> body = UBTRFS_TRY(lookup_item(uuid_root, key)).value_or(std::vector<uint8_t>{});
  le64 id;
  id = subvol;
  const auto* b = reinterpret_cast<const uint8_t*>(&id);
  body.insert(body.end(), b, b + sizeof id);
  return write_item_body(h, uuid_root, key, body);
}

// ROOT_REF / ROOT_BACKREF body: {dirid, sequence, name_len} + name.
std::vector<uint8_t> root_ref_body(uint64_t dirid, uint64_t sequence, std::string_view name) {
  RootRef r{};
  r.dirid = dirid;
  r.sequence = sequence;
  r.name_len = static_cast<uint16_t>(name.size());
  std::vector<uint8_t> body(sizeof r + name.size());
  std::memcpy(body.data(), &r, sizeof r);
  std::memcpy(body.data() + sizeof r, name.data(), name.size());
  return body;
}

// btrfs_uuid_tree_remove: `subvol` out of the item of `uuid` (the item goes with its last id).
Status uuid_tree_remove(TreeHandle& h, TreeRoot& uuid_root, const uint8_t* uuid, uint8_t type, uint64_t subvol) {
  const Key key = uuid_key(uuid, type);
  auto body = UBTRFS_TRY(lookup_item(uuid_root, key));
  if (!body) return {};
  std::vector<uint8_t> out;
  for (size_t off = 0; off + 8 <= body->size(); off += 8) {
    uint64_t v;
    std::memcpy(&v, body->data() + off, 8);
    if (le64toh(v) != subvol) out.insert(out.end(), body->data() + off, body->data() + off + 8);
  }
  if (out.size() == body->size()) return {};
  return write_item_body(h, uuid_root, key, out);
}

// inode_permission(dir, MAY_WRITE | MAY_EXEC) as btrfs_may_create asks it, from the mode bits
// (uid 0 stands for CAP_DAC_OVERRIDE, as elsewhere in the daemon's ioctls).
Status check_may_write_dir(const InodeItem& dir, uint64_t dir_objectid, const Caller& c) {
  if (c.uid == 0) return {};
  const uint32_t mode = dir.mode.get();
  const uint32_t bits = c.uid == dir.uid.get() ? (mode >> 6) & 7 : c.gid == dir.gid.get() ? (mode >> 3) & 7 : mode & 7;
  if ((bits & 3) != 3)
    return fail(EACCES, "create a subvolume in directory {}: uid {} lacks write and search permission", dir_objectid,
                c.uid);
  return {};
}

}  // namespace

namespace {

// btrfs_ioctl_snap_create refuses a '/' (EINVAL); the VFS lookup then refuses "", "." and ".."
// (lookup_one_common: EACCES); btrfs_lookup refuses a name longer than BTRFS_NAME_LEN.
Status check_new_subvolume_name(std::string_view name) {
  if (name.find('/') != std::string_view::npos) return fail(EINVAL, "subvolume name '{}' contains a '/'", name);
  if (name.empty() || name == "." || name == ".." || name.find('\0') != std::string_view::npos)
    return fail(EACCES, "'{}' cannot name a subvolume", name);
  if (name.size() > kNameLen) return fail(ENAMETOOLONG, "subvolume name of {} bytes is longer than {}", name.size(), kNameLen);
  return {};
}

}  // namespace

// btrfs_mksubvol's checks of the parent and the name (btrfs_may_create), shared by create and
// snapshot. REQUIRES: the parent's inode lock held. Returns the parent's inode item.
Result<InodeItem> Filesystem::check_new_subvolume(RootRecord& prec, InodeId pid, std::string_view name,
                                                  const Caller& c) {
  TreeRoot& proot = *prec.tree;
  if (pid.objectid == kEmptySubvolDirObjectid)
    return fail(EPERM, "new subvolume '{}': directory {} of subvolume {} is an empty stand-in", name, pid.objectid,
                pid.subvol);
  InodeItem pii = UBTRFS_TRY(read_inode(*fs_, proot, pid.objectid));
  if (!S_ISDIR(pii.mode.get())) return fail(ENOTDIR, "inode {} of root {} is not a directory", pid.objectid, pid.subvol);
  if (pii.nlink.get() == 0) return fail(ENOENT, "directory {} of root {} was removed", pid.objectid, pid.subvol);
  if (UBTRFS_TRY(lookup_dir_entry(proot, pid.objectid, name)))
    return fail(EEXIST, "'{}' already exists in directory {}", name, pid.objectid);
  UBTRFS_TRY_STATUS(check_may_write_dir(pii, pid.objectid, c));
  UBTRFS_TRY_STATUS(check_may_create(pii, pid.objectid));
  UBTRFS_TRY_STATUS(check_dir_item_room(proot, pid.objectid, name));
  if (prec.readonly.load(std::memory_order_acquire))
    return fail(EROFS, "new subvolume '{}': subvolume {} is read-only", name, pid.subvol);
  return pii;
}

Status Filesystem::seed_subvolume_ids() {
  std::lock_guard subvol_guard(subvol_mu_);
  next_subvol_id_ = std::max(UBTRFS_TRY(highest_root_objectid(fs_->root_tree())) + 1, kFirstFreeObjectid);
  return {};
}

Result<uint64_t> Filesystem::create_subvolume(uint64_t parent, std::string_view name, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("create subvolume"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "create subvolume '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_new_subvolume_name(name));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  RootRecord* prec = UBTRFS_TRY(fs_->fs_root(pid.subvol));
  TreeRoot& proot = *prec->tree;
  // One create or delete at a time (the kernel's subvol_sem): the id counter and the root refs.
  std::lock_guard subvol_guard(subvol_mu_);
  auto guard = locks_.lock({pid});
  InodeItem pii = UBTRFS_TRY(check_new_subvolume(*prec, pid, name, c));

  if (next_subvol_id_ == 0)
    next_subvol_id_ = std::max(UBTRFS_TRY(highest_root_objectid(fs_->root_tree())) + 1, kFirstFreeObjectid);
  if (next_subvol_id_ >= kLastFreeObjectid) return fail(EOVERFLOW, "no subvolume id left");
  const uint64_t id = next_subvol_id_;
  uint8_t uuid[16];
  UBTRFS_TRY_STATUS(random_uuid(uuid));

  auto th = UBTRFS_TRY(fs_->transactions().start(kCreateItems));
  const uint64_t transid = th.transid();
  const Timespec now = now_btrfs();
  next_subvol_id_ = id + 1;  // taken from here on, even if the create fails below (the kernel's too)

  // The new tree and its root directory (btrfs_create_subvol_root). The leaf is the first change.
  auto tree = std::make_unique<TreeRoot>(fs_->tree_ctx(), id);
  UBTRFS_TRY_STATUS(create_empty_tree(th.tree(), *tree));
  InodeItem dir{};
  dir.generation = transid;
  dir.transid = transid;
  dir.nlink = 1;
  dir.uid = c.uid;
  dir.gid = (pii.mode.get() & S_ISGID) ? pii.gid.get() : c.gid;  // inode_init_owner
  dir.mode = S_IFDIR | 0755 | (pii.mode.get() & S_ISGID);
  dir.flags = inherit_flags(pii.flags.get(), S_IFDIR);  // btrfs_inherit_iflags from the parent
  dir.atime = now;
  dir.ctime = now;
  dir.mtime = now;
  dir.otime = now;
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_inode(th.tree(), *tree, kFirstFreeObjectid, dir));
  UBTRFS_TRY_STATUS_OR_ABORT(
      th, insert_inode_ref(th.tree(), *tree, kFirstFreeObjectid, kFirstFreeObjectid, "..", 0, false));

  // ROOT_ITEM (id, 132, 0), as create_subvol fills it.
  auto rec = std::make_unique<RootRecord>();
  RootItem& ri = rec->item;
  std::memset(&ri, 0, sizeof ri);
  ri.inode.generation = 1;
  ri.inode.size = 3;
  ri.inode.nlink = 1;
  ri.inode.nbytes = fs_->params().nodesize;
  ri.inode.mode = S_IFDIR | 0755;
  ri.inode.flags = kInodeRootItemInit;
  {
    EbRef node = tree->node();
    ri.bytenr = node->start();
    ri.generation = node->generation();
    ri.generation_v2 = node->generation();
    ri.level = static_cast<uint8_t>(node->level());
  }
  ri.root_dirid = kFirstFreeObjectid;
  ri.bytes_used = fs_->params().nodesize;
  ri.refs = 1;
  std::memcpy(ri.uuid, uuid, 16);
  ri.ctransid = transid;
  ri.otransid = transid;
  ri.ctime = now;
  ri.otime = now;
  rec->item_size = sizeof(RootItem);
  rec->key_offset = 0;
  rec->tree = std::move(tree);
  UBTRFS_TRY_STATUS_OR_ABORT(
      th, insert_item(th.tree(), fs_->root_tree(), Key{id, kRootItemKey, 0},
                      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ri), sizeof ri)));
  fs_->add_fs_root(std::move(rec));

  // The name in the parent directory and its root refs (btrfs_add_link for a subvolume root:
  // btrfs_add_root_ref instead of an inode ref).
  const uint64_t index = UBTRFS_TRY_OR_ABORT(th, ns_->new_dir_index(proot, pid.objectid));
  const auto ref = root_ref_body(pid.objectid, index, name);
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_item(th.tree(), fs_->root_tree(), Key{pid.subvol, kRootRefKey, id}, ref));
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_item(th.tree(), fs_->root_tree(), Key{id, kRootBackrefKey, pid.subvol}, ref));
  {
    std::optional<DelayedIndexQueue> queue;
    if (DelayedInodes* d = fs_->delayed_inodes()) queue.emplace(*d, th, proot);
    UBTRFS_TRY_STATUS_OR_ABORT(th, insert_dir_entry(th.tree(), proot, pid.objectid, name, Key{id, kRootItemKey, 0},
                                                    kFtDir, index, queue ? &*queue : nullptr));
  }
  pii.size = pii.size.get() + 2 * name.size();  // FORMAT.md §4.5: subvolume entries count too
  pii.mtime = now;
  pii.ctime = now;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, proot, pid.objectid, pii));
  if (Qgroups* q = fs_->qgroups()) UBTRFS_TRY_STATUS_OR_ABORT(th, q->add_subvolume(th.tree(), id));
  if (RootRecord* u = fs_->uuid_root())
    UBTRFS_TRY_STATUS_OR_ABORT(th, uuid_tree_add(th.tree(), *u->tree, uuid, kUuidKeySubvol, id));
  else
    spdlog::warn("{}: no UUID tree: subvolume {} has no uuid entry (the kernel adds it at its next mount)",
                 fs_->path(), id);
  // btrfs_record_new_subvolume: an fsync of the parent in this transaction commits, since the
  // tree log cannot express a new subvolume.
  if (TreeLog* log = fs_->tree_log()) log->note_unlink(pid, transid);
  th.end();
  spdlog::info("{}: created subvolume {} '{}' in directory {} of subvolume {}", fs_->path(), id, name, pid.objectid,
               pid.subvol);
  return id;
}

Result<std::string> Filesystem::inode_path(uint64_t subvol, uint64_t dirid, size_t max_len) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("inode lookup"));
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(subvol));
  std::string path;
  // Each step goes one directory up; a directory chain longer than a path can be is a cycle.
  for (uint64_t cur = dirid, steps = 0; cur != kFirstFreeObjectid; ++steps) {
    if (steps > max_len) return fail(EUCLEAN, "subvolume {}: directory {} has a parent cycle", subvol, dirid);
    auto refs = UBTRFS_TRY(list_inode_refs(*rec->tree, cur));
    if (refs.empty()) return fail(ENOENT, "subvolume {}: no directory {}", subvol, cur);
    path.insert(0, refs[0].name + "/");
    if (path.size() > max_len)
      return fail(ENAMETOOLONG, "subvolume {}: the path of directory {} is longer than {}", subvol, dirid, max_len);
    cur = refs[0].parent;
  }
  return path;
}

Result<SubvolumeInfo> Filesystem::subvolume_info(uint64_t subvol) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("subvolume info"));
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(subvol));
  SubvolumeInfo info;
  info.id = subvol;
  info.item = rec->item;
  info.key_offset = rec->key_offset;
  if (subvol == kFsTreeObjectid) return info;
  TreeSearchRange r;
  r.min = Key{subvol, kRootBackrefKey, 0};
  r.max = Key{subvol, kRootBackrefKey, ~0ull};
  auto found = UBTRFS_TRY(tree_search(kRootTreeObjectid, r, 1, SIZE_MAX));
  if (found.items.empty()) return info;  // deleted: no back reference left
  const auto& it = found.items[0];
  if (it.data.size() < sizeof(RootRef))
    return fail(EUCLEAN, "ROOT_BACKREF [{} 144 {}] has size {}", subvol, it.key.offset, it.data.size());
  RootRef ref;
  std::memcpy(&ref, it.data.data(), sizeof ref);
  const size_t len = std::min<size_t>(ref.name_len.get(), it.data.size() - sizeof ref);
  info.parent_id = it.key.offset;
  info.dirid = ref.dirid.get();
  info.name.assign(reinterpret_cast<const char*>(it.data.data() + sizeof ref), len);
  return info;
}

Status Filesystem::set_default_subvolume(uint64_t id) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("set default subvolume"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "set default subvolume: read-only filesystem");
  if (id == 0) id = kFsTreeObjectid;
  if (id != kFsTreeObjectid && (id < kFirstFreeObjectid || id >= kLastFreeObjectid))
    return fail(ENOENT, "{} is not a subvolume id", id);
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(id));
  if (rec->item.refs.get() == 0) return fail(ENOENT, "subvolume {} is deleted", id);
  std::lock_guard subvol_guard(subvol_mu_);
  static constexpr std::string_view kDefault = "default";
  const Key key{kRootTreeDirObjectid, kDirItemKey, io::name_hash(kDefault)};
  auto th = UBTRFS_TRY(fs_->transactions().start(1));
  auto body = UBTRFS_TRY(lookup_item(fs_->root_tree(), key));
  if (!body) return fail(ENOENT, "{}: the root tree has no 'default' dir item", fs_->path());
  auto entries = UBTRFS_TRY(parse_dir_entries(*body, key));
  std::vector<uint8_t> out;
  bool found = false;
  for (auto& e : entries) {
    if (e.name == kDefault) {
      e.location = Key{id, kRootItemKey, ~0ull};
      e.transid = th.transid();
      found = true;
    }
    append_dir_entry(out, e);
  }
  if (!found) return fail(ENOENT, "{}: the root tree has no 'default' dir item", fs_->path());
  UBTRFS_TRY_STATUS(write_item_body(th.tree(), fs_->root_tree(), key, out));  // same size: one change
  {
    // btrfs_set_fs_incompat(DEFAULT_SUBVOL), inside the handle so no commit writes the superblock
    // meanwhile.
    std::lock_guard g(fs_->super_mu());
    Superblock& sb = fs_->super();
    sb.incompat_flags = sb.incompat_flags.get() | kIncompatDefaultSubvol;
  }
  th.end();
  spdlog::info("{}: default subvolume set to {}", fs_->path(), id);
  return {};
}

Result<std::pair<InodeId, std::string>> Filesystem::subvolume_name(uint64_t id) {
  const SubvolumeInfo info = UBTRFS_TRY(subvolume_info(id));
  if (info.parent_id == 0) return fail(ENOENT, "subvolume {} has no name", id);
  return std::pair{InodeId{info.parent_id, info.dirid}, info.name};
}

Result<uint64_t> Filesystem::delete_subvolume(uint64_t parent, std::string_view name, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("delete subvolume"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "delete subvolume '{}': read-only filesystem", name);
  // btrfs_ioctl_snap_destroy: a '/' or ".." is EINVAL; the VFS lookup refuses "" and ".".
  if (name.find('/') != std::string_view::npos || name == "..")
    return fail(EINVAL, "'{}' cannot name a subvolume to delete", name);
  if (name.empty() || name == ".") return fail(EACCES, "'{}' cannot name a subvolume to delete", name);
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  std::lock_guard subvol_guard(subvol_mu_);
  return delete_subvolume_locked(pid, name, c);
}

Result<uint64_t> Filesystem::delete_subvolume_by_id(uint64_t id, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("delete subvolume"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "delete subvolume {}: read-only filesystem", id);
  if (id == kFsTreeObjectid) return fail(EINVAL, "the top level subvolume cannot be deleted");
  if (id < kFirstFreeObjectid || id >= kLastFreeObjectid) return fail(ENOENT, "{} is not a subvolume id", id);
  std::lock_guard subvol_guard(subvol_mu_);
  auto [dir, name] = UBTRFS_TRY(subvolume_name(id));
  const uint64_t deleted = UBTRFS_TRY(delete_subvolume_locked(dir, name, c));
  if (deleted != id) return fail(EUCLEAN, "subvolume {}: its back reference names subvolume {}", id, deleted);
  return deleted;
}

Status Filesystem::rmdir_subvolume(InodeId pid, std::string_view name) {
  std::lock_guard subvol_guard(subvol_mu_);
  RootRecord* prec = UBTRFS_TRY(fs_->fs_root(pid.subvol));
  TreeRoot& proot = *prec->tree;
  auto entry = UBTRFS_TRY(lookup_dir_entry(proot, pid.objectid, name));
  if (!entry) return fail(ENOENT, "no entry '{}' in directory {}", name, pid.objectid);
  const uint64_t sub = entry->location.objectid;
  auto ref = UBTRFS_TRY(lookup_item(fs_->root_tree(), Key{pid.subvol, kRootRefKey, sub}));
  bool lives_here = false;
  if (ref && ref->size() >= sizeof(RootRef)) {
    RootRef r;
    std::memcpy(&r, ref->data(), sizeof r);
    const std::string_view rname(reinterpret_cast<const char*>(ref->data()) + sizeof r,
                                 std::min<size_t>(r.name_len.get(), ref->size() - sizeof r));
    lives_here = r.dirid.get() == pid.objectid && rname == name;
  }
  if (lives_here) {
    UBTRFS_TRY(delete_subvolume_locked(pid, name, Caller{}, true));
    return {};
  }
  // The stand-in (an entry a snapshot inherited): btrfs_unlink_subvol without a root ref — the
  // entry goes, found in the DIR_INDEX items by its name.
  auto guard = locks_.lock({pid});
  InodeItem pii = UBTRFS_TRY(read_inode(*fs_, proot, pid.objectid));
  std::optional<uint64_t> index;
  for (uint64_t start = 2; !index;) {
    auto batch = UBTRFS_TRY(read_dir_index(proot, pid.objectid, start, 256));
    if (batch.empty()) break;
    for (const auto& ie : batch)
      if (ie.entry.name == name) index = ie.index;
    start = batch.back().index + 1;
  }
  if (!index) return fail(EUCLEAN, "directory {} of subvolume {}: '{}' has no DIR_INDEX", pid.objectid, pid.subvol, name);
  auto th = UBTRFS_TRY(fs_->transactions().start(3, alloc::FlushMode::kFlushAllSteal));
  {
    std::optional<DelayedIndexQueue> queue;
    if (DelayedInodes* d = fs_->delayed_inodes()) queue.emplace(*d, th, proot);
    UBTRFS_TRY_STATUS(delete_dir_entry(th.tree(), proot, pid.objectid, name, *index, queue ? &*queue : nullptr));
  }
  const Timespec now = now_btrfs();
  pii.size = pii.size.get() - std::min<uint64_t>(2 * name.size(), pii.size.get());
  pii.mtime = now;
  pii.ctime = now;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, proot, pid.objectid, pii));
  if (TreeLog* log = fs_->tree_log()) log->note_unlink(pid, th.transid());
  th.end();
  return {};
}

Result<uint64_t> Filesystem::delete_subvolume_locked(InodeId pid, std::string_view name, const Caller& c,
                                                     bool by_rmdir) {
  RootRecord* prec = UBTRFS_TRY(fs_->fs_root(pid.subvol));
  TreeRoot& proot = *prec->tree;
  auto guard = locks_.lock({pid});
  InodeItem pii = UBTRFS_TRY(read_inode(*fs_, proot, pid.objectid));
  if (!S_ISDIR(pii.mode.get())) return fail(ENOTDIR, "inode {} of root {} is not a directory", pid.objectid, pid.subvol);
  UBTRFS_TRY_STATUS(check_subvol_writable(pid, "delete subvolume"));
  auto entry = UBTRFS_TRY(lookup_dir_entry(proot, pid.objectid, name));
  if (!entry) return fail(ENOENT, "no entry '{}' in directory {} of subvolume {}", name, pid.objectid, pid.subvol);
  // btrfs_ioctl_snap_destroy: only the root directory of a subvolume (EINVAL for anything else).
  if (entry->location.type != kRootItemKey)
    return fail(EINVAL, "'{}' in directory {} is not a subvolume", name, pid.objectid);
  const uint64_t id = entry->location.objectid;
  // Without CAP_SYS_ADMIN the kernel wants user_subvol_rm_allowed, which ubtrfs has no option for;
  // rmdir(2) needs no capability (the VFS checked the parent's permissions), only an empty subvolume.
  if (c.uid != 0 && !by_rmdir) return fail(EPERM, "delete subvolume {} by uid {}: operation not permitted", id, c.uid);
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(id));
  if (by_rmdir) {
    const InodeItem root_dir = UBTRFS_TRY(read_inode(*fs_, *rec->tree, kFirstFreeObjectid));
    if (root_dir.size.get() > 0) return fail(ENOTEMPTY, "rmdir of subvolume {}: not empty", id);
  }
  if (rec->item.refs.get() == 0) return fail(ENOENT, "subvolume {} is already deleted", id);
  if (id == numbers_.mounted_subvol()) return fail(EBUSY, "subvolume {} is the mounted one", id);
  {
    // btrfs_may_delete on the parent (immutable / append-only: EPERM).
    const InodeItem root_dir = UBTRFS_TRY(read_inode(*fs_, *rec->tree, kFirstFreeObjectid));
    UBTRFS_TRY_STATUS(check_may_delete(pii, pid.objectid, root_dir, kFirstFreeObjectid));
  }
  // may_destroy_subvol: not the default subvolume (EPERM), no subvolume inside it (ENOTEMPTY).
  {
    const Key dkey{kRootTreeDirObjectid, kDirItemKey, io::name_hash("default")};
    if (auto body = UBTRFS_TRY(lookup_item(fs_->root_tree(), dkey))) {
      for (const auto& e : UBTRFS_TRY(parse_dir_entries(*body, dkey)))
        if (e.name == "default" && e.location.objectid == id)
          return fail(EPERM, "deleting default subvolume {} is not allowed", id);
    }
    TreeSearchRange r;
    r.min = Key{id, kRootRefKey, 0};
    r.max = Key{id, kRootRefKey, ~0ull};
    if (!UBTRFS_TRY(tree_search(kRootTreeObjectid, r, 1, SIZE_MAX)).items.empty())
      return fail(ENOTEMPTY, "subvolume {} holds other subvolumes", id);
  }
  // The root ref gives the index of the name (its sequence).
  const Key ref_key{pid.subvol, kRootRefKey, id};
  auto ref_body = UBTRFS_TRY(lookup_item(fs_->root_tree(), ref_key));
  if (!ref_body || ref_body->size() < sizeof(RootRef))
    return fail(EUCLEAN, "subvolume {}: no ROOT_REF [{} 156 {}]", id, pid.subvol, id);
  RootRef ref;
  std::memcpy(&ref, ref_body->data(), sizeof ref);
  if (ref.dirid.get() != pid.objectid)
    return fail(EUCLEAN, "ROOT_REF [{} 156 {}] names directory {}, the entry is in {}", pid.subvol, id,
                ref.dirid.get(), pid.objectid);
  const uint64_t index = ref.sequence.get();

  // btrfs_subvolume_reserve_metadata's items: dir item, dir index, root ref, root backref, orphan
  // item, root item, the parent's inode, the uuid item. With use_global_rsv, as the kernel's
  // deletion: it falls back to the global reserve, so a full filesystem can still delete
  // (subvolume_enospc_test.sh).
  auto th = UBTRFS_TRY(fs_->transactions().start(8, alloc::FlushMode::kFlushAllSteal));
  const Timespec now = now_btrfs();
  {
    std::optional<DelayedIndexQueue> queue;
    if (DelayedInodes* d = fs_->delayed_inodes()) queue.emplace(*d, th, proot);
    UBTRFS_TRY_STATUS(delete_dir_entry(th.tree(), proot, pid.objectid, name, index, queue ? &*queue : nullptr));
  }
  UBTRFS_TRY_STATUS_OR_ABORT(th, delete_item(th.tree(), fs_->root_tree(), ref_key));
  UBTRFS_TRY_STATUS_OR_ABORT(th, delete_item(th.tree(), fs_->root_tree(), Key{id, kRootBackrefKey, pid.subvol}));
  pii.size = pii.size.get() - std::min<uint64_t>(2 * name.size(), pii.size.get());
  pii.mtime = now;
  pii.ctime = now;
  UBTRFS_TRY_STATUS_OR_ABORT(th, update_inode(th, proot, pid.objectid, pii));
  // The dead root: refs 0 in its ROOT_ITEM, and the orphan item the cleaner (and the next mount)
  // finds it by.
  RootItem item = rec->item;
  item.refs = 0;
  UBTRFS_TRY_STATUS_OR_ABORT(
      th, write_item_body(th.tree(), fs_->root_tree(), Key{id, kRootItemKey, rec->key_offset},
                          std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&item), rec->item_size)));
  rec->item.refs = 0;
  UBTRFS_TRY_STATUS_OR_ABORT(th, insert_item(th.tree(), fs_->root_tree(), Key{kOrphanObjectid, kOrphanItemKey, id},
                                             std::span<const uint8_t>{}));
  if (RootRecord* u = fs_->uuid_root())
    UBTRFS_TRY_STATUS_OR_ABORT(th, uuid_tree_remove(th.tree(), *u->tree, item.uuid, kUuidKeySubvol, id));
  if (TreeLog* log = fs_->tree_log()) log->note_unlink(pid, th.transid());
  th.end();
  spdlog::info("{}: deleted subvolume {} '{}' in directory {} of subvolume {}", fs_->path(), id, name, pid.objectid,
               pid.subvol);
  // The cleaner (fs/subvolume_cleaner.h) drops it once the kernel holds none of its inodes (open
  // files may still use it) and a commit has passed.
  fs_->wake_cleaner();
  return id;
}

Result<uint64_t> Filesystem::create_snapshot(uint64_t parent, std::string_view name, uint64_t source, bool readonly,
                                             const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("create snapshot"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "create snapshot '{}': read-only filesystem", name);
  UBTRFS_TRY_STATUS(check_new_subvolume_name(name));
  const InodeId pid = UBTRFS_TRY(numbers_.from_fuse(parent));
  RootRecord* prec = UBTRFS_TRY(fs_->fs_root(pid.subvol));
  if (source != kFsTreeObjectid && (source < kFirstFreeObjectid || source >= kLastFreeObjectid))
    return fail(EINVAL, "{} is not a subvolume that can be snapshotted", source);
  RootRecord* src = UBTRFS_TRY(fs_->fs_root(source));
  if (src->item.refs.get() == 0) return fail(ENOENT, "subvolume {} is deleted", source);

  auto spec = std::make_shared<PendingSnapshot>();
  spec->parent = pid;
  spec->name = std::string(name);
  spec->source = source;
  spec->readonly = readonly;
  UBTRFS_TRY_STATUS(random_uuid(spec->uuid));
  // btrfs_mksnapshot's btrfs_start_delalloc_snapshot: what was written before this call goes into
  // extents first, and only a commit of the transaction those landed in may take the snapshot (a
  // commit already past its own delalloc flush must not: it would miss them). Before the
  // directory's lock: the flush waits for file inodes' locks.
  UBTRFS_TRY_STATUS(data_->flush_all(true));
  // The parent directory's lock is held until the commit has taken the snapshot, as the kernel's
  // btrfs_mksubvol holds the directory's i_rwsem across it: the commit adds the name and the
  // directory's size (take_snapshot), and an operation in the directory that read its inode
  // before that commit and wrote it after would undo them (seen: snapshots whose copy of the
  // directory had an isize short of its entries). It also keeps the name, checked absent here,
  // from being taken by another create before the commit inserts it. Lock order subvol_mu_ ->
  // inode lock, as every subvolume operation; subvol_mu_ goes once the id and index are taken.
  std::unique_lock subvol_guard(subvol_mu_);
  auto dir_guard = locks_.lock({pid});
  {
    UBTRFS_TRY(check_new_subvolume(*prec, pid, name, c));
    if (next_subvol_id_ == 0)
      next_subvol_id_ = std::max(UBTRFS_TRY(highest_root_objectid(fs_->root_tree())) + 1, kFirstFreeObjectid);
    if (next_subvol_id_ >= kLastFreeObjectid) return fail(EOVERFLOW, "no subvolume id left");
    // btrfs_mksnapshot reserves up front (btrfs_subvolume_reserve_metadata): ENOSPC here, with
    // nothing made. The commit that takes the snapshot charges its blocks through the fallback
    // chain, as the kernel's commit uses the reservation it was handed.
    auto th = UBTRFS_TRY(fs_->transactions().start(kCreateItems));
    spec->id = next_subvol_id_++;
    // The name's index, taken under the directory's lock like any new name's; the entry itself is
    // inserted by the commit.
    spec->index = UBTRFS_TRY(ns_->new_dir_index(*prec->tree, pid.objectid));
    th.end();
  }
  subvol_guard.unlock();
  TransactionManager& txm = fs_->transactions();
  const uint64_t min_transid = txm.running_transid();
  std::promise<Status> taken;
  auto result = taken.get_future();
  txm.add_pending(TransactionManager::PendingWork{
      [this, spec](TreeHandle& h) { return take_snapshot(h, *spec); },
      [this, spec, p = std::make_shared<std::promise<Status>>(std::move(taken))](const Status& st) {
        // FORCE_COW ends with the commit that took the snapshot (btrfs clears it in
        // commit_fs_roots); from the next transaction last_snapshot tells COW what is shared.
        if (auto r = fs_->fs_root(spec->source); r) (*r)->tree->set_force_cow(false);
        p->set_value(st);
      },
      min_transid});
  // A commit already running (of an older transaction) leaves it to the next one.
  Status committed = txm.commit(CommitCause::kRequested);
  for (int i = 0; i < 3 && committed && result.wait_for(std::chrono::seconds(0)) != std::future_status::ready; ++i)
    committed = txm.commit(CommitCause::kRequested);
  if (result.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    if (!committed) return fail(committed.error());
    return fail(EIO, "snapshot '{}': the commit did not take it", name);
  }
  UBTRFS_TRY_STATUS(result.get());
  spdlog::info("{}: created {}snapshot {} '{}' of subvolume {} in directory {} of subvolume {}", fs_->path(),
               readonly ? "read-only " : "", spec->id, name, source, pid.objectid, pid.subvol);
  return spec->id;
}

// btrfs create_pending_snapshot, in the commit (gate closed, delayed items written): COW the
// source's root block, copy it to a new block owned by the new id whose every child pointer or file
// extent gains a reference keyed to the new id (btrfs_copy_root + btrfs_inc_ref), mark the source
// (last_snapshot = this transaction, FORCE_COW until the commit ends), then the new ROOT_ITEM
// (key offset = the transaction) copied from the source's with the snapshot's own uuid, parent_uuid
// = the source's uuid, otransid/ctransid, times, RDONLY as asked; ROOT_REF/ROOT_BACKREF, the
// parent's DIR_ITEM/DIR_INDEX to (id, ROOT_ITEM, -1), its size and times, the UUID tree entry.
// The name goes into the parent after the copy, so a snapshot taken into its own source does not
// hold an entry naming itself.
Status Filesystem::take_snapshot(TreeHandle& h, const PendingSnapshot& s) {
  const uint64_t transid = h.transid;
  RootRecord* src = UBTRFS_TRY(fs_->fs_root(s.source));
  TreeRoot& st = *src->tree;
  {
    // btrfs_cow_block of the root block only: a path that stops at the root's level.
    Path p;
    p.lowest_level = st.node()->level();
    UBTRFS_TRY(search_slot(&h, st, kMinKey, p, 0, true));
  }
  auto tree = std::make_unique<TreeRoot>(fs_->tree_ctx(), s.id);
  EbRef old = st.node();
  const int level = old->level();
  EbRef copy = UBTRFS_TRY(ctree::alloc_tree_block(h, *tree, level, 0));
  old->lock_read();
  copy->copy_from(*old, sizeof(Header), sizeof(Header), old->len() - sizeof(Header));
  copy->set_nritems(old->nritems());
  old->unlock_read();
  auto refs = fs_->allocator().inc_ref(h, *copy, false);
  tree->set_node(copy);
  copy->unlock_write();
  UBTRFS_TRY_STATUS(refs);
  tree->set_last_snapshot(transid);

  // The source: every block it has now may be shared.
  src->item.last_snapshot = transid;
  st.set_last_snapshot(transid);
  st.set_force_cow(true);
  UBTRFS_TRY_STATUS(write_item_body(
      h, fs_->root_tree(), Key{s.source, kRootItemKey, src->key_offset},
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&src->item), src->item_size)));

  const Timespec now = now_btrfs();
  auto rec = std::make_unique<RootRecord>();
  RootItem& ri = rec->item;
  std::memset(&ri, 0, sizeof ri);
  std::memcpy(&ri, &src->item, src->item_size);
  ri.bytenr = copy->start();
  ri.generation = transid;
  ri.generation_v2 = transid;
  ri.level = static_cast<uint8_t>(level);
  ri.refs = 1;
  ri.last_snapshot = transid;
  ri.flags = s.readonly ? (ri.flags.get() | kRootSubvolRdonly) : (ri.flags.get() & ~kRootSubvolRdonly);
  std::memset(&ri.drop_progress, 0, sizeof ri.drop_progress);
  ri.drop_level = 0;
  std::memcpy(ri.uuid, s.uuid, 16);
  std::memcpy(ri.parent_uuid, src->item.uuid, 16);
  std::memset(ri.received_uuid, 0, 16);
  ri.ctransid = transid;
  ri.otransid = transid;
  ri.stransid = 0;
  ri.rtransid = 0;
  ri.ctime = now;
  ri.otime = now;
  ri.stime = Timespec{};
  ri.rtime = Timespec{};
  rec->item_size = sizeof(RootItem);
  rec->key_offset = transid;
  rec->readonly = s.readonly;
  rec->tree = std::move(tree);
  UBTRFS_TRY_STATUS(insert_item(h, fs_->root_tree(), Key{s.id, kRootItemKey, transid},
                                std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&ri), sizeof ri)));
  fs_->add_fs_root(std::move(rec));

  RootRecord* prec = UBTRFS_TRY(fs_->fs_root(s.parent.subvol));
  TreeRoot& proot = *prec->tree;
  const auto ref = root_ref_body(s.parent.objectid, s.index, s.name);
  UBTRFS_TRY_STATUS(insert_item(h, fs_->root_tree(), Key{s.parent.subvol, kRootRefKey, s.id}, ref));
  UBTRFS_TRY_STATUS(insert_item(h, fs_->root_tree(), Key{s.id, kRootBackrefKey, s.parent.subvol}, ref));
  UBTRFS_TRY_STATUS(
      insert_dir_entry(h, proot, s.parent.objectid, s.name, Key{s.id, kRootItemKey, ~0ull}, kFtDir, s.index, nullptr));
  // The commit wrote every delayed item before this, and create_snapshot holds the directory's
  // lock (no operation there is between reading its inode and writing it back): the tree holds
  // the directory's newest item.
  InodeItem pii = UBTRFS_TRY(read_inode_item(proot, s.parent.objectid));
  pii.size = pii.size.get() + 2 * s.name.size();
  pii.mtime = now;
  pii.ctime = now;
  UBTRFS_TRY_STATUS(update_inode(h, proot, s.parent.objectid, pii));
  if (Qgroups* q = fs_->qgroups()) UBTRFS_TRY_STATUS(q->add_subvolume(h, s.id));
  if (RootRecord* u = fs_->uuid_root()) UBTRFS_TRY_STATUS(uuid_tree_add(h, *u->tree, s.uuid, kUuidKeySubvol, s.id));
  return {};
}

Status Filesystem::check_subvol_writable(InodeId id, std::string_view what) {
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  if (rec->readonly.load(std::memory_order_acquire)) return fail(EROFS, "{}: subvolume {} is read-only", what, id.subvol);
  return {};
}

Status Filesystem::check_subvol_writable(uint64_t ino, std::string_view what) {
  return check_subvol_writable(UBTRFS_TRY(numbers_.from_fuse(ino)), what);
}

Status Filesystem::set_subvolume_readonly(uint64_t ino, bool readonly, const Caller& c) {
  UBTRFS_TRY_STATUS(fs_->check_shutdown("set subvolume flags"));
  if (fs_->read_only() || unmounted_) return fail(EROFS, "set subvolume flags: read-only filesystem");
  const InodeId id = UBTRFS_TRY(numbers_.from_fuse(ino));
  if (id.objectid != kFirstFreeObjectid)
    return fail(EINVAL, "inode {} of subvolume {} is not a subvolume's root directory", id.objectid, id.subvol);
  RootRecord* rec = UBTRFS_TRY(fs_->fs_root(id.subvol));
  {
    // inode_owner_or_capable on the subvolume's root directory.
    const InodeItem dir = UBTRFS_TRY(read_inode(*fs_, *rec->tree, kFirstFreeObjectid));
    if (c.uid != 0 && !c.cap_fowner && c.uid != dir.uid.get())
      return fail(EPERM, "set flags of subvolume {} by uid {}: not the owner", id.subvol, c.uid);
  }
  std::lock_guard subvol_guard(subvol_mu_);
  const uint64_t old_flags = rec->item.flags.get();
  const uint64_t new_flags = readonly ? old_flags | kRootSubvolRdonly : old_flags & ~kRootSubvolRdonly;
  if (new_flags == old_flags) return {};
  {
    auto th = UBTRFS_TRY(fs_->transactions().start(1));
    RootItem item = rec->item;
    item.flags = new_flags;
    UBTRFS_TRY_STATUS(write_item_body(th.tree(), fs_->root_tree(), Key{id.subvol, kRootItemKey, rec->key_offset},
                                      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&item), rec->item_size)));
    rec->item.flags = new_flags;  // no commit can run: this handle is open
    rec->readonly.store(readonly, std::memory_order_release);
    th.end();
  }
  spdlog::info("{}: subvolume {} is now {}", fs_->path(), id.subvol, readonly ? "read-only" : "read-write");
  return fs_->transactions().commit(CommitCause::kRequested);
}

}  // namespace ubtrfs::fs
