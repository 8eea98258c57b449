// ubtrfs-ctl filesystem df|usage|label (btrfs-progs cmds/filesystem.c and filesystem-usage.c).
//
// df and usage lay out the daemon's space_info figures (Filesystem::stats_json over the control
// channel: the reservation system's counters, the same the kernel's SPACE_INFO ioctl returns:
// total and used per block group type, logical bytes; disk_total counts every DUP copy) and the
// global block reserve. The kernel's BTRFS_IOC_SPACE_INFO has a variable-size result, which FUSE
// cannot carry, hence the control channel. label uses FS_IOC_GETFSLABEL / FS_IOC_SETFSLABEL, the
// ioctls btrfs-progs itself uses on a mounted filesystem.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tools/ctl/ctl.h"
#include "tools/inspect/mount_client.h"

namespace ubtrfs::ctl {

namespace {

using json = nlohmann::json;

struct Space {
  std::string name;     // "Data", "Metadata", "System", "Data+Metadata"
  std::string profile;  // "single", "DUP"
  uint64_t total = 0, used = 0, disk_total = 0, disk_used = 0;
};

struct Figures {
  std::vector<Space> spaces;  // in the kernel's SPACE_INFO order: Data, System, Metadata
  uint64_t global_size = 0, global_used = 0;
  std::string device;
  uint64_t device_size = 0, device_allocated = 0;
};

Result<Figures> read_figures(const std::string& mnt) {
  auto raw = UBTRFS_TRY(inspect::read_live_payload(mnt, control::Payload::kStats));
  const json j = json::parse(raw, nullptr, false);
  if (j.is_discarded() || !j.contains("space_info")) return fail(EPROTO, "{}: the daemon's stats lack space_info", mnt);
  Figures f;
  for (const char* type : {"DATA", "SYSTEM", "METADATA", "DATA+METADATA"})
    for (const json& s : j["space_info"]) {
      if (s.value("type", "") != type) continue;
      Space sp;
      const std::string t = type;
      sp.name = t == "DATA" ? "Data" : t == "SYSTEM" ? "System" : t == "METADATA" ? "Metadata" : "Data+Metadata";
      sp.profile = s.value("profile", "single");
      sp.total = s.value("total", uint64_t{0});
      sp.used = s.value("used", uint64_t{0});
      sp.disk_total = s.value("disk_total", sp.total);
      sp.disk_used = s.value("disk_used", sp.used);
      f.spaces.push_back(sp);
    }
  if (j.contains("block_rsv") && j["block_rsv"].contains("global")) {
    const json& g = j["block_rsv"]["global"];
    f.global_size = g.value("size", uint64_t{0});
    const uint64_t reserved = g.value("reserved", uint64_t{0});
    f.global_used = f.global_size > reserved ? f.global_size - reserved : 0;  // as the kernel reports it
  }
  if (j.contains("device")) {
    f.device = j["device"].value("path", "");
    f.device_size = j["device"].value("total_bytes", uint64_t{0});
    f.device_allocated = j["device"].value("bytes_used", uint64_t{0});
  }
  return f;
}

double ratio(const Space& s) { return s.total ? static_cast<double>(s.disk_total) / static_cast<double>(s.total) : 1.0; }

}  // namespace

int filesystem_df(const std::string& mnt, bool raw) {
  auto f = read_figures(mnt);
  if (!f) return error(f.error().message);
  auto size = [raw](uint64_t v) { return raw ? std::to_string(v) : pretty_size(v); };
  for (const auto& s : f->spaces)
    std::printf("%s, %s: total=%s, used=%s\n", s.name.c_str(), s.profile.c_str(), size(s.total).c_str(),
                size(s.used).c_str());
  std::printf("GlobalReserve, single: total=%s, used=%s\n", size(f->global_size).c_str(),
              size(f->global_used).c_str());
  return kExitOk;
}

int filesystem_usage(const std::string& mnt) {
  auto f = read_figures(mnt);
  if (!f) return error(f.error().message);
  struct statvfs sv {};
  const bool have_statfs = ::statvfs(mnt.c_str(), &sv) == 0;
  const Space* data = nullptr;
  double data_ratio = 1.0, meta_ratio = 1.0, max_ratio = 1.0;
  uint64_t used = 0, allocated = 0;
  for (const auto& s : f->spaces) {
    used += s.disk_used;
    allocated += s.disk_total;
    max_ratio = std::max(max_ratio, ratio(s));
    if (s.name == "Data" || s.name == "Data+Metadata") data = &s, data_ratio = ratio(s);
    if (s.name == "Metadata" || s.name == "Data+Metadata") meta_ratio = ratio(s);
  }
  // Allocated from the space_infos (every chunk, those of the running transaction included; the
  // dev item's bytes_used is only brought up to date by the commit).
  const uint64_t unallocated = f->device_size > allocated ? f->device_size - allocated : 0;
  const uint64_t data_free = data && data->total > data->used ? data->total - data->used : 0;
  const uint64_t free_est = data_free + static_cast<uint64_t>(static_cast<double>(unallocated) / data_ratio);
  const uint64_t free_min = data_free + static_cast<uint64_t>(static_cast<double>(unallocated) / max_ratio);
  auto line = [](const char* label, const std::string& value, const std::string& extra = "") {
    std::printf("    %-24s%14s%s\n", label, value.c_str(), extra.c_str());
  };
  std::printf("Overall:\n");
  line("Device size:", pretty_size(f->device_size));
  line("Device allocated:", pretty_size(allocated));
  line("Device unallocated:", pretty_size(unallocated));
  line("Device missing:", pretty_size(0));
  line("Used:", pretty_size(used));
  line("Free (estimated):", pretty_size(free_est), fmt::format("\t(min: {})", pretty_size(free_min)));
  if (have_statfs) line("Free (statfs, df):", pretty_size(static_cast<uint64_t>(sv.f_bavail) * sv.f_bsize));
  line("Data ratio:", fmt::format("{:.2f}", data_ratio));
  line("Metadata ratio:", fmt::format("{:.2f}", meta_ratio));
  line("Global reserve:", pretty_size(f->global_size), fmt::format("\t(used: {})", pretty_size(f->global_used)));
  line("Multiple profiles:", "no");
  for (const auto& s : f->spaces) {
    const double pct = s.total ? 100.0 * static_cast<double>(s.used) / static_cast<double>(s.total) : 0.0;
    std::printf("\n%s,%s: Size:%s, Used:%s (%.2f%%)\n", s.name.c_str(), s.profile.c_str(),
                pretty_size(s.total).c_str(), pretty_size(s.used).c_str(), pct);
    std::printf("   %s\t%s\n", f->device.c_str(), pretty_size(s.disk_total).c_str());
  }
  std::printf("\nUnallocated:\n   %s\t%s\n", f->device.c_str(), pretty_size(unallocated).c_str());
  return kExitOk;
}

int filesystem_label(const std::string& mnt, const std::string* new_label) {
  const int fd = open_mount(mnt);
  if (fd < 0) return kExitFail;
  char buf[FSLABEL_MAX] = {};
  int rc;
  if (new_label) {
    if (new_label->size() >= FSLABEL_MAX) {
      ::close(fd);
      return error(fmt::format("label {} is too long (max {})", *new_label, FSLABEL_MAX - 1));
    }
    std::memcpy(buf, new_label->data(), new_label->size());
    rc = ::ioctl(fd, FS_IOC_SETFSLABEL, buf);
  } else {
    rc = ::ioctl(fd, FS_IOC_GETFSLABEL, buf);
  }
  const int err = errno;
  ::close(fd);
  if (rc != 0)
    return error(fmt::format("unable to {} label of {}: {}", new_label ? "set" : "get", mnt, std::strerror(err)));
  if (!new_label) std::printf("%s\n", std::string(buf, strnlen(buf, sizeof buf)).c_str());
  return kExitOk;
}

}  // namespace ubtrfs::ctl
