// The caller's effective capabilities from /proc; see caller_caps.h.
#include "tools/daemon/caller_caps.h"

#include <charconv>
#include <fstream>
#include <string>

namespace ubtrfs::daemon {

std::optional<uint64_t> caller_cap_effective(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    const size_t at = line.find_first_not_of(" \t", 7);
    uint64_t eff = 0;
    if (at != std::string::npos &&
        std::from_chars(line.data() + at, line.data() + line.size(), eff, 16).ec == std::errc{})
      return eff;
    return std::nullopt;
  }
  return std::nullopt;
}

bool caller_has_cap_fsetid(pid_t pid, uid_t uid) {
  const auto eff = caller_cap_effective(pid);
  return eff ? (*eff & kCapFsetid) != 0 : uid == 0;
}

bool caller_in_group(pid_t pid, gid_t fsgid, gid_t g) {
  if (g == fsgid) return true;
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    const char* p = line.data() + 7;
    const char* end = line.data() + line.size();
    while (p < end) {
      while (p < end && (*p == ' ' || *p == '\t')) ++p;
      gid_t v = 0;
      auto [next, ec] = std::from_chars(p, end, v);
      if (ec != std::errc{}) break;
      if (v == g) return true;
      p = next;
    }
    return false;
  }
  return false;
}

}  // namespace ubtrfs::daemon
