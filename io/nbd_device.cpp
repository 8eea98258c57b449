// NbdDevice implementation; see nbd_device.h for the contract.
//
// A call becomes pieces (NBD commands) issued together on the shared connection; the caller waits
// for all of them. A piece fails in one of two ways: the server answered an error (final: EIO with
// the NBD error named), or the connection died under it (ENOTCONN/ESHUTDOWN from libnbd's abort,
// or a refused submit on a dead handle): those pieces are re-sent on a new connection. Re-sending
// is safe for reads, writes (same bytes, same place) and trims; a flush is re-sent only if the
// dropped connection held no acknowledged, unflushed writes (otherwise the flush could report
// durable what the server lost), which is the flush poison.
#include "io/nbd_device.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

namespace ubtrfs::io {
namespace {

// libnbd refuses payloads above 64 MiB; a server that advertises no maximum may drop the
// connection above 32 MiB (the NBD protocol's advice).
constexpr uint64_t kLibnbdMaxPayload = 64ull << 20;
constexpr uint64_t kDefaultMaxPayload = 32ull << 20;
// NBD_CMD_TRIM carries a 32-bit length; stay well inside it.
constexpr uint64_t kMaxTrimBytes = 1ull << 30;

const char* op_name(NbdConnection::Op op) {
  switch (op) {
    case NbdConnection::Op::kRead: return "read";
    case NbdConnection::Op::kWrite: return "write";
    case NbdConnection::Op::kFlush: return "flush";
    case NbdConnection::Op::kTrim: return "trim";
  }
  return "?";
}

// Connection-level failures: the command may not have reached the server; re-send it elsewhere.
bool connection_lost(int err) { return err == ENOTCONN || err == ESHUTDOWN || err == ECONNRESET || err == EPIPE; }

uint64_t round_down(uint64_t v, uint64_t a) { return v / a * a; }
uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

// Waits for the pieces of one call.
class NbdDevice::Batch {
 public:
  void add(size_t n) {
    std::lock_guard g(mu_);
    pending_ += n;
  }
  void one_done() {
    std::lock_guard g(mu_);
    if (--pending_ == 0) cv_.notify_all();
  }
  void wait() {
    std::unique_lock g(mu_);
    cv_.wait(g, [&] { return pending_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t pending_ = 0;
};

struct NbdDevice::Piece final : NbdConnection::Completion {
  Batch* batch = nullptr;
  size_t segment = 0;  // which range of the call this piece carries
  std::atomic<uint64_t>* acked_writes = nullptr;  // counted here, before the waiter wakes
  NbdConnection::Op op = NbdConnection::Op::kRead;
  uint64_t off = 0;
  uint64_t len = 0;
  uint8_t* buf = nullptr;
  int err = 0;
  std::string why;  // libnbd's text when submit refused the command

  void complete(int e) override {
    err = e;
    if (e == 0 && op == NbdConnection::Op::kWrite) acked_writes->fetch_add(1, std::memory_order_acq_rel);
    batch->one_done();
  }
};

bool is_nbd_uri(std::string_view path) {
  for (std::string_view scheme : {"nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://"})
    if (path.starts_with(scheme)) return true;
  return false;
}

Result<std::unique_ptr<NbdDevice>> NbdDevice::open(const std::string& uri, OpenMode mode, const NbdOptions& opts) {
  auto conn = UBTRFS_TRY(NbdConnection::connect(uri, opts.connect_timeout, opts.request_timeout));
  const NbdExportInfo& info = conn->info();
  if (mode == OpenMode::kReadWrite && info.read_only)
    return fail(EROFS, "NBD export {} is read-only (the server refuses writes): open it read-only (mount -o ro)", uri);
  if (info.min_block > 65536 || (info.min_block & (info.min_block - 1)) != 0)
    return fail(EINVAL, "NBD export {} advertises an invalid minimum block size {}", uri, info.min_block);
  if (info.size < info.min_block) return fail(EINVAL, "NBD export {} is too small: {} bytes", uri, info.size);
  if (mode == OpenMode::kReadWrite && !info.can_flush)
    spdlog::warn("NBD export {} does not support flush: writes are durable only when the server says so", uri);
  spdlog::debug("nbd: connected to {}: {} bytes{}, block size minimum {} preferred {} maximum {}, flush {}, fua {}, "
               "trim {}, multi-conn {}",
               uri, info.size, info.read_only ? " (read-only export)" : "", info.min_block, info.preferred_block,
               info.max_block, info.can_flush, info.can_fua, info.can_trim, info.can_multi_conn);
  return std::unique_ptr<NbdDevice>(new NbdDevice(uri, mode, opts, std::move(conn)));
}

NbdDevice::NbdDevice(std::string uri, OpenMode mode, NbdOptions opts, std::unique_ptr<NbdConnection> conn)
    : uri_(std::move(uri)),
      opts_(opts),
      info_(conn->info()),
      read_only_(mode == OpenMode::kReadOnly),
      size_(round_down(info_.size, info_.min_block)),
      chunk_([&] {
        uint64_t payload = info_.max_block ? std::min<uint64_t>(info_.max_block, kLibnbdMaxPayload) : kDefaultMaxPayload;
        payload = std::min<uint64_t>(payload, std::max<uint32_t>(opts.max_request_bytes, info_.min_block));
        return static_cast<uint32_t>(std::max<uint64_t>(round_down(payload, info_.min_block), info_.min_block));
      }()),
      conn_(std::move(conn)) {
  readahead_ = std::make_unique<NbdReadAhead>(
      size_, info_.min_block, [this](uint64_t off, uint8_t* buf, uint64_t len, NbdConnection::Completion* done) {
        std::shared_ptr<NbdConnection> c;
        {
          std::lock_guard g(conn_mu_);
          if (gone_.empty()) c = conn_;
        }
        // Read-ahead never reconnects: a miss later does, through transfer().
        if (!c || c->dead()) return done->complete(ENOTCONN);
        requests_.fetch_add(1, std::memory_order_relaxed);
        c->submit(NbdConnection::Op::kRead, off, buf, len, false, done);
      });
}

NbdDevice::~NbdDevice() { readahead_.reset(); }

NbdDeviceStats NbdDevice::stats() const {
  return {requests_.load(), reconnects_.load(), bounced_.load(), readahead_->hits()};
}

Status NbdDevice::check_range(uint64_t off, uint64_t len, const char* what) const {
  if (off > size_ || len > size_ - off)
    return fail(EINVAL, "{} beyond end of device {}: offset {} length {} size {}", what, uri_, off, len, size_);
  return {};
}

Result<std::shared_ptr<NbdConnection>> NbdDevice::connection() {
  std::lock_guard g(conn_mu_);
  if (!gone_.empty()) return fail(EIO, "{}", gone_);
  return conn_;
}

Result<std::shared_ptr<NbdConnection>> NbdDevice::reconnect(const std::shared_ptr<NbdConnection>& failed) {
  std::lock_guard r(reconnect_mu_);
  {
    std::lock_guard g(conn_mu_);
    if (!gone_.empty()) return fail(EIO, "{}", gone_);
    if (conn_ != failed) return conn_;  // another thread already replaced it
    // Writes the server acknowledged on the dead connection but no flush covered: the server may
    // have dropped them with the connection, so no later flush may claim them durable.
    if (!read_only_ && acked_writes_.load() != flushed_writes_.load() && !flush_poisoned_.load()) {
      poison_reason_ = fmt::format("the connection to {} dropped ({}) with {} acknowledged writes not yet flushed",
                                   uri_, failed->death_reason(), acked_writes_.load() - flushed_writes_.load());
      flush_poisoned_.store(true);
      spdlog::error("nbd: {}: they may be lost, every later flush fails", poison_reason_);
    }
  }
  std::string last = failed->death_reason();
  spdlog::warn("nbd: connection to {} lost ({}): reconnecting", uri_, last);
  auto delay = opts_.reconnect_delay;
  for (unsigned attempt = 1; attempt <= opts_.reconnect_attempts; ++attempt) {
    std::this_thread::sleep_for(delay);
    delay *= 2;
    auto c = NbdConnection::connect(uri_, opts_.connect_timeout, opts_.request_timeout);
    if (!c) {
      last = c.error().message;
      spdlog::warn("nbd: reconnect {}/{} to {} failed: {}", attempt, opts_.reconnect_attempts, uri_, last);
      continue;
    }
    const NbdExportInfo& now = (*c)->info();
    if (round_down(now.size, info_.min_block) != size_ || (!read_only_ && now.read_only)) {
      last = fmt::format("the export changed: size {} (was {}){}", now.size, info_.size,
                         now.read_only ? ", now read-only" : "");
      break;
    }
    std::lock_guard g(conn_mu_);
    retired_.push_back(std::move(conn_));
    conn_ = std::move(*c);
    reconnects_.fetch_add(1);
    spdlog::info("nbd: reconnected to {} (attempt {})", uri_, attempt);
    return conn_;
  }
  std::lock_guard g(conn_mu_);
  gone_ = fmt::format("NBD server {} is gone after {} reconnect attempts: {}", uri_, opts_.reconnect_attempts, last);
  spdlog::error("nbd: {}", gone_);
  return fail(EIO, "{}", gone_);
}

Status NbdDevice::transfer(NbdConnection::Op op, uint64_t off, uint8_t* buf, uint64_t len, uint64_t chunk,
                           const char* what) {
  const Segment seg{off, buf, len};
  return std::move(transfer_many(op, std::span<const Segment>(&seg, 1), chunk, what)[0]);
}

std::vector<Status> NbdDevice::transfer_many(NbdConnection::Op op, std::span<const Segment> segs, uint64_t chunk,
                                             const char* what) {
  std::vector<Status> results(segs.size());
  // The pieces, fixed before anything is sent (their addresses are the completions' user data).
  std::vector<Piece> pieces;
  if (op == NbdConnection::Op::kFlush) {
    pieces.resize(1);
    pieces[0].op = op;
  } else {
    size_t n = 0;
    for (const Segment& sg : segs) n += (sg.len + chunk - 1) / chunk;
    pieces.reserve(n);
    for (size_t i = 0; i < segs.size(); ++i) {
      for (uint64_t done = 0; done < segs[i].len; done += chunk) {
        Piece& p = pieces.emplace_back();
        p.op = op;
        p.segment = i;
        p.off = segs[i].off + done;
        p.len = std::min(chunk, segs[i].len - done);
        p.buf = segs[i].buf ? segs[i].buf + done : nullptr;
      }
    }
  }
  // Fails every segment still without a verdict.
  auto fail_rest = [&](const Error& e) {
    for (Status& r : results)
      if (r) r = fail(e);
    return std::move(results);
  };
  std::vector<Piece*> todo;
  for (Piece& p : pieces) todo.push_back(&p);
  // Bounded: a server that accepts connections and then drops every request is gone, too.
  for (unsigned round = 0; !todo.empty(); ++round) {
    if (round > opts_.reconnect_attempts)
      return fail_rest(Error{EIO, fmt::format("{} on {} failed: the connection dropped {} times", what, uri_, round)});
    auto conn = connection();
    if (conn && (*conn)->dead()) conn = reconnect(*conn);
    if (!conn) return fail_rest(conn.error());
    if (op == NbdConnection::Op::kFlush && flush_poisoned_.load()) {
      std::lock_guard g(conn_mu_);
      return fail_rest(Error{EIO, fmt::format("flush of {} refused: {}; they may be lost", uri_, poison_reason_)});
    }
    Batch batch;
    batch.add(todo.size());
    for (Piece* p : todo) {
      p->batch = &batch;
      p->acked_writes = &acked_writes_;
      p->err = 0;
      p->why.clear();
      requests_.fetch_add(1, std::memory_order_relaxed);
      (*conn)->submit(op, p->off, p->buf, p->len, false, p, &p->why);
    }
    batch.wait();
    std::vector<Piece*> lost;
    for (Piece* p : todo) {
      if (p->err == 0) continue;
      if (connection_lost(p->err)) {
        lost.push_back(p);
        continue;
      }
      Status& r = results[p->segment];
      if (!r) continue;  // the segment's first error is the one reported
      const std::string detail = p->why.empty() ? "the server replied " + nbd_error_name(p->err) : p->why;
      if (op == NbdConnection::Op::kFlush) {
        r = fail(EIO, "flush of {} failed: {}", uri_, detail);
        continue;
      }
      const Segment& sg = segs[p->segment];
      r = fail(p->err == EOPNOTSUPP || p->err == ENOTSUP ? EOPNOTSUPP : EIO,
               "{} error on {} at offset {} length {} ({} of offset {} length {}): {}", op_name(op), uri_, p->off,
               p->len, what, sg.off, sg.len, detail);
    }
    // Pieces of segments that already failed are not worth a reconnect.
    std::erase_if(lost, [&](Piece* p) { return !results[p->segment]; });
    if (lost.empty()) break;
    if (!(*conn)->dead())
      (*conn)->kill(fmt::format("{} at offset {} failed: {}", op_name(op), lost.front()->off,
                                nbd_error_name(lost.front()->err)));
    if (auto again = reconnect(*conn); !again) return fail_rest(again.error());
    todo = std::move(lost);
  }
  return results;
}

std::vector<Status> NbdDevice::write_many(std::span<const DeviceWrite> writes) {
  std::vector<Status> results(writes.size());
  std::vector<Segment> segs;
  std::vector<size_t> index;  // segs[k] is writes[index[k]]
  for (size_t i = 0; i < writes.size(); ++i) {
    const DeviceWrite& w = writes[i];
    if (read_only_) {
      results[i] = fail(EROFS, "device {} is read-only, write at offset {} length {} refused", uri_, w.offset,
                        w.data.size());
    } else if (auto r = check_range(w.offset, w.data.size(), "write"); !r) {
      results[i] = r;
    } else if (w.offset % info_.min_block || w.data.size() % info_.min_block) {
      results[i] = write(w.offset, w.data);  // read-modify-write, alone
    } else if (!w.data.empty()) {
      // libnbd only reads from the buffer of a write command.
      segs.push_back({w.offset, const_cast<uint8_t*>(w.data.data()), w.data.size()});
      index.push_back(i);
    }
  }
  for (const Segment& sg : segs) readahead_->invalidate(sg.off, sg.len);
  std::vector<Status> done = transfer_many(NbdConnection::Op::kWrite, segs, chunk_, "write");
  for (const Segment& sg : segs) readahead_->invalidate(sg.off, sg.len);
  for (size_t k = 0; k < segs.size(); ++k) results[index[k]] = std::move(done[k]);
  return results;
}

Status NbdDevice::read(uint64_t off, std::span<uint8_t> buf) {
  UBTRFS_TRY_STATUS(check_range(off, buf.size(), "read"));
  if (buf.empty()) return {};
  if (off % info_.min_block || buf.size() % info_.min_block) return bounce_read(off, buf);
  if (!readahead_->serve(off, buf))
    UBTRFS_TRY_STATUS(transfer(NbdConnection::Op::kRead, off, buf.data(), buf.size(), chunk_, "read"));
  readahead_->note_read(off, buf.size());
  return {};
}

Status NbdDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  if (read_only_)
    return fail(EROFS, "device {} is read-only, write at offset {} length {} refused", uri_, off, buf.size());
  UBTRFS_TRY_STATUS(check_range(off, buf.size(), "write"));
  if (buf.empty()) return {};
  // Read-ahead windows over the range are dropped before the write is sent and again after it
  // completed (a window issued in between may hold the old bytes).
  readahead_->invalidate(off, buf.size());
  Status st = off % info_.min_block || buf.size() % info_.min_block
                  ? bounce_write(off, buf)
                  // libnbd only reads from the buffer of a write command.
                  : transfer(NbdConnection::Op::kWrite, off, const_cast<uint8_t*>(buf.data()), buf.size(), chunk_,
                             "write");
  readahead_->invalidate(off, buf.size());
  return st;
}

Status NbdDevice::flush() {
  if (read_only_) return {};
  if (!info_.can_flush) return {};  // warned at open: the server offers nothing stronger
  const uint64_t covered = acked_writes_.load(std::memory_order_acquire);
  UBTRFS_TRY_STATUS(transfer(NbdConnection::Op::kFlush, 0, nullptr, 0, 0, "flush"));
  uint64_t prev = flushed_writes_.load();
  while (prev < covered && !flushed_writes_.compare_exchange_weak(prev, covered)) {
  }
  return {};
}

Status NbdDevice::discard(uint64_t off, uint64_t len) {
  if (read_only_) return fail(EROFS, "device {} is read-only, discard at offset {} length {} refused", uri_, off, len);
  UBTRFS_TRY_STATUS(check_range(off, len, "discard"));
  if (!info_.can_trim) return fail(EOPNOTSUPP, "{} does not support discard: the NBD server offers no trim", uri_);
  // Only whole minimum blocks can be trimmed; a discard is advice, so the partial ends stay.
  const uint64_t first = round_up(off, info_.min_block), last = round_down(off + len, info_.min_block);
  if (first >= last) return {};
  readahead_->invalidate(first, last - first);
  Status st = transfer(NbdConnection::Op::kTrim, first, nullptr, last - first,
                       round_down(kMaxTrimBytes, info_.min_block), "discard");
  readahead_->invalidate(first, last - first);
  return st;
}

Status NbdDevice::bounce_read(uint64_t off, std::span<uint8_t> buf) {
  bounced_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t first = round_down(off, info_.min_block), last = round_up(off + buf.size(), info_.min_block);
  std::vector<uint8_t> tmp(last - first);
  UBTRFS_TRY_STATUS(transfer(NbdConnection::Op::kRead, first, tmp.data(), tmp.size(), chunk_, "unaligned read"));
  std::memcpy(buf.data(), tmp.data() + (off - first), buf.size());
  return {};
}

Status NbdDevice::bounce_write(uint64_t off, std::span<const uint8_t> buf) {
  bounced_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t first = round_down(off, info_.min_block), last = round_up(off + buf.size(), info_.min_block);
  std::vector<uint8_t> tmp(last - first);
  // The head and tail blocks are read, patched and written back whole; unaligned writers are
  // serialized so two of them sharing a block cannot undo each other.
  std::lock_guard g(rmw_mu_);
  const uint64_t mb = info_.min_block;
  UBTRFS_TRY_STATUS(transfer(NbdConnection::Op::kRead, first, tmp.data(), mb, chunk_, "unaligned write head"));
  if (last - first > mb)
    UBTRFS_TRY_STATUS(
        transfer(NbdConnection::Op::kRead, last - mb, tmp.data() + tmp.size() - mb, mb, chunk_, "unaligned write tail"));
  std::memcpy(tmp.data() + (off - first), buf.data(), buf.size());
  return transfer(NbdConnection::Op::kWrite, first, tmp.data(), tmp.size(), chunk_, "unaligned write");
}

}  // namespace ubtrfs::io
