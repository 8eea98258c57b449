// FaultInjectingDevice implementation; the contract and the numbering rules are in fault_device.h.
// Every public method takes mu_ for its whole duration, inner I/O included, so the counters, the
// faults and the log always describe one consistent order of operations.
#include "io/fault_device.h"

namespace ubtrfs::io {

FaultInjectingDevice::FaultInjectingDevice(BlockDevice& inner, bool record_data)
    : inner_(inner), record_data_(record_data) {}

bool FaultInjectingDevice::in_failed_range(uint64_t off, uint64_t len, FaultOps op) const {
  for (const BadRange& r : bad_ranges_) {
    if ((static_cast<int>(r.ops) & static_cast<int>(op)) == 0) continue;
    // Overlap of [off, off+len) with [begin, end); a zero-length access overlaps nothing.
    if (len > 0 && off < r.end && r.begin < off + len) return true;
  }
  return false;
}

Status FaultInjectingDevice::read(uint64_t off, std::span<uint8_t> buf) {
  std::lock_guard lock(mu_);
  if (off > inner_.size() || buf.size() > inner_.size() - off)
    return fail(EINVAL, "read beyond end of device {}: offset {} length {} size {}", name(), off, buf.size(),
                inner_.size());
  const uint64_t seq = ++reads_;
  if (fail_read_seq_ == seq) {
    fail_read_seq_.reset();
    return fail(EIO, "injected read error on {} at offset {} (read {})", name(), off, seq);
  }
  if (in_failed_range(off, buf.size(), FaultOps::kRead))
    return fail(EIO, "injected read error on {} at offset {} length {}: bad range", name(), off, buf.size());
  return inner_.read(off, buf);
}

Status FaultInjectingDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  std::lock_guard lock(mu_);
  if (inner_.read_only())
    return fail(EROFS, "device {} is read-only, write at offset {} length {} refused", name(), off, buf.size());
  if (off > inner_.size() || buf.size() > inner_.size() - off)
    return fail(EINVAL, "write beyond end of device {}: offset {} length {} size {}", name(), off, buf.size(),
                inner_.size());
  WriteRecord rec;
  rec.seq = ++writes_;
  rec.offset = off;
  rec.length = buf.size();
  rec.flushes_before = flushes_;
  if (record_data_) rec.data.assign(buf.begin(), buf.end());

  Status result;
  if (fail_write_seq_ == rec.seq) {
    fail_write_seq_.reset();
    rec.outcome = WriteOutcome::kFailed;
    result = fail(EIO, "injected write error on {} at offset {} (write {})", name(), off, rec.seq);
  } else if (in_failed_range(off, buf.size(), FaultOps::kWrite)) {
    rec.outcome = WriteOutcome::kFailed;
    result = fail(EIO, "injected write error on {} at offset {} length {}: bad range", name(), off, buf.size());
  } else if (drop_after_ && rec.seq > *drop_after_) {
    rec.outcome = WriteOutcome::kDropped;
  } else if (tear_seq_ == rec.seq && tear_keep_ < buf.size()) {
    rec.outcome = WriteOutcome::kTorn;
    result = inner_.write(off, buf.first(tear_keep_));
    if (result) rec.bytes_applied = tear_keep_;
    else rec.outcome = WriteOutcome::kFailed;
  } else {
    result = inner_.write(off, buf);
    if (result) rec.bytes_applied = buf.size();
    else rec.outcome = WriteOutcome::kFailed;
  }
  log_.push_back(std::move(rec));
  return result;
}

Status FaultInjectingDevice::discard(uint64_t off, uint64_t len) {
  std::lock_guard lock(mu_);
  if (inner_.read_only())
    return fail(EROFS, "device {} is read-only, discard at offset {} length {} refused", name(), off, len);
  if (off > inner_.size() || len > inner_.size() - off)
    return fail(EINVAL, "discard beyond end of device {}: offset {} length {} size {}", name(), off, len,
                inner_.size());
  WriteRecord rec;
  rec.seq = ++writes_;
  rec.offset = off;
  rec.length = len;
  rec.flushes_before = flushes_;
  rec.discard = true;
  Status result;
  if (drop_after_ && rec.seq > *drop_after_) {
    rec.outcome = WriteOutcome::kDropped;
  } else {
    result = inner_.discard(off, len);
    if (result) rec.bytes_applied = len;
    else rec.outcome = WriteOutcome::kFailed;
  }
  log_.push_back(std::move(rec));
  return result;
}

Status FaultInjectingDevice::flush() {
  std::lock_guard lock(mu_);
  flush_points_.push_back(writes_);
  ++flushes_;
  // After the power cut nothing more becomes durable; the inner device is not asked.
  if (drop_after_ && writes_ > *drop_after_) return {};
  return inner_.flush();
}

void FaultInjectingDevice::drop_writes_after(uint64_t n) {
  std::lock_guard lock(mu_);
  drop_after_ = n;
}

void FaultInjectingDevice::tear_write(uint64_t n, uint64_t keep_bytes) {
  std::lock_guard lock(mu_);
  tear_seq_ = n;
  tear_keep_ = keep_bytes;
}

void FaultInjectingDevice::fail_nth_read(uint64_t n) {
  std::lock_guard lock(mu_);
  fail_read_seq_ = n;
}

void FaultInjectingDevice::fail_nth_write(uint64_t n) {
  std::lock_guard lock(mu_);
  fail_write_seq_ = n;
}

void FaultInjectingDevice::fail_range(uint64_t begin, uint64_t end, FaultOps ops) {
  std::lock_guard lock(mu_);
  bad_ranges_.push_back({begin, end, ops});
}

void FaultInjectingDevice::clear_faults() {
  std::lock_guard lock(mu_);
  drop_after_.reset();
  tear_seq_.reset();
  tear_keep_ = 0;
  fail_read_seq_.reset();
  fail_write_seq_.reset();
  bad_ranges_.clear();
}

void FaultInjectingDevice::clear_log() {
  std::lock_guard lock(mu_);
  log_.clear();
  flush_points_.clear();
}

uint64_t FaultInjectingDevice::reads() const {
  std::lock_guard lock(mu_);
  return reads_;
}

uint64_t FaultInjectingDevice::writes() const {
  std::lock_guard lock(mu_);
  return writes_;
}

uint64_t FaultInjectingDevice::flushes() const {
  std::lock_guard lock(mu_);
  return flushes_;
}

std::vector<WriteRecord> FaultInjectingDevice::write_log() const {
  std::lock_guard lock(mu_);
  return log_;
}

LogPosition FaultInjectingDevice::position() const {
  std::lock_guard lock(mu_);
  return LogPosition{writes_, flushes_};
}

std::vector<uint64_t> FaultInjectingDevice::flush_points() const {
  std::lock_guard lock(mu_);
  return flush_points_;
}

Status FaultInjectingDevice::replay(BlockDevice& target, uint64_t n_writes, std::optional<uint64_t> tear_last) const {
  std::lock_guard lock(mu_);
  if (n_writes > log_.size())
    return fail(EINVAL, "replay of {} writes asked but the log of {} holds {}", n_writes, name(), log_.size());
  for (uint64_t i = 0; i < n_writes; ++i) {
    const WriteRecord& rec = log_[i];
    if (rec.outcome == WriteOutcome::kFailed) continue;
    if (rec.discard) {
      UBTRFS_TRY_STATUS(target.discard(rec.offset, rec.length));
      continue;
    }
    if (rec.data.size() != rec.length)
      return fail(EINVAL, "replay of write {} at offset {}: data was not recorded", rec.seq, rec.offset);
    std::span<const uint8_t> bytes(rec.data);
    if (i + 1 == n_writes && tear_last) bytes = bytes.first(std::min<uint64_t>(*tear_last, bytes.size()));
    UBTRFS_TRY_STATUS(target.write(rec.offset, bytes));
  }
  return {};
}

}  // namespace ubtrfs::io
