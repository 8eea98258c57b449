// evict_inodes: see evict.h.
#include "fs/evict.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <optional>

#include "alloc/space_info.h"
#include "fs/delayed_inode.h"
#include "fs/file_data.h"
#include "fs/fs_info.h"
#include "fs/namespace_state.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

// What a deletion pass removes: the inodes' own items (key objectid = the inode) or their orphan
// items ((-5, ORPHAN_ITEM, inode)).
enum class Owned { kInodeItems, kOrphanItems };

Key first_key(Owned w, uint64_t ino) {
  return w == Owned::kInodeItems ? Key{ino, 0, 0} : Key{kOrphanObjectid, kOrphanItemKey, ino};
}

// The inode an item belongs to in this pass; nullopt past the pass's key range.
std::optional<uint64_t> owner_of(Owned w, const Key& k) {
  if (w == Owned::kInodeItems) return k.objectid;
  if (k.objectid == kOrphanObjectid && k.type == kOrphanItemKey) return k.offset;
  return std::nullopt;
}

// btrfs evict_refill_and_join: the handle for the next leaf operation, reserving afresh after
// `units` operations, but never between two operations on one inode's items.
class EvictHandles {
 public:
  EvictHandles(TransactionManager& txm, unsigned units) : txm_(txm), units_(units) {}
  Result<TransHandle*> for_next_op(bool mid_inode) {
    if (!th_.active() || (ops_ >= units_ && !mid_inode)) {
      th_.end();
      th_ = UBTRFS_TRY(txm_.start(units_, alloc::FlushMode::kFlushEvict));
      ops_ = 0;
      changed_ = false;
    }
    ++ops_;
    return &th_;
  }
  void changed() { changed_ = true; }
  // A failure after this handle changed the tree aborts (its half-done step must never commit);
  // before, nothing of the current handle reached the tree and every inode is whole.
  std::unexpected<Error> fail_step(const Error& e) { return changed_ ? th_.abort(e) : fail(e); }
  void end() { th_.end(); }

 private:
  TransactionManager& txm_;
  const unsigned units_;
  TransHandle th_;
  unsigned ops_ = 0;
  bool changed_ = false;
};

// The first key >= `at` (read-only search), or nullopt at the end of the tree.
Result<std::optional<Key>> first_key_from(TreeRoot& root, const Key& at) {
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root, at, p, 0, false));
  if (p.leaf().nritems() == 0) return std::optional<Key>{};
  if (p.slots[0] >= static_cast<int>(p.leaf().nritems()) && !UBTRFS_TRY(next_leaf(root, p)))
    return std::optional<Key>{};
  return std::optional<Key>{p.leaf().item_key(p.slots[0])};
}

// Deletes every item `w` assigns to one of `ids` (sorted, unique), a run of slots per leaf
// operation. `on_deleted(k)` runs for ids[k] in the handle that deleted its first items.
Status delete_owned(EvictHandles& hs, TreeRoot& root, Owned w, const std::vector<uint64_t>& ids,
                    const std::function<void(size_t)>& on_deleted) {
  const size_t n = ids.size();
  size_t pos = 0;       // the first inode that may still have items
  size_t notified = 0;  // on_deleted ran for ids[0, notified)
  bool mid = false;     // items of ids[pos] went already; more may follow in the next leaf
  Key at = n ? first_key(w, ids[0]) : Key{};
  while (pos < n) {
    TransHandle* th = UBTRFS_TRY(hs.for_next_op(mid));
    Path p;
    if (auto r = search_slot(&th->tree(), root, at, p, -1, true); !r) return hs.fail_step(r.error());
    const int nritems = static_cast<int>(p.leaf().nritems());
    const int slot = p.slots[0];
    if (slot >= nritems) {
      // The first key >= `at` is in a later leaf (or there is none): find it, then search it.
      p.release();
      auto next = first_key_from(root, at);
      if (!next) return hs.fail_step(next.error());
      const std::optional<uint64_t> o = *next ? owner_of(w, **next) : std::nullopt;
      if (!o) break;
      while (pos < n && ids[pos] < *o) ++pos, mid = false;
      if (pos == n) break;
      if (ids[pos] == *o) {
        at = **next;
      } else {
        at = first_key(w, ids[pos]);
        mid = false;
      }
      continue;
    }
    // The run of slots from `slot` whose items belong to the batch.
    int nr = 0;
    size_t j = pos, last = pos;
    bool past_range = false;
    while (slot + nr < nritems) {
      const std::optional<uint64_t> o = owner_of(w, p.leaf().item_key(slot + nr));
      if (!o) {
        past_range = true;
        break;
      }
      while (j < n && ids[j] < *o) ++j;
      if (j == n || ids[j] != *o) break;
      last = j;
      ++nr;
    }
    if (nr == 0) {
      // The item at `slot` is no batch inode's: the inodes below its owner have nothing left.
      p.release();
      if (past_range) break;
      pos = j;
      mid = false;
      if (pos < n) at = first_key(w, ids[pos]);
      continue;
    }
    if (auto st = del_items(th->tree(), root, p, slot, nr); !st) return hs.fail_step(st.error());
    hs.changed();
    for (; notified <= last; ++notified) on_deleted(notified);
    if (slot + nr == nritems) {
      // The leaf ended inside the batch: the last inode's items may go on in the next leaf.
      pos = last;
      mid = true;
      at = first_key(w, ids[pos]);
    } else {
      if (past_range) break;
      pos = j;
      mid = false;
      if (pos < n) at = first_key(w, ids[pos]);
    }
  }
  return {};
}

}  // namespace

Result<EvictOutcome> evict_inodes(NamespaceState& ns, TreeRoot& root, uint64_t subvol,
                                  std::vector<uint64_t> objectids) {
  std::sort(objectids.begin(), objectids.end());
  objectids.erase(std::unique(objectids.begin(), objectids.end()), objectids.end());
  FsInfo& fs = ns.fs;
  std::vector<uint64_t> evict, stale;
  for (uint64_t ino : objectids) {
    const InodeId id{subvol, ino};
    if (ns.lookup_count(id) != 0) continue;  // the kernel holds it again: its last forget evicts
    auto ii = read_inode(fs, root, ino);
    if (!ii) {
      if (ii.error().err != ENOENT) {
        spdlog::error("{}: not evicting inode {} of root {}: {}", fs.path(), ino, subvol, ii.error().message);
        continue;
      }
      stale.push_back(ino);  // gone already: only an orphan item may be left
    } else if (ii->nlink.get() != 0) {
      stale.push_back(ino);  // linked again (O_TMPFILE + linkat): its orphan item is stale
    } else {
      evict.push_back(ino);
    }
  }
  // The file data first, each file in its own bounded handles (btrfs_truncate_inode_items'
  // extent part); a file whose data cannot go keeps everything, orphan item included.
  std::erase_if(evict, [&](uint64_t ino) {
    auto st = ns.data.evict(InodeId{subvol, ino});
    if (!st) spdlog::error("{}: evicting inode {} of root {}: {}", fs.path(), ino, subvol, st.error().message);
    return !st;
  });
  std::vector<uint64_t> orphans;
  std::merge(evict.begin(), evict.end(), stale.begin(), stale.end(), std::back_inserter(orphans));
  EvictOutcome out;
  if (orphans.empty()) return out;
  EvictHandles hs(fs.transactions(),
                  static_cast<unsigned>(std::min<size_t>(kEvictHandleUnits, 2 * orphans.size())));
  DelayedInodes* delayed = fs.delayed_inodes();
  UBTRFS_TRY_STATUS(delete_owned(hs, root, Owned::kInodeItems, evict, [&](size_t k) {
    // btrfs_kill_delayed_inode_items: nothing pending may recreate the deleted item.
    if (delayed) delayed->forget(InodeId{subvol, evict[k]});
  }));
  UBTRFS_TRY_STATUS(delete_owned(hs, root, Owned::kOrphanItems, orphans, [](size_t) {}));
  hs.end();
  for (uint64_t ino : evict) ns.forget_dir(InodeId{subvol, ino});
  out.evicted = evict.size();
  out.stale_orphans = stale.size();
  return out;
}

}  // namespace ubtrfs::fs
