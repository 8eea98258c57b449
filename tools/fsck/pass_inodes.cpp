// Pass 7: inodes of every subvolume tree (FORMAT.md §3.3, §4.5, §6.1.5).
//
// Rules, per inode of FS_TREE, every subvolume and DATA_RELOC:
//  - every objectid with inode items (refs, extents, dir entries, xattrs) has an INODE_ITEM
//    (btrfs check: "no inode item");
//  - link count: a directory has nlink 1; anything else has nlink == its number of names
//    (INODE_REF + INODE_EXTREF entries) — "link count wrong";
//  - nlink 0 needs an ORPHAN_ITEM (-5 ORPHAN_ITEM ino) — "no orphan item";
//  - nbytes of a non-directory == sum of num_bytes of its REG/PREALLOC extents with disk_bytenr != 0
//    plus ram_bytes of its inline extents — "nbytes wrong";
//  - file extents do not overlap; without NO_HOLES they leave no gap below i_size (§3.7);
//  - directory size == sum of name lengths over its DIR_ITEM and DIR_INDEX entries (= 2 x the
//    names) — "dir isize wrong".
// Trees the tree-block pass marked damaged are skipped (their lost leaves would make every rule
// fire), with one warning naming the tree.
#include "tools/fsck/fs_tree_index.h"

namespace ubtrfs::fsck {

namespace {

// File extents of one inode (§3.7): no two cover the same file bytes; without NO_HOLES every byte
// up to i_size (sector-rounded) is covered by some extent ("file extent discount" in btrfs check).
void check_file_extents(Context& ctx, uint64_t root, uint64_t ino, const InodeItem& ii, const InodeRecord& r) {
  Report& rep = ctx.report();
  const uint64_t ss = ctx.params.sectorsize;
  auto round_up = [ss](uint64_t v) { return (v + ss - 1) / ss * ss; };
  uint64_t covered_to = 0;
  const FileExtentRef* prev = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  for (const auto& f : r.extents) {  // in key order
    const uint64_t start = f.key.offset;
    const uint64_t len = f.type == kFileExtentInline ? round_up(f.ram_bytes) : f.num_bytes;
    if (prev && start < covered_to)
      rep.error("file-extent", Where{root, {}, f.key, ino},
                fmt::format("root {} inode {} file extent {} overlaps the previous extent {} ending at {}", root, ino,
                            key_text(f.key), key_text(prev->key), covered_to));
    if (start > covered_to) holes.emplace_back(covered_to, start - covered_to);
    covered_to = std::max(covered_to, start + len);
    prev = &f;
  }
  if (ctx.params.no_holes()) return;
  if (covered_to < round_up(ii.size)) holes.emplace_back(covered_to, round_up(ii.size) - covered_to);
  for (const auto& [start, len] : holes)
    rep.error("file-extent", Where{root, {}, Key{ino, kExtentDataKey, start}, ino},
              fmt::format("root {} inode {} has no file extent for [{} {}] and NO_HOLES is off (file extent discount)",
                          root, ino, start, len));
}

}  // namespace

void check_inodes(Context& ctx) {
  Report& rep = ctx.report();
  for (const auto& t : ctx.trees) {
    if (t.is_log || !Context::is_fs_tree(t.id)) continue;
    if (t.damaged) {
      rep.warning("inode-missing", Where{t.id, {}, {}, {}},
                  fmt::format("root {} is damaged: its inodes are not checked", t.id));
      continue;
    }
    const FsTreeIndex idx = index_fs_tree(ctx, t);
    for (const auto& [ino, r] : idx.inodes) {
      const Key ik{ino, kInodeItemKey, 0};
      if (!r.item) {
        rep.error("inode-missing", Where{t.id, {}, r.first_key, ino},
                  fmt::format("root {} inode {} has items ({}) but no inode item {}", t.id, ino,
                              type_names(r.item_types), key_text(ik)));
        continue;
      }
      const InodeItem& ii = *r.item;
      const uint32_t nlink = ii.nlink;
      const bool dir = is_dir_mode(ii.mode);
      if (dir) {
        // nlink 0 with an orphan item: a removed directory still open when its tree was committed
        // (or snapshotted), evicted later — btrfs check accepts it, so do we.
        const bool unlinked_orphan = nlink == 0 && idx.orphans.contains(ino) && r.names.empty();
        if (nlink != 1 && !unlinked_orphan)
          rep.error(
              "inode-nlink", Where{t.id, {}, ik, ino},
              fmt::format("root {} inode {} is a directory with nlink {} (directory has invalid nlink, must be 1)",
                          t.id, ino, nlink));
        if (ii.size.get() != r.dir_name_bytes)
          rep.error("dir-isize", Where{t.id, {}, ik, ino},
                    fmt::format("root {} dir inode {} size {} not equal to {} (dir isize wrong)", t.id, ino,
                                ii.size.get(), r.dir_name_bytes));
      } else {
        if (nlink != r.names.size())
          rep.error("inode-nlink", Where{t.id, {}, ik, ino},
                    fmt::format("root {} inode {} nlink {} not equal to its {} names (link count wrong)", t.id, ino,
                                nlink, r.names.size()));
        uint64_t bytes = 0;
        for (const auto& f : r.extents) {
          if (f.type == kFileExtentInline)
            bytes += f.ram_bytes;
          else if (f.disk_bytenr != 0)
            bytes += f.num_bytes;
        }
        check_file_extents(ctx, t.id, ino, ii, r);
        if (ii.nbytes.get() != bytes)
          rep.error("inode-nbytes", Where{t.id, {}, ik, ino},
                    fmt::format("root {} inode {} nbytes {} not equal to extent bytes {} (nbytes wrong)", t.id, ino,
                                ii.nbytes.get(), bytes));
      }
      if (nlink == 0 && !idx.orphans.count(ino))
        rep.error("inode-orphan", Where{t.id, {}, ik, ino},
                  fmt::format("root {} inode {} has nlink 0 and no orphan item (-5 ORPHAN_ITEM {})", t.id, ino, ino));
    }
  }
}

}  // namespace ubtrfs::fsck
