// One configuration of ubtrfs-cowbench and the template it starts from (run_config.h).
#include "tools/cowbench/run_config.h"

#include <unistd.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "fs/filesystem.h"

namespace ubtrfs::cowbench {
namespace {

using Clock = std::chrono::steady_clock;

fs::OpenOptions open_options(const BenchOptions& o, const std::string& path, const ConfigSpec& spec) {
  fs::OpenOptions open;
  open.path = path;
  open.cow_overwrite = spec.cow_overwrite;
  open.wb_inhibit = spec.wb_inhibit;
  open.wb_hold_recopied = spec.wb_hold_recopied;
  open.cache_bytes = (spec.pressure ? o.cache_mb : o.floor_cache_mb) << 20;
  open.writeback.enabled = spec.pressure;
  open.writeback.thresh_bytes = o.wb_thresh_mb << 20;
  open.writeback.ratio_pct = o.wb_ratio;
  open.writeback.interval_ms = o.wb_interval_ms;
  open.writeback.expire_ms = o.wb_expire_ms;
  open.writeback.coldest_first = o.wb_coldest_first;
  return open;
}

fs::MountOptions mount_options(const BenchOptions& o, const fs::OpenOptions& open) {
  fs::MountOptions m;
  m.commit_interval_s = o.commit_interval_s;
  m.cache_mb = open.cache_bytes >> 20;
  m.cow_overwrite = open.cow_overwrite;
  m.wb_inhibit = open.wb_inhibit;
  m.wb_hold_recopied = open.wb_hold_recopied;
  m.writeback = open.writeback.enabled;
  m.atime = fs::MountOptions::Atime::kNoatime;  // the workload reads nothing; keep it out of the way
  return m;
}

// "Plenty" of unallocated space: a quarter of the device, at most 1 GiB.
uint64_t plenty_unallocated(uint64_t image_size) { return std::min<uint64_t>(1ull << 30, image_size / 4); }

}  // namespace

const std::vector<ConfigSpec>& all_configs() {
  static const std::vector<ConfigSpec> configs{
      {"floor", false, false, false},
      {"baseline", false, false, true},
      {"overwrite", true, false, true},
      {"inhibit", false, true, true},
      {"combined", true, true, true},
      // Not in the default set: fix 2 with the patch's handle scope only, for comparison.
      {"inhibit_handle", false, true, true, false},
  };
  return configs;
}

Result<uint64_t> prepare_template(const BenchOptions& o, const std::string& path) {
  UBTRFS_TRY_STATUS(make_image(path, o.image_size, o.nodesize));
  ConfigSpec spec{"template", false, false, false};
  const fs::OpenOptions open = open_options(o, path, spec);
  auto mounted = fs::Filesystem::mount(open, mount_options(o, open));
  if (!mounted) return fail(mounted.error().err, "mount {}: {}", path, mounted.error().message);
  fs::Filesystem& fs = **mounted;
  auto files = populate(fs, o.shape, o.files, o.threads);
  auto level = fs_tree_level(fs);
  auto st = fs.unmount();
  if (!files) return fail(files.error());
  if (!st) return fail(st.error());
  if (level) spdlog::info("template: {} files in {} leaf directories, fs tree root level {}", *files, o.shape.leaves(), *level);
  return *files;
}

Result<ConfigResult> run_config(const BenchOptions& o, const ConfigSpec& spec, const std::string& template_path,
                                uint64_t prepopulated) {
  ConfigResult r;
  r.spec = spec;
  r.image = fmt::format("{}/cowbench-{}.img", o.workdir, spec.name);
  UBTRFS_TRY_STATUS(copy_sparse(template_path, r.image));

  const fs::OpenOptions open = open_options(o, r.image, spec);
  auto mounted = fs::Filesystem::mount(open, mount_options(o, open));
  if (!mounted) return fail(mounted.error().err, "mount {}: {}", r.image, mounted.error().message);
  std::unique_ptr<fs::Filesystem> fs = std::move(*mounted);
  r.level_before = fs_tree_level(*fs).value_or(-1);
  auto leaves = resolve_leaves(*fs, o.shape);
  if (!leaves) return fail(leaves.error());

  WorkloadOptions w;
  w.threads = o.threads;
  w.prepopulated = prepopulated;
  w.max_ops = o.ops;
  w.seed = o.seed;
  WorkloadCounters counters;
  WorkloadResult wr;
  const auto t0 = Clock::now();
  std::thread runner([&] { wr = run_workload(*fs, *leaves, w, counters); });
  auto next_progress = t0 + std::chrono::duration<double>(o.progress_every_s);
  // The clock: the workers stop themselves at --ops; the deadline (if any) stops them here.
  while (!counters.stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const auto now = Clock::now();
    if (o.seconds > 0 && now - t0 >= std::chrono::duration<double>(o.seconds)) counters.stop.store(true);
    if (o.progress_every_s > 0 && now >= next_progress) {
      next_progress += std::chrono::duration<double>(o.progress_every_s);
      spdlog::info("{}: {:.0f} s, {} ops, {} COWs, max {} copies of one block", spec.name,
                   std::chrono::duration<double>(now - t0).count(), counters.ok.load(), fs->info().stats().cows(),
                   fs->info().stats().per_block().max());
    }
  }
  runner.join();
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.level_after = fs_tree_level(*fs).value_or(-1);
  r.ops = counters.ok.load();
  r.attempted = counters.ops.load();
  for (int k = 0; k < kOpKinds; ++k) r.by_kind[k] = counters.by_kind[k].load();
  r.enospc = counters.enospc.load();
  r.other_errors = counters.other_errors.load();
  r.first_error = wr.first_error;

  spdlog::info("{}: {} ops in {:.1f} s, unmounting", spec.name, r.ops, r.seconds);
  if (auto st = fs->unmount(); !st) r.unmount_error = st.error().message;
  r.unallocated_end = fs->info().device_space().unallocated_bytes();
  r.spurious_enospc = r.unallocated_end >= plenty_unallocated(o.image_size) ? r.enospc : 0;
  r.stats = nlohmann::json::parse(fs->stats_json());
  fs.reset();

  if (o.check) {
    spdlog::info("{}: btrfs check", spec.name);
    r.check = btrfs_check(r.image);
  } else {
    r.check.detail = "--no-check";
  }
  if (!o.keep_image) ::unlink(r.image.c_str());
  return r;
}

}  // namespace ubtrfs::cowbench
