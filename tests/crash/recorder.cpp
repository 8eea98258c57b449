// Base images and recorded runs (recorder.h).
#include "tests/crash/recorder.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>
#include <thread>

#include "fs/transaction.h"
#include "tests/crash/sector_overlay.h"
#include "tools/mkfs/mkfs.h"

namespace ubtrfs::crash {
namespace {

fs::MountOptions mount_options(const fs::OpenOptions& open, bool open_tree_log) {
  fs::MountOptions m;
  m.read_only = open.read_only;
  m.cache_mb = std::max<uint64_t>(1, open.cache_bytes >> 20);
  m.cow_overwrite = open.cow_overwrite;
  m.writeback = open.writeback.enabled;
  m.atime = fs::MountOptions::Atime::kNoatime;
  m.commit_interval_s = 300;  // commits come from the workload's durability points and the threshold
  m.notreelog = !open_tree_log;
  return m;
}

}  // namespace

std::string RunConfig::text() const {
  return fmt::format("cow_overwrite={} treelog={} cache={}KiB wb_thresh={}B wb_interval={}ms pause={}us",
                     cow_overwrite ? "on" : "off", tree_log ? "on" : "off", cache_bytes >> 10, wb_thresh_bytes,
                     wb_interval_ms, op_pause_us);
}

Result<BaseImage> make_base_image(uint64_t size, uint32_t nodesize, const std::vector<Op>& setup) {
  auto mem = std::make_shared<io::MemoryDevice>(size);
  mkfs::MkfsConfig cfg;
  cfg.nodesize = nodesize;
  cfg.label = "crash";
  cfg.fsid = mkfs::UuidBytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.dev_uuid = mkfs::UuidBytes{2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.chunk_tree_uuid = mkfs::UuidBytes{3, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.fs_tree_uuid = mkfs::UuidBytes{4, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.now_sec = 1700000000;
  auto made = mkfs::make_btrfs(*mem, cfg);
  if (!made) return fail(made.error().err, "mkfs: {}", made.error().message);
  BaseImage base;
  base.nodesize = nodesize;
  {
    fs::OpenOptions open;
    open.path = "crash-base";
    open.device = mem;
    auto f = fs::Filesystem::mount(open, mount_options(open, true));
    if (!f) return fail(f.error().err, "mount of the new image: {}", f.error().message);
    for (const Op& op : setup) {
      uint64_t ino = 0;
      if (auto st = execute_op(**f, op, &ino); !st)
        return fail(st.error().err, "setup {}: {}", op.text(), st.error().message);
    }
    if (auto st = (*f)->unmount(); !st) return fail(st.error());
  }
  base.bytes = std::move(mem->bytes());
  // The state as a later mount sees it (the real inode numbers).
  auto ov = std::make_shared<OverlayDevice>(SectorStack{base.bytes, {}}, "crash-base");
  fs::OpenOptions open;
  open.path = "crash-base";
  open.device = ov;
  open.read_only = true;
  open.writeback.enabled = false;
  auto f = fs::Filesystem::mount(open, mount_options(open, true));
  if (!f) return fail(f.error().err, "read-only mount of the base image: {}", f.error().message);
  base.state = UBTRFS_TRY(read_fs_state(**f));
  return base;
}

namespace {

class LibraryRunner final : public OpRunner {
 public:
  std::string name() const override { return "library"; }
  Status start(fs::Filesystem&) override { return {}; }
  Status run(fs::Filesystem& fs, const Op& op, uint64_t* new_ino) override { return execute_op(fs, op, new_ino); }
  Status stop() override { return {}; }
};

}  // namespace

Result<Recording> record(const BaseImage& base, const RunConfig& cfg, const NextOp& next, OpRunner* runner) {
  LibraryRunner library;
  OpRunner& via = runner ? *runner : library;
  auto overlay = std::make_shared<OverlayDevice>(SectorStack{base.bytes, {}}, "crash-run");
  auto dev = std::make_shared<io::FaultInjectingDevice>(*overlay, /*record_data=*/true);
  fs::OpenOptions open;
  open.path = "crash-run";
  open.device = dev;
  open.cache_bytes = cfg.cache_bytes;
  open.cow_overwrite = cfg.cow_overwrite;
  open.writeback.enabled = true;
  open.writeback.thresh_bytes = cfg.wb_thresh_bytes;
  open.writeback.ratio_pct = 0;
  open.writeback.interval_ms = cfg.wb_interval_ms;
  open.writeback.expire_ms = 0;
  Recording rec;
  rec.snapshots.push_back(base.state);
  auto f = fs::Filesystem::mount(open, mount_options(open, cfg.tree_log));
  if (!f) return fail(f.error().err, "mount for recording: {}", f.error().message);
  fs::Filesystem& fs = **f;
  if (auto st = via.start(fs); !st) {
    (void)fs.unmount();
    return fail(st.error().err, "{} runner: {}", via.name(), st.error().message);
  }
  for (size_t i = 0;; ++i) {
    const std::optional<Op> op = next(rec.snapshots.back(), i);
    if (!op) break;
    FsState after = rec.snapshots.back();
    rec.op_start.push_back(dev->position());
    uint64_t ino = 0;
    const Status st = via.run(fs, *op, &ino);
    const int want = apply_to_model(after, *op, ino);
    if (!st || want != 0) {
      const std::string got = st ? "success" : fmt::format("errno {} ({})", st.error().err, st.error().message);
      (void)via.stop();
      (void)fs.unmount();
      return fail(EPROTO, "op {} ({}): filesystem gave {}, model expects errno {}", i, op->text(), got, want);
    }
    rec.ops.push_back(*op);
    rec.snapshots.push_back(std::move(after));
    if (cfg.op_pause_us) std::this_thread::sleep_for(std::chrono::microseconds(cfg.op_pause_us));
    if (op->is_durability_point()) {
      DurabilityPoint d;
      d.snapshot = rec.ops.size();
      d.kind = op->kind;
      const FsState& now = rec.snapshots.back();
      if (op->kind != OpKind::kSync) d.ino = op->path.empty() ? 1 : now.names.at(op->path);
      d.at_return = dev->position();
      d.text = op->text();
      rec.durable.push_back(d);
    }
  }
  if (auto st = via.stop(); !st) {
    (void)fs.unmount();
    return fail(st.error().err, "{} runner stop: {}", via.name(), st.error().message);
  }
  rec.background_writes = fs.info().cache().counters().background_blocks_written;
  if (auto st = fs.unmount(); !st) return fail(st.error().err, "unmount after the workload: {}", st.error().message);
  DurabilityPoint last;
  last.snapshot = rec.ops.size();
  last.at_return = dev->position();
  last.text = "unmount";
  rec.durable.push_back(last);
  rec.log = dev->write_log();
  rec.flush_points = dev->flush_points();
  return rec;
}

}  // namespace ubtrfs::crash
