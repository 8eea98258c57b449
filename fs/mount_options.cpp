// Mount option parsing and the open gate; see mount_options.h.
#include "fs/mount_options.h"

#include <charconv>
#include <string_view>

#include "tree/superblock.h"

namespace ubtrfs::fs {

std::vector<std::string> split_option_list(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    if (comma > pos) out.push_back(list.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

namespace {

std::optional<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<bool> parse_on_off(std::string_view s) {
  if (s == "on" || s == "1" || s == "yes" || s == "true") return true;
  if (s == "off" || s == "0" || s == "no" || s == "false") return false;
  return std::nullopt;
}

// Options mount(8), fstab and mount.fuse3 put in the list that a FUSE filesystem must accept but
// that the kernel enforces itself (nosuid, nodev, noexec, atime modes) or that are for mount(8)
// only (auto, user, _netdev, x-*).
bool is_vfs_generic(std::string_view name) {
  static constexpr std::string_view kGeneric[] = {
      "defaults", "auto",  "noauto",  "user",   "nouser", "users", "owner",  "group",   "_netdev",  "nofail",
      "suid",     "nosuid", "dev",    "nodev",  "exec",   "noexec", "async", "sync",    "dirsync",
      "lazytime", "nolazytime", "silent", "loud", "mand", "nomand", "iversion", "noiversion"};
  for (auto g : kGeneric)
    if (name == g) return true;
  return name.starts_with("x-") || name.starts_with("comment=");
}

// Options of the FUSE session and its loop (libfuse's, and the daemon's transport); forwarded.
bool is_fuse_option(std::string_view name) {
  static constexpr std::string_view kFuse[] = {"fsname", "subtype", "max_read", "blkdev", "blksize",
                                               "auto_unmount", "max_idle_threads", "max_threads",
                                               "entry_timeout", "attr_timeout", "fuse_uring",
                                               "fuse_uring_threads"};
  for (auto f : kFuse)
    if (name == f) return true;
  return false;
}

}  // namespace

Result<MountOptions> parse_mount_options(const std::string& list) {
  MountOptions o;
  for (const auto& opt : split_option_list(list)) {
    auto eq = opt.find('=');
    std::string name = opt.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : opt.substr(eq + 1);
    const bool has_value = eq != std::string::npos;
    auto bad_value = [&] { return fail(EINVAL, "invalid value '{}' for mount option '{}'", value, name); };
    auto needs_value = [&] { return fail(EINVAL, "mount option '{}' needs a value", name); };
    auto no_value = [&] { return fail(EINVAL, "mount option '{}' takes no value", name); };

    if (name == "ro" || name == "rw") {
      if (has_value) return no_value();
      o.read_only = name == "ro";
    } else if (name == "commit") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0 || *v > 300) return bad_value();
      o.commit_interval_s = static_cast<uint32_t>(*v);
    } else if (name == "cache_mb") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0 || *v > (1ull << 30)) return bad_value();
      o.cache_mb = *v;
    } else if (name == "log_level") {
      if (!has_value) return needs_value();
      static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn", "warning", "error",
                                                     "critical", "off"};
      bool ok = false;
      for (auto l : kLevels) ok |= value == l;
      if (!ok) return bad_value();
      o.log_level = value == "warning" ? "warn" : value;
    } else if (name == "allow_other" || name == "default_permissions") {
      if (has_value) return no_value();
      (name == "allow_other" ? o.allow_other : o.default_permissions) = true;
    } else if (name == "subvolid") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0) return bad_value();
      o.subvolid = *v;
    } else if (name == "subvol") {
      if (!has_value || value.empty()) return needs_value();
      o.subvol = value;
    } else if (name == "log_file") {
      // Any path; the daemon opens it (a comma cannot be given: it separates options).
      if (!has_value || value.empty()) return needs_value();
      o.log_file = value;
    } else if (name == "wb_inhibit" && has_value && value == "handle") {
      o.wb_inhibit = true;
      o.wb_hold_recopied = false;
    } else if (name == "cow_overwrite" || name == "wb_inhibit") {
      if (!has_value) return needs_value();
      auto v = parse_on_off(value);
      if (!v) return bad_value();
      (name == "cow_overwrite" ? o.cow_overwrite : o.wb_inhibit) = *v;
      if (name == "wb_inhibit") o.wb_hold_recopied = *v;
    } else if (name == "writeback") {
      if (!has_value) return needs_value();
      auto v = parse_on_off(value);
      if (!v) return bad_value();
      o.writeback = *v;
    } else if (name == "write_behind") {
      if (!has_value) return needs_value();
      auto v = parse_on_off(value);
      if (!v) return bad_value();
      o.write_behind = *v;
    } else if (name == "writeback_cache") {
      if (!has_value) return needs_value();
      auto v = parse_on_off(value);
      if (!v) return bad_value();
      o.writeback_cache = *v;
    } else if (name == "dirty_limit_mb") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0 || *v > (1ull << 20)) return bad_value();
      o.dirty_limit_mb = *v;
    } else if (name == "wb_thresh_mb") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0 || *v > (1ull << 30)) return bad_value();
      o.wb_thresh_mb = *v;
    } else if (name == "wb_ratio") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v > 100) return bad_value();
      o.wb_ratio = static_cast<uint32_t>(*v);
    } else if (name == "wb_interval" || name == "wb_expire") {
      if (!has_value) return needs_value();
      auto v = parse_u64(value);
      if (!v || *v == 0 || *v > 3600) return bad_value();
      (name == "wb_interval" ? o.wb_interval_s : o.wb_expire_s) = static_cast<uint32_t>(*v);
    } else if (name == "wb_order") {
      if (!has_value) return needs_value();
      if (value != "lru" && value != "address") return bad_value();
      o.wb_lru = value == "lru";
    } else if (name == "nologreplay" || name == "norecovery") {
      // norecovery: the kernel's older spelling of rescue=nologreplay (xfstests generic/537 mounts
      // with "ro,norecovery" on every filesystem).
      if (has_value) return no_value();
      o.nologreplay = true;
    } else if (name == "rescue") {
      // The kernel's rescue= takes a ':'-separated list; ubtrfs knows only nologreplay.
      if (!has_value || value.empty()) return needs_value();
      size_t pos = 0;
      while (pos <= value.size()) {
        size_t colon = value.find(':', pos);
        if (colon == std::string::npos) colon = value.size();
        const std::string_view what(value.data() + pos, colon - pos);
        if (what != "nologreplay") return fail(EINVAL, "unsupported rescue option '{}' (ubtrfs knows nologreplay)", what);
        o.nologreplay = true;
        pos = colon + 1;
      }
    } else if (name == "discard") {
      // The kernel's plain `discard` is discard=sync; ubtrfs serves both asynchronously (discard.h).
      if (has_value && value != "async" && value != "sync") return bad_value();
      o.discard = true;
    } else if (name == "compress" || name == "compress-force") {
      // The kernel's parser (btrfs_parse_param Opt_compress / Opt_compress_force).
      auto c = parse_compress_option(has_value ? std::optional<std::string_view>(value) : std::nullopt,
                                     name == "compress-force");
      if (!c) return fail(c.error());
      o.compress = *c;
    } else if (name == "nodiscard") {
      if (has_value) return no_value();
      o.discard = false;
    } else if (name == "notreelog" || name == "treelog") {
      if (has_value) return no_value();
      o.notreelog = name == "notreelog";
    } else if (name == "stats_file") {
      if (!has_value || value.empty()) return needs_value();
      o.stats_file = value;
    } else if (name == "atime" || name == "noatime" || name == "relatime" || name == "norelatime" ||
               name == "strictatime" || name == "nostrictatime" || name == "diratime" || name == "nodiratime") {
      if (has_value) return no_value();
      if (name == "noatime") o.atime = MountOptions::Atime::kNoatime;
      else if (name == "strictatime" || name == "norelatime") o.atime = MountOptions::Atime::kStrict;
      else if (name == "atime" || name == "relatime" || name == "nostrictatime") o.atime = MountOptions::Atime::kRelatime;
      else o.nodiratime = name == "nodiratime";
    } else if (is_fuse_option(name)) {
      o.fuse_passthrough.push_back(opt);
    } else if (is_vfs_generic(name)) {
      // enforced by the kernel's VFS or meaningful to mount(8) only
    } else {
      return fail(EINVAL, "unknown mount option '{}'", name);
    }
  }
  return o;
}

Result<OpenDecision> decide_open_mode(const Superblock& sb, const MountOptions& opts) {
  OpenDecision d;
  // Read gate first: what cannot be read at all.
  UBTRFS_TRY_STATUS(check_features(sb, /*for_write=*/false));
  d.mode = opts.read_only ? OpenMode::kReadOnly : OpenMode::kReadWrite;
  if (d.mode == OpenMode::kReadWrite) {
    auto rw = check_features(sb, /*for_write=*/true);
    if (!rw) return fail(rw.error().err, "{} (mount with -o ro to read it)", rw.error().message);
    if (sb.log_root.get() != 0 && opts.nologreplay)
      return fail(EROFS,
                  "filesystem has a log tree at {} (left by an fsync before a crash) and nologreplay forbids replaying "
                  "it: mount read-write without nologreplay to replay it, or with -o ro to read it without the log",
                  sb.log_root.get());
    if (sb.flags.get() & kSuperFlagError)
      return fail(EROFS, "filesystem is marked with errors (super flag ERROR): mount with -o ro and run fsck.ubtrfs");
    if (sb.flags.get() & (kSuperFlagSeeding | kSuperFlagMetadump | kSuperFlagMetadumpV2 | kSuperFlagChangingFsid |
                          kSuperFlagChangingFsidV2))
      return fail(EROFS, "superblock flags 0x{:x} allow only a read-only mount", sb.flags.get());
    d.replay_log_tree = sb.log_root.get() != 0;
  } else if (sb.log_root.get() != 0) {
    // The kernel replays even on a ro mount; ubtrfs keeps a read-only mount from writing at all.
    d.ignore_log_tree = true;
    d.warnings.push_back(fmt::format(
        "ignoring the log tree at {}: changes fsynced before the crash are not visible in this read-only mount; "
        "mount read-write once to replay them",
        sb.log_root.get()));
  }
  return d;
}

}  // namespace ubtrfs::fs
