// The control channel between a running ubtrfs daemon and the tools (`ubtrfs-inspect stats|log`):
// its wire format, defined once for both ends, and the pure logic of both ends — the daemon's
// snapshot store and the client's read loop. The transport is the caller's (the daemon's FUSE
// ioctl op, the inspector's ioctl(2)), so everything here is testable without a mount.
//
// Transport: one ioctl, kIocControlRead = _IOWR(0xD7, 0x01, Message), on any open file or
// directory of the mount (the daemon asks for FUSE_CAP_IOCTL_DIR so directories receive it). A
// FUSE filesystem only gets "restricted" ioctls: the kernel copies _IOC_SIZE(cmd) bytes in and
// at most as many out, and _IOC_SIZE is 14 bits, so one exchange carries one Message of
// kMessageSize (< 16 KiB) bytes. The magic 0xD7 is not claimed in the kernel's ioctl-number
// list (btrfs owns 0x94); the full command word also encodes the size and direction, so an
// accidental match with another driver's command is practically impossible. Whoever can open a
// file of the mount may ask (the kernel already refuses other users unless allow_other).
//
// Protocol: a payload (Payload: the stats JSON, the recent-log JSON) is longer than one Message,
// so it is read in chunks of one immutable snapshot:
//   request  {kRequestMagic, kVersion, payload, snapshot = 0, offset = 0}
//     -> the daemon renders the payload now, keeps it as snapshot S, and replies the first chunk;
//   request  {kRequestMagic, kVersion, payload, snapshot = S, offset = O}
//     -> the bytes of S from O on;
//   reply    {kReplyMagic, kVersion, payload, snapshot = S, offset = O, total_len, chunk_len, data}.
// The reader asks for O = previous O + chunk_len until O == total_len. The daemon keeps the last
// kSnapshotsKept snapshots, each until it has been idle for kSnapshotIdle; a request for a
// snapshot it no longer has fails with ESTALE and the reader starts again (a few times at most).
// Reply magic differs from request magic so a reply that wrote nothing is never taken for data.
// Errors (the ioctl's errno): EPROTO wrong magic or version; EINVAL unknown payload, offset
// beyond the snapshot, a snapshot of another payload; ESTALE snapshot gone; ENOTTY not a ubtrfs
// daemon (or a daemon without this channel).
// Byte order and layout: host order (both ends run on the same machine), fixed-width fields, no
// padding; the static_asserts below pin every offset. A change of layout bumps kVersion.
#pragma once

#include <linux/ioctl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "io/status.h"

namespace ubtrfs::control {

inline constexpr uint32_t kRequestMagic = 0x55424351;  // "UBCQ"
inline constexpr uint32_t kReplyMagic = 0x55424352;    // "UBCR"
inline constexpr uint32_t kVersion = 1;
inline constexpr unsigned kIoctlType = 0xD7;
inline constexpr size_t kMessageSize = 16320;  // <= _IOC_SIZEMASK (16383), a multiple of 64
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kChunkCapacity = kMessageSize - kHeaderSize;
inline constexpr size_t kSnapshotsKept = 8;
inline constexpr std::chrono::seconds kSnapshotIdle{10};
// A reader refuses a payload announced larger than this (a sanity bound, not a protocol limit).
inline constexpr uint64_t kMaxPayload = 256ull << 20;

enum class Payload : uint32_t {
  kStats = 1,  // Filesystem::stats_json(): the live counters, schema owned by fs/
  kLog = 2,    // the daemon's recent messages: {"capacity", "dropped", "records": [{time, level, message}]}
  kScrub = 3,  // the last (or running) scrub: fs/scrub.h scrub_status_json()
};

// "stats", "log", "scrub", or "payload N" for an unknown value.
std::string payload_name(uint32_t payload);
std::optional<Payload> payload_from(uint32_t value);

// One exchange, request and reply in the same buffer (as btrfs's ioctl argument structs).
struct Message {
  uint32_t magic;      // kRequestMagic in a request, kReplyMagic in a reply
  uint32_t version;    // kVersion
  uint32_t payload;    // Payload
  uint32_t chunk_len;  // reply: bytes of data[] used; request: ignored
  uint64_t snapshot;   // request: 0 = take a new snapshot (offset must be 0); reply: its id (never 0)
  uint64_t offset;     // byte offset of data[0] in the snapshot
  uint64_t total_len;  // reply: length of the whole snapshot; request: ignored
  uint8_t reserved[24];  // zero
  uint8_t data[kChunkCapacity];
};
static_assert(std::is_standard_layout_v<Message> && std::is_trivially_copyable_v<Message>);
static_assert(sizeof(Message) == kMessageSize);
static_assert(offsetof(Message, magic) == 0 && offsetof(Message, version) == 4 && offsetof(Message, payload) == 8 &&
              offsetof(Message, chunk_len) == 12 && offsetof(Message, snapshot) == 16 &&
              offsetof(Message, offset) == 24 && offsetof(Message, total_len) == 32 &&
              offsetof(Message, reserved) == 40 && offsetof(Message, data) == kHeaderSize);
static_assert(kMessageSize <= _IOC_SIZEMASK, "a restricted FUSE ioctl carries at most _IOC_SIZEMASK bytes");

inline constexpr uint32_t kIocControlRead = _IOWR(kIoctlType, 0x01, Message);
static_assert(_IOC_SIZE(kIocControlRead) == sizeof(Message));

// The shutdown with explicit flags: FS_IOC_GOINGDOWN is _IOR, so through FUSE the daemon never
// sees its flags (tools/daemon/ioctl.cpp); this _IOW command carries them (a __u32:
// 0 = sync first, 1 = flush the log, 2 = no flush; anything else EINVAL). Root only (EPERM).
inline constexpr uint32_t kIocShutdown = _IOW(kIoctlType, 0x02, uint32_t);

// The scrub throughput limit in bytes per second (a __u64, 0 = unlimited): what the kernel keeps in
// /sys/fs/btrfs/FSID/devinfo/1/scrub_speed_max, which a FUSE daemon has no sysfs for
// (`ubtrfs-ctl scrub limit`; fs/scrub.h Scrub::set_rate_limit). Root only (EPERM). The current
// limit is in the scrub payload ("rate_limit").
inline constexpr uint32_t kIocScrubLimit = _IOW(kIoctlType, 0x03, uint64_t);

// A request for `payload` at `offset` of `snapshot` (0: a new one).
Message make_request(Payload payload, uint64_t snapshot, uint64_t offset);

// ---- daemon side ------------------------------------------------------------------------------

// The snapshots a daemon keeps for chunked reads. Thread safety: serve() may be called from any
// number of threads; the producer runs without the store's lock held.
class SnapshotStore {
 public:
  using Clock = std::chrono::steady_clock;
  // Renders a payload now (the stats JSON, the log JSON).
  using Producer = std::function<std::string(Payload)>;

  SnapshotStore() : SnapshotStore(kSnapshotsKept, kSnapshotIdle) {}
  SnapshotStore(size_t capacity, Clock::duration idle) : capacity_(capacity), idle_(idle) {}

  // Answers `req` into `reply` (header and data); returns the number of reply bytes to send
  // (kHeaderSize + chunk_len). `now` is injectable for tests.
  // Errors: EPROTO bad magic/version; EINVAL unknown payload, new snapshot asked at offset != 0,
  // offset > total, snapshot of another payload; ESTALE unknown or expired snapshot.
  [[nodiscard]] Result<size_t> serve(const Message& req, Message& reply, const Producer& produce,
                                     Clock::time_point now = Clock::now());

  size_t size() const;

 private:
  struct Snapshot {
    uint64_t id = 0;
    Payload payload = Payload::kStats;
    Clock::time_point last_used;
    std::shared_ptr<const std::string> bytes;
  };
  void expire_locked(Clock::time_point now);  // REQUIRES: mu_ held

  const size_t capacity_;
  const Clock::duration idle_;
  mutable std::mutex mu_;
  std::deque<Snapshot> snapshots_;  // GUARDED_BY(mu_); oldest first
  uint64_t next_id_ = 1;            // GUARDED_BY(mu_)
};

// ---- client side ------------------------------------------------------------------------------

// One exchange: sends `msg` as the request and leaves the reply in it (the inspector: ioctl(2)).
// Errors: the errno of the exchange, message naming it.
using Transport = std::function<Status(Message& msg)>;

// Reads a whole payload of one snapshot, checking every reply (magic, version, payload, the same
// snapshot and total, the offset asked, a chunk that fits and makes progress). Starts over when
// the snapshot expired (ESTALE), at most kReadAttempts times.
// Errors: the transport's; EPROTO for a malformed reply, naming the field; ESTALE after the
// last attempt; EFBIG for a total above kMaxPayload.
inline constexpr int kReadAttempts = 4;
[[nodiscard]] Result<std::string> read_payload(Payload payload, const Transport& transport);

}  // namespace ubtrfs::control
