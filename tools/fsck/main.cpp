// fsck.ubtrfs: read-only checker for btrfs filesystems (single device), a sequence of passes in
// the manner of `btrfs check` (the passes and their rules: context.h and each pass_*.cpp).
//
//   fsck.ubtrfs [options] IMAGE|DEVICE
//
// The device is opened read-only (the device layer refuses every write with EROFS), so checking
// never changes a byte; there is no repair mode. Exit status follows fsck(8):
//   0  no errors (warnings, such as mkfs.btrfs 6.2's stale free space entries, do not count)
//   4  filesystem errors left uncorrected
//   8  operational error: cannot open or read, not btrfs, unsupported checksum type or features
//  16  usage error, including a request to repair (-y, --repair)
// fsck(8) conventions: -n/--readonly/--no-repair and -f are accepted (checking is always read-only
// and always complete); -a/-p (automatic/preen, as at boot) check read-only and report errors with
// status 4 — nothing is repaired; -y/--repair is refused with status 16, since repairing is not
// implemented and answering "yes" to repairs we would not make would be a lie.
// Output: one line per problem on stdout, "ERROR: [class] message" or "WARNING: [class] message",
// then a summary line; with --json one JSON document instead. Progress lines "[3/9] checking
// extents" go to stderr when it is a terminal (or with --progress).
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "io/block_device.h"
#include "io/checksum.h"
#include "tools/fsck/check.h"
#include "tools/fsck/context.h"
#include "tree/superblock.h"

namespace ubtrfs::fsck {
namespace {

constexpr const char* kProg = "fsck.ubtrfs";

struct Cli {
  std::string device;
  bool json = false;
  bool progress = false;
  bool readonly = false;
  bool force = false;
  bool preen = false;
  bool repair = false;
  bool version = false;
  bool list_classes = false;
  Options opts;
};

int say_error(int code, const std::string& msg) {
  std::fprintf(stderr, "%s: error: %s\n", kProg, msg.c_str());
  return code;
}

int finish(const Cli& cli, const Context& ctx, Report& rep, int code) {
  uint64_t blocks = 0;
  for (const auto& [b, r] : ctx.blocks) blocks += r.readable;
  if (cli.json) {
    std::vector<std::pair<std::string, uint64_t>> stats{{"tree_blocks", blocks},
                                                        {"trees", ctx.trees.size()},
                                                        {"extent_items", ctx.extents.size()},
                                                        {"block_groups", ctx.block_groups.size()}};
    std::printf("%s\n", rep.json(cli.device, code, stats).c_str());
  } else if (code == kExitOperational) {
    // Nothing was checked: no summary that could read as "no error found".
  } else {
    std::printf("checked %zu trees, %lu tree blocks, %zu extent items, %zu block groups\n", ctx.trees.size(),
                static_cast<unsigned long>(blocks), ctx.extents.size(), ctx.block_groups.size());
    if (rep.error_count() == 0)
      std::printf("no error found%s\n",
                  rep.warning_count() ? fmt::format(" ({} warnings)", rep.warning_count()).c_str() : "");
    else
      std::printf("found %d errors, %d warnings\n", rep.error_count(), rep.warning_count());
  }
  std::fflush(stdout);
  return code;
}

int run(const Cli& cli) {
  if (cli.repair)
    return say_error(kExitUsage, "repair is not supported: fsck.ubtrfs only checks (run it without -y/--repair)");
  auto dev = io::open_device(cli.device, io::OpenMode::kReadOnly);
  if (!dev) return say_error(kExitOperational, fmt::format("cannot open {}: {}", cli.device, dev.error().message));

  Report rep(kPasses, cli.progress || isatty(STDERR_FILENO));
  rep.set_streaming(!cli.json);
  Context ctx(**dev, rep, cli.opts);
  const PassesResult r = run_passes(ctx, cli.device);
  if (!r.message.empty()) say_error(r.exit_code, r.message);
  return finish(cli, ctx, rep, r.exit_code);
}

}  // namespace
}  // namespace ubtrfs::fsck

int main(int argc, char** argv) {
  using namespace ubtrfs::fsck;
  Cli cli;
  CLI::App app{
      "Check a btrfs filesystem (single device) without changing it.\n"
      "Exit status (fsck(8)): 0 no errors, 4 errors found (never repaired), 8 operational error\n"
      "(cannot open, not btrfs, unsupported), 16 usage error. -n/-f are accepted; -a/-p check\n"
      "read-only and exit 4 on errors; -y/--repair is refused (exit 16): there is no repair mode.",
      kProg};
  app.add_option("device", cli.device, "image file or block device")->required(false);
  app.add_flag("--json", cli.json, "print one JSON report (passes, errors with class and location, counts)");
  app.add_flag("--check-data-csum", cli.opts.check_data_csum, "also read every checksummed data sector and verify it");
  app.add_flag("--progress", cli.progress, "print pass progress on stderr even when it is not a terminal");
  app.add_flag("-v,--verbose", cli.opts.verbose, "show library warnings");
  app.add_flag("-n,--readonly,--no-repair", cli.readonly, "check only (always the case; accepted for fsck(8))");
  app.add_flag("-f,--force", cli.force, "check even if marked clean (always the case; accepted for fsck(8))");
  app.add_flag("-a,-p,--preen", cli.preen, "automatic mode as at boot: check read-only, exit 4 on errors");
  app.add_flag("-y,--repair", cli.repair, "refused: repair is not supported (exit 16)");
  app.add_flag("-V,--version", cli.version, "print the version");
  app.add_flag("--list-classes", cli.list_classes, "list the problem classes and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      app.exit(e);
      return 0;
    }
    std::fprintf(stderr, "%s: error: %s (see --help)\n", kProg, e.what());
    return 16;
  }
  if (cli.version) {
    std::printf("%s %s\n", kProg, UBTRFS_VERSION);
    return 0;
  }
  if (cli.list_classes) {
    for (const auto& c : kClasses) std::printf("%-22s %s\n", c.name, c.meaning);
    return 0;
  }
  if (cli.device.empty()) {
    std::fprintf(stderr, "%s: error: no device given (see --help)\n", kProg);
    return 16;
  }
  spdlog::set_level(cli.opts.verbose ? spdlog::level::warn : spdlog::level::off);
  return run(cli);
}
