// NamespaceState (see namespace_state.h): counters seeded lazily from the tree, lookup counts.
#include "fs/namespace_state.h"

#include <algorithm>

#include "fs/dir_item.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

// The highest objectid of an item below LAST_FREE_OBJECTID (orphan, csum and other special
// objectids sort above it), or 0 when there is none.
Result<uint64_t> highest_objectid(TreeRoot& root) {
  Path p;
  const int ret = UBTRFS_TRY(search_slot(nullptr, root, Key{kLastFreeObjectid, 0xFF, ~0ull}, p, 0, false));
  if (ret == 0) return kLastFreeObjectid;
  if (p.leaf().nritems() == 0) return 0;
  bool valid = true;
  if (p.slots[0] > 0)
    --p.slots[0];
  else
    valid = UBTRFS_TRY(prev_leaf(root, p));
  return valid ? p.leaf().item_key(p.slots[0]).objectid : 0;
}

}  // namespace

Result<uint64_t> NamespaceState::new_objectid(TreeRoot& root) {
  {
    std::lock_guard g(mu_);
    auto it = next_objectid_.find(root.objectid());
    if (it != next_objectid_.end()) {
      if (it->second >= kLastFreeObjectid) return fail(ENOSPC, "no free inode number left in root {}", root.objectid());
      return it->second++;
    }
  }
  const uint64_t highest = UBTRFS_TRY(highest_objectid(root));
  std::lock_guard g(mu_);
  auto [it, inserted] = next_objectid_.try_emplace(root.objectid(), std::max(highest + 1, kFirstFreeObjectid + 1));
  (void)inserted;  // a racing seeder got there first: its value is as good as ours
  if (it->second >= kLastFreeObjectid) return fail(ENOSPC, "no free inode number left in root {}", root.objectid());
  return it->second++;
}

Result<uint64_t> NamespaceState::new_dir_index(TreeRoot& root, uint64_t dir) {
  const InodeId id{root.objectid(), dir};
  {
    std::lock_guard g(mu_);
    auto it = next_index_.find(id);
    if (it != next_index_.end()) return it->second++;
  }
  // The caller holds the directory lock, so no other thread seeds or inserts indexes meanwhile.
  const uint64_t highest = UBTRFS_TRY(highest_dir_index(root, dir));
  if (highest == ~0ull) return fail(EOVERFLOW, "directory {} of root {} has no dir index left", dir, root.objectid());
  std::lock_guard g(mu_);
  auto [it, inserted] = next_index_.try_emplace(id, std::max<uint64_t>(highest + 1, 2));
  (void)inserted;
  return it->second++;
}

Result<uint64_t> NamespaceState::last_dir_index(TreeRoot& root, uint64_t dir) {
  {
    std::lock_guard g(mu_);
    auto it = next_index_.find(InodeId{root.objectid(), dir});
    if (it != next_index_.end()) return it->second - 1;
  }
  // Not seeded: every index of the directory is in the tree (queued insertions take their index
  // from the counter), and none is added meanwhile under the caller's directory lock.
  const uint64_t highest = UBTRFS_TRY(highest_dir_index(root, dir));
  return std::max<uint64_t>(highest, 1);
}

void NamespaceState::forget_dir(InodeId dir) {
  std::lock_guard g(mu_);
  next_index_.erase(dir);
}

void NamespaceState::add_lookup(InodeId id, uint64_t generation, uint64_t n) {
  if (n == 0) return;
  std::lock_guard g(mu_);
  Referenced& r = lookups_[id];
  r.count += n;
  r.generation = generation;
}

uint64_t NamespaceState::drop_lookup(InodeId id, uint64_t n) {
  std::lock_guard g(mu_);
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return 0;
  if (it->second.count <= n) {
    lookups_.erase(it);
    return 0;
  }
  it->second.count -= n;
  return it->second.count;
}

uint64_t NamespaceState::lookup_count(InodeId id) {
  std::lock_guard g(mu_);
  auto it = lookups_.find(id);
  return it == lookups_.end() ? 0 : it->second.count;
}

std::optional<uint64_t> NamespaceState::referenced_generation(InodeId id) {
  std::lock_guard g(mu_);
  auto it = lookups_.find(id);
  if (it == lookups_.end()) return std::nullopt;
  return it->second.generation;
}

bool NamespaceState::subvolume_referenced(uint64_t subvol) {
  std::lock_guard g(mu_);
  auto it = lookups_.lower_bound(InodeId{subvol, 0});
  return it != lookups_.end() && it->first.subvol == subvol;
}

}  // namespace ubtrfs::fs
