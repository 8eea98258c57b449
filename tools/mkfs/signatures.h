// Enumeration of every on-disk signature libblkid recognizes (filesystems, RAID members, partition
// tables), with the byte range of each magic, so mkfs can both report and wipe them, as wipefs(8)
// does. Read-only: opens the path through libblkid and closes it before returning.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/status.h"

namespace ubtrfs::mkfs {

struct Signature {
  std::string type;     // "btrfs", "ext4", "dos", "gpt", ...
  bool partition_table = false;
  uint64_t offset = 0;  // byte offset of the magic
  uint64_t length = 0;  // magic length
};

// Errors: the open's errno with a message naming the path, EIO if the probe cannot be set up.
[[nodiscard]] Result<std::vector<Signature>> list_signatures(const std::string& path);

}  // namespace ubtrfs::mkfs
