// The calling process's effective capabilities, for the few decisions FUSE leaves to the daemon
// without saying whether the caller is privileged (the kernel sends uid, gid and pid only): the
// CapEff line of /proc/PID/status. The caller's capabilities may change between its syscall and
// this read, or the process may be gone: callers say what stands in then (uid 0, as the kernel's
// own FUSE code does for a request without a process).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

namespace ubtrfs::daemon {

inline constexpr uint64_t kCapFowner = 1ull << 3;           // CAP_FOWNER
inline constexpr uint64_t kCapFsetid = 1ull << 4;           // CAP_FSETID
inline constexpr uint64_t kCapLinuxImmutable = 1ull << 9;   // CAP_LINUX_IMMUTABLE

// CapEff of process `pid`; nullopt when it cannot be read (pid 0, the process gone).
std::optional<uint64_t> caller_cap_effective(pid_t pid);

// Whether the caller holds CAP_FSETID (the right to keep S_ISUID / S_ISGID on write); uid 0 stands
// in when its capabilities cannot be read.
bool caller_has_cap_fsetid(pid_t pid, uid_t uid);

// in_group_p: whether `g` is the caller's filesystem group (`fsgid`, the request's gid) or one of
// the supplementary groups on the Groups line of /proc/PID/status; `fsgid` alone when that cannot
// be read.
bool caller_in_group(pid_t pid, gid_t fsgid, gid_t g);

}  // namespace ubtrfs::daemon
