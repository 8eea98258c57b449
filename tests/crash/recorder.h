// Recording a workload: the base image, and one run of operations through the fs library (or an
// OpRunner in front of it: the FUSE daemon, fuse_runner.h) on a recording device (io::FaultInjectingDevice over an overlay of the base), with the model
// snapshot after every op and the log position of every op start and durability point.
//
// Owns: BaseImage (an in-memory image made by the mkfs library plus setup ops, committed, and the
// state read back from it), RunConfig (the mount configuration of a recorded run: fix 1, a small
// extent-buffer cache with background writeback at a low threshold so blocks are written while
// operations run) and record().
// Invariants: snapshots[0] is the base state, snapshots[i + 1] the model after ops[i]; every op is
// valid in the model when it runs (the generators only propose valid ones) and the filesystem must
// agree, else record() fails (a workload failure, not a crash failure). The last durability point
// is the unmount (a full commit).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "io/fault_device.h"
#include "tests/crash/fs_state.h"
#include "tests/crash/workload_model.h"

namespace ubtrfs::crash {

struct BaseImage {
  std::vector<uint8_t> bytes;
  FsState state;
  uint32_t nodesize = 0;
};

// mkfs (nodesize, DUP metadata, xxhash) on `size` bytes of memory, then `setup` and an unmount.
[[nodiscard]] Result<BaseImage> make_base_image(uint64_t size, uint32_t nodesize, const std::vector<Op>& setup);

struct RunConfig {
  bool cow_overwrite = false;        // fix 1
  // fsync through the tree log (the default mount); off: every fsync is a full commit (notreelog).
  // With it, crash points fall inside log writes and the judge replays the log it finds.
  bool tree_log = true;
  uint64_t cache_bytes = 256ull << 10;
  uint64_t wb_thresh_bytes = 1;  // the thread raises it to one node: any second dirty block wakes it
  uint32_t wb_interval_ms = 2;
  // A pause after every op so the periodic writeback pass gets to run between ops (in memory the ops
  // are far faster than its interval): blocks of the running transaction are then written, and
  // with fix 1 rewritten in place, before the commit — the states fix 1 must survive.
  uint32_t op_pause_us = 2500;
  std::string text() const;
};

struct Recording {
  std::vector<Op> ops;
  std::vector<FsState> snapshots;           // ops.size() + 1
  std::vector<io::LogPosition> op_start;    // per op
  std::vector<DurabilityPoint> durable;     // in order; the last one is the unmount
  std::vector<io::WriteRecord> log;
  std::vector<uint64_t> flush_points;       // writes issued before each flush
  uint64_t background_writes = 0;           // tree blocks the writeback thread wrote
};

// Proposes the next op from the model state, or nullopt when the workload is done.
using NextOp = std::function<std::optional<Op>(const FsState& now, size_t index)>;

// How the recorded ops reach the filesystem: by default its library calls (execute_op); a runner
// may put something in front of it, as fuse_runner.h puts the daemon's FUSE operations and a real
// kernel mount. start() runs once the filesystem is mounted on the recording device, stop() before
// its final unmount.
class OpRunner {
 public:
  virtual ~OpRunner() = default;
  virtual std::string name() const = 0;
  [[nodiscard]] virtual Status start(fs::Filesystem& fs) = 0;
  [[nodiscard]] virtual Status run(fs::Filesystem& fs, const Op& op, uint64_t* new_ino) = 0;
  [[nodiscard]] virtual Status stop() = 0;
};

// `runner` null: the library calls.
[[nodiscard]] Result<Recording> record(const BaseImage& base, const RunConfig& cfg, const NextOp& next,
                                       OpRunner* runner = nullptr);

}  // namespace ubtrfs::crash
