// FaultInjectingDevice: a BlockDevice wrapper that loses, tears and fails I/O on command, and records
// every write, for crash-consistency and error-path tests (LevelDB's fault_injection_test.cc idea).
//
// Owns: the fault configuration, the operation counters and the write log; not the wrapped device.
// Faults (any combination; all thread-safe to set at any time):
//   - drop_writes_after(n): writes numbered > n report success but never reach the inner device,
//     and later flushes do nothing (a power cut after write n);
//   - tear_write(n, k): only the first k bytes of write n reach the device; it reports success;
//   - fail_nth_read(n) / fail_nth_write(n): read or write number n returns EIO (once);
//   - fail_range(begin, end, ops): every read and/or write overlapping [begin, end) returns EIO
//     (a bad region), until clear_faults().
//   Reads after a drop see the inner device, i.e. without the dropped writes: use the write log and
//   replay() for crash images instead of reading through the wrapper after the cut.
// Numbering: reads and writes are counted separately from 1 in call order (the N of "the N-th
// write"); refused calls (out of range) are not counted. The write log holds one record per
// counted write with its outcome and, when record_data is on, the bytes the caller asked to write.
// Discards are logged too, as records with `discard` set and no data, numbered in the same
// sequence as writes (they change what the device holds, and their order against writes matters);
// a power cut drops them like writes; replay() passes them on to the target's discard().
// Flush points: for each flush(), the number of writes issued before it; a crash after flush f keeps
// at least the first flush_points()[f] writes.
// Thread safety: all methods may be called concurrently; each call is serialized with the others
// under one mutex, so log order equals the order in which writes reached the inner device.
// fd() is -1, so the io_uring writer falls back to write() and every write passes through here.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::io {

enum class WriteOutcome {
  kApplied,  // the whole write reached the inner device
  kDropped,  // reported success, nothing reached the device
  kTorn,     // reported success, only bytes_applied reached the device
  kFailed,   // an error was returned (injected EIO, or the inner device failed)
};

struct WriteRecord {
  uint64_t seq = 0;             // 1-based write number
  uint64_t offset = 0;
  uint64_t length = 0;
  uint64_t flushes_before = 0;  // flush() calls completed before this write
  WriteOutcome outcome = WriteOutcome::kApplied;
  uint64_t bytes_applied = 0;   // bytes that reached the inner device
  std::vector<uint8_t> data;    // requested bytes, only when record_data is on
  bool discard = false;         // a discard() of [offset, +length), not a write
};

enum class FaultOps { kRead = 1, kWrite = 2, kReadWrite = 3 };

// Where the log stands at one instant: writes and flushes counted so far, read together under the
// device's lock, so an event of the caller (an fsync returning) is ordered exactly against the
// writes and flushes of every other thread.
struct LogPosition {
  uint64_t writes = 0;
  uint64_t flushes = 0;
};

class FaultInjectingDevice final : public BlockDevice {
 public:
  // REQUIRES: inner outlives this wrapper. record_data keeps a copy of every written byte.
  explicit FaultInjectingDevice(BlockDevice& inner, bool record_data = false);

  uint64_t size() const override { return inner_.size(); }
  bool read_only() const override { return inner_.read_only(); }
  std::string name() const override { return "fault(" + inner_.name() + ")"; }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  Status flush() override;
  // Logged as a write-numbered record with `discard` set; forwarded unless dropped.
  Status discard(uint64_t off, uint64_t len) override;

  void drop_writes_after(uint64_t n);
  void tear_write(uint64_t n, uint64_t keep_bytes);
  void fail_nth_read(uint64_t n);
  void fail_nth_write(uint64_t n);
  void fail_range(uint64_t begin, uint64_t end, FaultOps ops = FaultOps::kReadWrite);
  // Removes every fault; counters and the log are kept.
  void clear_faults();
  // Empties the write log and flush points (counters keep counting).
  void clear_log();

  uint64_t reads() const;
  uint64_t writes() const;
  uint64_t flushes() const;
  std::vector<WriteRecord> write_log() const;
  std::vector<uint64_t> flush_points() const;
  LogPosition position() const;

  // Writes the first `n_writes` logged writes, in order and whole, to `target` (the disk as it would
  // be if the power failed right after write n_writes and every one of them had landed), skipping
  // records whose call failed. If `tear_last` is set, only that many bytes of the last one.
  // REQUIRES: record_data was on. Errors: EINVAL if a needed record has no data or n_writes is beyond
  // the log; whatever target.write returns.
  [[nodiscard]] Status replay(BlockDevice& target, uint64_t n_writes,
                              std::optional<uint64_t> tear_last = std::nullopt) const;

 private:
  bool in_failed_range(uint64_t off, uint64_t len, FaultOps op) const;  // REQUIRES: mu_ held

  struct BadRange {
    uint64_t begin, end;
    FaultOps ops;
  };

  BlockDevice& inner_;
  const bool record_data_;
  mutable std::mutex mu_;  // guards everything below and serializes the inner I/O
  uint64_t reads_ = 0;
  uint64_t writes_ = 0;
  uint64_t flushes_ = 0;
  std::optional<uint64_t> drop_after_;
  std::optional<uint64_t> tear_seq_;
  uint64_t tear_keep_ = 0;
  std::optional<uint64_t> fail_read_seq_;
  std::optional<uint64_t> fail_write_seq_;
  std::vector<BadRange> bad_ranges_;
  std::vector<WriteRecord> log_;
  std::vector<uint64_t> flush_points_;
};

}  // namespace ubtrfs::io
