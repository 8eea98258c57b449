// Delayed inode items and delayed directory index items (btrfs delayed-inode.c; KERNEL.md §10; the
// ENOSPC seed's "Delayed inode operations").
//
// Owns, per inode (a "node"): the newest INODE_ITEM not yet written to its tree, and for a
// directory the DIR_INDEX insertions (index -> item body) and deletions not yet applied. Each
// pending change holds its reservation in the filesystem's delayed-items reserve (type DELAYED_OPS):
// an inode update metadata_size(1), taken the first time the inode becomes dirty since it was last
// written; an index insertion or deletion insert_size(1). The bytes come from the reservation of the
// handle that made the change (btrfs_delayed_inode_reserve_metadata migrates them from
// trans->block_rsv), else NO_FLUSH (or a flushing mode for callers that hold no handle).
//
// What a reader sees never changes: read_inode (fs/inode.h) returns the pending item when there is
// one, readdir merges the pending index changes with the tree (index_view). A node stays visible
// until the runner has written it and found it unchanged (a version check), so there is no window
// in which a reader sees the tree's older state.
//
// Who writes them (run()): the commit, with the gate closed (no handle runs), all of them before the
// delayed refs; the reclaim thread's FLUSH_DELAYED_ITEMS(_NR) states with a join handle charged to
// the delayed-items reserve, only for nodes whose inode lock it can take at once (a namespace
// operation holding the directory's lock may be between changing an index entry and finishing).
// Their number is bounded by their reservations: when the delayed-items reserve crowds out other
// reservations, tickets make the reclaim thread run them (btrfs's BTRFS_DELAYED_BACKGROUND worker
// is the reclaim thread's job here).
//
// Invariants: a pending item of an inode exists in its tree (new inodes are inserted directly, only
// updates are delayed); an evicted inode's node is forgotten before its items are deleted; a queued
// deletion names an index present in the tree, a queued insertion one absent from it.
// Thread safety: every method may be called concurrently; mu_ is a leaf lock (never held across a
// tree operation or a reservation).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "alloc/space_info.h"
#include "fs/dir_item.h"
#include "fs/inode.h"
#include "io/status.h"
#include "tree/format.h"

namespace ubtrfs::fs {

class FsInfo;
class TransHandle;

class DelayedInodes {
 public:
  DelayedInodes(FsInfo& fs, InodeLocks& locks) : fs_(fs), locks_(locks) {}
  // Releases the reservations of whatever is still pending (after a failed unmount commit).
  ~DelayedInodes();
  DelayedInodes(const DelayedInodes&) = delete;
  DelayedInodes& operator=(const DelayedInodes&) = delete;

  // The pending INODE_ITEM of `id`, if any.
  std::optional<InodeItem> inode(InodeId id) const;
  // btrfs_delayed_update_inode: `item` becomes the inode's INODE_ITEM; its sequence is bumped here,
  // its transid set when it is written. Reserves as described above (`mode` when `th` has nothing
  // to give; callers holding a handle must pass NO_FLUSH). Errors: ENOSPC, EINTR (nothing queued).
  [[nodiscard]] Status update_inode(TransHandle* th, InodeId id, const InodeItem& item, alloc::FlushMode mode);
  // Takes the inode update's reservation now (if the inode is not dirty already), so that a later
  // update_inode(nullptr, ...) finds it: callers that must not fail once they changed something
  // (write) reserve first. A reservation no update used is given back by the next run. `from`:
  // a reserve to draw the bytes from first (a write's reservation taken before its inode lock).
  [[nodiscard]] Status reserve_update(InodeId id, alloc::FlushMode mode, alloc::BlockRsv* from = nullptr);
  // Whether `id` already holds the reservation reserve_update would take (a hint: the next run may
  // use it up at any moment, and reserve_update then reserves again).
  bool update_reserved(InodeId id);
  // An access time update (touch_atime -> btrfs_update_time): only the atime of the pending item
  // changes, so it never clobbers a concurrent update of other fields (readers hold the inode lock
  // shared). Best effort: no reservation available (NO_FLUSH) means no update. Errors: ENOSPC.
  [[nodiscard]] Status update_atime(TreeRoot& root, InodeId id, const Timespec& atime);
  // Queues the DIR_INDEX (dir, index) with `body` (btrfs_insert_delayed_dir_index).
  [[nodiscard]] Status insert_index(TransHandle& th, InodeId dir, uint64_t index, std::vector<uint8_t> body);
  // Removes DIR_INDEX (dir, index), which must hold `name`: cancels a queued insertion, else queues
  // the deletion of the tree's item (btrfs_delete_delayed_dir_index). Errors: ENOENT, EUCLEAN.
  [[nodiscard]] Status delete_index(TransHandle& th, TreeRoot& root, InodeId dir, uint64_t index,
                                    std::string_view name);
  // readdir's view of `dir` from index `start` on: queued insertions and queued deletions.
  void index_view(InodeId dir, uint64_t start, std::map<uint64_t, std::vector<uint8_t>>* inserts,
                  std::set<uint64_t>* deletes) const;
  // The inode is being evicted: its pending changes go with their reservations.
  void forget(InodeId id);

  // Writes pending changes with `h`: every node (max_nodes 0), or up to max_nodes of them taking
  // each inode's lock without waiting (`lock_inodes`; the commit needs no locks: no handle runs).
  // Nodes for which `skip` says so are left alone. Returns the reservation bytes given back.
  // Errors: tree errors (the caller aborts).
  [[nodiscard]] Result<uint64_t> run(TreeHandle& h, size_t max_nodes, bool lock_inodes,
                                     const std::function<bool(InodeId)>& skip = {});

  bool empty() const;
  size_t pending_items() const;

 private:
  struct Node {
    std::optional<InodeItem> item;
    uint64_t item_version = 0;  // bumped by every update
    uint64_t item_rsv = 0;      // reserved for the item
    std::map<uint64_t, std::pair<std::vector<uint8_t>, uint64_t>> inserts;  // index -> (body, rsv)
    std::map<uint64_t, uint64_t> deletes;                                    // index -> rsv
    bool empty() const { return !item && item_rsv == 0 && inserts.empty() && deletes.empty(); }
  };
  // Bytes into the delayed-items reserve, from th's reservation if it can, else reserved with mode.
  // Returns what was reserved (0 when even that failed: the change is queued unreserved, the
  // commit's fallback chain pays; counted).
  [[nodiscard]] Result<uint64_t> take_reservation(TransHandle* th, uint64_t bytes, alloc::FlushMode mode);
  void give_back(uint64_t bytes);
  [[nodiscard]] Result<uint64_t> run_node(TreeHandle& h, InodeId id);

  FsInfo& fs_;
  InodeLocks& locks_;
  mutable std::mutex mu_;
  std::map<InodeId, Node> nodes_;  // GUARDED_BY(mu_)
  size_t items_ = 0;               // GUARDED_BY(mu_): pending changes, all nodes
};

// The DirIndexQueue (fs/dir_item.h) of one handle on one subvolume: what namespace operations pass
// to insert_dir_entry / delete_dir_entry so their DIR_INDEX changes are delayed.
class DelayedIndexQueue final : public DirIndexQueue {
 public:
  DelayedIndexQueue(DelayedInodes& d, TransHandle& th, TreeRoot& root) : d_(d), th_(th), root_(root) {}
  [[nodiscard]] Status insert(uint64_t dir, uint64_t index, std::vector<uint8_t> body) override;
  [[nodiscard]] Status remove(uint64_t dir, uint64_t index, std::string_view name) override;

 private:
  DelayedInodes& d_;
  TransHandle& th_;
  TreeRoot& root_;
};

}  // namespace ubtrfs::fs
