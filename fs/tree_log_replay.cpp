// Log tree replay: loading and checking the log, excluding its extents, the stage driver and the
// commit; see tree_log_replay.h. The per-item work is in tree_log_replay_items.cpp and
// tree_log_replay_names.cpp.
#include "fs/tree_log_replay.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include "fs/file_extent.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "fs/tree_log_replay_internal.h"
#include "tree/ctree.h"
#include "tree/superblock.h"

namespace ubtrfs::fs {

namespace {

// Kernel log trees are at most a few levels deep; the level check of every child keeps the walk
// finite, this bounds the recursion on top.
constexpr int kMaxLogLevel = kMaxLevel - 1;

Status bad_item(const LogItem& it, std::string_view what) {
  return fail(EUCLEAN, "corrupt log tree: block {} item [{} {} {}]: {}", it.block, it.key.objectid, it.key.type,
              it.key.offset, what);
}

// Reads the block and, recursively, its children; leaf items are appended to `items` in key order.
Status walk_log_block(FsInfo& fs, uint64_t bytenr, int level, uint64_t generation, std::optional<Key> first_key,
                      LoadedLog& out, std::set<uint64_t>& seen, std::vector<LogItem>& items) {
  if (level < 0 || level > kMaxLogLevel)
    return fail(EUCLEAN, "corrupt log tree: block {} has level {}", bytenr, level);
  if (!seen.insert(bytenr).second) return fail(EUCLEAN, "corrupt log tree: block {} is referenced twice", bytenr);
  TreeBlockExpect ex;
  ex.bytenr = bytenr;
  ex.level = static_cast<uint8_t>(level);
  ex.generation = generation;
  ex.owner = kTreeLogObjectid;
  ex.first_key = first_key;
  auto eb = fs.cache().read(ex);
  if (!eb) return fail(eb.error().err, "log tree block {}: {}", bytenr, eb.error().message);
  out.blocks.push_back(bytenr);
  out.buffers.push_back(*eb);
  struct Child {
    uint64_t bytenr, generation;
    Key key;
  };
  std::vector<Child> children;
  {
    ExtentBuffer& b = **eb;
    b.lock_read();
    if (b.is_leaf()) {
      for (int i = 0; i < static_cast<int>(b.nritems()); ++i) {
        auto d = b.item_data(i);
        items.push_back(LogItem{b.item_key(i), std::vector<uint8_t>(d.begin(), d.end()), bytenr});
      }
    } else {
      for (int i = 0; i < static_cast<int>(b.nritems()); ++i)
        children.push_back(Child{b.node_blockptr(i), b.node_ptr_generation(i), b.node_key(i)});
    }
    b.unlock_read();
  }
  for (const auto& c : children)
    UBTRFS_TRY_STATUS(walk_log_block(fs, c.bytenr, level - 1, c.generation, c.key, out, seen, items));
  return {};
}

// Decodes every item replay uses, so a bad one fails the mount before anything is written.
Status check_log_item(FsInfo& fs, const LogItem& it) {
  const auto& b = it.body;
  switch (it.key.type) {
    case kInodeItemKey:
      if (b.size() != sizeof(InodeItem)) return bad_item(it, fmt::format("inode item size {} != 160", b.size()));
      return {};
    case kInodeRefKey: {
      size_t off = 0;
      while (off < b.size()) {
        if (off + sizeof(InodeRef) > b.size()) return bad_item(it, "truncated inode ref");
        const auto r = load<InodeRef>(b.data() + off);
        off += sizeof(InodeRef) + r.name_len.get();
        if (r.name_len.get() == 0 || off > b.size()) return bad_item(it, "inode ref name out of the item");
      }
      return {};
    }
    case kInodeExtrefKey: {
      size_t off = 0;
      while (off < b.size()) {
        if (off + sizeof(InodeExtref) > b.size()) return bad_item(it, "truncated inode extref");
        const auto r = load<InodeExtref>(b.data() + off);
        off += sizeof(InodeExtref) + r.name_len.get();
        if (r.name_len.get() == 0 || off > b.size()) return bad_item(it, "inode extref name out of the item");
      }
      return {};
    }
    case kDirItemKey:
    case kDirIndexKey:
    case kXattrItemKey: {
      auto e = parse_dir_entries(b, it.key);
      if (!e) return bad_item(it, e.error().message);
      if (it.key.type == kDirIndexKey && e->size() != 1) return bad_item(it, "dir index with more than one entry");
      return {};
    }
    case kExtentDataKey: {
      auto fe = parse_file_extent(it.key, b, fs.params().sectorsize);
      if (!fe) return bad_item(it, fe.error().message);
      return {};
    }
    case kExtentCsumKey:
      if (it.key.objectid != kExtentCsumObjectid || b.empty() || b.size() % fs.params().csum_size() != 0 ||
          it.key.offset % fs.params().sectorsize != 0)
        return bad_item(it, "bad checksum item");
      return {};
    case kDirLogIndexKey:
    case kDirLogItemKey:
      if (b.size() != sizeof(uint64_t)) return bad_item(it, "dir log item size != 8");
      if (load<Le<uint64_t>>(b.data()).get() < it.key.offset) return bad_item(it, "dir log range ends before it starts");
      return {};
    default:
      return {};  // not replayed (the kernel ignores other keys as well)
  }
}

}  // namespace

Result<LoadedLog> load_log_trees(FsInfo& fs) {
  uint64_t log_root = 0, generation = 0;
  int level = 0;
  {
    std::lock_guard g(fs.super_mu());
    log_root = fs.super().log_root.get();
    level = fs.super().log_root_level;
    generation = fs.super().generation.get() + 1;  // the log belongs to the transaction after the commit
  }
  LoadedLog out;
  if (log_root == 0) return out;
  std::set<uint64_t> seen;
  std::vector<LogItem> roots;
  UBTRFS_TRY_STATUS(walk_log_block(fs, log_root, level, generation, std::nullopt, out, seen, roots));
  for (const auto& r : roots) {
    if (r.key.objectid != kTreeLogObjectid || r.key.type != kRootItemKey) continue;
    if (r.body.size() < offsetof(RootItem, level) + 1) return fail(bad_item(r, "root item too small").error());
    const RootItem ri = load_root_item(r.body);
    LogTreeImage t;
    t.subvol = r.key.offset;
    UBTRFS_TRY_STATUS(walk_log_block(fs, ri.bytenr.get(), ri.level, ri.generation.get(), std::nullopt, out, seen,
                                     t.items));
    for (const auto& it : t.items) UBTRFS_TRY_STATUS(check_log_item(fs, it));
    // Data extents the extent tree does not know yet: allocated in the logged transaction.
    std::set<std::pair<uint64_t, uint64_t>> known;
    for (const auto& it : t.items) {
      if (it.key.type != kExtentDataKey) continue;
      auto fe = UBTRFS_TRY(parse_file_extent(it.key, it.body, fs.params().sectorsize));
      if (fe.is_inline() || fe.disk_bytenr == 0) continue;
      const std::pair<uint64_t, uint64_t> ext{fe.disk_bytenr, fe.disk_num_bytes};
      if (!known.insert(ext).second) continue;
      auto body = lookup_item(*fs.extent_root().tree, Key{fe.disk_bytenr, kExtentItemKey, fe.disk_num_bytes});
      if (!body) return fail(body.error());
      if (!*body && std::find(out.new_extents.begin(), out.new_extents.end(), ext) == out.new_extents.end())
        out.new_extents.push_back(ext);
    }
    out.trees.push_back(std::move(t));
  }
  return out;
}

Status exclude_log_extents(FsInfo& fs, const LoadedLog& log) {
  std::vector<std::pair<uint64_t, uint64_t>> done;
  auto undo = [&] {
    for (auto [b, l] : done)
      if (auto* bg = fs.block_groups().find(b)) (void)bg->release_reserved(b, l);
  };
  auto reserve = [&](uint64_t bytenr, uint64_t len, std::string_view what) -> Status {
    auto* bg = fs.block_groups().find(bytenr);
    if (!bg || bytenr + len > bg->start() + bg->length()) {
      undo();
      return fail(EUCLEAN, "corrupt log tree: {} {} length {} is not inside one block group", what, bytenr, len);
    }
    if (auto st = bg->reserve_exact(bytenr, len); !st) {
      undo();
      return fail(EUCLEAN, "corrupt log tree: {} {} length {} overlaps allocated space: {}", what, bytenr, len,
                  st.error().message);
    }
    done.emplace_back(bytenr, len);
    return {};
  };
  for (uint64_t b : log.blocks) UBTRFS_TRY_STATUS(reserve(b, fs.params().nodesize, "log block"));
  for (auto [b, l] : log.new_extents) UBTRFS_TRY_STATUS(reserve(b, l, "logged data extent"));
  return {};
}

Status LogReplayer::run() {
  // LOG_WALK_REPLAY_INODES
  for (const auto& it : log_.items)
    if (it.key.type == kInodeItemKey) UBTRFS_TRY_STATUS(replay_inode(it));
  // LOG_WALK_REPLAY_DIR_INDEX
  for (const auto& it : log_.items)
    if (it.key.type == kDirIndexKey) UBTRFS_TRY_STATUS(replay_dir_index(it));
  // LOG_WALK_REPLAY_ALL: xattrs are copied, names added, extents replayed (key order: per inode,
  // refs before xattrs before extents).
  for (const auto& it : log_.items) {
    if (it.key.objectid >= kFirstFreeObjectid && it.key.objectid <= kLastFreeObjectid && !inode_exists(it.key.objectid))
      continue;  // an item of an inode that neither the log nor the subvolume has
    switch (it.key.type) {
      case kXattrItemKey:
        UBTRFS_TRY_STATUS(write_item_body(h_, root_, it.key, it.body));
        break;
      case kInodeRefKey:
      case kInodeExtrefKey:
        if (refs_done_.insert(it.key.objectid).second) UBTRFS_TRY_STATUS(add_inode_refs(it.key.objectid));
        break;
      case kExtentDataKey:
        UBTRFS_TRY_STATUS(replay_extent(it));
        break;
      default:
        break;
    }
  }
  UBTRFS_TRY_STATUS(replay_csums());
  UBTRFS_TRY_STATUS(fixup_link_counts());
  UBTRFS_TRY_STATUS(fixup_dir_sizes());
  UBTRFS_TRY_STATUS(fixup_nbytes());
  return {};
}

Result<LogReplayStats> replay_log_trees(FsInfo& fs) {
  auto log = UBTRFS_TRY(load_log_trees(fs));
  LogReplayStats stats;
  stats.log_trees = log.trees.size();
  stats.log_blocks = log.blocks.size();
  stats.new_data_extents = log.new_extents.size();
  for (const auto& t : log.trees) stats.items += t.items.size();
  UBTRFS_TRY_STATUS(exclude_log_extents(fs, log));
  std::set<std::pair<uint64_t, uint64_t>> unclaimed(log.new_extents.begin(), log.new_extents.end());
  {
    auto th = fs.transactions().join(nullptr);
    if (!th) {
      for (uint64_t b : log.blocks) (void)fs.block_groups().find(b)->release_reserved(b, fs.params().nodesize);
      for (auto [b, l] : log.new_extents) (void)fs.block_groups().find(b)->release_reserved(b, l);
      return fail(th.error());
    }
    for (const auto& t : log.trees) {
      auto rec = fs.fs_root(t.subvol);
      if (!rec && rec.error().err == ENOENT) {
        // The kernel skips the log of a subvolume that no longer exists as well.
        spdlog::warn("{}: log tree of subvolume {} skipped: the subvolume does not exist", fs.path(), t.subvol);
        continue;
      }
      if (!rec) return th->abort(rec.error());
      LogReplayer r(fs, th->tree(), *(*rec)->tree, t, unclaimed, stats);
      if (auto st = r.run(); !st)
        return th->abort(Error{st.error().err, fmt::format("log replay of subvolume {}: {}", t.subvol,
                                                           st.error().message)});
      // The replay's commit must write a superblock without the log even when every logged item
      // was already in place: COW the subvolume root so the commit has work.
      Path p;
      if (auto st = search_slot(&th->tree(), *(*rec)->tree, Key{kFirstFreeObjectid, kInodeItemKey, 0}, p, 0, true);
          !st)
        return th->abort(st.error());
    }
    // The replay is complete in this handle: whichever commit runs next (ours below, or one the
    // reclaim thread starts the moment the handle ends) must write a superblock without the log.
    // No commit can run before the handle ends, so none writes the log with a half replay.
    {
      std::lock_guard g(fs.super_mu());
      fs.super().log_root = 0;
      fs.super().log_root_level = 0;
    }
    th->end();
  }
  // Logged extents nothing references after all go back to free space; the log's own blocks are
  // pinned, so they become free only after the commit below (btrfs frees the log at that point).
  for (auto [b, l] : unclaimed) UBTRFS_TRY_STATUS(fs.block_groups().find(b)->release_reserved(b, l));
  for (uint64_t b : log.blocks) UBTRFS_TRY_STATUS(fs.block_groups().find(b)->pin_reserved(b, fs.params().nodesize));
  if (auto st = fs.transactions().commit(CommitCause::kOther); !st)
    return fail(st.error().err, "log replay commit: {}", st.error().message);
  for (auto& eb : log.buffers) fs.cache().forget(eb);
  fs.clear_log_replay_pending();
  spdlog::info("{}: replayed {} log tree(s): {} items, {} inodes, {} names added, {} removed, {} extents ({} new)",
               fs.path(), stats.log_trees, stats.items, stats.inodes, stats.names_added, stats.names_removed,
               stats.extents, stats.new_data_extents);
  return stats;
}

}  // namespace ubtrfs::fs
