// One configuration of ubtrfs-cowbench: a fresh copy of the prepared template image, mounted in
// process with the configuration's fix switches and pressure setting, the workload run for a fixed
// time (or operation count), a clean unmount, the counters, the check oracle.
//
// The counters are the filesystem's own (fs::Filesystem::stats_json, the same JSON the daemon's
// `ubtrfs-inspect stats` and stats_file= show): nothing is counted twice here. They are taken after
// the unmount, so the final commit's COWs and writes are included, as in the daemon's stats_file.
// "Spurious" ENOSPC: operations that failed with ENOSPC while the device still had unallocated space
// (chunk allocation only ever takes space during a run, so unallocated space left at the end means
// there was at least that much at every failure).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/cowbench/image.h"
#include "tools/cowbench/workload.h"

namespace ubtrfs::cowbench {

struct ConfigSpec {
  std::string name;    // "floor", "baseline", "overwrite", "inhibit", "combined"
  bool cow_overwrite;  // fix 1
  bool wb_inhibit;     // fix 2
  bool pressure;       // small cache + background writeback (false: big cache, writeback off)
  bool wb_hold_recopied = true;  // fix 2's transaction scope (false: the patch's handle scope alone)
};
// The five rows, in table order.
const std::vector<ConfigSpec>& all_configs();

struct BenchOptions {
  std::string workdir;               // where the images go
  uint64_t image_size = 4ull << 30;
  uint32_t nodesize = 16384;
  TreeShape shape;
  uint64_t files = 0;                // prepopulated files (0: until the fs tree has level 2)
  int threads = 8;
  double seconds = 10;               // per configuration (0: only --ops stops it)
  uint64_t ops = 0;                  // per configuration (0: only the clock stops it)
  uint64_t seed = 1;
  uint64_t cache_mb = 16;            // the pressure configurations' cache budget (README: why 16)
  uint64_t floor_cache_mb = 1024;    // the floor's
  uint32_t commit_interval_s = 30;
  uint64_t wb_thresh_mb = 32;
  uint32_t wb_ratio = 10;
  uint32_t wb_interval_ms = 5000;
  uint32_t wb_expire_ms = 30000;
  bool wb_coldest_first = true;      // --wb-order lru (the daemon's default) or address (the kernel's)
  bool keep_image = false;
  bool check = true;                 // run btrfs check on every image
  double progress_every_s = 2;       // stderr progress period (0: none)
};

struct ConfigResult {
  ConfigSpec spec;
  uint64_t ops = 0;                  // operations completed (succeeded)
  uint64_t attempted = 0;
  std::array<uint64_t, kOpKinds> by_kind{};
  uint64_t enospc = 0, spurious_enospc = 0, other_errors = 0;
  std::string first_error;
  double seconds = 0;                // wall time of the timed phase
  int level_before = -1, level_after = -1;  // fs tree root level at mount and before unmount
  uint64_t unallocated_end = 0;
  nlohmann::json stats;              // Filesystem::stats_json() after the unmount
  std::string unmount_error;         // "" when the final commit succeeded
  CheckResult check;
  std::string image;                 // path (kept with --keep-image)
};

// The template image: mkfs + the populated tree, unmounted. Returns the prepopulated file count.
[[nodiscard]] Result<uint64_t> prepare_template(const BenchOptions& o, const std::string& path);

// Runs one configuration on a copy of `template_path`. Errors: setup failures (copy, mount,
// resolving the tree); failures of the run itself are in the result.
[[nodiscard]] Result<ConfigResult> run_config(const BenchOptions& o, const ConfigSpec& spec,
                                              const std::string& template_path, uint64_t prepopulated);

}  // namespace ubtrfs::cowbench
