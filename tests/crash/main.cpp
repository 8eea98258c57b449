// ubtrfs-crashtest: the crash-consistency harness (issue 9 acceptance 1; design in crash_explorer.h).
//
//   ubtrfs-crashtest --ci          the CI-sized run (>= 10,000 crash points; external oracles on a
//                                  budget of distinct images when available)
//   ubtrfs-crashtest --long        every ACE sequence of depth 3 (small set) and 2 (full set), more
//                                  and longer mixes, external oracles on every distinct image
//   ubtrfs-crashtest --self-test   the harness must catch a commit that skips the flush between the
//                                  tree blocks and the superblock, and find nothing without it
//   --fuse-mixes N, --fuse-ace-depth D   also record that many mixes / ACE sequences through a real
//                                  FUSE mount served by the daemon's operation table (fuse_runner.h;
//                                  root and /dev/fuse); --ci and --long include a sample
// Exit status: 0 nothing found; 1 failures (each printed with the workload, its ops and the crash
// point); 2 usage or a workload the model and the filesystem disagree on. Oracles follow
// tests/oracle/lib.sh: missing btrfs-progs/root/loop skips them unless UBTRFS_REQUIRE_ORACLES=1.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "fs/transaction.h"
#include "tests/crash/crash_explorer.h"
#include "tests/crash/fuse_runner.h"
#include "tests/crash/workloads.h"

namespace ubtrfs::crash {
namespace {

struct Plan {
  size_t mix_seeds = 0, mix_ops = 0;
  size_t fuse_mixes = 0;  // mixes recorded through FUSE (mix_ops each, seeds after the library's)
  int fuse_ace_depth = 0; // ACE small set through FUSE
  uint64_t first_seed = 1;
  int ace_depth = 0;
  AceSet ace_set = AceSet::kSmall;
  int ace_full_depth = 0;  // the full set too, to this depth (long run)
  bool ace_both_configs = false;
  uint64_t size_mib = 128;
  uint32_t mix_nodesize = 16384, ace_nodesize = 4096;
  bool oracles = true;
  uint64_t oracle_budget = 0;
  size_t max_print = 12;
  std::string save_dir;
  std::string scratch_dir = "/dev/shm";
  std::string fuse_scratch_dir = "/tmp";  // where FUSE mount points are made
};

struct Outcome {
  ExploreStats stats;
  std::vector<CrashFailure> failures;
  uint64_t workload_errors = 0;
  uint64_t fuse_recordings = 0;
  uint64_t fuse_crash_points = 0;
};

void merge(ExploreStats& into, const ExploreStats& s) {
  into.recordings += s.recordings;
  into.crash_points += s.crash_points;
  into.full_judgements += s.full_judgements;
  into.image_hashes.insert(s.image_hashes.begin(), s.image_hashes.end());
  into.oracle_runs += s.oracle_runs;
  into.failing_points += s.failing_points;
  into.tolerated_mirror_mismatch += s.tolerated_mirror_mismatch;
  into.log_images += s.log_images;
  for (const auto& [k, n] : s.failures_by_kind) into.failures_by_kind[k] += n;
  into.background_writes += s.background_writes;
  into.log_writes += s.log_writes;
  into.log_flushes += s.log_flushes;
}

// Records and explores one workload in both fix 1 configurations (or the one given).
void run_one(CrashExplorer& ex, const BaseImage& base, const NextOp& next, const std::string& label,
             const std::vector<bool>& cow_configs, Outcome& out, OpRunner* runner = nullptr) {
  for (bool cow : cow_configs) {
    RunConfig rc;
    rc.cow_overwrite = cow;
    auto rec = record(base, rc, next, runner);
    const std::string workload = fmt::format("{}{} [{}]", label, runner ? " through FUSE" : "", rc.text());
    if (!rec) {
      ++out.workload_errors;
      fmt::print("WORKLOAD ERROR {}: {}\n", workload, rec.error().message);
      continue;
    }
    auto f = ex.explore(*rec, workload + " ops: " + ops_text(rec->ops));
    out.failures.insert(out.failures.end(), f.begin(), f.end());
  }
}

Outcome run_plan(const Plan& plan, const OracleAvailability& avail) {
  Outcome out;
  ExploreConfig ec;
  ec.oracles = plan.oracles;
  ec.oracle_budget = plan.oracle_budget;
  ec.save_failures_dir = plan.save_dir;
  ec.scratch_dir = plan.scratch_dir;
  if (plan.mix_seeds) {
    auto base = make_base_image(plan.size_mib << 20, plan.mix_nodesize, setup_ops());
    if (!base) {
      fmt::print("cannot make the base image: {}\n", base.error().message);
      ++out.workload_errors;
      return out;
    }
    ec.seed = plan.first_seed;
    CrashExplorer ex(*base, ec, avail);
    for (size_t i = 0; i < plan.mix_seeds; ++i) {
      const uint64_t seed = plan.first_seed + i;
      run_one(ex, *base, random_mix(seed, plan.mix_ops), fmt::format("mix seed {} ops {}", seed, plan.mix_ops),
              {false, true}, out);
    }
    merge(out.stats, ex.stats());
  }
  for (auto [set, depth] : {std::pair{plan.ace_set, plan.ace_depth}, std::pair{AceSet::kFull, plan.ace_full_depth}}) {
    if (depth == 0) continue;
    auto base = make_base_image(plan.size_mib << 20, plan.ace_nodesize, setup_ops());
    if (!base) {
      fmt::print("cannot make the base image: {}\n", base.error().message);
      ++out.workload_errors;
      return out;
    }
    ec.seed = plan.first_seed + 1000;
    ec.oracle_budget = plan.oracle_budget ? plan.oracle_budget / 2 : 0;
    CrashExplorer ex(*base, ec, avail);
    const auto seqs = ace_sequences(base->state, set, depth);
    fmt::print("ace: {} sequences (set {}, depth 1..{})\n", seqs.size(), set == AceSet::kSmall ? "small" : "full", depth);
    for (size_t i = 0; i < seqs.size(); ++i) {
      const std::vector<bool> cfgs = plan.ace_both_configs ? std::vector<bool>{false, true} : std::vector<bool>{i % 2 == 1};
      run_one(ex, *base, fixed_ops(seqs[i]), fmt::format("ace {} #{}", set == AceSet::kSmall ? "small" : "full", i), cfgs, out);
    }
    merge(out.stats, ex.stats());
  }
  if (plan.fuse_mixes || plan.fuse_ace_depth) {
    // The sample through the daemon's FUSE path: the same judge, recordings made by FuseRunner.
    const std::string why = FuseRunner::unavailable_reason();
    if (!why.empty()) {
      const bool required = std::getenv("UBTRFS_REQUIRE_ORACLES") && std::string(std::getenv("UBTRFS_REQUIRE_ORACLES")) == "1";
      fmt::print("{}recordings through FUSE skipped: {}\n", required ? "FAIL: " : "", why);
      if (required) ++out.workload_errors;
      return out;
    }
    FuseRunner runner(plan.fuse_scratch_dir);
    auto run_fuse = [&](uint32_t nodesize, uint64_t seed, auto&& body) {
      auto base = make_base_image(plan.size_mib << 20, nodesize, setup_ops());
      if (!base) {
        fmt::print("cannot make the base image: {}\n", base.error().message);
        ++out.workload_errors;
        return;
      }
      ec.seed = seed;
      ec.oracle_budget = plan.oracle_budget ? std::max<uint64_t>(1, plan.oracle_budget / 4) : 0;
      CrashExplorer ex(*base, ec, avail);
      body(ex, *base);
      out.fuse_recordings += ex.stats().recordings;
      out.fuse_crash_points += ex.stats().crash_points;
      merge(out.stats, ex.stats());
    };
    if (plan.fuse_mixes)
      run_fuse(plan.mix_nodesize, plan.first_seed + 5000, [&](CrashExplorer& ex, const BaseImage& base) {
        for (size_t i = 0; i < plan.fuse_mixes; ++i) {
          const uint64_t seed = plan.first_seed + 5000 + i;
          const size_t n = plan.mix_ops ? plan.mix_ops : 40;
          run_one(ex, base, fuse_safe(random_mix(seed, n)), fmt::format("mix seed {} ops {}", seed, n), {i % 2 == 1},
                  out, &runner);
        }
      });
    if (plan.fuse_ace_depth)
      run_fuse(plan.ace_nodesize, plan.first_seed + 6000, [&](CrashExplorer& ex, const BaseImage& base) {
        const auto seqs = ace_sequences(base.state, AceSet::kSmall, plan.fuse_ace_depth);
        fmt::print("ace through FUSE: {} sequences (set small, depth 1..{})\n", seqs.size(), plan.fuse_ace_depth);
        for (size_t i = 0; i < seqs.size(); ++i)
          run_one(ex, base, fuse_safe(fixed_ops(seqs[i])), fmt::format("ace small #{}", i), {i % 2 == 1}, out, &runner);
      });
  }
  return out;
}

void print_outcome(const Outcome& o, double seconds, const Plan& plan) {
  const ExploreStats& s = o.stats;
  fmt::print("crash points judged: {} ({} judged from scratch, the rest share an image and its requirements)\n",
             s.crash_points, s.full_judgements);
  fmt::print("distinct images: {}; recordings: {}; device writes {} flushes {} (background tree block writes {})\n",
             s.image_hashes.size(), s.recordings, s.log_writes, s.log_flushes, s.background_writes);
  fmt::print("external oracle runs: {}\n", s.oracle_runs);
  fmt::print("recorded through the daemon's FUSE path: {} recordings, {} of the crash points\n", o.fuse_recordings,
             o.fuse_crash_points);
  fmt::print("images with a tree log (judged after replay): {}\n", s.log_images);
  fmt::print("failing crash points: {}; workload errors: {}\n", s.failing_points, o.workload_errors);
  fmt::print("images whose superblock copies hold two generations (power cut between the copies; tolerated): {}\n",
             s.tolerated_mirror_mismatch);
  for (const auto& [k, n] : s.failures_by_kind) fmt::print("  failures of kind {}: {}\n", k, n);
  for (size_t i = 0; i < o.failures.size() && i < plan.max_print; ++i) {
    const CrashFailure& f = o.failures[i];
    fmt::print("FAIL [{}] {}\n  workload: {}\n  crash point: {}\n", f.kind, f.detail, f.workload, f.point);
  }
  fmt::print("time: {:.1f} s\n", seconds);
}

}  // namespace
}  // namespace ubtrfs::crash

int main(int argc, char** argv) {
  using namespace ubtrfs::crash;
  Plan plan;
  bool ci = false, long_run = false, self_test = false, no_oracles = false, break_commit = false;
  std::string ace_set = "small";
  CLI::App app{"Crash-consistency harness: record workloads, judge every crash state (tests/crash)", "ubtrfs-crashtest"};
  app.add_flag("--ci", ci, "the CI-sized run");
  app.add_flag("--long", long_run, "the long run (hours): deeper ACE, more mixes, oracles on every distinct image");
  app.add_flag("--self-test", self_test, "prove the harness catches a commit without the tree-block flush");
  app.add_option("--mix-seeds", plan.mix_seeds, "random-mix workloads (each run with fix 1 off and on)");
  app.add_option("--mix-ops", plan.mix_ops, "ops per random-mix workload");
  app.add_option("--seed", plan.first_seed, "first seed");
  app.add_option("--ace-depth", plan.ace_depth, "ACE sequences of 1..N core ops (0: none)");
  app.add_option("--ace-set", ace_set, "small (one instance per op kind) or full")->check(CLI::IsMember({"small", "full"}));
  app.add_option("--fuse-mixes", plan.fuse_mixes, "random mixes recorded through a FUSE mount (root)");
  app.add_option("--fuse-ace-depth", plan.fuse_ace_depth, "ACE small-set sequences of 1..N ops through a FUSE mount");
  app.add_option("--oracle-budget", plan.oracle_budget, "distinct images sent to btrfs check/kernel (0: all)");
  app.add_flag("--no-oracles", no_oracles, "judge in process only");
  app.add_flag("--break-commit-for-test", break_commit,
               "run with the test-only broken commit (no flush before the superblock): failures expected");
  app.add_option("--save-failures", plan.save_dir, "write every failing image into this directory");
  app.add_option("--max-print", plan.max_print, "failures printed in full");
  app.add_option("--scratch-dir", plan.scratch_dir, "where images for the external oracles are written (tmpfs)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::off);
  plan.ace_set = ace_set == "full" ? AceSet::kFull : AceSet::kSmall;
  if (ci) {
    plan.mix_seeds = plan.mix_seeds ? plan.mix_seeds : 6;
    plan.mix_ops = plan.mix_ops ? plan.mix_ops : 60;
    plan.ace_depth = plan.ace_depth ? plan.ace_depth : 2;
    plan.oracle_budget = plan.oracle_budget ? plan.oracle_budget : 40;
    plan.fuse_mixes = plan.fuse_mixes ? plan.fuse_mixes : 2;
    plan.fuse_ace_depth = plan.fuse_ace_depth ? plan.fuse_ace_depth : 1;
  } else if (long_run) {
    plan.fuse_mixes = plan.fuse_mixes ? plan.fuse_mixes : 20;
    plan.fuse_ace_depth = plan.fuse_ace_depth ? plan.fuse_ace_depth : 2;
    plan.mix_seeds = plan.mix_seeds ? plan.mix_seeds : 100;
    plan.mix_ops = plan.mix_ops ? plan.mix_ops : 200;
    plan.ace_depth = 3;
    plan.ace_set = AceSet::kSmall;
    plan.ace_full_depth = 2;
    plan.ace_both_configs = true;
  }
  plan.oracles = !no_oracles && !self_test;
  OracleAvailability avail;
  if (plan.oracles) {
    avail = probe_external_oracles();
    const bool required = std::getenv("UBTRFS_REQUIRE_ORACLES") && std::string(std::getenv("UBTRFS_REQUIRE_ORACLES")) == "1";
    if (!avail.btrfs_check || !avail.kernel_mount) {
      if (required) {
        fmt::print("FAIL: required oracle missing: {}\n", avail.why_not);
        return 1;
      }
      fmt::print("external oracles partly skipped: {}\n", avail.why_not);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto secs = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  if (self_test) {
    Plan p;
    p.mix_seeds = plan.mix_seeds ? plan.mix_seeds : 2;
    p.mix_ops = plan.mix_ops ? plan.mix_ops : 30;
    p.oracles = false;
    p.max_print = 3;
    // One recording through FUSE too, where this process can mount: the daemon path must be judged
    // by the same harness that catches the broken commit.
    if (FuseRunner::unavailable_reason().empty()) p.fuse_mixes = 1;
    ubtrfs::fs::TransactionManager::set_skip_tree_flush_for_test(true);
    const Outcome broken = run_plan(p, avail);
    ubtrfs::fs::TransactionManager::set_skip_tree_flush_for_test(false);
    fmt::print("== broken commit (tree-block flush skipped) ==\n");
    print_outcome(broken, secs(), p);
    const Outcome good = run_plan(p, avail);
    fmt::print("== correct commit ==\n");
    print_outcome(good, secs(), p);
    // The model's side: a model that forgot the bytes of one write must be caught by the model check.
    uint64_t model_caught = 0;
    {
      auto base = make_base_image(p.size_mib << 20, p.mix_nodesize, setup_ops());
      auto rec = base ? record(*base, RunConfig{}, random_mix(p.first_seed, p.mix_ops)) : ubtrfs::Result<Recording>(ubtrfs::fail(EIO, "no base"));
      if (rec) {
        for (size_t k = 0; k < rec->ops.size(); ++k) {
          const Op& w = rec->ops[k];
          if (w.kind != OpKind::kWrite) continue;
          for (size_t i = k + 1; i < rec->snapshots.size(); ++i)
            if (auto it = rec->snapshots[i].names.find(w.path); it != rec->snapshots[i].names.end()) {
              std::string& d = rec->snapshots[i].inodes[it->second].data;
              if (w.off < d.size()) d[w.off] ^= 1;
            }
          break;
        }
        ExploreConfig ec;
        CrashExplorer ex(*base, ec, avail);
        (void)ex.explore(*rec, "sabotaged model");
        for (const auto& [kind, n] : ex.stats().failures_by_kind)
          if (kind == "not-a-model-snapshot" || kind == "lost-fsynced-object") model_caught += n;
      }
      fmt::print("== model that forgot one write ==\nmodel failures found: {}\n", model_caught);
    }
    const bool ok = broken.stats.failing_points > 0 && good.stats.failing_points == 0 && good.workload_errors == 0 &&
                    broken.workload_errors == 0 && model_caught > 0;
    fmt::print("self-test: {} (broken build: {} failing crash points; correct build: {}; sabotaged model: {})\n",
               ok ? "PASS" : "FAIL", broken.stats.failing_points, good.stats.failing_points, model_caught);
    return ok ? 0 : 1;
  }
  if (!plan.mix_seeds && !plan.ace_depth && !plan.ace_full_depth && !plan.fuse_mixes && !plan.fuse_ace_depth) {
    std::fprintf(stderr, "ubtrfs-crashtest: nothing to run (see --help)\n");
    return 2;
  }
  ubtrfs::fs::TransactionManager::set_skip_tree_flush_for_test(break_commit);
  const Outcome o = run_plan(plan, avail);
  print_outcome(o, secs(), plan);
  if (o.workload_errors) return 2;
  return o.stats.failing_points ? 1 : 0;
}
