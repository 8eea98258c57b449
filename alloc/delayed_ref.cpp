// DelayedRefs implementation; see delayed_ref.h.
#include "alloc/delayed_ref.h"

namespace ubtrfs::alloc {

Result<bool> DelayedRefs::add(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref, int delta,
                              bool new_alloc, uint64_t transid) {
  if (delta == 0) return false;
  std::lock_guard lock(mu_);
  return add_locked(bytenr, num_bytes, is_data, ref, delta, new_alloc, transid);
}

Result<bool> DelayedRefs::cancel_new_tree_alloc(uint64_t bytenr, uint64_t nodesize, uint64_t root, int level,
                                                uint64_t transid) {
  std::lock_guard lock(mu_);
  auto it = heads_.find(bytenr);
  if (it == heads_.end() || !it->second.must_insert || it->second.refs.empty()) return false;
  // Only when root's own +1 is all the head holds: a block a snapshot of this transaction shares
  // (FORCE_COW) has other references and materialises anyway; its drop is a plain -1.
  if (it->second.total_ref_mod != 1 || it->second.set_flags != 0) return false;
  for (const auto& [rk, d] : it->second.refs)
    if (rk.parent != 0 || rk.root != root) return false;
  UBTRFS_TRY(add_locked(bytenr, nodesize, false, RefKey{root, static_cast<uint64_t>(level), 0}, -1, false, transid));
  return true;
}

Result<std::pair<std::map<uint64_t, DelayedRefHead>::iterator, bool>> DelayedRefs::head_locked(uint64_t bytenr,
                                                                                             uint64_t num_bytes,
                                                                                             bool is_data,
                                                                                             uint64_t transid) {
  auto [it, inserted] = heads_.try_emplace(bytenr);
  auto& h = it->second;
  if (inserted) {
    h.bytenr = bytenr;
    h.num_bytes = num_bytes;
    h.is_data = is_data;
    h.first_ref_generation = transid;
  } else if (h.num_bytes != num_bytes || h.is_data != is_data) {
    return fail(EUCLEAN, "delayed ref for extent {} disagrees with its head: {} {} bytes, was {} {} bytes", bytenr,
                is_data ? "data" : "tree", num_bytes, h.is_data ? "data" : "tree", h.num_bytes);
  }
  return std::pair{it, inserted};
}

Result<bool> DelayedRefs::add_locked(uint64_t bytenr, uint64_t num_bytes, bool is_data, const RefKey& ref,
                                     int delta, bool new_alloc, uint64_t transid) {
  if (new_alloc) {
    // A cancelled tree-block head (allocated, never written, freed: its run does nothing) gave its
    // bytes back at once; a new extent allocated there in the same transaction takes the head over
    // (btrfs drops such a head in `check_ref_cleanup` before the bytes can be reused): a tree block,
    // or with mixed block groups a data extent of any length. Not a new head: the cancelled one
    // was paid for.
    if (auto old = heads_.find(bytenr);
        old != heads_.end() && !old->second.is_data && old->second.cancelled() && old->second.set_flags == 0)
      old->second = DelayedRefHead{.bytenr = bytenr, .num_bytes = num_bytes, .is_data = is_data};
  }
  const auto [it, inserted] = UBTRFS_TRY(head_locked(bytenr, num_bytes, is_data, transid));
  auto& h = it->second;
  if (new_alloc) {
    // Anything else allocated twice is a bug.
    if (h.must_insert || (!inserted && !h.refs.empty()))
      return fail(EUCLEAN, "extent {} allocated twice in one transaction", bytenr);
    h.must_insert = true;
    h.first_ref_generation = transid;
  }
  int64_t& d = h.refs[ref];
  d += delta;
  h.total_ref_mod += delta;
  if (d == 0) h.refs.erase(ref);
  // A head with nothing left to do (no net change, no flags, not a new extent) disappears; a
  // cancelled new extent stays so the committer can return its reserved space.
  if (h.refs.empty() && !h.must_insert && h.set_flags == 0) heads_.erase(it);
  return inserted;
}

Result<bool> DelayedRefs::add_tree_ref(uint64_t bytenr, uint64_t nodesize, uint64_t root, int level, int delta,
                                 bool new_alloc, uint64_t transid) {
  return add(bytenr, nodesize, false, RefKey{root, static_cast<uint64_t>(level), 0}, delta, new_alloc, transid);
}

Result<bool> DelayedRefs::add_data_ref(uint64_t bytenr, uint64_t num_bytes, uint64_t root, uint64_t ino, uint64_t offset,
                                 int delta, bool new_alloc, uint64_t transid) {
  return add(bytenr, num_bytes, true, RefKey{root, ino, offset}, delta, new_alloc, transid);
}

Result<bool> DelayedRefs::add_shared_tree_ref(uint64_t bytenr, uint64_t nodesize, uint64_t parent, int level, int delta,
                                        uint64_t transid) {
  if (parent == 0) return fail(EINVAL, "shared ref on tree block {} without a parent", bytenr);
  return add(bytenr, nodesize, false, RefKey{0, static_cast<uint64_t>(level), 0, parent}, delta, false, transid);
}

Result<bool> DelayedRefs::add_shared_data_ref(uint64_t bytenr, uint64_t num_bytes, uint64_t parent, int delta,
                                        uint64_t transid) {
  if (parent == 0) return fail(EINVAL, "shared ref on data extent {} without a parent", bytenr);
  return add(bytenr, num_bytes, true, RefKey{0, 0, 0, parent}, delta, false, transid);
}

Result<bool> DelayedRefs::add_extent_flags(uint64_t bytenr, uint64_t nodesize, uint64_t flags, uint64_t transid) {
  std::lock_guard lock(mu_);
  const auto head = UBTRFS_TRY(head_locked(bytenr, nodesize, false, transid));
  head.first->second.set_flags |= flags;
  return head.second;
}

void DelayedRefs::note_taken(uint64_t bytenr) { running_.insert(bytenr); }

DelayedRefs::Pending DelayedRefs::pending_for_lookup(uint64_t bytenr, uint64_t* epoch) const {
  std::unique_lock lock(mu_);
  run_done_.wait(lock, [&] { return !running_.contains(bytenr); });
  if (epoch) *epoch = take_epoch_;
  Pending p;
  auto it = heads_.find(bytenr);
  if (it == heads_.end()) return p;
  p.queued = true;
  p.must_insert = it->second.must_insert;
  p.ref_mod = it->second.total_ref_mod;
  p.set_flags = it->second.set_flags;
  return p;
}

uint64_t DelayedRefs::take_epoch() const {
  std::lock_guard lock(mu_);
  return take_epoch_;
}

void DelayedRefs::finish_run() {
  {
    std::lock_guard lock(mu_);
    running_.clear();
  }
  run_done_.notify_all();
}

bool DelayedRefs::queued_new_alloc(uint64_t bytenr) const {
  std::lock_guard lock(mu_);
  auto it = heads_.find(bytenr);
  return it != heads_.end() && it->second.must_insert && !it->second.refs.empty();
}

std::vector<DelayedRefs::PendingDrop> DelayedRefs::pending_data_drops() const {
  std::lock_guard lock(mu_);
  std::vector<PendingDrop> out;
  for (const auto& [b, h] : heads_)
    if (h.is_data && !h.must_insert && h.total_ref_mod < 0) out.push_back({b, h.num_bytes, h.total_ref_mod});
  return out;
}

std::optional<DelayedRefHead> DelayedRefs::peek(uint64_t bytenr) const {
  std::lock_guard lock(mu_);
  auto it = heads_.find(bytenr);
  if (it == heads_.end()) return std::nullopt;
  return it->second;
}

size_t DelayedRefs::num_heads() const {
  std::lock_guard lock(mu_);
  return heads_.size();
}

std::vector<DelayedRefHead> DelayedRefs::take_some(size_t max) {
  std::lock_guard lock(mu_);
  std::vector<DelayedRefHead> out;
  if (!heads_.empty()) ++take_epoch_;
  for (auto it = heads_.begin(); it != heads_.end() && out.size() < max;) {
    note_taken(it->first);
    out.push_back(std::move(it->second));
    it = heads_.erase(it);
  }
  return out;
}

std::vector<DelayedRefHead> DelayedRefs::take_all() {
  std::lock_guard lock(mu_);
  std::vector<DelayedRefHead> out;
  out.reserve(heads_.size());
  if (!heads_.empty()) ++take_epoch_;
  for (auto& [b, h] : heads_) {
    note_taken(b);
    out.push_back(std::move(h));
  }
  heads_.clear();
  return out;
}

}  // namespace ubtrfs::alloc
