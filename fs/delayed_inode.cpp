// DelayedInodes: pending inode items and directory index changes; see delayed_inode.h.
#include "fs/delayed_inode.h"

#include <spdlog/spdlog.h>

#include "alloc/block_rsv.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

DelayedInodes::~DelayedInodes() {
  uint64_t held = 0;
  {
    std::lock_guard g(mu_);
    for (auto& [id, n] : nodes_) {
      held += n.item_rsv;
      for (auto& [i, e] : n.inserts) held += e.second;
      for (auto& [i, r] : n.deletes) held += r;
    }
    nodes_.clear();
    items_ = 0;
  }
  give_back(held);
}

std::optional<InodeItem> DelayedInodes::inode(InodeId id) const {
  std::lock_guard g(mu_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.item;
}

Result<uint64_t> DelayedInodes::take_reservation(TransHandle* th, uint64_t bytes, alloc::FlushMode mode) {
  alloc::BlockRsv& dst = fs_.spaces().delayed_block_rsv();
  if (th && th->migrate_reservation(dst, bytes)) return bytes;
  auto st = dst.add(bytes, mode);
  if (st) return bytes;
  if (st.error().err != ENOSPC) return fail(st.error());
  // A handle that reserved for this change but whose share the COWs already ate: queue it anyway
  // (the operation must not fail after its tree changes); the commit's fallback chain pays.
  if (th) {
    fs_.spaces().count_enospc(alloc::EnospcReason::kNoFlush);
    return uint64_t{0};
  }
  return fail(st.error());
}

void DelayedInodes::give_back(uint64_t bytes) {
  if (bytes) fs_.spaces().release_block_rsv(fs_.spaces().delayed_block_rsv(), bytes);
}

Status DelayedInodes::update_inode(TransHandle* th, InodeId id, const InodeItem& item, alloc::FlushMode mode) {
  bool need_rsv;
  {
    std::lock_guard g(mu_);
    auto it = nodes_.find(id);
    // A reservation without an item is reserve_update's, taken for this very update.
    need_rsv = it == nodes_.end() || it->second.item_rsv == 0;
  }
  uint64_t rsv = 0;
  if (need_rsv) rsv = UBTRFS_TRY(take_reservation(th, fs_.spaces().metadata_size(1), mode));
  uint64_t surplus = 0;
  {
    std::lock_guard g(mu_);
    Node& n = nodes_[id];
    if (!n.item) items_++;
    InodeItem v = item;
    v.sequence = v.sequence.get() + 1;
    n.item = v;
    n.item_version++;
    if (n.item_rsv == 0)
      n.item_rsv = rsv;
    else
      surplus = rsv;  // another thread reserved meanwhile
  }
  give_back(surplus);
  return {};
}

bool DelayedInodes::update_reserved(InodeId id) {
  std::lock_guard g(mu_);
  auto it = nodes_.find(id);
  return it != nodes_.end() && it->second.item_rsv;
}

Status DelayedInodes::reserve_update(InodeId id, alloc::FlushMode mode, alloc::BlockRsv* from) {
  {
    std::lock_guard g(mu_);
    auto it = nodes_.find(id);
    if (it != nodes_.end() && it->second.item_rsv) return {};
  }
  const uint64_t bytes = fs_.spaces().metadata_size(1);
  uint64_t rsv = 0;
  if (from && from->reserved() >= bytes &&
      alloc::BlockRsv::migrate(*from, fs_.spaces().delayed_block_rsv(), bytes, true))
    rsv = bytes;
  else
    rsv = UBTRFS_TRY(take_reservation(nullptr, bytes, mode));
  uint64_t surplus = 0;
  {
    std::lock_guard g(mu_);
    Node& n = nodes_[id];
    if (n.item_rsv == 0)
      n.item_rsv = rsv;
    else
      surplus = rsv;
  }
  give_back(surplus);
  return {};
}

Status DelayedInodes::update_atime(TreeRoot& root, InodeId id, const Timespec& atime) {
  auto set_on_pending = [&]() {
    auto it = nodes_.find(id);
    if (it == nodes_.end() || !it->second.item) return false;
    it->second.item->atime = atime;
    it->second.item_version++;
    return true;
  };
  {
    std::lock_guard g(mu_);
    if (set_on_pending()) return {};
  }
  // Nothing pending: the tree's item is current (only the runner writes it, and it retires a node
  // after writing it).
  InodeItem item = UBTRFS_TRY(read_inode_item(root, id.objectid));
  const uint64_t rsv = UBTRFS_TRY(take_reservation(nullptr, fs_.spaces().metadata_size(1), alloc::FlushMode::kNoFlush));
  uint64_t surplus = 0;
  {
    std::lock_guard g(mu_);
    if (set_on_pending()) {
      surplus = rsv;
    } else {
      Node& n = nodes_[id];
      item.atime = atime;
      item.sequence = item.sequence.get() + 1;
      n.item = item;
      n.item_version++;
      items_++;
      if (n.item_rsv == 0)
        n.item_rsv = rsv;
      else
        surplus = rsv;
    }
  }
  give_back(surplus);
  return {};
}

Status DelayedInodes::insert_index(TransHandle& th, InodeId dir, uint64_t index, std::vector<uint8_t> body) {
  const uint64_t rsv = UBTRFS_TRY(take_reservation(&th, fs_.spaces().insert_size(1), alloc::FlushMode::kNoFlush));
  uint64_t surplus = 0;
  {
    std::lock_guard g(mu_);
    Node& n = nodes_[dir];
    auto [it, fresh] = n.inserts.try_emplace(index, std::move(body), rsv);
    if (fresh)
      items_++;
    else
      surplus = rsv;  // cannot happen: indexes are never reused
  }
  give_back(surplus);
  return {};
}

Status DelayedInodes::delete_index(TransHandle& th, TreeRoot& root, InodeId dir, uint64_t index,
                                   std::string_view name) {
  bool cancelled = false;
  uint64_t freed = 0;
  {
    std::lock_guard g(mu_);
    auto nit = nodes_.find(dir);
    if (nit != nodes_.end()) {
      if (nit->second.deletes.count(index))
        return fail(ENOENT, "dir index [{} 96 {}] of root {} is already being deleted", dir.objectid, index, dir.subvol);
      auto ins = nit->second.inserts.find(index);
      if (ins != nit->second.inserts.end()) {
        auto entries = parse_dir_entries(ins->second.first, Key{dir.objectid, kDirIndexKey, index});
        if (!entries || entries->size() != 1 || (*entries)[0].name != name)
          return fail(EUCLEAN, "queued dir index [{} 96 {}] does not hold '{}'", dir.objectid, index, name);
        // Inserted and deleted before anything reached the tree: both cancel.
        freed = ins->second.second;
        nit->second.inserts.erase(ins);
        items_--;
        if (nit->second.empty()) nodes_.erase(nit);
        cancelled = true;
      }
    }
  }
  if (cancelled) {
    give_back(freed);
    return {};
  }
  UBTRFS_TRY_STATUS(check_dir_index(root, dir.objectid, index, name));
  const uint64_t rsv = UBTRFS_TRY(take_reservation(&th, fs_.spaces().insert_size(1), alloc::FlushMode::kNoFlush));
  {
    std::lock_guard g(mu_);
    Node& n = nodes_[dir];
    if (n.deletes.emplace(index, rsv).second) items_++;
  }
  return {};
}

void DelayedInodes::index_view(InodeId dir, uint64_t start, std::map<uint64_t, std::vector<uint8_t>>* inserts,
                               std::set<uint64_t>* deletes) const {
  std::lock_guard g(mu_);
  auto it = nodes_.find(dir);
  if (it == nodes_.end()) return;
  for (auto i = it->second.inserts.lower_bound(start); i != it->second.inserts.end(); ++i)
    inserts->emplace(i->first, i->second.first);
  for (auto i = it->second.deletes.lower_bound(start); i != it->second.deletes.end(); ++i) deletes->insert(i->first);
}

void DelayedInodes::forget(InodeId id) {
  uint64_t held = 0;
  {
    std::lock_guard g(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return;
    Node& n = it->second;
    if (n.item) items_--;
    held += n.item_rsv;
    for (auto& [i, e] : n.inserts) held += e.second;
    for (auto& [i, r] : n.deletes) held += r;
    items_ -= n.inserts.size() + n.deletes.size();
    nodes_.erase(it);
  }
  give_back(held);
}

Result<uint64_t> DelayedInodes::run_node(TreeHandle& h, InodeId id) {
  // Snapshot under the lock, write without it, then retire what is unchanged.
  std::optional<InodeItem> item;
  uint64_t version = 0;
  std::map<uint64_t, std::vector<uint8_t>> inserts;
  std::vector<uint64_t> deletes;
  {
    std::lock_guard g(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return uint64_t{0};
    item = it->second.item;
    version = it->second.item_version;
    for (auto& [i, e] : it->second.inserts) inserts.emplace(i, e.first);
    for (auto& [i, r] : it->second.deletes) deletes.push_back(i);
  }
  RootRecord* rec = UBTRFS_TRY(fs_.fs_root(id.subvol));
  TreeRoot& root = *rec->tree;
  bool item_gone = false;
  if (item) {
    InodeItem v = *item;
    v.transid = h.transid;
    auto st = update_inode_item(h, root, id.objectid, v);
    if (!st) {
      // Evicted while we wrote (the reclaim thread runs beside operations): nothing to update.
      if (st.error().err != ENOENT) return fail(st.error());
      item_gone = true;
    }
  }
  for (uint64_t index : deletes) {
    auto st = delete_item(h, root, Key{id.objectid, kDirIndexKey, index});
    if (!st && st.error().err != ENOENT) return fail(st.error());
  }
  for (auto& [index, body] : inserts)
    UBTRFS_TRY_STATUS(insert_item(h, root, Key{id.objectid, kDirIndexKey, index}, body));
  uint64_t freed = 0;
  {
    std::lock_guard g(mu_);
    auto it = nodes_.find(id);
    if (it == nodes_.end()) return uint64_t{0};
    Node& n = it->second;
    if (n.item && (n.item_version == version || item_gone)) {
      freed += n.item_rsv;
      n.item_rsv = 0;
      n.item.reset();
      items_--;
    } else if (!n.item && n.item_rsv && !item) {
      // A reservation taken for an update that never came (reserve_update, then a failure).
      freed += n.item_rsv;
      n.item_rsv = 0;
    }
    for (auto& [index, body] : inserts) {
      auto ins = n.inserts.find(index);
      if (ins == n.inserts.end()) continue;
      freed += ins->second.second;
      n.inserts.erase(ins);
      items_--;
    }
    for (uint64_t index : deletes) {
      auto del = n.deletes.find(index);
      if (del == n.deletes.end()) continue;
      freed += del->second;
      n.deletes.erase(del);
      items_--;
    }
    if (n.empty()) nodes_.erase(it);
  }
  give_back(freed);
  return freed;
}

Result<uint64_t> DelayedInodes::run(TreeHandle& h, size_t max_nodes, bool lock_inodes,
                                    const std::function<bool(InodeId)>& skip) {
  std::vector<InodeId> ids;
  {
    std::lock_guard g(mu_);
    for (auto& [id, n] : nodes_) ids.push_back(id);
  }
  uint64_t freed = 0;
  size_t done = 0;
  for (InodeId id : ids) {
    if (max_nodes && done >= max_nodes) break;
    if (skip && skip(id)) continue;
    std::optional<InodeLocks::Guard> guard;
    if (lock_inodes) {
      guard = locks_.try_lock(id, std::chrono::milliseconds(0));
      if (!guard) continue;
    }
    freed += UBTRFS_TRY(run_node(h, id));
    done++;
  }
  return freed;
}

bool DelayedInodes::empty() const {
  std::lock_guard g(mu_);
  return nodes_.empty();
}

size_t DelayedInodes::pending_items() const {
  std::lock_guard g(mu_);
  return items_;
}

Status DelayedIndexQueue::insert(uint64_t dir, uint64_t index, std::vector<uint8_t> body) {
  return d_.insert_index(th_, InodeId{root_.objectid(), dir}, index, std::move(body));
}

Status DelayedIndexQueue::remove(uint64_t dir, uint64_t index, std::string_view name) {
  return d_.delete_index(th_, root_, InodeId{root_.objectid(), dir}, index, name);
}

}  // namespace ubtrfs::fs
