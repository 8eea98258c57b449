// ubtrfs-ctl's commands and the helpers they share (tools/ctl/main.cpp has the command line).
//
// Every command speaks to the daemon serving MNT: the btrfs ioctls it serves (tools/daemon/
// ioctl.cpp: BTRFS_IOC_SCRUB*, FS_INFO, FS_IOC_[GS]ETFSLABEL) on an open descriptor of MNT, and
// the control channel (tools/common/control_protocol.h) for what no fixed-size ioctl carries (the
// space_info figures, the last scrub's status and error records). Before anything is sent, MNT
// must be on a fuse.ubtrfs mount (tools/inspect/mount_client.h): nothing goes to another
// filesystem. Output and exit codes are btrfs-progs' for the same subcommand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ubtrfs::ctl {

// btrfs-progs' exit codes: 0 success, 1 failure; scrub start: 3 uncorrectable errors; scrub
// cancel: 2 not running.
inline constexpr int kExitOk = 0, kExitFail = 1, kExitNotRunning = 2, kExitUncorrectable = 3;

struct ScrubStartArgs {
  std::string mnt;
  bool foreground = false;  // -B
  bool quiet = false;       // -q
  bool readonly = false;    // -r
};
int scrub_start(const ScrubStartArgs& a);
int scrub_status(const std::string& mnt);
int scrub_cancel(const std::string& mnt);
// No limit: prints the scrub throughput limit; with one: sets it (bytes per second, 0 = unlimited;
// root only), as `btrfs scrub limit -l`.
int scrub_limit(const std::string& mnt, const std::string* limit);
// "64k", "10M", "1g", "4096" -> bytes (binary units, as btrfs-progs' parse_size); nullopt if bad.
std::optional<uint64_t> parse_size(const std::string& s);

// raw: sizes in bytes (btrfs-progs' -b / --raw).
int filesystem_df(const std::string& mnt, bool raw = false);
int filesystem_usage(const std::string& mnt);
// No label: prints the label; with one: sets it (root only, as the kernel's CAP_SYS_ADMIN).
int filesystem_label(const std::string& mnt, const std::string* new_label);

// subvolume_cmd.cpp (btrfs-progs cmds/subvolume.c).
int subvolume_create(const std::string& dst);
int subvolume_get_default(const std::string& path);
// id_arg null: PATH's own subvolume (PATH must be a subvolume's root directory).
int subvolume_set_default(const std::string* id_arg, const std::string& path);
// rootid_arg null: PATH's subvolume.
int subvolume_show(const std::string& path, const std::string* rootid_arg);
struct SubvolumeListArgs {
  std::string path;
  bool parent = false, ogen = false, gen = false, uuid = false, parent_uuid = false, received_uuid = false;
  bool snapshots_only = false, readonly = false, deleted = false, only_below = false, all = false, table = false;
};
int subvolume_list(const SubvolumeListArgs& a);  // subvolume_list_cmd.cpp
struct SubvolumeDeleteArgs {
  std::vector<std::string> paths;
  bool commit_after = false, commit_each = false;  // -c, -C
  uint64_t subvolid = 0;                           // -i
};
int subvolume_delete(const SubvolumeDeleteArgs& a);
int subvolume_snapshot(const std::string& src, const std::string& dst, bool readonly);
// property get PATH ro (value null) / property set PATH ro true|false: a subvolume's read-only flag.
int property_ro(const std::string& path, const std::string* value);

// ---- helpers (scrub_cmd.cpp) ----------------------------------------------------------------------
// "ERROR: <message>" on stderr, as btrfs-progs prints it; returns kExitFail.
int error(const std::string& message);
// btrfs-progs' pretty_size in its default (binary) units: "0.00B", "16.00KiB", "1.50GiB".
std::string pretty_size(uint64_t bytes);
// An open O_RDONLY descriptor of MNT after checking it is on a ubtrfs mount; -1 after printing
// the error.
int open_mount(const std::string& mnt);
// The fsid of the filesystem behind fd, "3b0b..-...", from BTRFS_IOC_FS_INFO ("" on failure).
std::string fsid_of(int fd);

}  // namespace ubtrfs::ctl
