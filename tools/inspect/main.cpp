// ubtrfs-inspect: read-only inspector for btrfs images (single device) and mounted ubtrfs daemons,
// and the one command that changes a mount: shutdown.
//
//   ubtrfs-inspect dump-super IMAGE           every superblock field, backup roots, sys_chunk_array
//   ubtrfs-inspect dump-tree [-t TREE] IMAGE  tree blocks in the btrfs-progs dump-tree form
//   ubtrfs-inspect stats MNT [--json]         the live counters of the daemon serving MNT
//   ubtrfs-inspect log MNT [--json] [--level info|warn|error]
//                                             its recent messages (the last 512 at info and above)
//   ubtrfs-inspect compsize [-b] IMAGE [PATH] disk usage per compression type, as compsize reports
//                                             it (tools/inspect/compsize.h), of PATH or of every subvolume
//   ubtrfs-inspect shutdown MNT [--mode sync|flush-log|no-flush]
//                                             emergency shutdown (fs/shutdown.cpp): root only
//
// The image is opened read-only (the device refuses every write), so inspecting never changes a
// byte. stats and log ask the daemon through the control channel (tools/common/control_protocol.h,
// tools/inspect/mount_client.h) and need no privilege beyond reading the mount: as another user,
// the mount must have been made with allow_other. Their text form lays out whatever JSON the
// daemon sends (tools/inspect/json_text.h); --json prints the daemon's JSON itself. Errors: one line on stderr, "ubtrfs-inspect: error: <what and where>", exit status 1; a
// usage error also exits 1, --help exits 0. Warnings of the lower layers (a bad DUP copy that the
// other copy replaced) are shown only with -v.
//
// Output form: the printer of tree/print_tree.h; a whole-filesystem dump lists the root tree, the
// chunk tree, the log root tree if any, then every tree named by a ROOT_ITEM in root-tree key order,
// each announced by a "<name> tree key (...)" line as progs does, and ends with the totals.
#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "io/block_device.h"
#include "io/checksum.h"
#include "tree/format.h"
#include "tree/fs_reader.h"
#include "tools/common/control_protocol.h"
#include "tools/inspect/compsize.h"
#include "tools/inspect/json_text.h"
#include "tools/inspect/mount_client.h"
#include "tree/print_tree.h"
#include "tree/superblock.h"

namespace ubtrfs {
namespace {

constexpr const char* kProg = "ubtrfs-inspect";

int report(const Error& e) {
  std::string msg = e.message;
  for (char& c : msg)
    if (c == '\n') c = ' ';  // one line, always
  std::fprintf(stderr, "%s: error: %s\n", kProg, msg.c_str());
  return 1;
}

void emit(const std::string& s) { std::fwrite(s.data(), 1, s.size(), stdout); }

template <class... Args>
void ap(std::string& out, fmt::format_string<Args...> f, Args&&... args) {
  fmt::format_to(std::back_inserter(out), f, std::forward<Args>(args)...);
}

std::string super_flag_names(uint64_t flags) {
  static constexpr struct {
    uint64_t bit;
    const char* name;
  } kNames[] = {{kHeaderFlagWritten, "WRITTEN"},
                {kHeaderFlagReloc, "RELOC"},
                {kSuperFlagError, "ERROR"},
                {kSuperFlagSeeding, "SEEDING"},
                {kSuperFlagMetadump, "METADUMP"},
                {kSuperFlagMetadumpV2, "METADUMP_V2"},
                {kSuperFlagChangingFsid, "CHANGING_FSID"},
                {kSuperFlagChangingFsidV2, "CHANGING_FSID_V2"},
                {1ull << 38, "CHANGING_BG_TREE"},
                {1ull << 39, "CHANGING_DATA_CSUM"},
                {1ull << 40, "CHANGING_META_CSUM"}};
  std::string s;
  uint64_t known = 0;
  for (const auto& n : kNames) {
    known |= n.bit;
    if (flags & n.bit) s += (s.empty() ? "" : "|") + std::string(n.name);
  }
  if (flags & ~known) s += fmt::format("{}unknown(0x{:x})", s.empty() ? "" : "|", flags & ~known);
  return s;
}

// "( A |\n\t\t\t  B )" as progs lays out flag names; "" for no flags.
std::string flag_block(const std::string& names) {
  if (names.empty()) return "";
  std::string s = "\t\t\t( ";
  for (char c : names) s += c == '|' ? std::string(" |\n\t\t\t  ") : std::string(1, c);
  return s + " )\n";
}

void print_sys_chunk_array(std::string& out, const Superblock& sb) {
  const uint32_t size = std::min<uint32_t>(sb.sys_chunk_array_size, kSystemChunkArraySize);
  ap(out, "sys_chunk_array[{}]:\n", kSystemChunkArraySize);
  uint32_t pos = 0;
  int i = 0;
  while (pos < size) {
    if (size - pos < sizeof(DiskKey)) {
      ap(out, "\tsys_chunk_array truncated at byte {}\n", pos);
      return;
    }
    const Key k = load<DiskKey>(sb.sys_chunk_array + pos).cpu();
    pos += sizeof(DiskKey);
    ap(out, "\titem {} {}\n", i++, key_str(k));
    if (k.type != kChunkItemKey || size - pos < sizeof(ChunkItem)) {
      ap(out, "\tunexpected item at byte {}, stopping\n", pos);
      return;
    }
    const auto c = load<ChunkItem>(sb.sys_chunk_array + pos);
    const size_t isz = std::min<size_t>(chunk_item_size(c.num_stripes), size - pos);
    print_chunk_item(out, std::span<const uint8_t>(sb.sys_chunk_array + pos, isz));
    pos += static_cast<uint32_t>(isz);
  }
}

void print_backup_roots(std::string& out, const Superblock& sb) {
  ap(out, "backup_roots[{}]:\n", kNumBackupRoots);
  for (int i = 0; i < kNumBackupRoots; ++i) {
    const RootBackup& b = sb.super_roots[i];
    ap(out, "\tbackup {}:\n", i);
    ap(out, "\t\tbackup_tree_root:\t{}\tgen: {}\tlevel: {}\n", b.tree_root.get(), b.tree_root_gen.get(),
       b.tree_root_level);
    ap(out, "\t\tbackup_chunk_root:\t{}\tgen: {}\tlevel: {}\n", b.chunk_root.get(), b.chunk_root_gen.get(),
       b.chunk_root_level);
    ap(out, "\t\tbackup_extent_root:\t{}\tgen: {}\tlevel: {}\n", b.extent_root.get(), b.extent_root_gen.get(),
       b.extent_root_level);
    ap(out, "\t\tbackup_fs_root:\t\t{}\tgen: {}\tlevel: {}\n", b.fs_root.get(), b.fs_root_gen.get(), b.fs_root_level);
    ap(out, "\t\tbackup_dev_root:\t{}\tgen: {}\tlevel: {}\n", b.dev_root.get(), b.dev_root_gen.get(),
       b.dev_root_level);
    ap(out, "\t\tcsum_root:\t{}\tgen: {}\tlevel: {}\n", b.csum_root.get(), b.csum_root_gen.get(), b.csum_root_level);
    ap(out, "\t\tbackup_total_bytes:\t{}\n", b.total_bytes.get());
    ap(out, "\t\tbackup_bytes_used:\t{}\n", b.bytes_used.get());
    ap(out, "\t\tbackup_num_devices:\t{}\n\n", b.num_devices.get());
  }
}

int dump_super(const std::string& image) {
  auto dev = io::open_device(image, io::OpenMode::kReadOnly);
  if (!dev) return report(dev.error());
  auto sbr = read_superblock(**dev);
  if (!sbr) return report(sbr.error());
  const Superblock& sb = *sbr;
  const uint64_t unknown = sb.incompat_flags.get() & ~kIncompatKnown;
  if (unknown)
    return report(Error{EOPNOTSUPP, fmt::format("{}: unknown incompat features 0x{:x}", image, unknown)});

  const uint16_t ct = sb.csum_type;
  const size_t cs = io::csum_size(ct);
  std::string out;
  ap(out, "superblock: bytenr={}, device={}\n", kSuperInfoOffset, image);
  out += "---------------------------------------------------------\n";
  ap(out, "csum_type\t\t{} ({})\n", ct, io::csum_name(ct));
  ap(out, "csum_size\t\t{}\n", cs);
  std::string csum = "0x";
  for (size_t i = 0; i < cs; ++i) csum += fmt::format("{:02x}", sb.csum[i]);
  ap(out, "csum\t\t\t{} [match]\n", csum);  // read_superblock verified it
  ap(out, "bytenr\t\t\t{}\n", sb.bytenr.get());
  ap(out, "flags\t\t\t0x{:x}\n{}", sb.flags.get(), flag_block(super_flag_names(sb.flags)));
  ap(out, "magic\t\t\t_BHRfS_M [match]\n");
  ap(out, "fsid\t\t\t{}\n", uuid_str(sb.fsid));
  const bool muuid = sb.incompat_flags.get() & kIncompatMetadataUuid;
  ap(out, "metadata_uuid\t\t{}\n", uuid_str(muuid ? sb.metadata_uuid : sb.fsid));
  std::string label(sb.label, strnlen(sb.label, kLabelSize));
  ap(out, "label\t\t\t{}\n", label);
  ap(out, "generation\t\t{}\n", sb.generation.get());
  ap(out, "root\t\t\t{}\n", sb.root.get());
  ap(out, "sys_array_size\t\t{}\n", sb.sys_chunk_array_size.get());
  ap(out, "chunk_root_generation\t{}\n", sb.chunk_root_generation.get());
  ap(out, "root_level\t\t{}\n", sb.root_level);
  ap(out, "chunk_root\t\t{}\n", sb.chunk_root.get());
  ap(out, "chunk_root_level\t{}\n", sb.chunk_root_level);
  ap(out, "log_root\t\t{}\n", sb.log_root.get());
  ap(out, "log_root_transid (deprecated)\t{}\n", sb.log_root_transid.get());
  ap(out, "log_root_level\t\t{}\n", sb.log_root_level);
  ap(out, "total_bytes\t\t{}\n", sb.total_bytes.get());
  ap(out, "bytes_used\t\t{}\n", sb.bytes_used.get());
  ap(out, "sectorsize\t\t{}\n", sb.sectorsize.get());
  ap(out, "nodesize\t\t{}\n", sb.nodesize.get());
  ap(out, "leafsize (deprecated)\t{}\n", sb.leafsize.get());
  ap(out, "stripesize\t\t{}\n", sb.stripesize.get());
  ap(out, "root_dir\t\t{}\n", sb.root_dir_objectid.get());
  ap(out, "num_devices\t\t{}\n", sb.num_devices.get());
  ap(out, "compat_flags\t\t0x{:x}\n", sb.compat_flags.get());
  ap(out, "compat_ro_flags\t\t0x{:x}\n{}", sb.compat_ro_flags.get(), flag_block(compat_ro_flag_names(sb.compat_ro_flags)));
  ap(out, "incompat_flags\t\t0x{:x}\n{}", sb.incompat_flags.get(), flag_block(incompat_flag_names(sb.incompat_flags)));
  ap(out, "cache_generation\t{}\n", sb.cache_generation.get());
  ap(out, "uuid_tree_generation\t{}\n", sb.uuid_tree_generation.get());
  ap(out, "nr_global_roots\t\t{}\n", sb.nr_global_roots.get());
  ap(out, "remap_root\t\t{}\n", sb.remap_root.get());
  ap(out, "remap_root_generation\t{}\n", sb.remap_root_generation.get());
  ap(out, "remap_root_level\t{}\n", sb.remap_root_level);
  const DevItem& d = sb.dev_item;
  const uint8_t* meta = muuid ? sb.metadata_uuid : sb.fsid;
  ap(out, "dev_item.uuid\t\t{}\n", uuid_str(d.uuid));
  ap(out, "dev_item.fsid\t\t{} [{}]\n", uuid_str(d.fsid), std::memcmp(d.fsid, meta, 16) == 0 ? "match" : "DON'T MATCH");
  ap(out, "dev_item.type\t\t{}\n", d.type.get());
  ap(out, "dev_item.total_bytes\t{}\n", d.total_bytes.get());
  ap(out, "dev_item.bytes_used\t{}\n", d.bytes_used.get());
  ap(out, "dev_item.io_align\t{}\n", d.io_align.get());
  ap(out, "dev_item.io_width\t{}\n", d.io_width.get());
  ap(out, "dev_item.sector_size\t{}\n", d.sector_size.get());
  ap(out, "dev_item.devid\t\t{}\n", d.devid.get());
  ap(out, "dev_item.dev_group\t{}\n", d.dev_group.get());
  ap(out, "dev_item.seek_speed\t{}\n", d.seek_speed);
  ap(out, "dev_item.bandwidth\t{}\n", d.bandwidth);
  ap(out, "dev_item.generation\t{}\n", d.generation.get());
  print_sys_chunk_array(out, sb);
  print_backup_roots(out, sb);
  emit(out);
  return 0;
}

// The heading progs prints before each tree of a whole-filesystem dump.
std::string tree_heading(uint64_t id) {
  switch (id) {
    case kExtentTreeObjectid: return "extent";
    case kDevTreeObjectid: return "device";
    case kFsTreeObjectid: return "fs";
    case kRootTreeDirObjectid: return "directory";
    case kCsumTreeObjectid: return "checksum";
    case kOrphanObjectid: return "orphan";
    case kTreeLogObjectid: return "log";
    case kTreeLogFixupObjectid: return "log fixup";
    case kTreeRelocObjectid: return "reloc";
    case kDataRelocTreeObjectid: return "data reloc";
    case kExtentCsumObjectid: return "extent checksum";
    case kQuotaTreeObjectid: return "quota";
    case kUuidTreeObjectid: return "uuid";
    case kFreeSpaceTreeObjectid: return "free space";
    case kMultipleObjectid: return "multiple";
    case kBlockGroupTreeObjectid: return "block group";
    default: return id >= kFirstFreeObjectid ? "file" : fmt::format("tree {}", id);
  }
}

Status print_tree(const FsReader& r, const RootLocation& root) {
  return r.walk_blocks(root, [&](std::span<const uint8_t> block) -> Status {
    std::string out;
    print_tree_block(out, r.params(), block);
    emit(out);
    return {};
  });
}

int dump_tree(const std::string& image, const std::string& tree) {
  std::optional<uint64_t> want;
  if (!tree.empty()) {
    want = parse_tree_id(tree);
    if (!want) return report(Error{EINVAL, fmt::format("unknown tree '{}': use a tree id or one of root, extent, "
                                                       "chunk, dev, fs, csum, uuid, free-space, data-reloc",
                                                       tree)});
  }
  auto rr = FsReader::open_path(image);
  if (!rr) return report(rr.error());
  const FsReader& r = **rr;

  if (want) {
    auto root = r.find_root(*want);
    if (!root) return report(Error{root.error().err, fmt::format("{}: {}", image, root.error().message)});
    if (*want == kRootTreeObjectid)
      emit("root tree\n");
    else if (*want == kChunkTreeObjectid)
      emit("chunk tree\n");
    else if (*want == kTreeLogObjectid)
      emit("log root tree\n");
    else
      emit(fmt::format("{} tree {} \n", tree_heading(root->tree_id), key_str(root->key)));
    auto st = print_tree(r, *root);
    if (!st) return report(Error{st.error().err, fmt::format("{}: {}", image, st.error().message)});
    return 0;
  }

  auto run = [&]() -> Status {
    emit("root tree\n");
    UBTRFS_TRY_STATUS(print_tree(r, r.root_tree_root()));
    emit("chunk tree\n");
    UBTRFS_TRY_STATUS(print_tree(r, r.chunk_tree_root()));
    if (auto log = r.log_tree_root()) {
      emit("log root tree\n");
      UBTRFS_TRY_STATUS(print_tree(r, *log));
    }
    auto roots = UBTRFS_TRY(r.list_roots());
    if (auto log = r.log_tree_root()) {  // then the per-subvolume log trees, as progs lists them
      auto logs = UBTRFS_TRY(r.list_roots_in(*log));
      roots.insert(roots.end(), logs.begin(), logs.end());
    }
    for (const auto& root : roots) {
      emit(fmt::format("{} tree {} \n", tree_heading(root.key.objectid), key_str(root.key)));
      UBTRFS_TRY_STATUS(print_tree(r, root));
    }
    const Superblock& sb = r.super();
    emit(fmt::format("total bytes {}\nbytes used {}\nuuid {}\n", sb.total_bytes.get(), sb.bytes_used.get(),
                     uuid_str(sb.fsid)));
    return {};
  };
  auto st = run();
  if (!st) {
    std::fflush(stdout);
    return report(Error{st.error().err, fmt::format("{}: {}", image, st.error().message)});
  }
  return 0;
}

std::string with_newline(std::string s) {
  if (s.empty() || s.back() != '\n') s.push_back('\n');
  return s;
}

int live_stats(const std::string& mnt, bool as_json) {
  auto raw = inspect::read_live_payload(mnt, control::Payload::kStats);
  if (!raw) return report(raw.error());
  if (as_json) {
    emit(with_newline(*raw));
    return 0;
  }
  auto text = inspect::json_text(*raw);
  if (!text) return report(Error{text.error().err, fmt::format("{}: {}", mnt, text.error().message)});
  emit(*text);
  return 0;
}

int live_shutdown(const std::string& mnt, const std::string& mode) {
  const uint32_t flags = mode == "sync" ? 0 : mode == "flush-log" ? 1 : 2;
  if (auto st = inspect::request_shutdown(mnt, flags); !st) return report(st.error());
  emit(fmt::format("{}: shut down ({}): nothing more is written; unmount it, the next mount recovers\n", mnt, mode));
  return 0;
}

int live_log(const std::string& mnt, bool as_json, const std::string& level_name) {
  const auto level = inspect::parse_log_level(level_name);
  if (!level) return report(Error{EINVAL, fmt::format("unknown log level '{}': use info, warn or error", level_name)});
  auto raw = inspect::read_live_payload(mnt, control::Payload::kLog);
  if (!raw) return report(raw.error());
  if (as_json && *level == inspect::LogLevel::kInfo) {
    emit(with_newline(*raw));  // every record is at info or above: the daemon's JSON as it came
    return 0;
  }
  auto out = as_json ? inspect::log_json(*raw, *level) : inspect::log_text(*raw, *level);
  if (!out) return report(Error{out.error().err, fmt::format("{}: {}", mnt, out.error().message)});
  emit(out->empty() ? fmt::format("(no messages at level {} or above)\n", level_name) : *out);
  return 0;
}

int compsize_cmd(const std::string& image, const std::string& path, bool bytes) {
  auto reader = FsReader::open_path(image);
  if (!reader) return report(Error{reader.error().err, fmt::format("{}: {}", image, reader.error().message)});
  auto r = inspect::compsize(**reader, path.empty() ? std::nullopt : std::optional<std::string>(path));
  if (!r) return report(Error{r.error().err, fmt::format("{}: {}", image, r.error().message)});
  emit(inspect::format_compsize(*r, bytes));
  return 0;
}

}  // namespace
}  // namespace ubtrfs

int main(int argc, char** argv) {
  using namespace ubtrfs;
  // Diagnostics go to stderr, never into the dump on stdout.
  spdlog::set_default_logger(spdlog::stderr_color_st(kProg));
  spdlog::set_level(spdlog::level::err);
  CLI::App app{"ubtrfs-inspect: read-only inspection of a btrfs image (never writes to it) or of a mounted ubtrfs",
               kProg};
  app.set_version_flag("-V,--version", std::string(kProg) + " " + UBTRFS_VERSION);
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "also show warnings (e.g. a bad DUP copy replaced by the other)");

  std::string image;
  std::string tree;
  auto* ds = app.add_subcommand("dump-super", "print the primary superblock: every field, backup roots, "
                                              "the sys_chunk_array decoded, flags with names");
  ds->add_option("IMAGE", image, "image file or block device")->required();
  auto* dt = app.add_subcommand("dump-tree", "print tree blocks like 'btrfs inspect-internal dump-tree'; "
                                             "without -t: root, chunk, log and every tree of the root tree");
  dt->add_option("-t,--tree", tree,
                 "tree to print: a tree id or root, extent, chunk, dev, fs, csum, uuid, free-space, data-reloc, "
                 "quota, block-group, log");
  dt->add_option("IMAGE", image, "image file or block device")->required();

  std::string mnt;
  bool as_json = false;
  std::string level = "info";
  auto* st = app.add_subcommand("stats", "live counters of the ubtrfs daemon serving MOUNTPOINT (any user who can "
                                         "read the mount: as another user, a mount made with allow_other)");
  st->add_option("MOUNTPOINT", mnt, "the mount point, or any directory or file of the mount")->required();
  st->add_flag("--json", as_json, "print the daemon's JSON as it comes");
  auto* lg = app.add_subcommand("log", "recent messages of the ubtrfs daemon serving MOUNTPOINT: the last 512 at "
                                       "info level and above, oldest first");
  lg->add_option("MOUNTPOINT", mnt, "the mount point, or any directory or file of the mount")->required();
  lg->add_flag("--json", as_json, "print JSON: {capacity, dropped, records: [{time, level, message}]}");
  lg->add_option("--level", level, "least severity shown: info (default), warn or error")
      ->check(CLI::IsMember({"info", "warn", "warning", "error", "critical"}));

  std::string cs_path;
  bool cs_bytes = false;
  auto* cs = app.add_subcommand("compsize", "disk usage, uncompressed and referenced bytes per compression type "
                                            "(as compsize reports them) of PATH in the top-level subvolume, or of "
                                            "every subvolume");
  cs->add_option("IMAGE", image, "image file or block device")->required();
  cs->add_option("PATH", cs_path, "a file or directory, relative to the top-level subvolume");
  cs->add_flag("-b,--bytes", cs_bytes, "print byte counts instead of binary units");

  std::string shutdown_mode = "sync";
  auto* sd = app.add_subcommand("shutdown", "emergency shutdown of the ubtrfs daemon serving MOUNTPOINT (root only): "
                                            "after it nothing more is written and every operation fails with EIO "
                                            "until the unmount (FS_IOC_GOINGDOWN with its flags)");
  sd->add_option("MOUNTPOINT", mnt, "the mount point, or any directory or file of the mount")->required();
  sd->add_option("--mode", shutdown_mode,
                 "sync: commit everything first (default); flush-log / no-flush: stop at once, keeping what "
                 "fsync made durable")
      ->check(CLI::IsMember({"sync", "flush-log", "no-flush"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "%s: error: %s (see --help)\n", kProg, e.what());
    return 1;
  }
  if (verbose) spdlog::set_level(spdlog::level::warn);
  if (ds->parsed()) return dump_super(image);
  if (st->parsed()) return live_stats(mnt, as_json);
  if (lg->parsed()) return live_log(mnt, as_json, level);
  if (sd->parsed()) return live_shutdown(mnt, shutdown_mode);
  if (cs->parsed()) return compsize_cmd(image, cs_path, cs_bytes);
  return dump_tree(image, tree);
}
