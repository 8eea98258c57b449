// mkfs.ubtrfs: command-line front end of the mkfs library (mkfs.h), with the options mkfs.btrfs users
// know. This file owns only option parsing, the safety refusals and the summary; the layout and the
// writing live in the library so the tests can drive them on memory devices.
//
// Refusals, checked before a single byte is written (so a refused device is left unchanged):
//   - bad option values (nodesize, sectorsize other than 4096, checksum, profile, size, label, uuid);
//   - a mounted or exclusively held block device (open_device returns EBUSY);
//   - a device or image carrying any signature libblkid recognizes, unless -f;
//   - a filesystem size below the layout's real minimum (the message gives it in bytes);
//   - mixed block groups (--mixed) with a nodesize other than the sectorsize.
// A device too small for separate data and metadata block groups (89 MiB with DUP metadata, 49 MiB
// single) gets mixed ones, with a note, unless a nodesize other than 4096 was asked for (mkfs.h
// small_device_config; mkfs.btrfs up to 4.2 did the same below 1 GiB; xfstests asks for --mixed
// below 100 MiB); NBD exports too.
//   - an NBD export (nbd://, nbd+unix://...; io/nbd_device.h) with a btrfs superblock or any
//     non-zero byte in its first MiB, unless -f (libblkid cannot probe a URI); -b may only shrink.
// Exit status: 0 on success, 1 on any error with one line "mkfs.ubtrfs: error: ..." on stderr.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/block_device.h"
#include "io/nbd_device.h"
#include "io/probe.h"
#include "tools/mkfs/mkfs.h"
#include "tools/mkfs/signatures.h"

namespace {

using namespace ubtrfs;
using namespace ubtrfs::mkfs;

constexpr const char* kProg = "mkfs.ubtrfs";

int error_exit(const std::string& message) {
  fmt::print(stderr, "{}: error: {}\n", kProg, message);
  return 1;
}

struct Options {
  std::string device;
  std::string nodesize;  // empty: 16384, or 4096 with mixed block groups
  std::string sectorsize = "4096";
  std::string csum = "xxhash";
  std::string metadata;  // empty: dup, or single with mixed block groups (mkfs.btrfs's defaults)
  bool mixed = false;
  std::vector<std::string> features;  // -O, comma separated as mkfs.btrfs takes them
  std::string label;
  std::string uuid;
  std::string byte_count;
  bool force = false;
  bool quiet = false;
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// mkfs.btrfs's -O names. Always made (so accepted and ignored): what every ubtrfs image has.
constexpr const char* kAlwaysOnFeatures[] = {"mixed-backref", "extref", "skinny-metadata", "no-holes",
                                             "free-space-tree"};

// -O LIST: block-group-tree, mixed-bg, and the always-made ones; "^NAME" turns one off (only the
// optional ones can be). Errors name the feature.
Status apply_features(const std::vector<std::string>& lists, MkfsConfig& c) {
  for (const auto& list : lists) {
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t comma = list.find(',', pos);
      if (comma == std::string::npos) comma = list.size();
      std::string name = lower(list.substr(pos, comma - pos));
      pos = comma + 1;
      if (name.empty()) continue;
      const bool off = name[0] == '^';
      if (off) name.erase(0, 1);
      if (name == "block-group-tree") c.block_group_tree = !off;
      else if (name == "mixed-bg") c.mixed = !off;
      else if (std::find_if(std::begin(kAlwaysOnFeatures), std::end(kAlwaysOnFeatures),
                            [&](const char* f) { return name == f; }) != std::end(kAlwaysOnFeatures)) {
        if (off) return fail(EINVAL, "feature '{}' cannot be turned off: every mkfs.ubtrfs image has it", name);
      } else {
        return fail(EINVAL, "unknown or unsupported feature '{}' (-O takes block-group-tree, mixed-bg, {})", name,
                    fmt::join(kAlwaysOnFeatures, ", "));
      }
    }
  }
  return {};
}

// Turns the option strings into a library config. Errors name the option and the bad value.
Result<MkfsConfig> config_from_options(const Options& o) {
  MkfsConfig c;
  c.mixed = o.mixed;
  UBTRFS_TRY_STATUS(apply_features(o.features, c));
  auto node = parse_size(o.nodesize.empty() ? (c.mixed ? "4096" : "16384") : o.nodesize);
  if (!node) return fail(EINVAL, "invalid nodesize '{}'", o.nodesize);
  auto sector = parse_size(o.sectorsize);
  if (!sector) return fail(EINVAL, "invalid sectorsize '{}'", o.sectorsize);
  if (*sector != 4096) return fail(EINVAL, "sectorsize {} is not supported: only 4096 is", *sector);
  if (*node < 4096 || *node > 65536 || (*node & (*node - 1)))
    return fail(EINVAL, "invalid nodesize {}: must be a power of two between 4096 and 65536", *node);
  if (c.mixed && *node != *sector)
    return fail(EINVAL, "with mixed block groups (--mixed) the nodesize must equal the sectorsize {}, not {}",
                *sector, *node);
  c.nodesize = static_cast<uint32_t>(*node);
  c.sectorsize = static_cast<uint32_t>(*sector);

  const std::string csum = lower(o.csum);
  if (csum == "crc32c") c.csum_type = io::CsumType::kCrc32c;
  else if (csum == "xxhash" || csum == "xxhash64") c.csum_type = io::CsumType::kXxhash64;
  else if (csum == "sha256" || csum == "blake2")
    return fail(EOPNOTSUPP, "checksum type {} is not supported: use crc32c or xxhash", csum);
  else return fail(EINVAL, "unknown checksum type '{}': use crc32c or xxhash", o.csum);

  const std::string meta = o.metadata.empty() ? (c.mixed ? "single" : "dup") : lower(o.metadata);
  if (meta == "dup") c.metadata_profile = Profile::kDup;
  else if (meta == "single") c.metadata_profile = Profile::kSingle;
  else return fail(EINVAL, "unsupported metadata profile '{}': use single or dup", o.metadata);

  if (o.label.size() >= kLabelSize) return fail(EINVAL, "label '{}' is too long: at most {} bytes", o.label, kLabelSize - 1);
  c.label = o.label;
  if (!o.uuid.empty()) {
    UuidBytes u{};
    if (uuid_parse(o.uuid.c_str(), u.data()) != 0) return fail(EINVAL, "invalid uuid '{}'", o.uuid);
    if (uuid_is_null(u.data())) return fail(EINVAL, "invalid uuid '{}': the null uuid cannot be used", o.uuid);
    c.fsid = u;
  }
  if (!o.byte_count.empty()) {
    auto b = parse_size(o.byte_count);
    if (!b) return fail(EINVAL, "invalid byte count '{}'", o.byte_count);
    if (*b == 0) return fail(EINVAL, "invalid byte count '{}': must not be zero", o.byte_count);
    c.fs_size = *b;
  }
  return c;
}

// For an image file: the mount point of a mounted loop device backed by it, if any (mkfs.btrfs refuses
// those too; open_device only sees block devices). Reads /proc/self/mounts and each loop device's
// /sys/block/loopN/loop/backing_file, comparing inodes.
std::optional<std::string> loop_mount_of(const struct stat& target) {
  FILE* mounts = std::fopen("/proc/self/mounts", "re");
  if (!mounts) return std::nullopt;
  std::optional<std::string> found;
  char source[4096], mount_point[4096];
  while (!found && std::fscanf(mounts, "%4095s %4095s %*[^\n]", source, mount_point) == 2) {
    const std::string src = source;
    if (!src.starts_with("/dev/loop")) continue;
    const std::string sys = "/sys/block/" + src.substr(5) + "/loop/backing_file";
    FILE* f = std::fopen(sys.c_str(), "re");
    if (!f) continue;
    char backing[4096] = {};
    if (std::fgets(backing, sizeof(backing), f)) {
      std::string b = backing;
      while (!b.empty() && b.back() == '\n') b.pop_back();
      struct stat st {};
      if (::stat(b.c_str(), &st) == 0 && st.st_dev == target.st_dev && st.st_ino == target.st_ino)
        found = std::string(mount_point) + " (through " + src + ")";
    }
    std::fclose(f);
  }
  std::fclose(mounts);
  return found;
}

std::string uuid_text(const UuidBytes& u) {
  char buf[37];
  uuid_unparse(u.data(), buf);
  return buf;
}

std::string profile_name(uint64_t type) { return (type & kBlockGroupDup) ? "DUP" : "single"; }

void print_summary(const Options& o, const MkfsConfig& c, const MkfsResult& r) {
  const Layout& l = r.layout;
  fmt::print("{} {} (btrfs-compatible)\n\n", kProg, UBTRFS_VERSION);
  fmt::print("Label:              {}\n", c.label.empty() ? "(null)" : c.label);
  fmt::print("UUID:               {}\n", uuid_text(r.fsid));
  fmt::print("Node size:          {}\n", l.nodesize);
  fmt::print("Sector size:        {}\n", l.sectorsize);
  fmt::print("Filesystem size:    {}\n", pretty_size(l.total_bytes));
  fmt::print("Block group profiles:\n");
  if (l.mixed) {
    fmt::print("  Data+Metadata:    {:<10}{:>14}\n", profile_name(l.metadata.type), pretty_size(l.metadata.length));
  } else {
    fmt::print("  Data:             {:<10}{:>14}\n", profile_name(l.data.type), pretty_size(l.data.length));
    fmt::print("  Metadata:         {:<10}{:>14}\n", profile_name(l.metadata.type), pretty_size(l.metadata.length));
  }
  fmt::print("  System:           {:<10}{:>14}\n", profile_name(l.system.type), pretty_size(l.system.length));
  std::string features = "mixed-backref, extref, skinny-metadata, no-holes";
  if (l.mixed) features += ", mixed-bg";
  if (l.nodesize > 4096) features += ", big-metadata";
  fmt::print("Incompat features:  {}\n", features);
  fmt::print("Runtime features:   free-space-tree{}\n", l.block_group_tree ? ", block-group-tree" : "");
  fmt::print("Checksum:           {}\n", io::csum_name(static_cast<uint16_t>(c.csum_type)));
  fmt::print("Number of devices:  1\n");
  fmt::print("Devices:\n");
  fmt::print("   ID        SIZE  PATH\n");
  fmt::print("  {:>3}  {:>10}  {}\n", 1, pretty_size(l.total_bytes), o.device);
}

const char* profile_text(Profile p) { return p == Profile::kDup ? "DUP" : "single"; }

// The layout `config` gets on `target_size` bytes (image file, block device or NBD export): the
// small-device rule (mkfs.h small_device_config) with its note, then compute_layout's checks, whose
// "too small" names the mixed minimum too. Errors: the message for error_exit.
Result<MkfsConfig> settle_layout(const Options& o, MkfsConfig config, uint64_t target_size) {
  const uint64_t fs_bytes = config.fs_size ? std::min(config.fs_size, target_size) : target_size;
  if (auto mixed = small_device_config(config, fs_bytes, !o.nodesize.empty(), !o.metadata.empty())) {
    if (!o.quiet)
      fmt::print("note: {} ({}) is smaller than {}, the minimum for separate data and metadata block groups "
                 "with {} metadata: using mixed block groups ({}, nodesize {}), as --mixed does\n",
                 o.device, pretty_size(fs_bytes), pretty_size(minimum_fs_size(config.metadata_profile)),
                 profile_text(config.metadata_profile), profile_text(mixed->metadata_profile), mixed->nodesize);
    config = *mixed;
  }
  if (auto l = compute_layout(config, target_size); !l) {
    std::string hint;
    if (!config.mixed && l.error().err == ENOSPC) {
      const uint64_t mixed_min = minimum_fs_size(config.metadata_profile, true);
      hint = fmt::format(" (mixed block groups, --mixed with nodesize {}, fit down to {}, {} bytes)", config.sectorsize,
                         pretty_size(mixed_min), mixed_min);
    }
    return fail(l.error().err, "{}: {}{}", o.device, l.error().message, hint);
  }
  return config;
}

// An NBD export: the server fixes the size, and the existing-content check reads through the
// device (the first MiB, which holds the primary superblock and every common signature).
int run_nbd(const Options& o, MkfsConfig config) {
  auto dev = io::open_device(o.device, io::OpenMode::kReadWrite);
  if (!dev) return error_exit(dev.error().message);
  const uint64_t device_size = (*dev)->size();
  if (config.fs_size > device_size)
    return error_exit(fmt::format("byte count {} is larger than the NBD export {} ({})", config.fs_size, o.device,
                                  pretty_size(device_size)));
  if (!o.force) {
    std::vector<uint8_t> head(std::min<uint64_t>(device_size, 1 << 20));
    if (auto rd = (*dev)->read(0, head); !rd) return error_exit(rd.error().message);
    uint64_t magic = 0;
    if (head.size() >= kSuperInfoOffset + 72) std::memcpy(&magic, head.data() + kSuperInfoOffset + 64, sizeof magic);
    if (magic == kSuperMagic)
      return error_exit(fmt::format("{} appears to contain an existing filesystem (btrfs); use -f to overwrite", o.device));
    if (std::any_of(head.begin(), head.end(), [](uint8_t b) { return b != 0; }))
      return error_exit(fmt::format("{} has data in its first MiB (signatures cannot be probed on an NBD export); "
                                    "use -f to overwrite",
                                    o.device));
  }
  const uint64_t target_size = config.fs_size ? config.fs_size : device_size;
  auto settled = settle_layout(o, config, target_size);
  if (!settled) return error_exit(settled.error().message);
  config = *settled;
  auto result = make_btrfs(**dev, config);
  if (!result) return error_exit(fmt::format("{}: {}", o.device, result.error().message));
  if (auto f = (*dev)->flush(); !f) return error_exit(fmt::format("{}: {}", o.device, f.error().message));
  if (!o.quiet) print_summary(o, config, *result);
  return 0;
}

int run(const Options& o) {
  auto cfg = config_from_options(o);
  if (!cfg) return error_exit(cfg.error().message);
  MkfsConfig config = *cfg;
  if (io::is_nbd_uri(o.device)) return run_nbd(o, config);

  struct stat st {};
  bool exists = ::stat(o.device.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) return error_exit(fmt::format("cannot access {}: {}", o.device, std::strerror(errno)));
  if (!exists && config.fs_size == 0)
    return error_exit(fmt::format("{} does not exist: give -b SIZE to create an image file", o.device));
  if (exists && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
    return error_exit(fmt::format("{} is neither a block device nor a regular file", o.device));

  uint64_t device_size = 0;
  if (exists) {
    // Opening read-write refuses a mounted block device (EBUSY); nothing is written yet.
    auto dev = io::open_device(o.device, io::OpenMode::kReadWrite);
    if (!dev) return error_exit(dev.error().message);
    device_size = (*dev)->size();

    if (S_ISREG(st.st_mode))
      if (auto where = loop_mount_of(st))
        return error_exit(fmt::format("{} is mounted on {}, refusing to overwrite it", o.device, *where));

    auto fs_type = io::probe_existing_filesystem(o.device);
    if (!fs_type) return error_exit(fs_type.error().message);
    auto sigs = list_signatures(o.device);
    if (!sigs) return error_exit(sigs.error().message);
    if (!o.force) {
      if (*fs_type)
        return error_exit(fmt::format("{} appears to contain an existing filesystem ({}); use -f to overwrite",
                                      o.device, **fs_type));
      if (!sigs->empty())
        return error_exit(fmt::format("{} appears to contain {} ({}); use -f to overwrite", o.device,
                                      sigs->front().partition_table ? "a partition table" : "a signature",
                                      sigs->front().type));
    }
    for (const auto& s : *sigs) config.extra_wipe.emplace_back(s.offset, s.length);
  }

  // A regular file is created or grown to the byte count; a block device must be large enough.
  uint64_t target_size = device_size;
  if (config.fs_size > device_size) {
    if (exists && S_ISBLK(st.st_mode))
      return error_exit(fmt::format("byte count {} is larger than the device {} ({})", config.fs_size, o.device,
                                    pretty_size(device_size)));
    target_size = config.fs_size;
  }
  auto settled = settle_layout(o, config, target_size);
  if (!settled) return error_exit(settled.error().message);
  config = *settled;

  bool created = false;
  if (!exists) {
    int fd = ::open(o.device.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return error_exit(fmt::format("cannot create {}: {}", o.device, std::strerror(errno)));
    created = true;
    ::close(fd);
  }
  if (target_size > device_size && ::truncate(o.device.c_str(), static_cast<off_t>(target_size)) != 0) {
    const int err = errno;
    if (created) ::unlink(o.device.c_str());
    return error_exit(fmt::format("cannot extend {} to {} bytes: {}", o.device, target_size, std::strerror(err)));
  }

  auto dev = io::open_device(o.device, io::OpenMode::kReadWrite);
  if (!dev) {
    if (created) ::unlink(o.device.c_str());
    return error_exit(dev.error().message);
  }
  auto result = make_btrfs(**dev, config);
  if (!result) {
    if (created) ::unlink(o.device.c_str());
    return error_exit(fmt::format("{}: {}", o.device, result.error().message));
  }
  if (!o.quiet) print_summary(o, config, *result);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Create a btrfs-compatible filesystem on a device or image file (ubtrfs)", kProg};
  app.set_version_flag("-V,--version", std::string(kProg) + " " + UBTRFS_VERSION);
  app.add_option("-n,--nodesize", o.nodesize,
                 "tree block size: 4K..64K, power of two (default 16K; 4K and only 4K with --mixed)");
  app.add_option("-s,--sectorsize", o.sectorsize, "data block size (only 4096)");
  app.add_option("--csum,--checksum", o.csum, "checksum algorithm: crc32c or xxhash (default xxhash)");
  app.add_option("-m,--metadata", o.metadata, "metadata profile: single or dup (default dup; single with --mixed)");
  app.add_flag("-M,--mixed", o.mixed,
               "mixed data and metadata block groups (small devices; chosen on its own when separate ones do not fit)");
  app.add_option("-O,--features", o.features,
                 "features, comma separated: block-group-tree (Linux 6.1+), mixed-bg; the always-made "
                 "mixed-backref, extref, skinny-metadata, no-holes, free-space-tree are accepted");
  app.add_option("-L,--label", o.label, "filesystem label (at most 255 bytes)");
  app.add_option("-U,--uuid", o.uuid, "filesystem UUID (default: random)");
  app.add_option("-b,--byte-count", o.byte_count,
                 "filesystem size, e.g. 128M, 1G (creates a sparse image file if missing)");
  app.add_flag("-f,--force", o.force, "overwrite an existing filesystem or signature");
  app.add_flag("-q,--quiet", o.quiet, "print nothing on success");
  app.add_option("device", o.device, "device or image file")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    return error_exit(msg);
  }
  return run(o);
}
