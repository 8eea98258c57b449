// Test helper: running an external command (btrfs-progs, mkfs, the kernel's mount) from a unit test
// and deciding whether a missing oracle skips or fails (UBTRFS_REQUIRE_ORACLES=1, as CI sets).
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace ubtrfs::io::testing {

// Runs `cmd` through the shell with stderr folded into stdout; returns its exit status (127: the
// shell could not start, 128: killed by a signal). `out`, when given, receives the output.
inline int run(const std::string& cmd, std::string* out = nullptr) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return 127;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int st = ::pclose(p);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

inline bool have_tool(const char* name) { return run(std::string("command -v ") + name + " >/dev/null") == 0; }

// CI sets UBTRFS_REQUIRE_ORACLES=1: a missing oracle must fail the test instead of skipping it.
inline bool oracles_required() {
  const char* r = std::getenv("UBTRFS_REQUIRE_ORACLES");
  return r && std::string(r) == "1";
}

}  // namespace ubtrfs::io::testing
