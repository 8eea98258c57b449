// ExtentAllocator: hands out tree blocks and data extents from block groups (btrfs extent-tree.c
// `find_free_extent`, `btrfs_alloc_tree_block`, `btrfs_free_tree_block`, `btrfs_reserve_extent`)
// and asks for a new chunk when the groups of a type are full.
//
// Owns: nothing on disk. Uses the BlockGroupCache (space accounting), DelayedRefs (every allocation
// and free is a reference change, run into the extent tree at commit) and a ChunkSource, the small
// interface through which it asks an upper layer (fs/transaction) to create a chunk.
//
// Rules (KERNEL.md §2, §7.1; tree/tree_block_allocator.h):
// - a tree block is nodesize-aligned, inside a METADATA group (SYSTEM for the chunk tree, objectid 3),
//   does not cross a 64 KiB stripe; its bytes go reserved -> used when its delayed ref runs;
// - free_tree_block: never written and born in the running transaction -> back to free space at
//   once (release_reserved) and its +1 ref cancelled; written and born in this transaction -> pinned
//   at once (its +1 ref cancels, the extent item never materialises); older -> a -1 delayed ref, the
//   extent item is deleted and the bytes pinned when the ref runs; pinned bytes free after commit;
// - data extents are sectorsize-aligned, in a DATA group, up to kMaxDataExtent bytes each;
// - chunk allocation is asked for when no group of the type has room; ENOSPC only when the
//   ChunkSource cannot create one either (the device is really full).
// - a block born in the running transaction whose +1 ref has ALREADY run (the committer runs refs in
//   a loop; COWs of extent-tree blocks free blocks whose refs ran) is `used`, no longer `reserved`:
//   its free is a plain -1 ref (item deleted and bytes pinned at the next run). The allocator tells
//   the cases apart by asking its BlockGroup whether the range is still reserved.
// - groups serve a type by their flag bits: METADATA (not SYSTEM) groups and mixed DATA|METADATA
//   groups serve tree blocks, SYSTEM groups the chunk tree, DATA (incl. mixed) groups data.
// free_tree_block cannot return an error (the TreeBlockAllocator interface); a failure there is
// recorded and returned by deferred_status(): the committer must abort the transaction if set
// (btrfs aborts the transaction in the same place).
// Thread safety: every method may be called concurrently (block groups lock themselves; a mutex
// serialises chunk creation so two threads do not both create a chunk for one shortage; mu_
// guards the level map and the deferred error).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "alloc/block_group.h"
#include "alloc/delayed_ref.h"
#include "alloc/space_infos.h"
#include "io/status.h"
#include "tree/fs_params.h"
#include "tree/tree_block_allocator.h"
#include "tree/tree_root.h"

namespace ubtrfs::alloc {

// Largest data extent btrfs creates (BTRFS_MAX_EXTENT_SIZE).
inline constexpr uint64_t kMaxDataExtent = 128ull << 20;

// What the allocator asks of the layer that can create chunks (ARCHITECTURE.md "Dependency rule").
class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  // Creates a chunk of `type` (kBlockGroupData / Metadata / System bits; the profile is the
  // source's business) big enough for at least `min_bytes`, adds its BlockGroup to the cache and its
  // mapping to the chunk map at once, and queues its items for the commit. Errors: ENOSPC.
  [[nodiscard]] virtual Status create_chunk(uint64_t type, uint64_t min_bytes) = 0;
};

class ExtentAllocator final : public TreeBlockAllocator {
 public:
  ExtentAllocator(const FsParams& fs, BlockGroupCache& groups, DelayedRefs& refs, ChunkSource& chunks)
      : fs_(fs), groups_(groups), refs_(refs), chunks_(chunks) {}

  // TreeBlockAllocator. root_objectid 3 (chunk tree) allocates from SYSTEM groups. The bytes are not
  // charged to any reservation (tests, tools); handles allocate through HandleAllocator, which
  // charges a block reserve first and then calls alloc_tree_block_charged.
  [[nodiscard]] Result<uint64_t> alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level,
                                                  uint64_t hint) override;
  // The same for bytes a reservation already holds in the space_info's may_use (they move to
  // reserved: btrfs_add_reserved_bytes).
  [[nodiscard]] Result<uint64_t> alloc_tree_block_charged(TreeHandle& h, uint64_t root_objectid, int level,
                                                          uint64_t hint);
  // Asks the ChunkSource for a chunk of `type` now (the fallback chain ran dry inside the existing
  // chunks). Errors: ENOSPC.
  [[nodiscard]] Status create_chunk(uint64_t type, uint64_t min_bytes);
  void free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                       bool written) override;

  // btrfs_reserve_extent for data: `len` (sectorsize multiple, <= kMaxDataExtent) contiguous bytes,
  // reserved. May return fewer than asked (>= min_len) when space is fragmented, like the kernel.
  // The caller writes the data, then records the reference with add_data_ref(new_alloc=true); if it
  // gives up before that, it calls release_data().
  // `charged`: the bytes were reserved in the DATA space_info's may_use (delalloc, fallocate); the
  // allocated length leaves may_use.
  struct DataExtent {
    uint64_t bytenr = 0, len = 0;
  };
  [[nodiscard]] Result<DataExtent> reserve_data(TreeHandle& h, uint64_t len, uint64_t min_len, uint64_t hint = 0,
                                                bool charged = false);
  // `charged`: the extent came from reserve_data(charged): its bytes return to may_use (the
  // reservation still owes them) before they become free.
  void release_data(uint64_t bytenr, uint64_t len, bool charged = false);

  // Data reference changes (a file extent item inserted or removed). `offset` is the file key
  // offset minus the extent offset (FORMAT.md §3.9). new_alloc: first reference of a reserve_data.
  [[nodiscard]] Status add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root, uint64_t ino,
                                    uint64_t offset, int delta, bool new_alloc);

  // Tree-log blocks (btrfs tree-log.c: log trees are allocated with btrfs_alloc_tree_block for
  // root TREE_LOG -6, which skips the delayed ref: a log block never gets an extent item, the
  // replay pins what the log references). A nodesize block of a METADATA group for which
  // `usable(group)` holds (the caller allows only groups the committed chunk tree maps: a replay
  // reads the log through the committed chunk tree), reserved, with no delayed ref. Never creates
  // a chunk (a new chunk is not in the committed chunk tree). Errors: ENOSPC.
  [[nodiscard]] Result<uint64_t> alloc_log_block(uint64_t hint, const std::function<bool(const BlockGroup&)>& usable);
  // Gives a log block back: `pin` (the block was written: a superblock written by an earlier fsync
  // may point at it) -> pinned until the commit unpins; else (never written, or the commit that
  // ends the log already wrote its superblock) -> free at once.
  void free_log_block(uint64_t bytenr, bool pin);

  // ---- shared blocks (alloc/shared_refs.cpp: the snapshot reference rules) ----
  // The extent tree the lookups read (set once at open, before any handle).
  void set_extent_root(TreeRoot* root) { extent_root_ = root; }
  // btrfs_lookup_extent_info: a tree block's reference count and flags, the extent tree's item plus
  // what the delayed-ref queue will add. Waits while a runner holds its head. Errors: EUCLEAN (no
  // item and nothing queued), EIO.
  struct ExtentInfo {
    uint64_t refs = 0, flags = 0;
  };
  [[nodiscard]] Result<ExtentInfo> lookup_extent_info(uint64_t bytenr, int level);
  // btrfs_inc_ref / btrfs_dec_ref: every child pointer (node) or regular file extent (leaf) of `eb`
  // gains / loses one reference: shared, held by eb.start() (full_backref), or keyed to eb's owner.
  [[nodiscard]] Status inc_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref);
  [[nodiscard]] Status dec_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref);
  // btrfs_set_disk_extent_flags (FULL_BACKREF) on a tree block's extent item, when its head runs.
  [[nodiscard]] Status set_extent_flags(TreeHandle& h, uint64_t bytenr, uint64_t flags);
  // TreeBlockAllocator (tree_block_allocator.h; the rules are in shared_refs.cpp).
  [[nodiscard]] Result<bool> update_ref_for_cow(TreeHandle& h, TreeRoot& root, const ExtentBuffer& buf,
                                                const ExtentBuffer& cow) override;
  void drop_tree_block_ref(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, int level) override;
  // Drops the SHARED_BLOCK_REF the block at `parent` holds on `bytenr` (dropping a dead tree).
  [[nodiscard]] Status drop_shared_tree_ref(TreeHandle& h, uint64_t bytenr, int level, uint64_t parent);

  // Bytes of free space in groups of `type` (statfs, space_info); mixed groups count for both.
  uint64_t free_bytes(uint64_t type) const;

  // First error met by free_tree_block (which cannot return one); {} if none.
  [[nodiscard]] Status deferred_status() const;

  // Whether a group with `flags` may hold an extent of `type` (kBlockGroupData/Metadata/System).
  static bool group_serves(uint64_t flags, uint64_t type);

 private:
  [[nodiscard]] Result<uint64_t> reserve(uint64_t type, uint64_t len, uint64_t min_len, uint64_t align,
                                         uint64_t boundary, uint64_t hint, uint64_t* got_len, bool charged);
  [[nodiscard]] Result<uint64_t> alloc_tree_block_impl(TreeHandle& h, uint64_t root_objectid, int level,
                                                       uint64_t hint, bool charged);
  void record_error(Error e);
  [[nodiscard]] Status mod_ref(TreeHandle& h, const ExtentBuffer& eb, bool full_backref, int delta);
  // Level of a block allocated in transaction `transid`, so its drop cancels its add exactly
  // (RefKey carries the level). Entries of older transactions are dropped lazily.
  void remember_level(uint64_t transid, uint64_t bytenr, int level);
  std::optional<int> forget_level(uint64_t transid, uint64_t bytenr);

  Result<uint64_t> reserve_in_groups(uint64_t type, uint64_t len, uint64_t min_len, uint64_t align,
                                     uint64_t boundary, uint64_t hint, uint64_t* got_len, bool charged);

  const FsParams& fs_;
  BlockGroupCache& groups_;
  DelayedRefs& refs_;
  ChunkSource& chunks_;
  TreeRoot* extent_root_ = nullptr;
  std::mutex chunk_mu_;
  mutable std::mutex mu_;
  uint64_t levels_transid_ = 0;                   // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, int> levels_;      // GUARDED_BY(mu_) bytenr -> level, this transaction
  std::optional<Error> deferred_error_;           // GUARDED_BY(mu_)
};

// The tree-block allocator of one transaction handle (TreeHandle::allocator): for every new tree
// block, including each COW, it picks the block reserve the kernel would charge (btrfs
// get_block_rsv: the chunk tree -> chunk reserve; root and dev trees -> global; extent, free space
// and block group trees -> delayed refs; the csum tree -> the handle's reserve while it adds
// checksums, else delayed refs; subvolume and uuid trees -> the handle's reserve, or none), takes
// the bytes through the fallback chain (SpaceInfos::use_block_rsv), and only then allocates. When
// even FLUSH_EMERGENCY finds no room inside the existing chunks, one chunk of the type is created
// and the chain retried: the overcommit a reservation relied on is backed by unallocated space
// (space_info.h), so this is where it becomes real.
// Thread safety: one handle is used by one thread at a time.
class HandleAllocator final : public TreeBlockAllocator {
 public:
  HandleAllocator(ExtentAllocator& extents, SpaceInfos& spaces, uint32_t nodesize)
      : extents_(extents), spaces_(spaces), nodesize_(nodesize) {}

  // btrfs trans->block_rsv: where this handle's subvolume-tree blocks come from (the trans reserve,
  // an inode's delalloc reserve, a temp reserve), null for none.
  BlockRsv* block_rsv = nullptr;
  // Bytes of block_rsv that this handle itself put there and has not used yet: a block taken from
  // the shared reserve past it counts as "beyond_handle" (an overrun paid by other handles).
  uint64_t handle_share = 0;
  // btrfs trans->delayed_rsv: the handle's own delayed-ref bytes, moved to the delayed-refs reserve
  // as the tree-block references it queues are counted (null: a handle without one).
  BlockRsv* delayed_rsv = nullptr;
  uint64_t blocks_allocated = 0;

  [[nodiscard]] Result<uint64_t> alloc_tree_block(TreeHandle& h, uint64_t root_objectid, int level,
                                                  uint64_t hint) override;
  void free_tree_block(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, uint64_t generation,
                       bool written) override;
  [[nodiscard]] Result<bool> update_ref_for_cow(TreeHandle& h, TreeRoot& root, const ExtentBuffer& buf,
                                                const ExtentBuffer& cow) override {
    auto r = extents_.update_ref_for_cow(h, root, buf, cow);
    account_ref_updates(h);
    return r;
  }
  void drop_tree_block_ref(TreeHandle& h, uint64_t root_objectid, uint64_t bytenr, int level) override {
    extents_.drop_tree_block_ref(h, root_objectid, bytenr, level);
    account_ref_updates(h);
  }
  // Moves the reservation of the delayed-ref heads the handle queued into the delayed-refs reserve now
  // (SpaceInfos::update_delayed_refs_rsv) and zeroes the count.
  void account_ref_updates(TreeHandle& h);
  // The reserve a block of `root_objectid` is charged to.
  BlockRsv* pick_rsv(uint64_t root_objectid);

 private:
  ExtentAllocator& extents_;
  SpaceInfos& spaces_;
  uint32_t nodesize_;
};

}  // namespace ubtrfs::alloc
