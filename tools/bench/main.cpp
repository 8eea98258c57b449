// ubtrfs-bench: the compiled client of scripts/bench.sh for the workloads fio and dbench do not
// cover — metadata operations, small fsynced files, append+fsync latency — against any mounted
// directory, through POSIX calls only (it links no ubtrfs layer).
//
// Why compiled: a FUSE round trip costs about 100 µs, so a client that spends tens of µs of its
// own per operation (an interpreter) would be measured along with the filesystem. Each
// subcommand does its setup first, then times only the operations themselves with a monotonic
// clock; file data is written from one buffer in memory. Process start and exit are outside the
// timed region.
//
// Subcommands (each prints "NAME VALUE" lines on stdout, one figure a line, for the script):
//   create DIR --files N --dirs D   mkdir DIR/d00..; create N empty files spread evenly (timed:
//                                   the creates only)                -> ops_per_s, seconds
//   stat DIR --files N --dirs D     lstat the same N files           -> ops_per_s, seconds
//   unlink DIR --files N --dirs D   unlink the same N files          -> ops_per_s, seconds
//   fsync-files DIR --files N --size B
//                                   N new files, each: create, write B bytes, fsync, close
//                                                                    -> files_per_s, seconds
//   append DIR --count N --size B   one file opened O_APPEND; N times write B bytes + fsync, each
//                                   pair timed on its own            -> p50_us, p99_us, mean_us, max_us
//
// Exit codes: 0 done, 1 an operation failed (message names the path and errno), 2 usage.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

namespace ubtrfs::bench {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// An operation failed: print what and where, exit 1 (a benchmark figure of a failed run is
// meaningless, so there is nothing to unwind).
[[noreturn]] void die(const std::string& what, const std::string& path) {
  const int err = errno;
  fmt::print(stderr, "ubtrfs-bench: {} {}: {}\n", what, path, strerror(err));
  std::exit(1);
}

// Pseudo-random bytes (xorshift64), so no layer can shortcut zero pages.
std::vector<char> make_buffer(size_t size) {
  std::vector<char> buf(size);
  uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (auto& c : buf) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return buf;
}

void write_all(int fd, const std::vector<char>& buf, const std::string& path) {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = write(fd, buf.data() + done, buf.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("write", path);
    }
    done += static_cast<size_t>(n);
  }
}

// The paths of the metadata workload: DIR/dNN/fNNNNNN, files spread evenly over the
// directories, directory by directory (the order of all three passes).
std::vector<std::string> tree_paths(const std::string& dir, uint64_t files, uint64_t dirs) {
  std::vector<std::string> paths;
  paths.reserve(files);
  for (uint64_t i = 0; i < files; ++i) {
    const uint64_t d = i * dirs / files;
    paths.push_back(fmt::format("{}/d{:02}/f{:06}", dir, d, i));
  }
  return paths;
}

void print_rate(const char* name, uint64_t ops, double secs) {
  fmt::print("{} {:.1f}\nseconds {:.6f}\n", name, secs > 0 ? ops / secs : 0.0, secs);
}

void run_create(const std::string& dir, uint64_t files, uint64_t dirs) {
  for (uint64_t d = 0; d < dirs; ++d) {
    const std::string sub = fmt::format("{}/d{:02}", dir, d);
    if (mkdir(sub.c_str(), 0755) != 0 && errno != EEXIST) die("mkdir", sub);
  }
  const auto paths = tree_paths(dir, files, dirs);
  const auto start = Clock::now();
  for (const auto& p : paths) {
    const int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die("create", p);
    if (close(fd) != 0) die("close", p);
  }
  print_rate("ops_per_s", files, seconds_since(start));
}

void run_stat(const std::string& dir, uint64_t files, uint64_t dirs) {
  const auto paths = tree_paths(dir, files, dirs);
  const auto start = Clock::now();
  struct stat st;
  for (const auto& p : paths) {
    if (lstat(p.c_str(), &st) != 0) die("lstat", p);
  }
  print_rate("ops_per_s", files, seconds_since(start));
}

void run_unlink(const std::string& dir, uint64_t files, uint64_t dirs) {
  const auto paths = tree_paths(dir, files, dirs);
  const auto start = Clock::now();
  for (const auto& p : paths) {
    if (unlink(p.c_str()) != 0) die("unlink", p);
  }
  print_rate("ops_per_s", files, seconds_since(start));
}

void run_fsync_files(const std::string& dir, uint64_t files, size_t size) {
  const auto buf = make_buffer(size);
  std::vector<std::string> paths;
  paths.reserve(files);
  for (uint64_t i = 0; i < files; ++i) paths.push_back(fmt::format("{}/s{:06}", dir, i));
  const auto start = Clock::now();
  for (const auto& p : paths) {
    const int fd = open(p.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) die("create", p);
    write_all(fd, buf, p);
    if (fsync(fd) != 0) die("fsync", p);
    if (close(fd) != 0) die("close", p);
  }
  print_rate("files_per_s", files, seconds_since(start));
}

void run_append(const std::string& dir, uint64_t count, size_t size) {
  const auto buf = make_buffer(size);
  const std::string path = dir + "/append";
  const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) die("create", path);
  std::vector<double> us;
  us.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const auto start = Clock::now();
    write_all(fd, buf, path);
    if (fsync(fd) != 0) die("fsync", path);
    us.push_back(seconds_since(start) * 1e6);
  }
  if (close(fd) != 0) die("close", path);
  double sum = 0;
  for (double v : us) sum += v;
  std::sort(us.begin(), us.end());
  // Nearest-rank percentile: the smallest value with at least p of the samples at or below it.
  const auto pct = [&](double p) {
    const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(us.size())));
    return us[std::clamp<size_t>(rank, 1, us.size()) - 1];
  };
  fmt::print("p50_us {:.1f}\np99_us {:.1f}\nmean_us {:.1f}\nmax_us {:.1f}\n", pct(0.50), pct(0.99),
             sum / static_cast<double>(us.size()), us.back());
}

}  // namespace
}  // namespace ubtrfs::bench

int main(int argc, char** argv) {
  using namespace ubtrfs::bench;
  CLI::App app{"ubtrfs-bench: timed POSIX workloads against a mounted directory (used by scripts/bench.sh)"};
  app.set_version_flag("-V,--version", std::string("ubtrfs-bench ") + UBTRFS_VERSION);
  app.require_subcommand(1);
  std::string dir;
  uint64_t files = 20000, dirs = 20, count = 2000;
  size_t size = 4096;

  auto* create = app.add_subcommand("create", "create N empty files in D directories");
  auto* stat_cmd = app.add_subcommand("stat", "lstat the files create made");
  auto* unlink_cmd = app.add_subcommand("unlink", "unlink the files create made");
  for (auto* sub : {create, stat_cmd, unlink_cmd}) {
    sub->add_option("dir", dir, "directory on the filesystem under test")->required();
    sub->add_option("--files", files, "number of files")->check(CLI::PositiveNumber);
    sub->add_option("--dirs", dirs, "number of directories (at most 100)")->check(CLI::Range(1, 100));
  }
  auto* fsync_files = app.add_subcommand("fsync-files", "N files, each written and fsynced");
  fsync_files->add_option("dir", dir, "directory on the filesystem under test")->required();
  fsync_files->add_option("--files", files, "number of files")->check(CLI::PositiveNumber);
  fsync_files->add_option("--size", size, "bytes a file")->check(CLI::PositiveNumber);
  auto* append = app.add_subcommand("append", "N appends of B bytes, each followed by fsync");
  append->add_option("dir", dir, "directory on the filesystem under test")->required();
  append->add_option("--count", count, "number of appends")->check(CLI::PositiveNumber);
  append->add_option("--size", size, "bytes an append")->check(CLI::PositiveNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (dirs > files) dirs = files;
  if (create->parsed()) run_create(dir, files, dirs);
  if (stat_cmd->parsed()) run_stat(dir, files, dirs);
  if (unlink_cmd->parsed()) run_unlink(dir, files, dirs);
  if (fsync_files->parsed()) run_fsync_files(dir, files, size);
  if (append->parsed()) run_append(dir, count, size);
  return 0;
}
