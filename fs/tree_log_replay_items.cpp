// Log replay of inodes, xattrs, file extents and checksums (btrfs tree-log.c overwrite_item,
// replay_xattr_deletes, replay_one_extent, btrfs_alloc_logged_file_extent), and the nbytes fixup.
// See tree_log_replay.h for the order and tree_log_replay_internal.h for the state.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "fs/csum_tree.h"
#include "fs/file_extent.h"
#include "fs/fs_info.h"
#include "fs/inode.h"
#include "fs/tree_log_replay_internal.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

// Data reference changes of drop_extents go to the extent allocator's delayed refs.
class ReplayRefs final : public DataRefSink {
 public:
  explicit ReplayRefs(FsInfo& fs) : fs_(fs) {}
  Status add_data_ref(TreeHandle& h, uint64_t bytenr, uint64_t len, uint64_t root, uint64_t ino, uint64_t offset,
                      int delta, bool new_alloc) override {
    return fs_.allocator().add_data_ref(h, bytenr, len, root, ino, offset, delta, new_alloc);
  }

 private:
  FsInfo& fs_;
};

bool is_reg(uint32_t mode) { return (mode & S_IFMT) == S_IFREG; }
bool is_dir(uint32_t mode) { return (mode & S_IFMT) == S_IFDIR; }

}  // namespace

// ---- helpers ------------------------------------------------------------------------------------

const LogItem* LogReplayer::log_find(const Key& key) const {
  auto it = std::lower_bound(log_.items.begin(), log_.items.end(), key,
                             [](const LogItem& a, const Key& k) { return a.key < k; });
  return it != log_.items.end() && it->key == key ? &*it : nullptr;
}

std::vector<const LogItem*> LogReplayer::log_items(uint64_t objectid, uint8_t type) const {
  std::vector<const LogItem*> out;
  auto it = std::lower_bound(log_.items.begin(), log_.items.end(), Key{objectid, type, 0},
                             [](const LogItem& a, const Key& k) { return a.key < k; });
  for (; it != log_.items.end() && it->key.objectid == objectid && it->key.type == type; ++it) out.push_back(&*it);
  return out;
}

bool LogReplayer::inode_exists(uint64_t ino) {
  auto ii = read_inode_item(root_, ino);
  return ii.has_value();
}

Result<std::vector<std::pair<Key, std::vector<uint8_t>>>> LogReplayer::tree_items(uint64_t objectid, uint8_t type) {
  std::vector<std::pair<Key, std::vector<uint8_t>>> out;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root_, Key{objectid, type, 0}, p, 0, false));
  bool valid = p.leaf().nritems() > 0;
  if (valid && p.slots[0] >= static_cast<int>(p.leaf().nritems())) valid = UBTRFS_TRY(next_leaf(root_, p));
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid != objectid || k.type != type) break;
    auto d = p.leaf().item_data(p.slots[0]);
    out.emplace_back(k, std::vector<uint8_t>(d.begin(), d.end()));
    valid = UBTRFS_TRY(next_item(root_, p));
  }
  return out;
}

Status LogReplayer::item_error(const LogItem& it, std::string_view what) const {
  return fail(EUCLEAN, "log item [{} {} {}] in block {}: {}", it.key.objectid, it.key.type, it.key.offset, it.block,
              what);
}

// ---- LOG_WALK_REPLAY_INODES ----------------------------------------------------------------------

Status LogReplayer::replay_inode(const LogItem& it) {
  const uint64_t ino = it.key.objectid;
  InodeItem logged = load<InodeItem>(it.body.data());
  const uint32_t mode = logged.mode.get();
  stats_.inodes++;
  // Entries of a logged directory that the log's DIR_LOG_INDEX ranges say are gone.
  if (is_dir(mode)) UBTRFS_TRY_STATUS(replay_dir_deletes(ino));
  UBTRFS_TRY_STATUS(replay_xattr_deletes(ino));

  auto cur = read_inode_item(root_, ino);
  if (!cur && cur.error().err != ENOENT) return fail(cur.error());
  if (cur) {
    if (logged.generation.get() == 0) {
      // Logged only to say "this inode exists" (LOG_INODE_EXISTS): keep the subvolume's inode; a
      // regular file takes a non-zero logged size (btrfs overwrite_item).
      if (is_reg(mode) && is_reg(cur->mode.get()) && logged.size.get() != 0) {
        InodeItem n = *cur;
        n.size = logged.size.get();
        UBTRFS_TRY_STATUS(update_inode_item(h_, root_, ino, n));
      }
    } else {
      // A directory keeps its size: names are replayed one by one and the size recomputed.
      if (is_dir(mode) && is_dir(cur->mode.get())) logged.size = cur->size.get();
      logged.nbytes = cur->nbytes.get();
      UBTRFS_TRY_STATUS(update_inode_item(h_, root_, ino, logged));
    }
  } else {
    if (logged.generation.get() == 0) logged.generation = h_.transid;
    if (is_dir(mode)) logged.size = 0;
    logged.nbytes = 0;
    UBTRFS_TRY_STATUS(insert_inode(h_, root_, ino, logged));
  }
  // A regular file loses its extents past the logged size.
  auto now = UBTRFS_TRY(read_inode_item(root_, ino));
  if (is_reg(now.mode.get())) {
    const uint32_t ss = fs_.params().sectorsize;
    const uint64_t from = (now.size.get() + ss - 1) / ss * ss;
    ReplayRefs refs(fs_);
    auto dropped = drop_extents(h_, root_, fs_.params(), refs, ino, from, UINT64_MAX);
    if (!dropped) return item_error(it, fmt::format("dropping extents past i_size: {}", dropped.error().message));
  }
  if (is_dir(now.mode.get())) dir_fixups_.insert(ino);
  link_fixups_.insert(ino);
  nbytes_fixups_.insert(ino);
  return {};
}

Status LogReplayer::replay_xattr_deletes(uint64_t ino) {
  // An xattr item (one name hash) the subvolume has and the log does not: gone. Items the log has
  // are replaced whole in REPLAY_ALL, which removes their other names.
  auto items = UBTRFS_TRY(tree_items(ino, kXattrItemKey));
  for (const auto& [k, body] : items)
    if (!log_find(k)) UBTRFS_TRY_STATUS(delete_item(h_, root_, k));
  return {};
}

// ---- LOG_WALK_REPLAY_ALL: extents ---------------------------------------------------------------

Status LogReplayer::replay_extent(const LogItem& it) {
  const uint64_t ino = it.key.objectid;
  const FsParams& p = fs_.params();
  auto fe = parse_file_extent(it.key, it.body, p.sectorsize);
  if (!fe) return item_error(it, fe.error().message);
  stats_.extents++;
  nbytes_fixups_.insert(ino);
  // Already there, byte for byte (an fsync that logged an unchanged extent): nothing to do.
  auto cur = UBTRFS_TRY(lookup_item(root_, it.key));
  if (cur && *cur == it.body) return {};
  const uint64_t start = it.key.offset, end = fe->end(p.sectorsize);
  ReplayRefs refs(fs_);
  auto dropped = drop_extents(h_, root_, p, refs, ino, start, end);
  if (!dropped) return item_error(it, fmt::format("dropping extents over [{}, {}): {}", start, end, dropped.error().message));
  if (fe->is_hole() && p.no_holes()) return {};
  if (!fe->is_inline() && !fe->is_hole()) {
    // btrfs_alloc_logged_file_extent: the first reference of an extent the extent tree lacks
    // creates its item (from the exact range excluded at load); any other is one more reference.
    const auto ext = std::make_pair(fe->disk_bytenr, fe->disk_num_bytes);
    const bool first = unclaimed_.erase(ext) > 0;
    UBTRFS_TRY_STATUS(fs_.allocator().add_data_ref(h_, fe->disk_bytenr, fe->disk_num_bytes, root_.objectid(), ino,
                                                   it.key.offset - fe->offset, +1, first));
  }
  UBTRFS_TRY_STATUS(insert_item(h_, root_, it.key, it.body));
  return {};
}

// The log's checksums replace the csum tree's over the same sectors (btrfs replay_one_extent:
// btrfs_del_csums + btrfs_csum_file_blocks over the logged extent's range).
Status LogReplayer::replay_csums() {
  const FsParams& p = fs_.params();
  TreeRoot& csum = *fs_.csum_root().tree;
  for (const LogItem* it : log_items(kExtentCsumObjectid, kExtentCsumKey)) {
    const uint64_t len = it->body.size() / p.csum_size() * p.sectorsize;
    UBTRFS_TRY_STATUS(delete_csums(h_, csum, p, it->key.offset, len));
    UBTRFS_TRY_STATUS(insert_csums(h_, csum, p, it->key.offset, it->body));
    stats_.csum_items++;
  }
  return {};
}

// nbytes = what the inode's extents hold (the log's inode item does not carry delalloc that became
// extents after it was filled; btrfs adds and subtracts per replayed extent to the same end).
Status LogReplayer::fixup_nbytes() {
  const FsParams& p = fs_.params();
  for (uint64_t ino : nbytes_fixups_) {
    auto ii = read_inode_item(root_, ino);
    if (!ii) {
      if (ii.error().err == ENOENT) continue;
      return fail(ii.error());
    }
    const uint32_t type = ii->mode.get() & S_IFMT;
    if (type != S_IFREG && type != S_IFLNK) continue;
    auto exts = UBTRFS_TRY(find_file_extents(root_, p, ino, 0, UINT64_MAX));
    uint64_t n = 0;
    for (const auto& e : exts) n += e.nbytes();
    if (n != ii->nbytes.get()) {
      InodeItem u = *ii;
      u.nbytes = n;
      UBTRFS_TRY_STATUS(update_inode_item(h_, root_, ino, u));
    }
  }
  return {};
}

}  // namespace ubtrfs::fs
