// ubtrfs-ctl: btrfs-progs' commands for a mounted ubtrfs. btrfs-progs itself refuses a FUSE mount
// ("not a btrfs filesystem": it checks statfs().f_type, which is FUSE_SUPER_MAGIC for every FUSE
// mount), so a script written for kernel btrfs changes `btrfs` into `ubtrfs-ctl`:
//
//   ubtrfs-ctl scrub start [-B] [-q] [-r] MNT   scrub (background unless -B; -r: report only)
//   ubtrfs-ctl scrub status MNT                 the running or last scrub
//   ubtrfs-ctl scrub cancel MNT
//   ubtrfs-ctl scrub limit [-l SIZE] MNT        show or set the scrub throughput limit
//   ubtrfs-ctl filesystem df [-b] MNT           space per block group type, btrfs-progs' lines
//   ubtrfs-ctl filesystem usage MNT             the overall figures and per-type sizes
//   ubtrfs-ctl filesystem label MNT [NEW]       print or set the label
//   ubtrfs-ctl subvolume create DST             a new subvolume at DST
//   ubtrfs-ctl subvolume delete [-c|-C] PATH... / -i ID PATH   delete subvolumes (root)
//   ubtrfs-ctl subvolume snapshot [-r] SRC DST  a snapshot of SRC
//   ubtrfs-ctl property get PATH ro | set PATH ro true|false   a subvolume's read-only flag
//   ubtrfs-ctl subvolume list [-pcguqRsrdoat] PATH   the subvolumes, as btrfs-progs lists them
//   ubtrfs-ctl subvolume show [-r ID] PATH      one subvolume's root item
//   ubtrfs-ctl subvolume get-default PATH       the default subvolume
//   ubtrfs-ctl subvolume set-default [ID] PATH  set it (root)
//
// Exit codes as btrfs-progs: 0 success, 1 failure (and usage errors), scrub start 3 when
// uncorrectable errors were found, scrub cancel 2 when no scrub runs. tools/ctl/ctl.h says how
// each command reaches the daemon.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tools/ctl/ctl.h"

int main(int argc, char** argv) {
  using namespace ubtrfs::ctl;
  CLI::App app{"ubtrfs-ctl: btrfs-progs' commands (scrub, filesystem df|usage|label, subvolume) for a mounted ubtrfs"};
  app.require_subcommand(1);
#ifdef UBTRFS_VERSION
  app.set_version_flag("-V,--version", std::string("ubtrfs-ctl ") + UBTRFS_VERSION);
#endif
  int rc = kExitOk;

  auto* scrub = app.add_subcommand("scrub", "verify every checksum of the filesystem, repair from good copies");
  scrub->require_subcommand(1);
  ScrubStartArgs start;
  auto* s_start = scrub->add_subcommand("start", "start a scrub (in the background unless -B)");
  s_start->add_flag("-B", start.foreground, "do not background; print the statistics when done");
  s_start->add_flag("-q", start.quiet, "be quiet (errors and the exit code only)");
  s_start->add_flag("-r", start.readonly, "read only: report errors, repair nothing");
  s_start->add_option("path", start.mnt, "a path on the ubtrfs mount")->required();
  s_start->callback([&] { rc = scrub_start(start); });
  std::string mnt;
  auto* s_status = scrub->add_subcommand("status", "show the running or last scrub");
  s_status->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  s_status->callback([&] { rc = scrub_status(mnt); });
  auto* s_cancel = scrub->add_subcommand("cancel", "cancel the running scrub");
  s_cancel->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  s_cancel->callback([&] { rc = scrub_cancel(mnt); });
  std::string limit;
  auto* s_limit = scrub->add_subcommand("limit", "show or set the scrub throughput limit");
  auto* limit_opt = s_limit->add_option("-l,--limit", limit, "bytes per second (k, m, g suffixes; 0: unlimited)");
  s_limit->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  s_limit->callback([&] { rc = scrub_limit(mnt, limit_opt->count() ? &limit : nullptr); });

  auto* fs = app.add_subcommand("filesystem", "space figures and the label");
  fs->require_subcommand(1);
  auto* f_df = fs->add_subcommand("df", "space per block group type (Data, System, Metadata, GlobalReserve)");
  bool raw = false;
  f_df->add_flag("-b,--raw", raw, "sizes in bytes");
  f_df->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  f_df->callback([&] { rc = filesystem_df(mnt, raw); });
  auto* f_usage = fs->add_subcommand("usage", "overall allocation and usage");
  f_usage->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  f_usage->callback([&] { rc = filesystem_usage(mnt); });
  std::string label;
  auto* f_label = fs->add_subcommand("label", "print the label, or set it (root)");
  f_label->add_option("path", mnt, "a path on the ubtrfs mount")->required();
  auto* label_opt = f_label->add_option("newlabel", label, "the new label (at most 255 bytes)");
  f_label->callback([&] { rc = filesystem_label(mnt, label_opt->count() ? &label : nullptr); });

  auto* sv = app.add_subcommand("subvolume", "subvolumes of the mounted filesystem");
  sv->require_subcommand(1);
  std::string dst;
  auto* sv_create = sv->add_subcommand("create", "create a subvolume");
  sv_create->add_option("dst", dst, "the new subvolume's path (its parent must exist)")->required();
  sv_create->callback([&] { rc = subvolume_create(dst); });
  SubvolumeDeleteArgs da;
  auto* sv_delete = sv->add_subcommand("delete", "delete subvolume(s)");
  sv_delete->add_flag("-c,--commit-after", da.commit_after, "wait for transaction commit at the end of the operation");
  sv_delete->add_flag("-C,--commit-each", da.commit_each, "wait for transaction commit after deleting each subvolume");
  sv_delete->add_option("-i,--subvolid", da.subvolid, "subvolume id of the to be removed subvolume");
  sv_delete->add_option("paths", da.paths, "the subvolumes (with -i: a path on the filesystem)")->required();
  sv_delete->callback([&] { rc = subvolume_delete(da); });
  std::string snap_src, snap_dst;
  bool snap_ro = false;
  auto* sv_snap = sv->add_subcommand("snapshot", "create a snapshot of a subvolume");
  sv_snap->add_flag("-r", snap_ro, "create a readonly snapshot");
  sv_snap->add_option("source", snap_src, "the subvolume")->required();
  sv_snap->add_option("dest", snap_dst, "the new snapshot, or a directory to put it in")->required();
  sv_snap->callback([&] { rc = subvolume_snapshot(snap_src, snap_dst, snap_ro); });
  SubvolumeListArgs la;
  auto* sv_list = sv->add_subcommand("list", "list subvolumes and snapshots");
  sv_list->add_flag("-p", la.parent, "print parent ID");
  sv_list->add_flag("-c", la.ogen, "print the ogeneration of the subvolume");
  sv_list->add_flag("-g", la.gen, "print the generation of the subvolume");
  sv_list->add_flag("-u", la.uuid, "print the uuid of subvolumes (and snapshots)");
  sv_list->add_flag("-q", la.parent_uuid, "print the parent uuid of the snapshots");
  sv_list->add_flag("-R", la.received_uuid, "print the uuid of the received snapshots");
  sv_list->add_flag("-s", la.snapshots_only, "list only snapshots");
  sv_list->add_flag("-r", la.readonly, "list readonly subvolumes (including snapshots)");
  sv_list->add_flag("-d", la.deleted, "list deleted subvolumes that are not yet cleaned");
  sv_list->add_flag("-o", la.only_below, "print only subvolumes below specified path");
  sv_list->add_flag("-a", la.all, "print all the subvolumes, <FS_TREE>/ before those not below path");
  sv_list->add_flag("-t", la.table, "print the result as a table");
  sv_list->add_option("path", la.path, "a path on the ubtrfs mount")->required();
  sv_list->callback([&] { rc = subvolume_list(la); });
  std::string spath, rootid;
  auto* sv_show = sv->add_subcommand("show", "show more information about the subvolume");
  auto* rootid_opt = sv_show->add_option("-r,--rootid", rootid, "the subvolume with this id");
  sv_show->add_option("path", spath, "a path on the ubtrfs mount")->required();
  sv_show->callback([&] { rc = subvolume_show(spath, rootid_opt->count() ? &rootid : nullptr); });
  auto* sv_getdef = sv->add_subcommand("get-default", "get the default subvolume of a filesystem");
  sv_getdef->add_option("path", spath, "a path on the ubtrfs mount")->required();
  sv_getdef->callback([&] { rc = subvolume_get_default(spath); });
  std::vector<std::string> setdef;
  auto* sv_setdef = sv->add_subcommand("set-default", "set the default subvolume: [ID] PATH");
  sv_setdef->add_option("args", setdef, "[subvolid] path")->required()->expected(1, 2);
  sv_setdef->callback([&] {
    rc = setdef.size() == 2 ? subvolume_set_default(&setdef[0], setdef[1]) : subvolume_set_default(nullptr, setdef[0]);
  });

  auto* prop = app.add_subcommand("property", "properties of a subvolume (ro)");
  prop->require_subcommand(1);
  std::string ppath, pname, pvalue;
  auto* p_get = prop->add_subcommand("get", "print a property");
  p_get->add_option("object", ppath, "a subvolume's root directory")->required();
  p_get->add_option("name", pname, "the property: ro")->required();
  p_get->callback([&] { rc = pname == "ro" ? property_ro(ppath, nullptr) : error("unknown property: " + pname); });
  auto* p_set = prop->add_subcommand("set", "set a property");
  p_set->add_option("object", ppath, "a subvolume's root directory")->required();
  p_set->add_option("name", pname, "the property: ro")->required();
  p_set->add_option("value", pvalue, "true or false")->required();
  p_set->callback([&] { rc = pname == "ro" ? property_ro(ppath, &pvalue) : error("unknown property: " + pname); });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitFail;
  }
  return rc;
}
