// ubtrfs-ctl subvolume list (btrfs-progs cmds/subvolume-list.c): the same options, columns,
// filters, order and paths, from the root tree read through TREE_SEARCH / INO_LOOKUP
// (subvolume_tree.h).
//
// The rules it keeps (those of btrfs-progs 6.2): subvolumes are listed by id, FS_TREE never; a
// subvolume without a back reference (deleted, not yet cleaned) is listed only with -d; a path is
// built by walking back references up to the subvolume the command was given (its own subvolume
// when MNT is one) or up to FS_TREE — with -o and -a always up to FS_TREE; -o keeps only the
// subvolumes whose parent is MNT's subvolume; -a prefixes "<FS_TREE>/" to the paths of the others;
// "top level" is the parent's id. Default columns: ID, gen, top level, path; -p parent, -c cgen,
// -g gen, -u uuid, -q parent_uuid, -R received_uuid, -s cgen and otime with snapshots only, -r
// read-only only, -t a table.
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "tools/ctl/ctl.h"
#include "tools/ctl/subvolume_tree.h"

namespace ubtrfs::ctl {

namespace {

enum Column { kId, kGen, kCgen, kParent, kTopLevel, kOtime, kPuuid, kRuuid, kUuid, kPath, kColumns };
constexpr const char* kNames[kColumns] = {"ID",     "gen",         "cgen",          "parent", "top level",
                                          "otime",  "parent_uuid", "received_uuid", "uuid",   "path"};

struct Listed {
  const RootInfo* r = nullptr;
  std::string full_path;
  uint64_t top_id = 0;
  bool deleted = false;
};

std::string column(const Listed& l, int c) {
  const RootInfo& r = *l.r;
  switch (c) {
    case kId: return std::to_string(r.id);
    case kGen: return std::to_string(r.gen);
    case kCgen: return std::to_string(r.ogen);
    case kParent: return std::to_string(r.ref_tree);
    case kTopLevel: return std::to_string(l.top_id);
    case kOtime: {
      if (!r.otime) return "-";
      const time_t t = r.otime;
      struct tm tm;
      localtime_r(&t, &tm);
      char buf[64];
      strftime(buf, sizeof buf, "%Y-%m-%d %X", &tm);
      return buf;
    }
    case kPuuid: return fmt::format("{:<36}", uuid_text(r.puuid));
    case kRuuid: return fmt::format("{:<36}", uuid_text(r.ruuid));
    case kUuid: return fmt::format("{:<36}", uuid_text(r.uuid));
    default: return l.full_path;
  }
}

// btrfs-progs' resolve_root: the path of `r` walking back references up to `top_id` or FS_TREE;
// false when a link is missing (deleted). Sets the parent ("top level") from the first step.
bool resolve(const std::map<uint64_t, RootInfo>& roots, const std::map<uint64_t, std::string>& rel, const RootInfo& r,
             uint64_t top_id, Listed& out) {
  const RootInfo* found = &r;
  std::string path;
  for (size_t steps = 0;; ++steps) {
    auto p = rel.find(found->id);
    if (found->ref_tree == 0 || p == rel.end() || steps > roots.size()) return false;
    path = path.empty() ? p->second : p->second + "/" + path;
    if (!out.top_id) out.top_id = found->ref_tree;
    const uint64_t next = found->ref_tree;
    if (next == top_id || next == BTRFS_FS_TREE_OBJECTID) break;
    auto it = roots.find(next);
    if (it == roots.end()) return false;
    found = &it->second;
  }
  out.full_path = path;
  return true;
}

}  // namespace

int subvolume_list(const SubvolumeListArgs& a) {
  const int fd = open_dir(a.path);
  if (fd < 0) return error(fmt::format("can't access '{}'", a.path));
  auto id = subvolume_id_of(fd);
  if (!id) {
    ::close(fd);
    return error(fmt::format("cannot resolve rootid for path: {}", std::strerror(id.error().err)));
  }
  auto roots = read_roots(fd);
  if (!roots) {
    ::close(fd);
    return error(fmt::format("can't perform the search: {}", std::strerror(roots.error().err)));
  }
  // Each subvolume's path inside its parent (btrfs-progs' lookup_ino_path).
  std::map<uint64_t, std::string> rel;
  for (auto& [rid, r] : *roots) {
    if (!r.ref_tree) continue;
    auto dir = ino_lookup(fd, r.ref_tree, r.dir_id);
    if (!dir) {
      if (dir.error().err == ENOENT) continue;
      ::close(fd);
      return error(fmt::format("failed to lookup path for root {}: {}", r.ref_tree, std::strerror(dir.error().err)));
    }
    rel[rid] = *dir + r.name;
  }
  ::close(fd);

  bool print[kColumns] = {};
  print[kId] = print[kGen] = print[kTopLevel] = print[kPath] = true;
  print[kParent] = a.parent;
  print[kCgen] = a.ogen || a.snapshots_only;
  print[kGen] = true;
  print[kOtime] = a.snapshots_only;
  print[kUuid] = a.uuid;
  print[kPuuid] = a.parent_uuid;
  print[kRuuid] = a.received_uuid;
  const uint64_t resolve_top = (a.all || a.only_below) ? 0 : *id;

  std::vector<Listed> out;
  for (const auto& [rid, r] : *roots) {
    Listed l;
    l.r = &r;
    if (!resolve(*roots, rel, r, resolve_top, l)) {
      l.deleted = rid != BTRFS_FS_TREE_OBJECTID;
      l.full_path = l.deleted ? "DELETED" : "TOPLEVEL";
    }
    if (l.deleted != a.deleted) continue;
    if (a.snapshots_only && !r.root_offset) continue;
    if (a.readonly && !(r.flags & BTRFS_ROOT_SUBVOL_RDONLY)) continue;
    if (a.only_below && l.top_id != *id) continue;
    if (a.all && l.top_id != *id) l.full_path = "<FS_TREE>/" + l.full_path;
    if (rid == BTRFS_FS_TREE_OBJECTID) continue;
    out.push_back(std::move(l));
  }

  std::string text;
  if (a.table) {
    for (int c = 0; c < kColumns; ++c)
      if (print[c]) text += fmt::format("{}\t", kNames[c]);
    text += "\n";
    for (int c = 0; c < kColumns; ++c)
      if (print[c]) text += std::string(std::strlen(kNames[c]), '-') + "\t";
    text += "\n";
  }
  for (const Listed& l : out) {
    for (int c = 0; c < kColumns; ++c) {
      if (!print[c]) continue;
      if (a.table) {
        text += column(l, c);
        if (c != kPath) text += "\t";
        if (c == kTopLevel) text += "\t";
      } else {
        text += fmt::format("{} {}", kNames[c], column(l, c));
        if (c != kPath) text += " ";
      }
    }
    text += "\n";
  }
  std::fputs(text.c_str(), stdout);
  return kExitOk;
}

}  // namespace ubtrfs::ctl
