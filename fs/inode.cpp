// Inodes (btrfs inode.c: btrfs_iget's read side, btrfs_update_inode, btrfs_getattr): FUSE inode
// numbering, per-inode locks, INODE_ITEM read/insert/update, stat conversion. See inode.h.
//
// InodeLocks keeps one Entry per inode that some thread holds or waits for; `users` counts those
// threads (under mu_), and the entry is erased when it drops to 0, so the table stays the size of
// the working set. mu_ is never held while waiting for an inode lock.
#include "fs/inode.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "fs/delayed_inode.h"
#include "fs/fs_info.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {
constexpr int kSubvolShift = 48;
constexpr uint64_t kObjectidMask = (1ull << kSubvolShift) - 1;
constexpr uint64_t kFuseRootId = 1;
}  // namespace

// ---- numbers ------------------------------------------------------------------------------------

uint64_t InodeNumbers::to_fuse(InodeId id) const {
  if (id.subvol == mounted_) return id.objectid == kFirstFreeObjectid ? kFuseRootId : id.objectid;
  return (id.subvol << kSubvolShift) | (id.objectid & kObjectidMask);
}

Result<InodeId> InodeNumbers::from_fuse(uint64_t ino) const {
  if (ino == kFuseRootId) return InodeId{mounted_, kFirstFreeObjectid};
  const uint64_t subvol = ino >> kSubvolShift, objectid = ino & kObjectidMask;
  if (objectid < kFirstFreeObjectid && objectid != kEmptySubvolDirObjectid)
    return fail(ENOENT, "inode number {} names no inode", ino);
  if (subvol == 0) return InodeId{mounted_, objectid};
  // Subvolume ids below 256 other than the FS tree (5) hold no inodes reachable by name.
  if (subvol != kFsTreeObjectid && subvol < kFirstSubvolObjectid)
    return fail(ENOENT, "inode number {} names tree {} which holds no files", ino, subvol);
  return InodeId{subvol, objectid};
}

// ---- locks --------------------------------------------------------------------------------------

std::shared_mutex& InodeLocks::acquire(InodeId id) {
  std::lock_guard g(mu_);
  auto& slot = entries_[id.subvol][id.objectid];
  if (!slot) slot = std::make_unique<Entry>();
  ++slot->users;
  return slot->mu;
}

void InodeLocks::drop(InodeId id) {
  std::lock_guard g(mu_);
  auto sub = entries_.find(id.subvol);
  if (sub == entries_.end()) return;
  auto it = sub->second.find(id.objectid);
  if (it == sub->second.end()) return;
  if (--it->second->users == 0) {
    sub->second.erase(it);
    if (sub->second.empty()) entries_.erase(sub);
  }
}

InodeLocks::Guard InodeLocks::lock(std::vector<InodeId> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  Guard g;
  g.owner_ = this;
  for (const auto& id : ids) {
    acquire(id).lock();
    g.held_.emplace_back(id, true);
  }
  return g;
}

std::optional<InodeLocks::Guard> InodeLocks::try_lock(InodeId id, std::chrono::milliseconds patience) {
  std::shared_mutex& mu = acquire(id);
  const auto deadline = std::chrono::steady_clock::now() + patience;
  for (int spins = 0;; ++spins) {
    if (mu.try_lock()) {
      Guard g;
      g.owner_ = this;
      g.held_.emplace_back(id, true);
      return g;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    if (spins < 16)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  drop(id);
  return std::nullopt;
}

InodeLocks::Guard InodeLocks::lock_shared(InodeId id) {
  Guard g;
  g.owner_ = this;
  acquire(id).lock_shared();
  g.held_.emplace_back(id, false);
  return g;
}

void InodeLocks::Guard::release() {
  if (!owner_) return;
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) {
    std::shared_mutex* mu;
    {
      std::lock_guard g(owner_->mu_);
      mu = &owner_->entries_.at(it->first.subvol).at(it->first.objectid)->mu;
    }
    // Our `users` count keeps the entry alive until drop().
    if (it->second)
      mu->unlock();
    else
      mu->unlock_shared();
    owner_->drop(it->first);
  }
  held_.clear();
  owner_ = nullptr;
}

// ---- time ---------------------------------------------------------------------------------------

Timespec to_btrfs(const struct timespec& t) {
  Timespec b{};
  b.sec = static_cast<uint64_t>(t.tv_sec);
  b.nsec = static_cast<uint32_t>(t.tv_nsec);
  return b;
}

struct timespec from_btrfs(const Timespec& t) {
  struct timespec ts {};
  ts.tv_sec = static_cast<time_t>(t.sec.get());
  ts.tv_nsec = static_cast<long>(t.nsec.get());
  return ts;
}

Timespec now_btrfs() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return to_btrfs(ts);
}

uint64_t encode_rdev(dev_t dev) {
  return (static_cast<uint64_t>(major(dev)) << 20) | (minor(dev) & 0xFFFFF);
}

dev_t decode_rdev(uint64_t rdev) {
  return makedev(static_cast<unsigned>(rdev >> 20), static_cast<unsigned>(rdev & 0xFFFFF));
}

// ---- INODE_ITEM ---------------------------------------------------------------------------------

Result<InodeItem> read_inode_item(TreeRoot& root, uint64_t objectid) {
  const Key key{objectid, kInodeItemKey, 0};
  auto body = UBTRFS_TRY(lookup_item(root, key));
  if (!body) return fail(ENOENT, "no inode item for inode {} in root {}", objectid, root.objectid());
  if (body->size() != sizeof(InodeItem))
    return fail(EUCLEAN, "inode item [{} 1 0] of root {} has size {} expect {}", objectid, root.objectid(),
                body->size(), sizeof(InodeItem));
  InodeItem ii;
  std::memcpy(&ii, body->data(), sizeof ii);
  return ii;
}

Result<InodeItem> read_inode(FsInfo& fs, TreeRoot& root, uint64_t objectid) {
  if (objectid == kEmptySubvolDirObjectid && root.shareable()) {
    // new_simple_dir: S_IFDIR | 0755, one link, the time of the lookup.
    InodeItem ii{};
    ii.mode = S_IFDIR | 0755;
    ii.nlink = 1;
    const Timespec now = now_btrfs();
    ii.atime = now;
    ii.mtime = now;
    ii.ctime = now;
    ii.otime = now;
    return ii;
  }
  if (DelayedInodes* d = fs.delayed_inodes())
    if (auto pending = d->inode(InodeId{root.objectid(), objectid})) return *pending;
  return read_inode_item(root, objectid);
}

Status update_inode_item(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item) {
  const Key key{objectid, kInodeItemKey, 0};
  Path p;
  if (UBTRFS_TRY(search_slot(&h, root, key, p, 0, true)) != 0)
    return fail(ENOENT, "no inode item for inode {} in root {} to update", objectid, root.objectid());
  auto body = p.leaf().item_data(p.slots[0]);
  if (body.size() != sizeof(InodeItem))
    return fail(EUCLEAN, "inode item [{} 1 0] of root {} has size {} expect {}", objectid, root.objectid(),
                body.size(), sizeof(InodeItem));
  InodeItem out = item;
  out.transid = h.transid;
  std::memcpy(body.data(), &out, sizeof out);
  root.ctx().cache.mark_dirty(p.nodes[0]);
  return {};
}

Status update_inode(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item) {
  InodeItem v = item;
  v.sequence = item.sequence.get() + 1;
  return update_inode_item(h, root, objectid, v);
}

Status insert_inode(TreeHandle& h, TreeRoot& root, uint64_t objectid, const InodeItem& item) {
  return insert_item(h, root, Key{objectid, kInodeItemKey, 0},
                     std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&item), sizeof item));
}

Status update_inode(TransHandle& th, TreeRoot& root, uint64_t objectid, const InodeItem& item) {
  // btrfs_update_inode -> btrfs_delayed_update_inode: the handle already reserved for the inode
  // update, so the delayed item takes its bytes from the handle (NO_FLUSH: a handle never waits).
  FsInfo* fs = th.fs();
  if (DelayedInodes* d = fs ? fs->delayed_inodes() : nullptr)
    return d->update_inode(&th, InodeId{root.objectid(), objectid}, item, alloc::FlushMode::kNoFlush);
  return update_inode(th.tree(), root, objectid, item);
}

Status insert_inode(TransHandle& th, TreeRoot& root, uint64_t objectid, const InodeItem& item) {
  return insert_inode(th.tree(), root, objectid, item);
}

// ---- stat ---------------------------------------------------------------------------------------

struct stat inode_to_stat(const InodeItem& ii, uint64_t fuse_ino, uint32_t blksize, uint64_t extra_bytes) {
  struct stat st {};
  st.st_ino = fuse_ino;
  st.st_mode = ii.mode;
  st.st_nlink = ii.nlink;
  st.st_uid = ii.uid;
  st.st_gid = ii.gid;
  st.st_rdev = decode_rdev(ii.rdev);
  st.st_size = static_cast<off_t>(ii.size.get());
  st.st_blksize = blksize;
  // btrfs_getattr: (ALIGN(inode bytes) + ALIGN(delalloc bytes)) in 512-byte sectors.
  const uint64_t align = blksize ? blksize : 4096;
  auto up = [&](uint64_t v) { return (v + align - 1) / align * align; };
  st.st_blocks = static_cast<blkcnt_t>((up(ii.nbytes) + up(extra_bytes)) >> 9);
  st.st_atim = from_btrfs(ii.atime);
  st.st_mtim = from_btrfs(ii.mtime);
  st.st_ctim = from_btrfs(ii.ctime);
  return st;
}

}  // namespace ubtrfs::fs
