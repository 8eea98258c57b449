// ubtrfs-stress: fsstress-style random operations against a mounted directory, checked by a
// model in every worker (see worker.h), plus manifests of the whole tree (see manifest.h) to
// compare what two mounts of the same filesystem see.
//
// Process model: the parent parses options, prepares DIR, forks -p worker processes (each
// owns DIR/pN and runs Worker with seed + N), prints progress while they run, then prints
// per-op counts and a summary, and writes the manifest. Workers publish counters through one
// MAP_SHARED block; their exit status is the verdict.
//
// Exit codes: 0 everything verified, 1 a verification failed (or a worker died), 2 usage or
// setup error.
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <ftw.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "tools/stress/manifest.h"
#include "tools/stress/ops.h"
#include "tools/stress/worker.h"

namespace ubtrfs::stress {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitVerify = 1;
constexpr int kExitSetup = 2;

struct Options {
  std::string dir;
  int nproc = 4;
  uint64_t nops = 10000;
  std::optional<uint64_t> seed;
  int verbose = 0;
  double fsync_prob = 0.02;
  std::string manifest;
  bool verify_only = false;
  std::string ops;
  uint64_t data_budget_mib = 96;
  size_t max_entries = 400;
  bool snapshots = false;
};

int remove_entry(const char* path, const struct stat*, int flag, struct FTW*) {
  return flag == FTW_DP ? rmdir(path) : unlink(path);
}

// rm -rf PATH; true if PATH is gone.
bool remove_tree(const std::string& path, std::string* error) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0 && errno == ENOENT) return true;
  if (nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS) != 0) {
    *error = fmt::format("cannot remove {}: {}", path, strerror(errno));
    return false;
  }
  return true;
}

int verify_only(const Options& o) {
  std::vector<std::string> want, got;
  std::string error;
  if (!read_manifest(o.manifest, &want, &error) || !build_manifest(o.dir, &got, &error)) {
    spdlog::error("{}", error);
    return kExitSetup;
  }
  const auto diffs = compare_manifests(want, got);
  constexpr size_t kShown = 200;
  for (size_t i = 0; i < diffs.size() && i < kShown; ++i) fmt::print("{}\n", diffs[i]);
  if (diffs.size() > kShown) fmt::print("... and {} more differences\n", diffs.size() - kShown);
  fmt::print("verify-only: {} entries expected, {} found, {} differences\n", want.size(), got.size(), diffs.size());
  return diffs.empty() ? kExitOk : kExitVerify;
}

void print_progress(WorkerStats* stats, const Options& o, double secs) {
  uint64_t done = 0;
  for (int i = 0; i < o.nproc; ++i) done += std::atomic_ref<uint64_t>(stats[i].ops_done).load(std::memory_order_relaxed);
  const uint64_t total = o.nops * static_cast<uint64_t>(o.nproc);
  fmt::print(stderr, "progress: {}/{} ops ({:.0f}%), {:.0f} ops/s, {:.0f}s\n", done, total,
             total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0,
             secs > 0 ? static_cast<double>(done) / secs : 0.0, secs);
}

int run_workers(const Options& o, const OpWeights& weights, uint64_t seed) {
  std::string error;
  struct stat st;
  if (stat(o.dir.c_str(), &st) != 0 && mkdir(o.dir.c_str(), 0755) != 0) {
    spdlog::error("cannot create {}: {}", o.dir, strerror(errno));
    return kExitSetup;
  }
  if (stat(o.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    spdlog::error("{} is not a directory", o.dir);
    return kExitSetup;
  }
  for (int i = 0; i < o.nproc; ++i) {
    // Snapshots are subvolumes (read-only ones among them): rm -rf cannot remove them.
    if (o.snapshots && (lstat(fmt::format("{}/p{}", o.dir, i).c_str(), &st) == 0 ||
                        lstat(fmt::format("{}/p{}.snaps", o.dir, i).c_str(), &st) == 0)) {
      spdlog::error("--snapshots needs a fresh directory: {}/p{} exists", o.dir, i);
      return kExitSetup;
    }
    if (!remove_tree(fmt::format("{}/p{}", o.dir, i), &error)) {
      spdlog::error("{}", error);
      return kExitSetup;
    }
  }
  const size_t shm_len = sizeof(WorkerStats) * static_cast<size_t>(o.nproc);
  void* shm = mmap(nullptr, shm_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shm == MAP_FAILED) {
    spdlog::error("mmap of the shared counters failed: {}", strerror(errno));
    return kExitSetup;
  }
  auto* stats = static_cast<WorkerStats*>(shm);
  std::memset(stats, 0, shm_len);

  spdlog::info("{} workers x {} ops in {}, seed {}", o.nproc, o.nops, o.dir, seed);
  const auto start = std::chrono::steady_clock::now();
  std::vector<pid_t> pids;
  fflush(nullptr);
  spdlog::default_logger()->flush();
  for (int i = 0; i < o.nproc; ++i) {
    const pid_t pid = fork();
    if (pid < 0) {
      spdlog::error("fork failed: {}", strerror(errno));
      for (pid_t p : pids) kill(p, SIGKILL);
      for (pid_t p : pids) waitpid(p, nullptr, 0);
      return kExitSetup;
    }
    if (pid == 0) {
      WorkerOptions wo;
      wo.root = fmt::format("{}/p{}", o.dir, i);
      wo.id = i;
      wo.seed = seed + static_cast<uint64_t>(i);
      wo.subvolume = o.snapshots;
      wo.nops = o.nops;
      wo.fsync_prob = o.fsync_prob;
      wo.weights = weights;
      wo.data_budget = o.data_budget_mib << 20;
      wo.max_entries = o.max_entries;
      int rc = kExitSetup;
      {
        Worker worker(wo, &stats[i]);
        std::string err;
        if (!worker.setup(&err)) {
          spdlog::error("p{}: {}", i, err);
        } else {
          rc = worker.run() ? kExitOk : kExitVerify;
        }
      }
      spdlog::default_logger()->flush();
      fflush(nullptr);
      _exit(rc);
    }
    pids.push_back(pid);
  }

  const bool tty = isatty(STDERR_FILENO);
  auto last_progress = start;
  std::vector<int> status(static_cast<size_t>(o.nproc), -1);
  size_t running = pids.size();
  while (running > 0) {
    int ws = 0;
    const pid_t pid = waitpid(-1, &ws, WNOHANG);
    if (pid > 0) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (pids[i] != pid) continue;
        if (WIFEXITED(ws)) {
          status[i] = WEXITSTATUS(ws);
        } else {
          spdlog::error("p{} died of signal {}", i, WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
          status[i] = kExitVerify;
        }
        --running;
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) {
      spdlog::error("waitpid: {}", strerror(errno));
      return kExitSetup;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto now = std::chrono::steady_clock::now();
    if (tty && now - last_progress >= std::chrono::seconds(3)) {
      last_progress = now;
      print_progress(stats, o, std::chrono::duration<double>(now - start).count());
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  OpCounts counts{};
  uint64_t total_ops = 0, expected_errors = 0, written = 0, read = 0, failures = 0;
  for (int i = 0; i < o.nproc; ++i) {
    for (size_t k = 0; k < kNumOps; ++k) counts[k] += stats[i].counts[k];
    total_ops += stats[i].ops_done;
    expected_errors += stats[i].expected_errors;
    written += stats[i].bytes_written;
    read += stats[i].bytes_read;
    failures += stats[i].failures;
  }
  munmap(shm, shm_len);
  fmt::print("op counts:\n");
  for (size_t k = 0; k < kNumOps; ++k) fmt::print("  {:<12} {:>9}\n", op_name(static_cast<OpKind>(k)), counts[k]);
  int rc = kExitOk;
  std::string verdicts;
  for (int i = 0; i < o.nproc; ++i) {
    const int s = status[static_cast<size_t>(i)];
    verdicts += fmt::format(" p{}={}", i, s == 0 ? "ok" : s == kExitSetup ? "setup-error" : "FAILED");
    if (s == kExitSetup && rc == kExitOk) rc = kExitSetup;
    if (s != kExitOk && s != kExitSetup) rc = kExitVerify;
  }
  fmt::print("summary: seed {} workers {} ops {} in {:.1f}s ({:.0f} ops/s), {} expected errors, {:.1f} MiB written, "
             "{:.1f} MiB read-verified, {} failures;{}\n",
             seed, o.nproc, total_ops, secs, secs > 0 ? static_cast<double>(total_ops) / secs : 0.0, expected_errors,
             static_cast<double>(written) / (1 << 20), static_cast<double>(read) / (1 << 20), failures, verdicts);

  if (!o.manifest.empty() && rc != kExitSetup) {
    std::vector<std::string> lines;
    if (!build_manifest(o.dir, &lines, &error) || !write_manifest(o.manifest, lines, &error)) {
      spdlog::error("manifest: {}", error);
      return rc == kExitOk ? kExitSetup : rc;
    }
    fmt::print("manifest: {} entries written to {}\n", lines.size(), o.manifest);
  }
  return rc;
}

int stress_main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "ubtrfs-stress -d DIR [-p NPROC] [-n NOPS] [-s SEED] [-v] [--fsync-prob P] [--manifest FILE]\n"
      "              [--verify-only] [--ops LIST]\n"
      "fsstress-style random operations on DIR, verified against an in-memory model.\n"
      "Each of NPROC worker processes works in DIR/pN with seed SEED+N; reads, stats, readdirs and\n"
      "a final walk of every worker's tree are compared with the model.\n"
      "Exit status: 0 all verified, 1 verification failure, 2 usage or setup error."};
  app.set_version_flag("-V,--version", std::string("ubtrfs-stress ") + UBTRFS_VERSION);
  app.add_option("-d,--dir", o.dir, "directory to work in (created if missing)")->required();
  app.add_option("-p,--procs", o.nproc, "number of worker processes")
      ->capture_default_str()->check(CLI::Range(1, 256));
  app.add_option("-n,--nops", o.nops, "operations per worker")
      ->capture_default_str();
  app.add_option("-s,--seed", o.seed, "random seed (default: from the clock, printed)");
  app.add_flag("-v,--verbose", o.verbose, "debug logging: every operation");
  app.add_option("--fsync-prob", o.fsync_prob, "chance of fsync/fdatasync after each data operation")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--manifest", o.manifest, "write a manifest of DIR here after the run (or compare with --verify-only)");
  app.add_flag("--verify-only", o.verify_only, "no operations: compare DIR with the --manifest file");
  app.add_option("--ops", o.ops, "operations to run, as name or name=weight, comma-separated; known: " + all_op_names());
  app.add_option("--data-budget", o.data_budget_mib, "MiB of file data each worker keeps at most")
      ->capture_default_str();
  app.add_option("--max-entries", o.max_entries, "names each worker keeps at most (approximately)")
      ->capture_default_str();
  app.add_flag("--snapshots", o.snapshots,
               "btrfs only: each worker's directory is a subvolume, snapshotted (read-only or not) into "
               "pN.snaps/ and deleted again as operations (snapshot=1,snapdelete=1 unless --ops sets them); "
               "every snapshot is verified against the tree it was taken of");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitSetup;
  }

  auto logger = spdlog::stderr_color_mt("ubtrfs-stress");
  logger->set_pattern("%^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(o.verbose ? spdlog::level::debug : spdlog::level::info);

  if (o.verify_only) {
    if (o.manifest.empty()) {
      spdlog::error("--verify-only needs --manifest FILE");
      return kExitSetup;
    }
    return verify_only(o);
  }
  OpWeights weights = default_op_weights();
  if (!o.ops.empty()) {
    std::string error;
    const auto parsed = parse_op_list(o.ops, &error);
    if (!parsed) {
      spdlog::error("{}", error);
      return kExitSetup;
    }
    weights = *parsed;
  }
  if (o.snapshots) {
    auto& snap = weights[static_cast<size_t>(OpKind::kSnapshot)];
    auto& del = weights[static_cast<size_t>(OpKind::kSnapDelete)];
    if (snap == 0 && del == 0) snap = del = 1;
  }
  const uint64_t seed = o.seed.value_or(static_cast<uint64_t>(time(nullptr)) ^ (static_cast<uint64_t>(getpid()) << 32));
  umask(0);
  return run_workers(o, weights, seed);
}

}  // namespace
}  // namespace ubtrfs::stress

int main(int argc, char** argv) { return ubtrfs::stress::stress_main(argc, argv); }
