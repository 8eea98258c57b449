// Images of the COW benchmark: a fresh sparse image made by the mkfs library, sparse copies of the
// prepared template (one fresh image per configuration, all starting from the same committed state)
// and the `btrfs check` oracle run on each image after its configuration unmounted.
//
// Owns no filesystem state: every function works on paths. Nothing here mounts anything.
#pragma once

#include <cstdint>
#include <string>

#include "io/status.h"

namespace ubtrfs::cowbench {

// Creates (or replaces) `path` as a sparse file of `size` bytes holding a new filesystem with
// `nodesize`-byte tree blocks (DUP metadata, xxhash, as mkfs.ubtrfs defaults).
// Errors: those of the mkfs library and of creating the file.
[[nodiscard]] Status make_image(const std::string& path, uint64_t size, uint32_t nodesize);

// Copies `from` to `to` (replaced) keeping holes: a reflink where the filesystem offers one, else
// only the data segments (SEEK_DATA / SEEK_HOLE). Errors: EIO-class errnos with the path named.
[[nodiscard]] Status copy_sparse(const std::string& from, const std::string& to);

struct CheckResult {
  enum class State { kClean, kErrors, kSkipped };
  State state = State::kSkipped;
  std::string detail;  // kErrors: the first lines of btrfs check's output; kSkipped: why
};
const char* check_state_name(CheckResult::State s);  // "clean", "errors", "skipped"

// `btrfs check --readonly` (original mode) on an unmounted image: clean only if it exits 0 and
// reports no error line. Skipped when btrfs-progs is not installed or we are not root (btrfs check
// refuses to run without root: "could not check mount status").
CheckResult btrfs_check(const std::string& path);

}  // namespace ubtrfs::cowbench
