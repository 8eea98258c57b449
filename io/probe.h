// Detection of an existing filesystem (or other signature) on a device or image, so mkfs can refuse
// to overwrite one without -f, as mkfs.btrfs does.
//
// Owns nothing: each call opens the path read-only through libblkid's low-level probe with the
// superblocks chain enabled, and closes it before returning. Never writes.
#pragma once

#include <optional>
#include <string>

#include "io/status.h"

namespace ubtrfs::io {

// Returns the signature's TYPE as blkid names it ("btrfs", "ext4", "swap", ...), or nullopt when the
// device carries none. When several signatures are found (blkid calls this ambivalent), returns the
// first one the low-level probe reports. Errors: the open's errno (ENOENT, EACCES, ...) or EIO when
// the probe itself fails, with a message naming the path.
[[nodiscard]] Result<std::optional<std::string>> probe_existing_filesystem(const std::string& path);

}  // namespace ubtrfs::io
