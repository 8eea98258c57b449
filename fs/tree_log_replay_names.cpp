// Log replay of names (btrfs tree-log.c replay_dir_deletes with DIR_LOG_INDEX ranges,
// replay_one_dir_item / replay_one_name, add_inode_ref / __add_inode_ref / unlink_old_inode_refs)
// and the fixups that follow (fixup_inode_link_counts, directory i_size as btrfs_add_link and
// btrfs_unlink_inode leave it). See tree_log_replay.h for the order.
//
// A name is the four items of FORMAT.md §4.2; every change here adds or removes all of them
// together (dir_item.h helpers), so the subvolume never holds half a name. Link counts and
// directory sizes are recomputed from the items at the end rather than adjusted step by step: the
// result is what the kernel's incremental bookkeeping arrives at, and what btrfs check verifies.
#include <spdlog/spdlog.h>

#include "fs/dir_item.h"
#include "fs/fs_info.h"
#include "fs/inode.h"
#include "fs/tree_log_replay_internal.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

Key orphan_item_key(uint64_t ino) { return Key{kOrphanObjectid, kOrphanItemKey, ino}; }

}  // namespace

Result<std::map<uint64_t, std::vector<std::pair<uint64_t, std::string>>>> LogReplayer::log_refs(uint64_t ino) const {
  std::map<uint64_t, std::vector<std::pair<uint64_t, std::string>>> out;
  for (const LogItem* it : log_items(ino, kInodeRefKey)) {
    size_t off = 0;
    while (off + sizeof(InodeRef) <= it->body.size()) {
      const auto r = load<InodeRef>(it->body.data() + off);
      off += sizeof(InodeRef);
      out[it->key.offset].emplace_back(
          r.index.get(), std::string(reinterpret_cast<const char*>(it->body.data() + off), r.name_len.get()));
      off += r.name_len.get();
    }
  }
  for (const LogItem* it : log_items(ino, kInodeExtrefKey)) {
    size_t off = 0;
    while (off + sizeof(InodeExtref) <= it->body.size()) {
      const auto r = load<InodeExtref>(it->body.data() + off);
      off += sizeof(InodeExtref);
      out[r.parent_objectid.get()].emplace_back(
          r.index.get(), std::string(reinterpret_cast<const char*>(it->body.data() + off), r.name_len.get()));
      off += r.name_len.get();
    }
  }
  return out;
}

Status LogReplayer::unlink_name(uint64_t dir, std::string_view name, uint64_t index, uint64_t child) {
  UBTRFS_TRY_STATUS(delete_dir_entry(h_, root_, dir, name, index));
  if (auto r = delete_inode_ref(h_, root_, child, dir, name); !r && r.error().err != ENOENT) return fail(r.error());
  link_fixups_.insert(child);
  dir_fixups_.insert(dir);
  stats_.names_removed++;
  return {};
}

Status LogReplayer::add_link(uint64_t dir, std::string_view name, uint64_t child, uint64_t index) {
  auto ii = UBTRFS_TRY(read_inode_item(root_, child));
  UBTRFS_TRY_STATUS(insert_dir_entry(h_, root_, dir, name, Key{child, kInodeItemKey, 0},
                                     file_type_of_mode(ii.mode.get()), index));
  const bool extended = fs_.params().incompat_flags & kIncompatExtendedIref;
  if (auto st = insert_inode_ref(h_, root_, child, dir, name, index, extended); !st && st.error().err != EEXIST)
    return st;
  link_fixups_.insert(child);
  dir_fixups_.insert(dir);
  stats_.names_added++;
  return {};
}

// Entries of `dir` inside a logged range [key.offset, end] whose DIR_INDEX the log does not have
// were deleted before the fsync.
Status LogReplayer::replay_dir_deletes(uint64_t dir) {
  const auto ranges = log_items(dir, kDirLogIndexKey);
  if (ranges.empty()) return {};
  auto entries = UBTRFS_TRY(tree_items(dir, kDirIndexKey));
  for (const auto& [k, body] : entries) {
    bool in_range = false;
    for (const LogItem* r : ranges)
      in_range |= k.offset >= r->key.offset && k.offset <= load<le64>(r->body.data()).get();
    if (!in_range || log_find(k)) continue;
    auto es = UBTRFS_TRY(parse_dir_entries(body, k));
    if (es.size() != 1) return fail(EUCLEAN, "dir index [{} {} {}] has {} entries", k.objectid, k.type, k.offset, es.size());
    const auto& e = es[0];
    if (e.location.type != kInodeItemKey)
      return fail(EOPNOTSUPP, "log replay would delete subvolume entry '{}' of directory {}", e.name, dir);
    UBTRFS_TRY_STATUS(unlink_name(dir, e.name, k.offset, e.location.objectid));
  }
  return {};
}

// LOG_WALK_REPLAY_DIR_INDEX: a logged directory's entry. A name whose inode reference is in the log
// is added with the references (REPLAY_ALL); another name is added here if its inode exists; an
// entry holding the name for another inode goes first.
Status LogReplayer::replay_dir_index(const LogItem& it) {
  const uint64_t dir = it.key.objectid;
  if (!inode_exists(dir)) return {};
  auto es = UBTRFS_TRY(parse_dir_entries(it.body, it.key));
  const auto& e = es.at(0);
  if (e.location.type != kInodeItemKey) return {};  // a subvolume entry: not replayed
  const uint64_t child = e.location.objectid;
  auto existing = UBTRFS_TRY(lookup_dir_entry(root_, dir, e.name));
  if (existing && existing->location.objectid == child) return {};
  auto refs = UBTRFS_TRY(log_refs(child));
  bool in_log = false;
  if (auto p = refs.find(dir); p != refs.end())
    for (const auto& [idx, name] : p->second) in_log |= name == e.name;
  if (in_log) return {};
  if (!inode_exists(child)) return {};
  if (existing) {
    const uint64_t victim = existing->location.objectid;
    auto idx = UBTRFS_TRY(find_inode_ref(root_, victim, dir, e.name));
    if (!idx) return item_error(it, fmt::format("entry '{}' of directory {} has no inode ref", e.name, dir));
    UBTRFS_TRY_STATUS(unlink_name(dir, e.name, *idx, victim));
  }
  return add_link(dir, e.name, child, it.key.offset);
}

// add_inode_ref for every parent the log names `ino` in: names of `ino` in that parent that the
// log does not have go (unlink_old_inode_refs), a name held by another inode goes (its link count
// is fixed later), then each logged name is added unless it is already exactly there.
Status LogReplayer::add_inode_refs(uint64_t ino) {
  auto refs = UBTRFS_TRY(log_refs(ino));
  auto current = UBTRFS_TRY(list_inode_refs(root_, ino));
  for (const auto& [parent, names] : refs) {
    // A subvolume root's ".." ref (256, INODE_REF, 256) names no directory entry (FORMAT.md §4.4).
    if (parent == ino) continue;
    if (!inode_exists(parent)) {
      spdlog::debug("{}: log replay: parent {} of inode {} does not exist, name skipped", fs_.path(), parent, ino);
      continue;
    }
    for (const auto& r : current) {
      if (r.parent != parent) continue;
      bool logged = false;
      for (const auto& [idx, name] : names) logged |= name == r.name;
      if (!logged) UBTRFS_TRY_STATUS(unlink_name(parent, r.name, r.index, ino));
    }
    for (const auto& [index, name] : names) {
      auto existing = UBTRFS_TRY(lookup_dir_entry(root_, parent, name));
      if (existing && existing->location.objectid == ino) {
        auto idx = UBTRFS_TRY(find_inode_ref(root_, ino, parent, name));
        if (idx && *idx == index && check_dir_index(root_, parent, index, name)) continue;  // already in place
        if (idx) {
          UBTRFS_TRY_STATUS(unlink_name(parent, name, *idx, ino));
        } else {
          // The entries without the back reference: remove the entries (their DIR_INDEX is the one
          // whose name matches; search the directory's indexes).
          auto entries = UBTRFS_TRY(tree_items(parent, kDirIndexKey));
          for (const auto& [k, body] : entries) {
            auto es = UBTRFS_TRY(parse_dir_entries(body, k));
            if (es.size() == 1 && es[0].name == name) {
              UBTRFS_TRY_STATUS(delete_dir_entry(h_, root_, parent, name, k.offset));
              break;
            }
          }
        }
      } else if (existing) {
        const uint64_t victim = existing->location.objectid;
        if (existing->location.type != kInodeItemKey)
          return fail(EOPNOTSUPP, "log replay would replace subvolume entry '{}' of directory {}", name, parent);
        auto idx = UBTRFS_TRY(find_inode_ref(root_, victim, parent, name));
        if (!idx)
          return fail(EUCLEAN, "entry '{}' of directory {} names inode {} which has no such ref", name, parent, victim);
        UBTRFS_TRY_STATUS(unlink_name(parent, name, *idx, victim));
      }
      // An index slot of the directory holding another name of this inode (a rename in place).
      if (auto chk = check_dir_index(root_, parent, index, name); !chk && chk.error().err != ENOENT) {
        auto body = UBTRFS_TRY(lookup_item(root_, Key{parent, kDirIndexKey, index}));
        if (body) {
          auto es = UBTRFS_TRY(parse_dir_entries(*body, Key{parent, kDirIndexKey, index}));
          if (es.size() == 1 && es[0].location.type == kInodeItemKey) {
            auto idx = UBTRFS_TRY(find_inode_ref(root_, es[0].location.objectid, parent, es[0].name));
            if (idx && *idx == index) UBTRFS_TRY_STATUS(unlink_name(parent, es[0].name, index, es[0].location.objectid));
          }
        }
      }
      UBTRFS_TRY_STATUS(add_link(parent, name, ino, index));
    }
  }
  link_fixups_.insert(ino);
  return {};
}

// fixup_inode_link_counts: nlink = number of names (a directory: 1 while it has a name). An inode
// left without a name gets an orphan item; the mount's orphan cleanup evicts it, as btrfs does. A
// directory left without a name loses its entries first (the "rm -rf" a directory fsync recorded:
// tree-log.c's replay_dir_deletes with del_all), and each child's count is fixed in turn.
Status LogReplayer::fixup_link_counts() {
  std::vector<uint64_t> work(link_fixups_.rbegin(), link_fixups_.rend());
  while (!work.empty()) {
    const uint64_t ino = work.back();
    work.pop_back();
    auto ii = read_inode_item(root_, ino);
    if (!ii) {
      if (ii.error().err == ENOENT) continue;
      return fail(ii.error());
    }
    auto refs = UBTRFS_TRY(list_inode_refs(root_, ino));
    const bool dir = (ii->mode.get() & S_IFMT) == S_IFDIR;
    uint32_t nlink = static_cast<uint32_t>(refs.size());
    if (dir && nlink > 1) nlink = 1;
    if (nlink == 0 && ino == kFirstFreeObjectid) continue;  // the subvolume root has its ".." ref
    if (nlink == 0 && dir) {
      auto entries = UBTRFS_TRY(tree_items(ino, kDirIndexKey));
      for (const auto& [k, body] : entries) {
        auto es = UBTRFS_TRY(parse_dir_entries(body, k));
        if (es.size() != 1 || es[0].location.type != kInodeItemKey)
          return fail(EOPNOTSUPP, "log replay: removed directory {} holds entry [{} {} {}] that is not an inode", ino,
                      k.objectid, k.type, k.offset);
        UBTRFS_TRY_STATUS(unlink_name(ino, es[0].name, k.offset, es[0].location.objectid));
        work.push_back(es[0].location.objectid);
      }
      ii = UBTRFS_TRY(read_inode_item(root_, ino));
      InodeItem u = *ii;
      u.size = 0;
      UBTRFS_TRY_STATUS(update_inode_item(h_, root_, ino, u));
      ii = u;
    }
    if (nlink != ii->nlink.get()) {
      InodeItem u = *ii;
      u.nlink = nlink;
      UBTRFS_TRY_STATUS(update_inode_item(h_, root_, ino, u));
    }
    if (nlink == 0) {
      auto have = UBTRFS_TRY(lookup_item(root_, orphan_item_key(ino)));
      if (!have) UBTRFS_TRY_STATUS(insert_item(h_, root_, orphan_item_key(ino), std::span<const uint8_t>{}));
    }
  }
  return {};
}

// Directory i_size = sum of name lengths over its DIR_ITEM and DIR_INDEX entries (FORMAT.md §4.5).
Status LogReplayer::fixup_dir_sizes() {
  for (uint64_t dir : dir_fixups_) {
    auto ii = read_inode_item(root_, dir);
    if (!ii) {
      if (ii.error().err == ENOENT) continue;
      return fail(ii.error());
    }
    if ((ii->mode.get() & S_IFMT) != S_IFDIR) continue;
    auto entries = UBTRFS_TRY(tree_items(dir, kDirIndexKey));
    uint64_t size = 0;
    for (const auto& [k, body] : entries) {
      auto es = UBTRFS_TRY(parse_dir_entries(body, k));
      for (const auto& e : es) size += 2 * e.name.size();
    }
    if (size != ii->size.get()) {
      InodeItem u = *ii;
      u.size = size;
      UBTRFS_TRY_STATUS(update_inode_item(h_, root_, dir, u));
    }
  }
  return {};
}

}  // namespace ubtrfs::fs
