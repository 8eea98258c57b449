// The expensive judges of a crash image, run outside the process: `btrfs check` (original and
// lowmem mode) and the kernel (loop mount read-write, so a tree log is replayed; every file read).
//
// Owns: ImageFile (a crash image written sparse to a temporary file, removed on destruction),
// availability probing, and run_external_oracles(). Policy as tests/oracle/lib.sh: a missing oracle
// (no btrfs-progs, not root, no loop device or kernel btrfs) is reported by probe_external_oracles;
// the caller decides between skipping and failing (UBTRFS_REQUIRE_ORACLES=1).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/status.h"

namespace ubtrfs::crash {

struct OracleAvailability {
  bool btrfs_check = false;
  bool kernel_mount = false;
  std::string why_not;  // what is missing
};
OracleAvailability probe_external_oracles();

struct OracleFinding {
  std::string kind;    // "btrfs-check", "btrfs-check-lowmem", "kernel-mount", "kernel-read"
  std::string detail;  // first lines of the tool's output
};

// Runs the available oracles on the image file; returns what each rejected (empty: all clean).
std::vector<OracleFinding> run_external_oracles(const std::string& image, const OracleAvailability& avail,
                                                const std::string& scratch_dir);

// Writes `size` bytes as a sparse file: `fill(write)` is called once and must write every
// non-zero region through the given callback (offset, bytes). Errors: errno of the file calls.
[[nodiscard]] Status write_sparse_image(
    const std::string& path, uint64_t size,
    const std::function<void(const std::function<void(uint64_t, const uint8_t*, size_t)>&)>& fill);

}  // namespace ubtrfs::crash
