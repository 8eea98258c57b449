// ubtrfs-ctl scrub start|status|cancel (btrfs-progs cmds/scrub.c's words and output).
//
// start -B calls BTRFS_IOC_SCRUB and waits for it — SIGINT or SIGTERM meanwhile cancels the scrub
// (BTRFS_IOC_SCRUB_CANCEL), as btrfs-progs does; without -B a detached child makes the same call
// and the command returns at once (as btrfs-progs does). limit sets the daemon's throughput limit
// (control::kIocScrubLimit: the kernel keeps it in sysfs). status reads the last (or running) scrub
// from the daemon (control channel, Payload::kScrub), which also keeps it across mounts
// (fs/scrub.h); btrfs-progs keeps it in its own status file instead. Beyond btrfs-progs, start -B
// and status list the uncorrectable errors with the files they hit (the kernel logs those).
#include <fcntl.h>
#include <linux/btrfs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tools/ctl/ctl.h"
#include "tools/inspect/mount_client.h"

namespace ubtrfs::ctl {

using json = nlohmann::json;

int error(const std::string& message) {
  std::fflush(stdout);  // the summary before the error, as a terminal shows them
  std::fprintf(stderr, "ERROR: %s\n", message.c_str());
  return kExitFail;
}

std::string pretty_size(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 6) {
    v /= 1024.0;
    ++u;
  }
  return fmt::format("{:.2f}{}", v, kUnits[u]);
}

int open_mount(const std::string& mnt) {
  // The control channel's check: MNT is on a fuse.ubtrfs mount and its daemon answers.
  if (auto r = inspect::read_live_payload(mnt, control::Payload::kScrub); !r) {
    error(r.error().message);
    return -1;
  }
  const int fd = ::open(mnt.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) error(fmt::format("cannot access '{}': {}", mnt, std::strerror(errno)));
  return fd;
}

std::string fsid_of(int fd) {
  btrfs_ioctl_fs_info_args a{};
  if (::ioctl(fd, BTRFS_IOC_FS_INFO, &a) != 0) return "";
  std::string s;
  for (int i = 0; i < 16; ++i) s += fmt::format("{}{:02x}", (i == 4 || i == 6 || i == 8 || i == 10) ? "-" : "", a.fsid[i]);
  return s;
}

namespace {

Result<json> scrub_json(const std::string& mnt) {
  auto raw = UBTRFS_TRY(inspect::read_live_payload(mnt, control::Payload::kScrub));
  json j = json::parse(raw, nullptr, false);
  if (j.is_discarded()) return fail(EPROTO, "{}: the daemon's scrub status is not JSON", mnt);
  return j;
}

// btrfs-progs' status words: a cancelled scrub is "aborted", one that stopped otherwise
// "interrupted".
const char* status_word(const std::string& state) {
  if (state == "running") return "running";
  if (state == "finished") return "finished";
  if (state == "canceled") return "aborted";
  return "interrupted";
}

std::string when(int64_t t) {
  char buf[64];
  const time_t tt = static_cast<time_t>(t);
  struct tm tm;
  localtime_r(&tt, &tm);
  std::strftime(buf, sizeof buf, "%a %b %e %H:%M:%S %Y", &tm);
  return buf;
}

// The device's allocated bytes (BTRFS_IOC_DEV_INFO bytes_used): what btrfs-progs prints as
// "Total to scrub". 0 if the ioctl fails.
uint64_t device_bytes_used(int fd) {
  btrfs_ioctl_dev_info_args a{};
  a.devid = 1;
  return ::ioctl(fd, BTRFS_IOC_DEV_INFO, &a) == 0 ? a.bytes_used : 0;
}

// The summary block of `btrfs scrub status` / `start -B` from the daemon's status JSON; `total`:
// device_bytes_used().
void print_summary(const json& j, uint64_t total) {
  const json& p = j["progress"];
  auto n = [&](const char* f) { return p.value(f, uint64_t{0}); };
  const int64_t started = j.value("started", int64_t{0});
  int64_t ended = j.value("ended", int64_t{0});
  const std::string state = j.value("state", "");
  if (state == "running" || ended == 0) ended = ::time(nullptr);
  const int64_t secs = std::max<int64_t>(0, ended - started);
  const uint64_t bytes = n("data_bytes_scrubbed") + n("tree_bytes_scrubbed");
  std::printf("Scrub started:    %s\n", when(started).c_str());
  std::printf("Status:           %s\n", status_word(state));
  std::printf("Duration:         %lld:%02lld:%02lld\n", static_cast<long long>(secs / 3600),
              static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60));
  std::printf("Total to scrub:   %s\n", pretty_size(total).c_str());
  if (state == "running")
    std::printf("Bytes scrubbed:   %s  (%.2f%%)\n", pretty_size(bytes).c_str(),
                total ? 100.0 * static_cast<double>(bytes) / static_cast<double>(total) : 0.0);
  // As btrfs-progs: no rate before a whole second has passed.
  std::printf("Rate:             %s/s\n", pretty_size(secs ? bytes / static_cast<uint64_t>(secs) : 0).c_str());
  std::string errs;
  for (const char* f : {"read_errors", "super_errors", "verify_errors", "csum_errors"}) {
    if (!n(f)) continue;
    std::string name(f);
    name = name.substr(0, name.find('_'));
    errs += fmt::format(" {}={}", name, n(f));
  }
  if (errs.empty()) {
    std::printf("Error summary:    no errors found\n");
  } else {
    std::printf("Error summary:   %s\n", errs.c_str());
    std::printf("  Corrected:      %llu\n", static_cast<unsigned long long>(n("corrected_errors")));
    std::printf("  Uncorrectable:  %llu\n", static_cast<unsigned long long>(n("uncorrectable_errors")));
    std::printf("  Unverified:     %llu\n", static_cast<unsigned long long>(n("unverified_errors")));
  }
  // ubtrfs: what could not be repaired, and the files it hit (the kernel logs these in dmesg).
  if (j.contains("errors"))
    for (const json& e : j["errors"]) {
      if (e.value("corrected", false)) continue;
      const char* what = e.value("metadata", false) ? "metadata" : "data";
      if (!e.contains("files") || e["files"].empty())
        std::printf("  %s error at logical %llu mirror %d: %s\n", what,
                    static_cast<unsigned long long>(e.value("logical", uint64_t{0})), e.value("mirror", 0),
                    e.value("reason", "").c_str());
      else
        for (const json& f : e["files"])
          std::printf("  %s error at logical %llu mirror %d: %s: %s\n", what,
                      static_cast<unsigned long long>(e.value("logical", uint64_t{0})), e.value("mirror", 0),
                      f.get<std::string>().c_str(), e.value("reason", "").c_str());
    }
}

// BTRFS_IOC_SCRUB on fd; returns the errno (0 on success) and the final counters in `a`.
int run_scrub_ioctl(int fd, bool readonly, btrfs_ioctl_scrub_args& a) {
  std::memset(&a, 0, sizeof a);
  a.devid = 1;
  a.end = UINT64_MAX;
  a.flags = readonly ? BTRFS_SCRUB_READONLY : 0;
  return ::ioctl(fd, BTRFS_IOC_SCRUB, &a) == 0 ? 0 : errno;
}

}  // namespace

int scrub_start(const ScrubStartArgs& a) {
  const int fd = open_mount(a.mnt);
  if (fd < 0) return kExitFail;
  auto before = scrub_json(a.mnt);
  if (before && before->value("state", "") == "running") {
    ::close(fd);
    error("scrub is already running");
    std::fprintf(stderr, "To cancel use 'ubtrfs-ctl scrub cancel %s'.\n", a.mnt.c_str());
    return kExitFail;
  }
  const std::string fsid = fsid_of(fd);
  if (!a.foreground) {
    // Like btrfs-progs: the scrub runs in a detached child; `scrub status` follows it.
    const pid_t pid = ::fork();
    if (pid < 0) return error(fmt::format("cannot fork: {}", std::strerror(errno)));
    if (pid == 0) {
      ::setsid();
      btrfs_ioctl_scrub_args args;
      const int err = run_scrub_ioctl(fd, a.readonly, args);
      _exit(err ? kExitFail : (args.progress.uncorrectable_errors ? kExitUncorrectable : kExitOk));
    }
    ::close(fd);
    if (!a.quiet) std::printf("scrub started on %s, fsid %s (pid=%d)\n", a.mnt.c_str(), fsid.c_str(), pid);
    return kExitOk;
  }
  const uint64_t total = device_bytes_used(fd);
  if (!a.quiet) std::printf("Starting scrub on devid 1\n");
  std::fflush(stdout);
  // The ioctl waits in the kernel until the daemon replies, and a signal handler would only run
  // after it: the ioctl runs on a thread while this one waits for SIGINT / SIGTERM and cancels.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before the thread starts: it inherits the mask
  btrfs_ioctl_scrub_args args;
  std::atomic<bool> done{false};
  int err = 0;
  std::thread worker([&] {
    err = run_scrub_ioctl(fd, a.readonly, args);
    done.store(true);
  });
  bool cancel_sent = false;
  const timespec tick{0, 100 * 1000 * 1000};
  while (!done.load()) {
    if (sigtimedwait(&sigs, nullptr, &tick) > 0 && !cancel_sent) {
      const int cfd = ::open(a.mnt.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
      if (cfd >= 0) {
        if (::ioctl(cfd, BTRFS_IOC_SCRUB_CANCEL, nullptr) != 0 && errno != ENOTCONN)
          std::fprintf(stderr, "ERROR: scrub cancel failed: %s\n", std::strerror(errno));
        ::close(cfd);
      }
      cancel_sent = true;
    }
  }
  worker.join();
  ::close(fd);
  if (err == ECANCELED) {
    if (!a.quiet) std::printf("scrub canceled for %s\n", fsid.c_str());
  } else if (err) {
    return error(fmt::format("scrubbing {} failed for device id 1: ret=-1, errno={} ({})", a.mnt, err,
                             std::strerror(err)));
  } else if (!a.quiet) {
    std::printf("scrub done for %s\n", fsid.c_str());
  }
  auto after = scrub_json(a.mnt);
  if (!after) return error(after.error().message);
  if (!a.quiet) print_summary(*after, total);
  const uint64_t uncorrectable = (*after)["progress"].value("uncorrectable_errors", uint64_t{0});
  if (uncorrectable) {
    error("there are uncorrectable errors");
    return kExitUncorrectable;
  }
  return err == ECANCELED ? kExitFail : kExitOk;
}

int scrub_status(const std::string& mnt) {
  const int fd = open_mount(mnt);
  if (fd < 0) return kExitFail;
  const std::string fsid = fsid_of(fd);
  const uint64_t total = device_bytes_used(fd);
  ::close(fd);
  auto j = scrub_json(mnt);
  if (!j) return error(j.error().message);
  std::printf("UUID:             %s\n", fsid.c_str());
  if (j->value("state", "never") == "never") {
    std::printf("\tno stats available\n");
    return kExitOk;
  }
  print_summary(*j, total);
  return kExitOk;
}

std::optional<uint64_t> parse_size(const std::string& s) {
  if (s.empty()) return std::nullopt;
  size_t end = 0;
  uint64_t v;
  try {
    v = std::stoull(s, &end, 10);
  } catch (...) {
    return std::nullopt;
  }
  const std::string unit = s.substr(end);
  static const std::string kUnits = "kmgtpe";
  if (unit.empty()) return v;
  if (unit.size() != 1 || kUnits.find(static_cast<char>(std::tolower(unit[0]))) == std::string::npos)
    return std::nullopt;
  for (size_t i = 0; i <= kUnits.find(static_cast<char>(std::tolower(unit[0]))); ++i) {
    if (v > (UINT64_MAX >> 10)) return std::nullopt;
    v <<= 10;
  }
  return v;
}

int scrub_limit(const std::string& mnt, const std::string* limit) {
  const int fd = open_mount(mnt);
  if (fd < 0) return kExitFail;
  if (limit) {
    const auto bytes = parse_size(*limit);
    if (!bytes) {
      ::close(fd);
      return error(fmt::format("invalid size: {}", *limit));
    }
    const uint64_t v = *bytes;
    if (::ioctl(fd, control::kIocScrubLimit, &v) != 0) {
      const int err = errno;
      ::close(fd);
      return error(fmt::format("cannot set the scrub limit of {}: {}", mnt, std::strerror(err)));
    }
  }
  const std::string fsid = fsid_of(fd);
  btrfs_ioctl_dev_info_args dev{};
  dev.devid = 1;
  const bool have_dev = ::ioctl(fd, BTRFS_IOC_DEV_INFO, &dev) == 0;
  ::close(fd);
  auto j = scrub_json(mnt);
  if (!j) return error(j.error().message);
  const uint64_t now = j->value("rate_limit", uint64_t{0});
  std::printf("UUID: %s\n", fsid.c_str());
  std::printf("%-3s %12s  %s\n", "Id", "Limit", "Path");
  std::printf("%-3s %12s  %s\n", "--", "---------", "-----");
  std::printf("%-3d %12s  %s\n", 1, now ? pretty_size(now).c_str() : "unlimited",
              have_dev ? reinterpret_cast<const char*>(dev.path) : "");
  return kExitOk;
}

int scrub_cancel(const std::string& mnt) {
  const int fd = open_mount(mnt);
  if (fd < 0) return kExitFail;
  const int rc = ::ioctl(fd, BTRFS_IOC_SCRUB_CANCEL, nullptr);
  const int err = errno;
  ::close(fd);
  if (rc == 0) {
    std::printf("scrub cancelled\n");
    return kExitOk;
  }
  if (err == ENOTCONN) {
    error(fmt::format("scrub cancel failed on {}: not running", mnt));
    return kExitNotRunning;
  }
  return error(fmt::format("scrub cancel failed on {}: {}", mnt, std::strerror(err)));
}

}  // namespace ubtrfs::ctl
