// Pass 8: directory entries (FORMAT.md §4.2, §4.4, §4.7, §3.13).
//
// A name N of inode X in directory D with index I is three things that must agree:
//   DIR_ITEM (D, name_hash(N)) holding an entry N -> X,
//   DIR_INDEX (D, I) holding the entry N -> X,
//   INODE_REF (X, D) holding {I, N} (or INODE_EXTREF (X, extref_hash(D, N)) holding {D, I, N}).
// Each of the three is checked for the other two ("no dir item", "no dir index", "no inode ref",
// "index mismatch"), the DIR_ITEM key offset must be the name hash (an INODE_EXTREF's the extref
// hash), the entry type must match the target inode's mode ("filetype mismatch"), and the target
// must have an INODE_ITEM. The root directory's ".." (INODE_REF (256, 256) index 0) is not a
// name. Entries whose location is a ROOT_ITEM are subvolume links: instead of an INODE_REF they
// need ROOT_REF (parent, child) and ROOT_BACKREF (child, parent) in the root tree with the same
// dir, index and name — except the entries a snapshot copied from its source (snapshots do not
// recurse), which name subvolumes linked elsewhere, or deleted since (no ROOT_ITEM, or one with
// refs 0 that the cleaner is still dropping): the kernel shows those as empty directories and
// btrfs check accepts them.
#include <algorithm>
#include <cstring>
#include <set>
#include <tuple>

#include "io/checksum.h"
#include "tools/fsck/fs_tree_index.h"

namespace ubtrfs::fsck {

namespace {

struct RootRefRec {
  uint64_t dirid = 0;
  uint64_t sequence = 0;
  std::string name;
};

std::map<std::pair<uint64_t, uint64_t>, RootRefRec> root_refs(const Context& ctx, uint8_t type) {
  std::map<std::pair<uint64_t, uint64_t>, RootRefRec> out;
  for (const auto& it : ctx.items(kRootTreeObjectid)) {
    if (it.key.type != type || it.body.size() < sizeof(RootRef)) continue;
    const auto rr = load<RootRef>(it.body.data());
    const size_t nl = std::min<size_t>(rr.name_len, it.body.size() - sizeof(RootRef));
    out[{it.key.objectid, it.key.offset}] = RootRefRec{
        rr.dirid, rr.sequence, std::string(reinterpret_cast<const char*>(it.body.data() + sizeof(RootRef)), nl)};
  }
  return out;
}

// Subvolumes with a ROOT_ITEM whose refs are not 0 (not deleted, nor being dropped).
std::set<uint64_t> live_subvolumes(const Context& ctx) {
  std::set<uint64_t> out;
  for (const auto& it : ctx.items(kRootTreeObjectid)) {
    if (it.key.type != kRootItemKey || it.body.size() < kRootItemLegacySize) continue;  // as trees_named_by
    const RootItem ri = load_root_item(it.body);
    if (ri.refs.get() != 0) out.insert(it.key.objectid);
  }
  return out;
}

}  // namespace

void check_dirs(Context& ctx) {
  Report& rep = ctx.report();
  const auto refs = root_refs(ctx, kRootRefKey);
  const auto backrefs = root_refs(ctx, kRootBackrefKey);
  const auto live = live_subvolumes(ctx);
  const bool root_tree_ok = !ctx.damaged(kRootTreeObjectid);
  for (const auto& t : ctx.trees) {
    if (t.is_log || !Context::is_fs_tree(t.id) || t.damaged) continue;  // damaged: warned by the inode pass
    const FsTreeIndex idx = index_fs_tree(ctx, t);
    const uint64_t root = t.id;
    // name lookups: (dir, name) -> entries
    std::map<std::pair<uint64_t, std::string>, const DirEntry*> by_name_item, by_name_index;
    for (const auto& e : idx.dir_items) by_name_item[{e.dir, e.name}] = &e;
    for (const auto& e : idx.dir_indexes) by_name_index[{e.dir, e.name}] = &e;

    auto entry_text = [&](const DirEntry& e) {
      return fmt::format("root {} dir {} name '{}' ({})", root, e.dir, e.name, key_text(e.key));
    };

    for (const auto& e : idx.dir_items) {
      if (io::name_hash(e.name) != e.key.offset)
        rep.error("dir-entry", Where{root, {}, e.key, e.dir},
                  fmt::format("{}: name hash mismatch, wanted 0x{:x} has 0x{:x}", entry_text(e), io::name_hash(e.name),
                              e.key.offset));
      auto ix = by_name_index.find({e.dir, e.name});
      if (ix == by_name_index.end())
        rep.error("dir-entry", Where{root, {}, e.key, e.dir},
                  fmt::format("{}: no matching DIR_INDEX (no dir index)", entry_text(e)));
      else if (ix->second->location != e.location || ix->second->type != e.type)
        rep.error("dir-entry", Where{root, {}, e.key, e.dir},
                  fmt::format("{}: DIR_ITEM points to {} type {}, DIR_INDEX {} points to {} type {}", entry_text(e),
                              key_text(e.location), e.type, key_text(ix->second->key), key_text(ix->second->location),
                              ix->second->type));
    }

    for (const auto& e : idx.dir_indexes) {
      if (!by_name_item.count({e.dir, e.name}))
        rep.error("dir-entry", Where{root, {}, e.key, e.dir},
                  fmt::format("{}: no matching DIR_ITEM (no dir item)", entry_text(e)));
      if (e.location.type == kRootItemKey) {
        const uint64_t child = e.location.objectid;
        if (!root_tree_ok) continue;
        auto rr = refs.find({root, child});
        auto rb = backrefs.find({child, root});
        if (rr == refs.end() && rb == backrefs.end()) {
          // A snapshot copies its parent's entries of nested subvolumes without their refs
          // (snapshots do not recurse): such an entry is fine if the subvolume is linked elsewhere
          // or has been deleted since.
          auto other = backrefs.lower_bound({child, 0});
          if (other != backrefs.end() && other->first.first == child) continue;
          if (!live.count(child)) continue;
        }
        if (rr == refs.end() || rb == backrefs.end())
          rep.error("root-ref", Where{root, {}, e.key, e.dir},
                    fmt::format("{}: subvolume {} has no {}", entry_text(e), child,
                                rr == refs.end() ? "ROOT_REF" : "ROOT_BACKREF"));
        else
          for (const auto* r : {&rr->second, &rb->second})
            if (r->dirid != e.dir || r->sequence != e.key.offset || r->name != e.name)
              rep.error("root-ref", Where{root, {}, e.key, e.dir},
                        fmt::format("{}: root ref of subvolume {} says dir {} index {} name '{}'", entry_text(e), child,
                                    r->dirid, r->sequence, r->name));
        continue;
      }
      const uint64_t ino = e.location.objectid;
      auto target = idx.inodes.find(ino);
      if (target == idx.inodes.end() || !target->second.item) {
        rep.error("inode-missing", Where{root, {}, e.key, ino},
                  fmt::format("{}: points to inode {} which has no inode item", entry_text(e), ino));
        continue;
      }
      const InodeRecord& r = target->second;
      const uint8_t want_type = file_type_of_mode(r.item->mode);
      if ((e.type & ~kFtEncrypted) != want_type)
        rep.error("dir-entry", Where{root, {}, e.key, ino},
                  fmt::format("{}: type {} but inode {} mode 0{:o} (filetype mismatch)", entry_text(e), e.type, ino,
                              r.item->mode.get()));
      const NameRef* match = nullptr;
      for (const auto& n : r.names)
        if (n.parent == e.dir && n.name == e.name) match = &n;
      if (!match)
        rep.error("dir-entry", Where{root, {}, e.key, ino},
                  fmt::format("{}: inode {} has no INODE_REF for this name (no inode ref)", entry_text(e), ino));
      else if (match->index != e.key.offset)
        rep.error("dir-entry", Where{root, {}, match->key, ino},
                  fmt::format("{}: inode {} ref {} says index {} (index mismatch)", entry_text(e), ino,
                              key_text(match->key), match->index));
    }

    for (const auto& [ino, r] : idx.inodes) {
      for (const auto& n : r.names) {
        if (ino == n.parent && n.index == 0 && n.name == "..") continue;  // subvolume root dir
        if (n.extref && io::extref_hash(n.parent, n.name) != n.key.offset)
          rep.error("dir-entry", Where{root, {}, n.key, ino},
                    fmt::format("root {} inode {} extref {} name '{}' in dir {}: hash mismatch, wanted 0x{:x}", root,
                                ino, key_text(n.key), n.name, n.parent, io::extref_hash(n.parent, n.name)));
        auto ix = by_name_index.find({n.parent, n.name});
        if (ix == by_name_index.end() || ix->second->location.objectid != ino)
          rep.error("dir-entry", Where{root, {}, n.key, ino},
                    fmt::format("root {} inode {} name '{}' in dir {} index {} ({}): no DIR_INDEX ({} DIR_INDEX {}) "
                                "(unresolved ref, no dir index)",
                                root, ino, n.name, n.parent, n.index, key_text(n.key), n.parent, n.index));
        if (!idx.inodes.count(n.parent) || !idx.inodes.at(n.parent).item)
          rep.error(
              "inode-missing", Where{root, {}, n.key, ino},
              fmt::format("root {} inode {} name '{}': parent dir {} has no inode item", root, ino, n.name, n.parent));
      }
    }
  }
}

}  // namespace ubtrfs::fsck
