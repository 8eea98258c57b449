// Extended attributes (btrfs xattr.c): see xattr.h. Items are parsed and rewritten whole with the
// DIR_ITEM helpers of dir_item.h, since XATTR_ITEM shares `struct btrfs_dir_item`.
#include "fs/xattr.h"

#include <algorithm>

#include "fs/dir_item.h"
#include "io/checksum.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

std::vector<uint8_t> serialize(const std::vector<DirEntryRecord>& entries) {
  std::vector<uint8_t> body;
  for (const auto& e : entries) append_dir_entry(body, e);
  return body;
}

}  // namespace

Status check_xattr_name(std::string_view name) {
  if (name.empty() || name.size() > kXattrNameMax)
    return fail(ERANGE, "xattr name of {} bytes is outside 1..{}", name.size(), kXattrNameMax);
  static constexpr std::string_view kPrefixes[] = {"user.", "trusted.", "security.", "btrfs."};
  for (auto prefix : kPrefixes) {
    if (!name.starts_with(prefix)) continue;
    if (name.size() == prefix.size()) return fail(EINVAL, "xattr name '{}' is empty after its namespace", name);
    return {};
  }
  if (name == "system.posix_acl_access" || name == "system.posix_acl_default") return {};
  return fail(EOPNOTSUPP, "xattr namespace of '{}' is not supported", name);
}

Status set_xattr(TreeHandle& h, TreeRoot& root, uint64_t ino, std::string_view name, std::span<const uint8_t> value,
                 int flags) {
  UBTRFS_TRY_STATUS(check_xattr_name(name));
  if (value.size() > kXattrSizeMax)
    return fail(E2BIG, "xattr '{}' value of {} bytes exceeds {} (inode {})", name, value.size(), kXattrSizeMax, ino);
  const uint32_t limit = max_xattr_size(root.ctx().fs.nodesize);
  if (name.size() + value.size() > limit)
    return fail(ENOSPC, "xattr '{}' name and value of {} bytes exceed {} (inode {})", name,
                name.size() + value.size(), limit, ino);
  const Key key{ino, kXattrItemKey, io::name_hash(name)};
  auto old = UBTRFS_TRY(lookup_item(root, key));
  std::vector<DirEntryRecord> entries;
  if (old) entries = UBTRFS_TRY(parse_dir_entries(*old, key));
  auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntryRecord& e) { return e.name == name; });
  if (it != entries.end() && (flags & kXattrCreate))
    return fail(EEXIST, "xattr '{}' already exists on inode {}", name, ino);
  if (it == entries.end() && (flags & kXattrReplace))
    return fail(ENODATA, "xattr '{}' does not exist on inode {}", name, ino);
  DirEntryRecord e;
  e.name = std::string(name);
  e.type = kFtXattr;
  e.transid = h.transid;
  e.data.assign(value.begin(), value.end());
  if (it != entries.end())
    *it = std::move(e);
  else
    entries.push_back(std::move(e));
  const auto body = serialize(entries);
  if (body.size() > max_item_size(root.ctx().fs.nodesize))
    return fail(ENOSPC, "xattr item {} of colliding names cannot hold '{}' (inode {})", key.offset, name, ino);
  return write_item_body(h, root, key, body);
}

Result<std::optional<std::vector<uint8_t>>> get_xattr(TreeRoot& root, uint64_t ino, std::string_view name) {
  using Out = std::optional<std::vector<uint8_t>>;
  if (name.empty() || name.size() > kXattrNameMax) return Out{};
  const Key key{ino, kXattrItemKey, io::name_hash(name)};
  auto body = UBTRFS_TRY(lookup_item(root, key));
  if (!body) return Out{};
  for (auto& e : UBTRFS_TRY(parse_dir_entries(*body, key)))
    if (e.name == name) return Out(std::move(e.data));
  return Out{};
}

Result<std::vector<std::string>> list_xattrs(TreeRoot& root, uint64_t ino) {
  std::vector<std::string> out;
  Path p;
  UBTRFS_TRY(search_slot(nullptr, root, Key{ino, kXattrItemKey, 0}, p, 0, false));
  if (p.leaf().nritems() == 0) return out;
  bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
  if (!valid) valid = UBTRFS_TRY(next_leaf(root, p));
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid != ino || k.type != kXattrItemKey) break;
    auto d = p.leaf().item_data(p.slots[0]);
    for (auto& e : UBTRFS_TRY(parse_dir_entries(d, k))) {
      if ((e.type & ~kFtEncrypted) != kFtXattr)
        return fail(EUCLEAN, "xattr item [{} {} {}] entry '{}' has type {}", k.objectid, k.type, k.offset, e.name,
                    e.type);
      out.push_back(std::move(e.name));
    }
    valid = UBTRFS_TRY(next_item(root, p));
  }
  return out;
}

Status remove_xattr(TreeHandle& h, TreeRoot& root, uint64_t ino, std::string_view name) {
  if (name.empty() || name.size() > kXattrNameMax)
    return fail(ENODATA, "xattr '{}' does not exist on inode {}", name, ino);
  const Key key{ino, kXattrItemKey, io::name_hash(name)};
  auto old = UBTRFS_TRY(lookup_item(root, key));
  if (!old) return fail(ENODATA, "xattr '{}' does not exist on inode {}", name, ino);
  auto entries = UBTRFS_TRY(parse_dir_entries(*old, key));
  auto it = std::find_if(entries.begin(), entries.end(), [&](const DirEntryRecord& e) { return e.name == name; });
  if (it == entries.end()) return fail(ENODATA, "xattr '{}' does not exist on inode {}", name, ino);
  entries.erase(it);
  return write_item_body(h, root, key, serialize(entries));
}

}  // namespace ubtrfs::fs
