// FuseInitExt: INIT flags beyond libfuse 3.14; see fuse_init_ext.h.
#include "tools/daemon/fuse_init_ext.h"

#include <linux/fuse.h>

#include <atomic>
#include <cstddef>
#include <cstring>

#include <spdlog/spdlog.h>

namespace ubtrfs::daemon::init_ext {

namespace {

static_assert(offsetof(fuse_init_in, flags) == 12);
static_assert(offsetof(fuse_init_out, flags) == 12);
static_assert(FUSE_HANDLE_KILLPRIV_V2 == (1u << 28));

std::atomic<bool> g_offered_kill_priv_v2{false};
std::atomic<bool> g_kill_priv_v2{false};
std::atomic<uint64_t> g_unreadable_write_flags{0};

}  // namespace

void on_init_request(const void* init_in, size_t len) {
  if (len < offsetof(fuse_init_in, flags) + sizeof(uint32_t)) return;
  uint32_t flags = 0;
  std::memcpy(&flags, static_cast<const char*>(init_in) + offsetof(fuse_init_in, flags), sizeof flags);
  g_offered_kill_priv_v2.store((flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
}

void on_init_reply(void* init_out, size_t len) {
  if (len < offsetof(fuse_init_out, flags) + sizeof(uint32_t)) return;
  char* at = static_cast<char*>(init_out) + offsetof(fuse_init_out, flags);
  uint32_t flags = 0;
  std::memcpy(&flags, at, sizeof flags);
  const bool kill = g_offered_kill_priv_v2.load();
  if (kill) flags |= FUSE_HANDLE_KILLPRIV_V2;
  std::memcpy(at, &flags, sizeof flags);
  g_kill_priv_v2.store(kill);
  spdlog::debug("fuse: FUSE_HANDLE_KILLPRIV_V2 {}", kill ? "on (the daemon clears suid/sgid and capabilities)"
                                                          : "off (the kernel asks before each write)");
}

bool kill_priv_v2() { return g_kill_priv_v2.load(std::memory_order_relaxed); }

void count_unreadable_write_flags() { g_unreadable_write_flags.fetch_add(1, std::memory_order_relaxed); }
uint64_t unreadable_write_flags() { return g_unreadable_write_flags.load(std::memory_order_relaxed); }

}  // namespace ubtrfs::daemon::init_ext
