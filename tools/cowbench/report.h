// Output of ubtrfs-cowbench: the human table (one row per configuration, the seed's columns and
// ours) and the JSON document {"configs": [...]} whose per-configuration keys the CI test reads.
// Pure formatting: every figure comes from a ConfigResult.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/cowbench/run_config.h"

namespace ubtrfs::cowbench {

// One configuration as JSON: name, the switches, max_cow_per_block, max_cow_per_search, cows,
// cows_per_op, ops, restarts{write_lock,setup_nodes,slot_zero,read_block}, reserve_overruns (and
// reserve_overruns_by_reserve: which block reserve ran dry; blocks_beyond_handle_share: tree blocks
// a handle took from the shared trans reserve past what it put there; delayed_refs_runs_deferred:
// flusher runs of delayed refs that left heads for their funding), enospc, spurious_enospc,
// bytes_written, cache {hits, misses, evictions} of the tree-block cache, check, and the details
// (histograms, op kinds, levels...).
nlohmann::ordered_json config_json(const BenchOptions& o, const ConfigResult& r, uint64_t prepopulated);

// {"configs": [...]}.
std::string results_json(const BenchOptions& o, const std::vector<ConfigResult>& results, uint64_t prepopulated);

// The table, with a header line naming the settings.
std::string results_table(const BenchOptions& o, const std::vector<ConfigResult>& results, uint64_t prepopulated);

}  // namespace ubtrfs::cowbench
