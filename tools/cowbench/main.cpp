// ubtrfs-cowbench: reproduces the COW amplification experiment of the 2026 patch series (KERNEL.md
// §11, the seed's table) in process. This file owns the command line, the order of the run (one
// template image, then each selected configuration on a fresh copy of it) and the exit status; the
// images, the workload, one configuration's run and the report live beside it.
//
// Exit status: 0 every configuration ran, unmounted cleanly, had no unexpected operation error
// and (unless skipped) passed btrfs check; 1 otherwise; 2 usage or setup error.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "tools/cowbench/report.h"
#include "tools/cowbench/run_config.h"
#include "tools/mkfs/mkfs.h"

namespace ubtrfs::cowbench {
namespace {

constexpr int kExitOk = 0, kExitFailed = 1, kExitSetup = 2;

struct Cli {
  BenchOptions bench;
  std::string image_size = "4G";
  std::string configs = "floor,baseline,overwrite,inhibit,combined";
  std::string wb_order = "lru";
  bool json = false;
  bool no_check = false;
  bool quiet = false;
};

Result<std::vector<ConfigSpec>> select_configs(const std::string& list) {
  std::vector<ConfigSpec> out;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t comma = std::min(list.find(',', start), list.size());
    const std::string name = list.substr(start, comma - start);
    start = comma + 1;
    if (name.empty()) continue;
    auto it = std::find_if(all_configs().begin(), all_configs().end(), [&](const ConfigSpec& c) { return c.name == name; });
    if (it == all_configs().end())
      return fail(EINVAL, "unknown configuration '{}' (floor, baseline, overwrite, inhibit, combined, inhibit_handle)", name);
    if (std::none_of(out.begin(), out.end(), [&](const ConfigSpec& c) { return c.name == name; })) out.push_back(*it);
  }
  if (out.empty()) return fail(EINVAL, "no configuration selected");
  // Table order, whatever order they were given in.
  std::sort(out.begin(), out.end(), [](const ConfigSpec& a, const ConfigSpec& b) {
    auto pos = [](const ConfigSpec& c) {
      return std::find_if(all_configs().begin(), all_configs().end(), [&](const ConfigSpec& x) { return x.name == c.name; });
    };
    return pos(a) < pos(b);
  });
  return out;
}

int run(Cli& cli) {
  auto size = mkfs::parse_size(cli.image_size);
  if (!size) return spdlog::error("--image-size: {}", size.error().message), kExitSetup;
  BenchOptions& o = cli.bench;
  o.image_size = *size;
  o.check = !cli.no_check;
  auto configs = select_configs(cli.configs);
  if (!configs) return spdlog::error("--configs: {}", configs.error().message), kExitSetup;

  bool own_workdir = false;
  if (o.workdir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = fmt::format("{}/ubtrfs-cowbench.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!::mkdtemp(templ.data())) return spdlog::error("cannot create a directory like {}", templ), kExitSetup;
    o.workdir = templ;
    own_workdir = true;
  }
  const std::string template_path = o.workdir + "/cowbench-template.img";
  spdlog::info("preparing the template image {} ({} bytes, nodesize {})", template_path, o.image_size, o.nodesize);
  auto prepopulated = prepare_template(o, template_path);
  if (!prepopulated) {
    spdlog::error("template: {}", prepopulated.error().message);
    if (own_workdir && !o.keep_image) std::filesystem::remove_all(o.workdir);
    return kExitSetup;
  }

  std::vector<ConfigResult> results;
  int status = kExitOk;
  for (const auto& spec : *configs) {
    spdlog::info("{}: cow_overwrite={} wb_inhibit={} {}", spec.name, spec.cow_overwrite ? "on" : "off",
                 !spec.wb_inhibit ? "off" : spec.wb_hold_recopied ? "on" : "handle",
                 spec.pressure ? fmt::format("cache {} MiB, writeback on", o.cache_mb)
                               : fmt::format("cache {} MiB, writeback off", o.floor_cache_mb));
    auto r = run_config(o, spec, template_path, *prepopulated);
    if (!r) {
      spdlog::error("{}: {}", spec.name, r.error().message);
      status = kExitSetup;
      break;
    }
    if (r->check.state == CheckResult::State::kErrors || !r->unmount_error.empty() || r->other_errors != 0)
      status = kExitFailed;
    results.push_back(std::move(*r));
  }
  if (!o.keep_image) {
    ::unlink(template_path.c_str());
    if (own_workdir) std::filesystem::remove_all(o.workdir);
  } else {
    spdlog::info("images kept in {}", o.workdir);
  }
  if (cli.json)
    fmt::print("{}\n", results_json(o, results, *prepopulated));
  else
    fmt::print("{}", results_table(o, results, *prepopulated));
  return status;
}

}  // namespace
}  // namespace ubtrfs::cowbench

int main(int argc, char** argv) {
  using namespace ubtrfs::cowbench;
  Cli cli;
  BenchOptions& b = cli.bench;
  CLI::App app{
      "COW amplification benchmark: N threads of create/write/rename/unlink/setxattr on a fresh image, in "
      "process, for the floor (no memory pressure), baseline, overwrite (fix 1), inhibit (fix 2) and combined "
      "configurations; prints the table (or --json)",
      "ubtrfs-cowbench"};
  app.add_option("-t,--threads", b.threads, "worker threads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("-s,--seconds", b.seconds, "timed phase per configuration (0: only --ops stops it)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("-n,--ops", b.ops, "operations per configuration (0: only --seconds stops it)")->capture_default_str();
  app.add_option("--cache-mb", b.cache_mb, "extent-buffer cache budget under memory pressure (MiB)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--floor-cache-mb", b.floor_cache_mb, "cache budget of the floor row (MiB)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--image-size", cli.image_size, "sparse image size, e.g. 4G")->capture_default_str();
  app.add_option("--nodesize", b.nodesize, "tree block size of the image")
      ->check(CLI::IsMember({4096, 8192, 16384, 32768, 65536}))->capture_default_str();
  app.add_option("--dir-depth", b.shape.depth, "directory levels")->check(CLI::Range(1, 8))->capture_default_str();
  app.add_option("--dir-fanout", b.shape.fanout, "directories per level")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--files", b.files, "prepopulated files (0: until the fs tree root has level 2, plus 25 %)")
      ->capture_default_str();
  app.add_option("--configs", cli.configs, "comma-separated subset of floor,baseline,overwrite,inhibit,combined (and inhibit_handle: fix 2 with the "
                 "patch's handle-scoped inhibition only)")
      ->capture_default_str();
  app.add_option("--seed", b.seed, "workload random seed")->capture_default_str();
  app.add_option("--commit-interval", b.commit_interval_s, "commit thread period (s)")->check(CLI::Range(1, 300))
      ->capture_default_str();
  app.add_option("--wb-thresh-mb", b.wb_thresh_mb, "background writeback absolute threshold (MiB)")->capture_default_str();
  app.add_option("--wb-ratio", b.wb_ratio, "background writeback threshold, % of the cache budget")
      ->check(CLI::Range(0, 100))->capture_default_str();
  app.add_option("--wb-interval-ms", b.wb_interval_ms, "periodic writeback wakeup (ms)")->capture_default_str();
  app.add_option("--wb-expire-ms", b.wb_expire_ms, "age written by the periodic pass (ms)")->capture_default_str();
  app.add_option("--wb-order", cli.wb_order,
                 "background writeback order: lru (coldest first, the daemon's default) or address (the kernel's)")
      ->check(CLI::IsMember({"lru", "address"}))->capture_default_str();
  app.add_option("--workdir", b.workdir, "directory for the images (default: a new one under $TMPDIR, removed)");
  app.add_flag("--keep-image", b.keep_image, "keep the template and every configuration's image");
  app.add_flag("--no-check", cli.no_check, "do not run btrfs check on the images");
  app.add_flag("--json", cli.json, "print {\"configs\": [...]} instead of the table");
  app.add_option("--progress", b.progress_every_s, "seconds between progress lines on stderr (0: none)")
      ->capture_default_str();
  app.add_flag("-q,--quiet", cli.quiet, "only warnings and errors on stderr");
  app.set_version_flag("-V,--version", std::string("ubtrfs-cowbench ") + UBTRFS_VERSION);
  CLI11_PARSE(app, argc, argv);
  b.wb_coldest_first = cli.wb_order == "lru";

  auto logger = spdlog::stderr_color_mt("ubtrfs-cowbench");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(cli.quiet ? spdlog::level::warn : spdlog::level::info);
  return run(cli);
}
