// The control channel's wire format and both ends' logic; see control_protocol.h.
#include "tools/common/control_protocol.h"

#include <algorithm>
#include <cstring>

namespace ubtrfs::control {

std::string payload_name(uint32_t payload) {
  switch (payload) {
    case static_cast<uint32_t>(Payload::kStats): return "stats";
    case static_cast<uint32_t>(Payload::kLog): return "log";
    case static_cast<uint32_t>(Payload::kScrub): return "scrub";
    default: return fmt::format("payload {}", payload);
  }
}

std::optional<Payload> payload_from(uint32_t value) {
  if (value == static_cast<uint32_t>(Payload::kStats)) return Payload::kStats;
  if (value == static_cast<uint32_t>(Payload::kLog)) return Payload::kLog;
  if (value == static_cast<uint32_t>(Payload::kScrub)) return Payload::kScrub;
  return std::nullopt;
}

Message make_request(Payload payload, uint64_t snapshot, uint64_t offset) {
  Message m;
  std::memset(&m, 0, kHeaderSize);  // data[] is not sent meaningfully; no need to clear 16 KiB
  m.magic = kRequestMagic;
  m.version = kVersion;
  m.payload = static_cast<uint32_t>(payload);
  m.snapshot = snapshot;
  m.offset = offset;
  return m;
}

// ---- daemon side ------------------------------------------------------------------------------

void SnapshotStore::expire_locked(Clock::time_point now) {
  std::erase_if(snapshots_, [&](const Snapshot& s) { return now - s.last_used > idle_; });
}

size_t SnapshotStore::size() const {
  std::lock_guard lk(mu_);
  return snapshots_.size();
}

Result<size_t> SnapshotStore::serve(const Message& req, Message& reply, const Producer& produce,
                                    Clock::time_point now) {
  if (req.magic != kRequestMagic || req.version != kVersion)
    return fail(EPROTO, "control request with magic 0x{:x} version {}, want 0x{:x} version {}", req.magic,
                req.version, kRequestMagic, kVersion);
  const auto payload = payload_from(req.payload);
  if (!payload) return fail(EINVAL, "control request for unknown {}", payload_name(req.payload));

  std::shared_ptr<const std::string> bytes;
  uint64_t id = 0;
  if (req.snapshot == 0) {
    if (req.offset != 0) return fail(EINVAL, "control request for a new snapshot at offset {}", req.offset);
    // Rendering may take other locks (the stats read the filesystem's counters): not under mu_.
    bytes = std::make_shared<const std::string>(produce(*payload));
    std::lock_guard lk(mu_);
    expire_locked(now);
    id = next_id_++;
    snapshots_.push_back(Snapshot{id, *payload, now, bytes});
    while (snapshots_.size() > capacity_) snapshots_.pop_front();
  } else {
    std::lock_guard lk(mu_);
    expire_locked(now);
    auto it = std::find_if(snapshots_.begin(), snapshots_.end(), [&](const Snapshot& s) { return s.id == req.snapshot; });
    if (it == snapshots_.end()) return fail(ESTALE, "control snapshot {} expired", req.snapshot);
    if (it->payload != *payload)
      return fail(EINVAL, "control snapshot {} holds {}, not {}", req.snapshot,
                  payload_name(static_cast<uint32_t>(it->payload)), payload_name(req.payload));
    it->last_used = now;
    bytes = it->bytes;
    id = it->id;
  }

  if (req.offset > bytes->size())
    return fail(EINVAL, "control request at offset {} beyond the {} bytes of snapshot {}", req.offset, bytes->size(),
                id);
  const size_t n = std::min<size_t>(kChunkCapacity, bytes->size() - req.offset);
  std::memset(&reply, 0, kHeaderSize);
  reply.magic = kReplyMagic;
  reply.version = kVersion;
  reply.payload = req.payload;
  reply.chunk_len = static_cast<uint32_t>(n);
  reply.snapshot = id;
  reply.offset = req.offset;
  reply.total_len = bytes->size();
  std::memcpy(reply.data, bytes->data() + req.offset, n);
  return kHeaderSize + n;
}

// ---- client side ------------------------------------------------------------------------------

namespace {

// One attempt: every chunk of one snapshot. ESTALE from the transport is passed up for a retry.
Result<std::string> read_snapshot(Payload payload, const Transport& transport, Message& msg) {
  std::string out;
  uint64_t snapshot = 0, total = 0;
  for (;;) {
    const uint64_t offset = out.size();
    msg = make_request(payload, snapshot, offset);
    UBTRFS_TRY_STATUS(transport(msg));
    if (msg.magic != kReplyMagic)
      return fail(EPROTO, "control reply with magic 0x{:x}, want 0x{:x}", msg.magic, kReplyMagic);
    if (msg.version != kVersion)
      return fail(EPROTO, "control reply of protocol version {}, want {}", msg.version, kVersion);
    if (msg.payload != static_cast<uint32_t>(payload))
      return fail(EPROTO, "control reply carries {}, want {}", payload_name(msg.payload),
                  payload_name(static_cast<uint32_t>(payload)));
    if (msg.snapshot == 0) return fail(EPROTO, "control reply without a snapshot id");
    if (snapshot != 0 && msg.snapshot != snapshot)
      return fail(EPROTO, "control reply of snapshot {}, want {}", msg.snapshot, snapshot);
    if (snapshot != 0 && msg.total_len != total)
      return fail(EPROTO, "control snapshot {} changed length from {} to {}", snapshot, total, msg.total_len);
    if (msg.offset != offset) return fail(EPROTO, "control reply at offset {}, want {}", msg.offset, offset);
    if (msg.total_len > kMaxPayload)
      return fail(EFBIG, "control payload of {} bytes is above the limit of {}", msg.total_len, kMaxPayload);
    if (msg.chunk_len > kChunkCapacity || msg.chunk_len > msg.total_len - std::min(msg.total_len, offset))
      return fail(EPROTO, "control reply chunk of {} bytes at offset {} of {}", msg.chunk_len, offset, msg.total_len);
    if (snapshot == 0) {
      snapshot = msg.snapshot;
      total = msg.total_len;
      out.reserve(total);
    }
    if (out.size() + msg.chunk_len == total) {
      out.append(reinterpret_cast<const char*>(msg.data), msg.chunk_len);
      return out;
    }
    if (msg.chunk_len == 0)
      return fail(EPROTO, "control reply without data at offset {} of {}", offset, total);
    out.append(reinterpret_cast<const char*>(msg.data), msg.chunk_len);
  }
}

}  // namespace

Result<std::string> read_payload(Payload payload, const Transport& transport) {
  // 16 KiB: on the heap, not on the caller's stack.
  auto msg = std::make_unique<Message>();
  Error last{ESTALE, "control snapshot expired"};
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    auto r = read_snapshot(payload, transport, *msg);
    if (r || r.error().err != ESTALE) return r;
    last = r.error();
  }
  return fail(ESTALE, "{} ({} attempts: the daemon drops snapshots idle for {} s)", last.message, kReadAttempts,
              kSnapshotIdle.count());
}

}  // namespace ubtrfs::control
