// TreeLog: what an fsync copies into the log and when it falls back (btrfs tree-log.c
// `btrfs_log_inode`, `copy_items`, `btrfs_log_inode_parent`'s checks); tree_log_sync.cpp writes
// the log and the superblock. See tree_log.h for the rules.
#include "fs/tree_log.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include <spdlog/spdlog.h>

#include "fs/chunk_creator.h"
#include "fs/csum_tree.h"
#include "fs/dir_item.h"
#include "fs/file_data.h"
#include "fs/file_extent.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

uint64_t round_up_sat(uint64_t v, uint64_t a) { return v > UINT64_MAX - a ? UINT64_MAX : (v + a - 1) / a * a; }

struct RawItem {
  Key key;
  std::vector<uint8_t> data;
};

// Every item with from <= key <= to, copied, in key order (read-only, no handle).
Result<std::vector<RawItem>> scan_items(TreeRoot& root, const Key& from, const Key& to) {
  std::vector<RawItem> out;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root, from, p, 0, false));
  if (p.leaf().nritems() == 0) return out;
  if (p.slots[0] >= static_cast<int>(p.leaf().nritems())) {
    p.slots[0] = static_cast<int>(p.leaf().nritems()) - 1;
    if (!UBTRFS_TRY(next_item(root, p))) return out;
  }
  for (;;) {
    const Key k = p.leaf().item_key(p.slot());
    if (k > to) break;
    auto d = p.leaf().item_data(p.slot());
    out.push_back(RawItem{k, std::vector<uint8_t>(d.begin(), d.end())});
    if (!UBTRFS_TRY(next_item(root, p))) break;
  }
  return out;
}

// The EXTENT_DATA items of `ino` that may intersect [lo, hi): from the last item starting at or
// before lo (it may reach into the range) to the last one starting before hi.
Result<std::vector<RawItem>> scan_extents(TreeRoot& root, uint64_t ino, uint64_t lo, uint64_t hi) {
  Key from{ino, kExtentDataKey, lo};
  {
    Path p;
    const int r = UBTRFS_TRY(search_slot(nullptr, root, from, p, 0, false));
    if (r == 1 && p.leaf().nritems() > 0) {
      if (p.slots[0] >= static_cast<int>(p.leaf().nritems())) p.slots[0] = static_cast<int>(p.leaf().nritems());
      // Step to the item before the insertion point (crossing leaves).
      bool have = true;
      if (p.slots[0] > 0) {
        --p.slots[0];
      } else {
        have = UBTRFS_TRY(prev_leaf(root, p));
      }
      if (have) {
        const Key k = p.leaf().item_key(p.slot());
        if (k.objectid == ino && k.type == kExtentDataKey) from = k;
      }
    }
  }
  if (hi == 0) return std::vector<RawItem>{};
  return scan_items(root, from, Key{ino, kExtentDataKey, hi - 1});
}

// Deletes every item of `keys` from `root`.
Status delete_keys(TreeHandle& h, TreeRoot& root, const std::vector<Key>& keys) {
  for (const Key& k : keys) UBTRFS_TRY_STATUS(delete_item(h, root, k));
  return {};
}

std::span<const uint8_t> bytes_of(const auto& v) {
  return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof(v));
}

// Inserts `key` with `data`, or overwrites the existing item of that key and size.
Status put_item(TreeHandle& h, TreeRoot& root, const Key& key, std::span<const uint8_t> data) {
  {
    Path p;
    const int r = UBTRFS_TRY(search_slot(&h, root, key, p, 0, true));
    if (r == 0) {
      auto d = p.leaf().item_data(p.slot());
      if (d.size() == data.size()) {
        std::memcpy(d.data(), data.data(), data.size());
        root.ctx().cache.mark_dirty(p.nodes[0]);
        return {};
      }
    }
  }
  if (auto st = delete_item(h, root, key); !st && st.error().err != ENOENT) return st;
  return insert_item(h, root, key, data);
}

}  // namespace

const char* log_fallback_name(LogFallback f) {
  switch (f) {
    case LogFallback::kNotRegular: return "not_regular";
    case LogFallback::kNoLinks: return "no_links";
    case LogFallback::kUnlinkedName: return "unlinked_name";
    case LogFallback::kNewParent: return "new_parent";
    case LogFallback::kUncommittedChunk: return "uncommitted_chunk";
    case LogFallback::kLogFailed: return "log_failed";
    case LogFallback::kTransaction: return "transaction";
  }
  return "?";
}

TreeLog::TreeLog(FsInfo& fs)
    : fs_(fs), alloc_(fs.allocator(), [this](const alloc::BlockGroup& bg) { return committed_group(bg.start()); }) {
  // Every group known at mount is in the committed chunk tree.
  for (auto* bg : fs.block_groups().all()) committed_groups_.insert(bg->start());
}

TreeLog::~TreeLog() = default;

void TreeLog::note_change(InodeId id, uint64_t transid, uint64_t start, uint64_t end) {
  if (start >= end) return;
  std::lock_guard g(mu_);
  Change& c = changes_[id];
  c.transid = std::max(c.transid, transid);
  c.start = std::min(c.start, start);
  c.end = std::max(c.end, end);
}

void TreeLog::note_unlink(InodeId id, uint64_t transid) {
  std::lock_guard g(mu_);
  Change& c = changes_[id];
  c.transid = std::max(c.transid, transid);
  c.unlink_trans = std::max(c.unlink_trans, transid);
  if (logged_.count(id)) logged_name_removed_ = true;
}

bool TreeLog::committed_group(uint64_t start) const {
  std::lock_guard g(mu_);
  return committed_groups_.count(start) != 0;
}

void TreeLog::count_fallback(LogFallback f) {
  std::lock_guard g(mu_);
  ++stats_.fallbacks[static_cast<int>(f)];
}

TreeLogStats TreeLog::stats() const {
  std::lock_guard g(mu_);
  return stats_;
}

uint64_t TreeLog::log_root_bytenr() const { return log_root_bytenr_.load(std::memory_order_acquire); }

bool TreeLog::active() const { return active_.load(std::memory_order_acquire); }

void TreeLog::drop_log_locked() {
  // The buffers go first (STALE, out of the dirty set): nothing may write them once their blocks
  // can be reused, and the commit never writes a log block.
  for (uint64_t b : alloc_.live())
    if (EbRef eb = fs_.cache().find(b)) fs_.cache().forget(eb);
  subvol_logs_.clear();
  log_root_tree_.reset();
  log_transid_ = 0;
  abandoned_ = false;
  std::lock_guard g(mu_);
  logged_.clear();
  logged_name_removed_ = false;
}

void TreeLog::commit_forget() {
  std::lock_guard lk(log_mu_);
  drop_log_locked();
}

void TreeLog::commit_release(uint64_t committed_transid) {
  std::lock_guard lk(log_mu_);
  // The superblock of `committed_transid` (log_root 0) is on disk: nothing references the log.
  const uint64_t released = alloc_.release_all();
  const bool had_log = active_.exchange(false);
  log_root_bytenr_.store(0, std::memory_order_release);
  std::set<uint64_t> groups = committed_group_starts();  // before mu_: it takes the chunk planning lock
  std::lock_guard g(mu_);
  if (had_log || released) ++stats_.logs_dropped;
  // Changes of committed transactions are durable through the commit.
  for (auto it = changes_.begin(); it != changes_.end();)
    it = it->second.transid <= committed_transid ? changes_.erase(it) : std::next(it);
  // The groups of this commit: every cached group except chunks still pending. A chunk may be
  // planned while the commit runs (phase 1 of fs/chunk_creator.h needs no handle: the reclaim
  // thread allocates ahead of need); its group is in the cache, its items only in the next
  // commit. Counting it here let an fsync log an extent in it, and a power cut before that next
  // commit left a log the kernel could not replay ("failed to allocate logged data extent", EINVAL:
  // no block group) — rule tree_log_never_counts_a_pending_chunk_as_committed.
  committed_groups_ = std::move(groups);
}

std::set<uint64_t> TreeLog::committed_group_starts() const {
  const std::set<uint64_t> pending = fs_.chunk_creator().pending_starts();
  std::set<uint64_t> out;
  for (auto* bg : fs_.block_groups().all())
    if (!pending.count(bg->start())) out.insert(bg->start());
  return out;
}

std::optional<LogFallback> TreeLog::sync_inode(InodeId id) {
  auto fallback = [&](LogFallback f) {
    count_fallback(f);
    return std::optional<LogFallback>(f);
  };
  if (fs_.read_only() || fs_.transactions().aborted()) return fallback(LogFallback::kTransaction);
  // A handle of the running transaction keeps the commit from running (it waits for handles)
  // while the log is built and its superblock written; taken before log_mu_ (the commit's hooks
  // take log_mu_ with the gate closed).
  auto th = fs_.transactions().join();
  if (!th) return fallback(LogFallback::kTransaction);
  const uint64_t transid = th->transid();
  std::unique_lock lk(log_mu_);
  if (abandoned_ || (log_transid_ != 0 && log_transid_ != transid)) return fallback(LogFallback::kLogFailed);

  auto rr = fs_.fs_root(id.subvol);
  if (!rr) return fallback(LogFallback::kLogFailed);
  TreeRoot& root = *(*rr)->tree;
  auto ii = read_inode(fs_, root, id.objectid);
  if (!ii) return fallback(LogFallback::kLogFailed);
  // Only regular files: a directory's log needs its entries and the deletions replay must redo
  // (btrfs logs them with DIR_LOG items); symlinks and special files are rare enough to commit.
  if (!S_ISREG(ii->mode.get())) return fallback(LogFallback::kNotRegular);
  // nlink 0: replay would have to recreate an orphan (btrfs logs it with an orphan item).
  if (ii->nlink.get() == 0) return fallback(LogFallback::kNoLinks);
  uint64_t start = UINT64_MAX, end = 0, unlink_trans = 0;
  bool log_has_removed_name = false;
  {
    std::lock_guard g(mu_);
    log_has_removed_name = logged_name_removed_;
    auto it = changes_.find(id);
    if (it != changes_.end()) {
      unlink_trans = it->second.unlink_trans;
      start = it->second.start;
      end = it->second.end;
    }
  }
  // A removed name (unlink of a hard link, rename of or over it): replay adds the logged names and
  // drops names of the same parent missing from the log, but an old name in another directory
  // would survive (btrfs last_unlink_trans -> full commit).
  if (unlink_trans >= transid || log_has_removed_name) return fallback(LogFallback::kUnlinkedName);
  // Every parent directory must exist in the committed tree: replay adds the name to it, it does
  // not create it (btrfs would log the new ancestors; we commit).
  auto refs = list_inode_refs(root, id.objectid);
  if (!refs) return fallback(LogFallback::kLogFailed);
  for (const auto& r : *refs) {
    auto pi = read_inode(fs_, root, r.parent);
    if (!pi) return fallback(LogFallback::kLogFailed);
    if (pi->generation.get() >= transid) return fallback(LogFallback::kNewParent);
  }

  TreeHandle lh;
  lh.transid = transid;
  lh.allocator = &alloc_;
  lh.cow_overwrite = false;  // never for log trees (ctree_cow.cpp excludes them anyway)
  lh.wb_inhibit = false;     // log blocks are written WB_SYNC_ALL, nothing inhibits them
  auto logged = log_inode(lh, id, *ii, root, start, end);
  if (!logged) {
    if (logged.error().err == EXDEV) return fallback(LogFallback::kUncommittedChunk);
    // The log trees may be half-changed: abandoned until the commit drops them. The superblock
    // on disk still names the previous, complete log, whose written blocks stay pinned.
    spdlog::warn("{}: logging inode {} of root {} failed, falling back to a commit: {}", fs_.path(), id.objectid,
                 id.subvol, logged.error().message);
    abandoned_ = true;
    return fallback(LogFallback::kLogFailed);
  }
  if (auto st = write_log(lh); !st) {
    spdlog::warn("{}: writing the tree log failed, falling back to a commit: {}", fs_.path(), st.error().message);
    abandoned_ = true;
    return fallback(LogFallback::kLogFailed);
  }
  {
    std::lock_guard g(mu_);
    auto it = changes_.find(id);
    if (it != changes_.end()) {
      it->second.start = UINT64_MAX;
      it->second.end = 0;
    }
    logged_.insert(id);
    ++stats_.synced;
  }
  lk.unlock();
  th->end();
  return std::nullopt;
}

Status TreeLog::log_inode(TreeHandle& lh, InodeId id, const InodeItem& ii, TreeRoot& root, uint64_t start,
                          uint64_t end) {
  const FsParams& fs = fs_.params();
  const uint64_t ss = fs.sectorsize;
  const uint64_t ino = id.objectid;

  // ---- read-only phase: everything the log will hold, and whether it can hold it ----
  // Log items of the inode before this sync (the extents among them decide how far R extends).
  SubvolLog& sl = subvol_logs_[id.subvol];
  std::vector<RawItem> fs_extents;
  std::vector<Key> stale_extents;
  uint64_t lo = 0, hi = 0;
  if (start < end) {
    lo = round_down(start, ss);
    hi = round_up_sat(end, ss);
    // Extend R until no tree or log extent item crosses its edges (btrfs logs whole items).
    for (bool grew = true; grew;) {
      grew = false;
      auto widen = [&](std::vector<RawItem>& items) -> Status {
        for (const auto& it : items) {
          const FileExtent e = UBTRFS_TRY(parse_file_extent(it.key, it.data, fs.sectorsize));
          const uint64_t e_end = e.end(fs.sectorsize);
          if (e_end <= lo || e.file_offset >= hi) continue;
          if (e.file_offset < lo) lo = e.file_offset, grew = true;
          if (e_end > hi) hi = e_end, grew = true;
        }
        return {};
      };
      fs_extents = UBTRFS_TRY(scan_extents(root, ino, lo, hi));
      UBTRFS_TRY_STATUS(widen(fs_extents));
      if (sl.tree) {
        auto logged = UBTRFS_TRY(scan_extents(*sl.tree, ino, lo, hi));
        UBTRFS_TRY_STATUS(widen(logged));
      }
    }
    if (sl.tree) {
      for (const auto& it : UBTRFS_TRY(scan_extents(*sl.tree, ino, lo, hi))) {
        const FileExtent e = UBTRFS_TRY(parse_file_extent(it.key, it.data, fs.sectorsize));
        if (e.end(fs.sectorsize) > lo && e.file_offset < hi) stale_extents.push_back(it.key);
      }
    }
    std::erase_if(fs_extents, [&](const RawItem& it) {
      auto e = parse_file_extent(it.key, it.data, fs.sectorsize);
      return !e || e->end(fs.sectorsize) <= lo || e->file_offset >= hi;
    });
  }
  // The data of every logged extent must be reachable through the committed chunk tree, which a
  // replay maps with; and the checksums of extents born in this transaction go into the log
  // (replay copies them from there; older extents have theirs in the committed csum tree).
  struct CsumRun {
    uint64_t bytenr;
    std::vector<uint8_t> csums;
  };
  std::vector<CsumRun> csum_runs;
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  {
    const uint64_t isize_al = round_up_sat(ii.size, ss);
    uint64_t cursor = lo;
    auto hole = [&](uint64_t from, uint64_t to) {
      to = std::min(to, isize_al);
      if (from < to) holes.emplace_back(from, to);
    };
    for (const auto& it : fs_extents) {
      const FileExtent e = UBTRFS_TRY(parse_file_extent(it.key, it.data, fs.sectorsize));
      if (e.file_offset > cursor) hole(cursor, e.file_offset);
      cursor = std::max(cursor, e.end(fs.sectorsize));
      if (e.is_inline() || e.is_hole()) continue;
      auto* bg = fs_.block_groups().find(e.disk_bytenr);
      if (!bg || !committed_group(bg->start()))
        return fail(EXDEV, "extent at {} of inode {} is in a block group created in this transaction", e.disk_bytenr,
                    ino);
      if (e.generation != lh.transid || e.is_prealloc()) continue;
      const bool compressed = e.compression != kCompressNone;
      const uint64_t cs_start = compressed ? e.disk_bytenr : e.disk_bytenr + e.offset;
      const uint64_t cs_len = compressed ? e.disk_num_bytes : e.num_bytes;
      const CsumRange cr = UBTRFS_TRY(lookup_csums(*fs_.csum_root().tree, fs, cs_start, cs_len));
      const size_t csz = fs.csum_size();
      for (size_t i = 0; i < cr.present.size();) {
        if (!cr.present[i]) {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < cr.present.size() && cr.present[j]) ++j;
        csum_runs.push_back(CsumRun{cs_start + i * ss, std::vector<uint8_t>(cr.csums.begin() + i * csz,
                                                                           cr.csums.begin() + j * csz)});
        i = j;
      }
    }
    if (start < end) hole(cursor, hi);
  }
  // INODE_REF, INODE_EXTREF, XATTR_ITEM: all of them (replay drops names and xattrs the log lacks).
  std::vector<RawItem> names_xattrs;
  for (auto& it : UBTRFS_TRY(scan_items(root, Key{ino, kInodeRefKey, 0}, Key{ino, kXattrItemKey, UINT64_MAX})))
    if (it.key.type == kInodeRefKey || it.key.type == kInodeExtrefKey || it.key.type == kXattrItemKey)
      names_xattrs.push_back(std::move(it));

  // ---- the log changes ----
  if (!log_root_tree_) {
    log_root_tree_ = std::make_unique<TreeRoot>(fs_.tree_ctx(), kTreeLogObjectid);
    UBTRFS_TRY_STATUS(create_empty_tree(lh, *log_root_tree_));
    log_transid_ = lh.transid;
    active_.store(true, std::memory_order_release);
  }
  if (!sl.tree) {
    sl.tree = std::make_unique<TreeRoot>(fs_.tree_ctx(), kTreeLogObjectid);
    UBTRFS_TRY_STATUS(create_empty_tree(lh, *sl.tree));
  }
  TreeRoot& log = *sl.tree;
  uint64_t inserted = 0;
  // The inode's previous INODE_ITEM, names and xattrs in the log are replaced as a whole.
  {
    std::vector<Key> old;
    for (const auto& it : UBTRFS_TRY(scan_items(log, Key{ino, kInodeItemKey, 0}, Key{ino, kXattrItemKey, UINT64_MAX})))
      old.push_back(it.key);
    UBTRFS_TRY_STATUS(delete_keys(lh, log, old));
  }
  InodeItem logged = ii;
  logged.transid = lh.transid;  // btrfs fill_inode_item: the transaction that logs it
  UBTRFS_TRY_STATUS(insert_item(lh, log, Key{ino, kInodeItemKey, 0}, bytes_of(logged)));
  ++inserted;
  for (const auto& it : names_xattrs) {
    UBTRFS_TRY_STATUS(insert_item(lh, log, it.key, it.data));
    ++inserted;
  }
  UBTRFS_TRY_STATUS(delete_keys(lh, log, stale_extents));
  for (const auto& it : fs_extents) {
    UBTRFS_TRY_STATUS(insert_item(lh, log, it.key, it.data));
    ++inserted;
  }
  for (auto [from, to] : holes) {
    const FileExtentItem h = make_file_extent(lh.transid, kFileExtentReg, 0, 0, 0, to - from, to - from);
    UBTRFS_TRY_STATUS(insert_item(lh, log, Key{ino, kExtentDataKey, from}, bytes_of(h)));
    ++inserted;
  }
  for (const auto& run : csum_runs) {
    // An extent split in two items is met twice: its checksums go in once.
    UBTRFS_TRY_STATUS(delete_csums(lh, log, fs, run.bytenr, run.csums.size() / fs.csum_size() * ss));
    UBTRFS_TRY_STATUS(insert_csums(lh, log, fs, run.bytenr, run.csums));
    ++inserted;
  }
  // The subvolume's log root in the log root tree (btrfs update_log_root; the root item fields as
  // btrfs_add_log_tree sets them).
  EbRef node = log.node();
  RootItem ri{};
  ri.inode.generation = 1;
  ri.inode.size = 3;
  ri.inode.nlink = 1;
  ri.inode.nbytes = fs.nodesize;
  ri.inode.mode = S_IFDIR | 0755;
  ri.generation = lh.transid;
  ri.generation_v2 = lh.transid;
  ri.bytenr = node->start();
  ri.level = static_cast<uint8_t>(node->level());
  UBTRFS_TRY_STATUS(put_item(lh, *log_root_tree_, Key{kTreeLogObjectid, kRootItemKey, id.subvol}, bytes_of(ri)));
  std::lock_guard g(mu_);
  stats_.items_logged += inserted;
  return {};
}

}  // namespace ubtrfs::fs
