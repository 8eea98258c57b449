// Access ACL -> mode bits; see posix_acl.h (the rules of the kernel's posix_acl_equiv_mode).
#include "tools/daemon/posix_acl.h"

#include <cstring>

namespace ubtrfs::daemon {

namespace {
constexpr uint32_t kAclVersion = 2;
constexpr uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10, kOther = 0x20;

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24); }
}  // namespace

std::optional<AclModeUpdate> acl_mode_update(std::span<const uint8_t> x) {
  constexpr size_t kEntry = 8;
  if (x.size() < 4 || (x.size() - 4) % kEntry != 0 || le32(x.data()) != kAclVersion) return std::nullopt;
  std::optional<uint32_t> user_obj, group_obj, mask, other;
  bool named = false;
  for (size_t off = 4; off < x.size(); off += kEntry) {
    const uint16_t tag = le16(x.data() + off);
    const uint32_t perm = le16(x.data() + off + 2) & 7u;
    switch (tag) {
      case kUserObj: user_obj = perm; break;
      case kGroupObj: group_obj = perm; break;
      case kMask: mask = perm; break;
      case kOther: other = perm; break;
      case kUser:
      case kGroup: named = true; break;
      default: return std::nullopt;
    }
  }
  if (!user_obj || !group_obj || !other || (named && !mask)) return std::nullopt;
  AclModeUpdate u;
  u.mode_bits = (*user_obj << 6) | ((mask ? *mask : *group_obj) << 3) | *other;
  u.equivalent = !named && !mask;
  return u;
}

}  // namespace ubtrfs::daemon
