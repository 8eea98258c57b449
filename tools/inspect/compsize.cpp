// compsize over an image; see compsize.h.
#include "tools/inspect/compsize.h"

#include <sys/stat.h>

#include <cstring>
#include <map>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "tree/format.h"

namespace ubtrfs::inspect {

namespace {

constexpr size_t kPreallocRow = 4;
constexpr const char* kRowNames[] = {"none", "zlib", "lzo", "zstd", "prealloc"};

struct DirEntry {
  std::string name;
  uint64_t child = 0;
  bool is_subvol = false;
};

// One pass over a subvolume tree: regular file inodes, directory entries, file extent items.
struct TreeScan {
  std::set<uint64_t> regular;
  std::map<uint64_t, std::vector<DirEntry>> dirs;
  struct Ref {
    uint64_t ino = 0;
    FileExtentItem fi{};
    uint64_t inline_len = 0;
  };
  std::vector<Ref> refs;
};

Result<TreeScan> scan_tree(const FsReader& reader, const RootLocation& root) {
  TreeScan s;
  UBTRFS_TRY_STATUS(reader.for_each_item(root, [&](const Key& key, std::span<const uint8_t> body) -> Status {
    if (key.type == kInodeItemKey && body.size() >= sizeof(InodeItem)) {
      InodeItem ii;
      std::memcpy(&ii, body.data(), sizeof(ii));
      if (S_ISREG(ii.mode.get())) s.regular.insert(key.objectid);
    } else if (key.type == kDirIndexKey && body.size() >= sizeof(DirItem)) {
      DirItem di;
      std::memcpy(&di, body.data(), sizeof(di));
      const size_t n = di.name_len.get();
      if (sizeof(DirItem) + n > body.size()) return {};
      const Key loc = di.location.cpu();
      s.dirs[key.objectid].push_back(DirEntry{std::string(reinterpret_cast<const char*>(body.data()) + sizeof(DirItem), n),
                                              loc.objectid, loc.type == kRootItemKey});
    } else if (key.type == kExtentDataKey && body.size() >= kFileExtentInlineDataStart) {
      TreeScan::Ref r;
      r.ino = key.objectid;
      std::memcpy(&r.fi, body.data(), std::min(body.size(), sizeof(FileExtentItem)));
      if (r.fi.type == kFileExtentInline)
        r.inline_len = body.size() - kFileExtentInlineDataStart;
      else if (body.size() < sizeof(FileExtentItem))
        return fail(EUCLEAN, "file extent [{} {} {}]: item size {} too small", key.objectid, key.type, key.offset,
                    body.size());
      s.refs.push_back(r);
    }
    return {};
  }));
  return s;
}

void add_refs(const TreeScan& s, const std::set<uint64_t>* only, CompsizeReport& r,
              std::set<uint64_t>& seen_extents) {
  for (const auto& ref : s.refs) {
    if (only && !only->count(ref.ino)) continue;
    const FileExtentItem& fi = ref.fi;
    const size_t comp = fi.compression <= kCompressZstd ? fi.compression : size_t{0};
    if (fi.type == kFileExtentInline) {
      CompsizeRow& row = r.rows[comp];
      row.disk += ref.inline_len;
      row.uncompressed += fi.ram_bytes.get();
      row.referenced += fi.ram_bytes.get();
      r.inline_extents++;
      continue;
    }
    const uint64_t bytenr = fi.disk_bytenr.get();
    if (bytenr == 0) continue;  // a hole
    CompsizeRow& row = r.rows[fi.type == kFileExtentPrealloc ? kPreallocRow : comp];
    r.refs++;
    row.referenced += fi.num_bytes.get();
    if (seen_extents.insert(bytenr).second) {
      r.regular_extents++;
      row.disk += fi.disk_num_bytes.get();
      row.uncompressed += fi.ram_bytes.get();
    }
  }
}

std::string human(uint64_t x) {
  static constexpr const char* kUnits[] = {"B", "K", "M", "G", "T", "P", "E"};
  double v = static_cast<double>(x);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{}B", x);
  return v < 10 ? fmt::format("{:.1f}{}", v, kUnits[u]) : fmt::format("{:.0f}{}", v, kUnits[u]);
}

}  // namespace

CompsizeRow CompsizeReport::total() const {
  CompsizeRow t;
  for (const auto& r : rows) {
    t.disk += r.disk;
    t.uncompressed += r.uncompressed;
    t.referenced += r.referenced;
  }
  return t;
}

Result<CompsizeReport> compsize(const FsReader& reader, const std::optional<std::string>& path) {
  CompsizeReport r;
  std::set<uint64_t> seen;  // data extents are shared across subvolumes (snapshots, reflinks)
  if (!path) {
    for (const RootLocation& root : UBTRFS_TRY(reader.list_roots())) {
      const uint64_t id = root.tree_id;
      if (root.key.type != kRootItemKey) continue;
      if (id != kFsTreeObjectid && (id < kFirstFreeObjectid || id > kLastFreeObjectid)) continue;
      const TreeScan s = UBTRFS_TRY(scan_tree(reader, root));
      r.files += s.regular.size();
      add_refs(s, nullptr, r, seen);
    }
    return r;
  }
  const RootLocation root = UBTRFS_TRY(reader.find_root(kFsTreeObjectid));
  const TreeScan s = UBTRFS_TRY(scan_tree(reader, root));
  // Resolve the path component by component from the top-level directory (inode 256).
  uint64_t ino = kFirstFreeObjectid;
  size_t pos = 0;
  const std::string& p = *path;
  while (pos < p.size()) {
    size_t slash = p.find('/', pos);
    if (slash == std::string::npos) slash = p.size();
    const std::string part = p.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    auto it = s.dirs.find(ino);
    const DirEntry* found = nullptr;
    if (it != s.dirs.end())
      for (const auto& e : it->second)
        if (e.name == part) found = &e;
    if (!found || found->is_subvol) return fail(ENOENT, "{}: no such file in the top-level subvolume", p);
    ino = found->child;
  }
  // Every regular file at or below `ino`.
  std::set<uint64_t> files, visited;
  std::vector<uint64_t> todo{ino};
  while (!todo.empty()) {
    const uint64_t at = todo.back();
    todo.pop_back();
    if (!visited.insert(at).second) continue;
    if (s.regular.count(at)) files.insert(at);
    if (auto it = s.dirs.find(at); it != s.dirs.end())
      for (const auto& e : it->second)
        if (!e.is_subvol) todo.push_back(e.child);
  }
  r.files = files.size();
  add_refs(s, &files, r, seen);
  return r;
}

std::string format_compsize(const CompsizeReport& r, bool bytes) {
  auto num = [&](uint64_t x) { return bytes ? fmt::format("{}", x) : human(x); };
  auto pct = [](const CompsizeRow& row) {
    return row.uncompressed ? static_cast<unsigned>(row.disk * 100 / row.uncompressed) : 0u;  // compsize truncates
  };
  std::string out = fmt::format("Processed {} file{}, {} regular extents ({} refs), {} inline.\n", r.files,
                                r.files == 1 ? "" : "s", r.regular_extents, r.refs, r.inline_extents);
  out += fmt::format("{:<10} {:<8} {:<12} {:<12} {:<12}\n", "Type", "Perc", "Disk Usage", "Uncompressed",
                     "Referenced");
  auto line = [&](const char* name, const CompsizeRow& row) {
    out += fmt::format("{:<10} {:>3}%    {:<12} {:<12} {:<12}\n", name, pct(row), num(row.disk), num(row.uncompressed),
                       num(row.referenced));
  };
  line("TOTAL", r.total());
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (r.rows[i].uncompressed || r.rows[i].referenced) line(kRowNames[i], r.rows[i]);
  return out;
}

}  // namespace ubtrfs::inspect
