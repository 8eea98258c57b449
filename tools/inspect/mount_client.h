// The inspector's side of the control channel (tools/common/control_protocol.h): deciding whether
// a path is on a mounted ubtrfs, and reading a payload from the daemon serving it.
//
// A path qualifies when it is a directory or regular file whose mount (/proc/self/mountinfo, by
// device number) has the type fuse.ubtrfs; nothing is sent to any other filesystem. The ioctl
// goes to the path itself, so any directory or file of the mount works, not only its root.
// Other users reach a ubtrfs mount only when it was made with allow_other (the kernel refuses
// them everything else, stat included); that case is recognised from mountinfo and said so.
// Errors are one line naming the path: "PATH: not a ubtrfs mount (tmpfs on /tmp)",
// "PATH: permission denied: the ubtrfs mount on M was made without allow_other ...", ...
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/status.h"
#include "tools/common/control_protocol.h"

namespace ubtrfs::inspect {

struct MountEntry {
  unsigned major = 0;
  unsigned minor = 0;
  std::string mount_point;    // unescaped (\040 -> ' ')
  std::string fstype;         // "fuse.ubtrfs", "btrfs", "tmpfs"
  std::string source;
  std::string super_options;  // e.g. "rw,user_id=0,group_id=0,default_permissions,allow_other"
};

// Parses the text of /proc/self/mountinfo; malformed lines are skipped.
std::vector<MountEntry> parse_mountinfo(std::string_view text);

// The entry mounted at the longest prefix of an absolute, normalized path; the last mounted
// wins among entries at the same mount point (it hides the earlier ones).
std::optional<MountEntry> mount_covering(const std::vector<MountEntry>& mounts, const std::string& path);

// Reads `payload` from the ubtrfs daemon serving `path`.
[[nodiscard]] Result<std::string> read_live_payload(const std::string& path, control::Payload payload);

// Shuts the filesystem behind `path` down (control::kIocShutdown; flags 0 sync first, 1 flush the
// log, 2 no flush): from its return, the daemon writes nothing more. Errors: EPERM (not root), the
// mount checks' as for read_live_payload.
[[nodiscard]] Status request_shutdown(const std::string& path, uint32_t flags);

}  // namespace ubtrfs::inspect
