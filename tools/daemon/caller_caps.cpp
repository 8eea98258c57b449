// The caller's effective capabilities from /proc; see caller_caps.h.
#include "tools/daemon/caller_caps.h"

#include <charconv>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>

namespace ubtrfs::daemon {

namespace {
// The text after `field` (e.g. "CapEff:") on its line of /proc/PID/status; nullopt if the process
// or the line is not there.
std::optional<std::string> status_field(pid_t pid, std::string_view field) {
  if (pid <= 0) return std::nullopt;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.starts_with(field)) return line.substr(field.size());
  return std::nullopt;
}
}  // namespace

std::optional<uint64_t> caller_cap_effective(pid_t pid) {
  const auto text = status_field(pid, "CapEff:");
  if (!text) return std::nullopt;
  const size_t at = text->find_first_not_of(" \t");
  uint64_t eff = 0;
  if (at != std::string::npos && std::from_chars(text->data() + at, text->data() + text->size(), eff, 16).ec == std::errc{})
    return eff;
  return std::nullopt;
}

bool caller_has_cap_fsetid(pid_t pid, uid_t uid) {
  const auto eff = caller_cap_effective(pid);
  return eff ? (*eff & kCapFsetid) != 0 : uid == 0;
}

bool caller_in_group(pid_t pid, gid_t fsgid, gid_t g) {
  if (g == fsgid) return true;
  const auto text = status_field(pid, "Groups:");
  if (!text) return false;
  const char* p = text->data();
  const char* end = p + text->size();
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

}  // namespace ubtrfs::daemon
