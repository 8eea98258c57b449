// POSIX ACL inheritance at creation; see posix_acl.h.
#include "fs/posix_acl.h"

#include <sys/stat.h>

#include "tree/format.h"

namespace ubtrfs::fs {

namespace {
constexpr uint32_t kAclVersion = 2;
constexpr uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10, kOther = 0x20;
constexpr size_t kHeader = 4, kEntry = 8;
}  // namespace

std::optional<AclCreateResult> acl_for_new_inode(uint32_t mode, std::span<const uint8_t> def) {
  if (def.size() < kHeader || (def.size() - kHeader) % kEntry != 0) return std::nullopt;
  if (load<le32>(def.data()).get() != kAclVersion) return std::nullopt;
  std::vector<uint8_t> acl(def.begin(), def.end());
  const size_t n = (acl.size() - kHeader) / kEntry;
  auto tag_at = [&](size_t i) { return load<le16>(acl.data() + kHeader + i * kEntry).get(); };
  auto perm_at = [&](size_t i) { return load<le16>(acl.data() + kHeader + i * kEntry + 2).get(); };
  auto set_perm = [&](size_t i, uint16_t p) {
    le16 v;
    v = p;
    store(acl.data() + kHeader + i * kEntry + 2, v);
  };
  std::optional<size_t> group_obj, mask;
  bool extended = false, has_user_obj = false, has_other = false;
  uint32_t bits = mode & 07777;
  for (size_t i = 0; i < n; ++i) {
    const uint16_t tag = tag_at(i);
    switch (tag) {
      case kUserObj: {
        const uint16_t p = perm_at(i) & ((bits >> 6) & 7);
        set_perm(i, p);
        bits = (bits & ~0700u) | (static_cast<uint32_t>(p) << 6);
        has_user_obj = true;
        break;
      }
      case kUser:
      case kGroup:
        extended = true;
        break;
      case kGroupObj:
        group_obj = i;
        break;
      case kMask:
        mask = i;
        extended = true;
        break;
      case kOther: {
        const uint16_t p = perm_at(i) & (bits & 7);
        set_perm(i, p);
        bits = (bits & ~07u) | p;
        has_other = true;
        break;
      }
      default:
        return std::nullopt;
    }
  }
  if (!has_user_obj || !group_obj || !has_other) return std::nullopt;
  // The group-class bits cap the mask if there is one (then GROUP_OBJ is left alone), else GROUP_OBJ.
  const size_t g = mask ? *mask : *group_obj;
  const uint16_t p = perm_at(g) & ((bits >> 3) & 7);
  set_perm(g, p);
  bits = (bits & ~070u) | (static_cast<uint32_t>(p) << 3);

  AclCreateResult r;
  r.mode = (mode & S_IFMT) | bits;
  if (extended) r.access = acl;
  if (S_ISDIR(mode)) r.default_acl = std::vector<uint8_t>(def.begin(), def.end());
  return r;
}

}  // namespace ubtrfs::fs
