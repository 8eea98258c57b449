// Table and JSON of ubtrfs-cowbench (report.h).
#include "tools/cowbench/report.h"

#include <fmt/format.h>

namespace ubtrfs::cowbench {
namespace {

using ojson = nlohmann::ordered_json;

// A counter from the filesystem's stats JSON; 0 when the key is missing (an older schema).
uint64_t stat_u64(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* p = &j;
  for (const char* k : path) {
    if (!p->is_object() || !p->contains(k)) return 0;
    p = &(*p)[k];
  }
  return p->is_number_unsigned() ? p->get<uint64_t>() : 0;
}

double cows_per_op(const ConfigResult& r) {
  return r.ops ? static_cast<double>(stat_u64(r.stats, {"cow", "total"})) / static_cast<double>(r.ops) : 0.0;
}

// "ok", or what went wrong with the run itself (the check has its own column).
std::string run_state(const ConfigResult& r) {
  if (stat_u64(r.stats, {"aborted"}) != 0 || !r.unmount_error.empty()) return "ABORTED";
  if (r.other_errors != 0) return fmt::format("{} errors", r.other_errors);
  return "ok";
}

std::string mib(uint64_t bytes) { return fmt::format("{:.1f}M", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

ojson config_json(const BenchOptions& o, const ConfigResult& r, uint64_t prepopulated) {
  const auto& s = r.stats;
  ojson j;
  j["name"] = r.spec.name;
  j["cow_overwrite"] = r.spec.cow_overwrite;
  j["wb_inhibit"] = r.spec.wb_inhibit;
  // As the filesystem reported it (stats_json), not re-derived from the spec.
  j["wb_inhibit_scope"] = r.stats.value("/cow/wb_inhibit_scope"_json_pointer, std::string("unknown"));
  j["memory_pressure"] = r.spec.pressure;
  j["max_cow_per_block"] = stat_u64(s, {"cow", "max_per_block"});
  j["max_cow_per_block_per_handle"] = stat_u64(s, {"cow", "max_per_block_per_handle"});
  j["max_cow_per_search"] = stat_u64(s, {"cow", "max_per_search"});
  j["cows"] = stat_u64(s, {"cow", "total"});
  j["cows_same_transaction"] = stat_u64(s, {"cow", "same_transaction"});
  j["cows_per_op"] = cows_per_op(r);
  j["ops"] = r.ops;
  j["ops_attempted"] = r.attempted;
  ojson kinds;
  for (int k = 0; k < kOpKinds; ++k) kinds[op_kind_name(static_cast<OpKind>(k))] = r.by_kind[k];
  j["ops_by_kind"] = kinds;
  j["seconds"] = r.seconds;
  j["restarts"] = {{"write_lock", stat_u64(s, {"restarts", "write_lock"})},
                   {"setup_nodes", stat_u64(s, {"restarts", "setup_nodes"})},
                   {"slot_zero", stat_u64(s, {"restarts", "slot_zero"})},
                   {"read_block", stat_u64(s, {"restarts", "read_block"})}};
  j["reserve_overruns"] = stat_u64(s, {"tree_block_reservations", "overruns"});
  j["reserve_overruns_by_reserve"] =
      s.value("/tree_block_reservations/overruns_by_reserve"_json_pointer, nlohmann::json::object());
  j["blocks_beyond_handle_share"] = stat_u64(s, {"tree_block_reservations", "beyond_handle"});
  j["delayed_refs_runs_deferred"] = stat_u64(s, {"tree_block_reservations", "delayed_refs_runs_deferred"});
  j["enospc"] = r.enospc;
  j["spurious_enospc"] = r.spurious_enospc;
  j["other_errors"] = r.other_errors;
  j["first_error"] = r.first_error;
  j["bytes_written"] = stat_u64(s, {"writeback", "bytes_written"});
  j["background_blocks_written"] = stat_u64(s, {"writeback", "background_blocks_written"});
  j["cache"] = {{"hits", stat_u64(s, {"cache", "hits"})},
                {"misses", stat_u64(s, {"cache", "misses"})},
                {"evictions", stat_u64(s, {"cache", "evictions"})}};
  j["overwrites_in_place"] = stat_u64(s, {"cow", "overwrites_in_place"});
  j["inhibits"] = stat_u64(s, {"cow", "inhibits"});
  j["commits"] = stat_u64(s, {"commits"});
  j["aborted"] = stat_u64(s, {"aborted"});
  j["per_block_histogram"] = s.contains("cow") ? s["cow"].value("per_block_histogram", nlohmann::json::object())
                                               : nlohmann::json::object();
  j["per_search_histogram"] = s.contains("cow") ? s["cow"].value("per_search_histogram", nlohmann::json::object())
                                                : nlohmann::json::object();
  j["fs_tree_level"] = {{"before", r.level_before}, {"after", r.level_after}};
  j["unallocated_bytes_end"] = r.unallocated_end;
  j["unmount_error"] = r.unmount_error;
  j["check"] = check_state_name(r.check.state);
  j["check_detail"] = r.check.detail;
  j["settings"] = {{"threads", o.threads},
                   {"cache_mb", r.spec.pressure ? o.cache_mb : o.floor_cache_mb},
                   {"writeback", r.spec.pressure},
                   {"seconds", o.seconds},
                   {"max_ops", o.ops},
                   {"nodesize", o.nodesize},
                   {"image_size", o.image_size},
                   {"prepopulated_files", prepopulated},
                   {"leaf_dirs", o.shape.leaves()},
                   {"seed", o.seed}};
  return j;
}

std::string results_json(const BenchOptions& o, const std::vector<ConfigResult>& results, uint64_t prepopulated) {
  ojson doc;
  doc["configs"] = ojson::array();
  for (const auto& r : results) doc["configs"].push_back(config_json(o, r, prepopulated));
  return doc.dump(2);
}

std::string results_table(const BenchOptions& o, const std::vector<ConfigResult>& results, uint64_t prepopulated) {
  std::string out = fmt::format(
      "ubtrfs-cowbench: {} threads, {} s{}, cache {} MiB (floor {} MiB, no writeback), nodesize {}, {} files "
      "prepopulated in {} dirs\n",
      o.threads, o.seconds, o.ops ? fmt::format(" / {} ops", o.ops) : "", o.cache_mb, o.floor_cache_mb, o.nodesize,
      prepopulated, o.shape.leaves());
  const auto row = [](auto... cells) {
    return fmt::format("{:<9} {:>7} {:>7} {:>8} {:>9} {:>7} {:>8} {:>23} {:>8} {:>8} {:>9} {:>7} {}\n", cells...);
  };
  out += row("config", "max/blk", "max/hdl", "max/srch", "COWs", "COWs/op", "ops", "restarts wl/sn/sz/rb", "overruns",
             "spENOSPC", "written", "check", "run");
  for (const auto& r : results) {
    const auto& s = r.stats;
    const std::string restarts = fmt::format(
        "{}/{}/{}/{}", stat_u64(s, {"restarts", "write_lock"}), stat_u64(s, {"restarts", "setup_nodes"}),
        stat_u64(s, {"restarts", "slot_zero"}), stat_u64(s, {"restarts", "read_block"}));
    out += row(r.spec.name, stat_u64(s, {"cow", "max_per_block"}), stat_u64(s, {"cow", "max_per_block_per_handle"}),
               stat_u64(s, {"cow", "max_per_search"}),
               stat_u64(s, {"cow", "total"}), fmt::format("{:.2f}", cows_per_op(r)), r.ops, restarts,
               stat_u64(s, {"tree_block_reservations", "overruns"}), r.spurious_enospc,
               mib(stat_u64(s, {"writeback", "bytes_written"})), check_state_name(r.check.state), run_state(r));
  }
  for (const auto& r : results) {
    if (!r.first_error.empty()) out += fmt::format("{}: {} unexpected errors, first: {}\n", r.spec.name, r.other_errors, r.first_error);
    if (!r.unmount_error.empty()) out += fmt::format("{}: unmount failed: {}\n", r.spec.name, r.unmount_error);
    if (r.check.state == CheckResult::State::kErrors) out += fmt::format("{}: btrfs check: {}\n", r.spec.name, r.check.detail);
    if (r.level_before < 2) out += fmt::format("{}: warning: fs tree root level {} (< 2)\n", r.spec.name, r.level_before);
  }
  return out;
}

}  // namespace ubtrfs::cowbench
