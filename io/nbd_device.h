// NbdDevice: the BlockDevice for an image exported by an NBD server (nbdkit, qemu-nbd — and
// through qemu-nbd's rbd driver, Ceph), reached with libnbd.
//
// Owns: the current NbdConnection (io/nbd_connection.h) to the URI it was opened with, and the
// bookkeeping that keeps flush honest across reconnects.
// Invariants (the BlockDevice contract, over a network):
//   - read()/write() are exact; a request larger than the server's maximum payload (or our chunk
//     size) is split, and the pieces are in flight together; unaligned requests to a server with a
//     minimum block size go through a bounce buffer (read-modify-write for writes).
//   - flush() is NBD_CMD_FLUSH: it returns success only when every write acknowledged before it
//     was sent is durable on the server. A connection that drops with acknowledged writes not yet
//     flushed may have lost them, so from then on flush() fails with EIO (sticky): the filesystem
//     never reports an fsync or a commit as durable that might not be.
//   - discard() is NBD_CMD_TRIM (EOPNOTSUPP when the server has no trim); trimmed bytes are not
//     promised to read back as zero.
//   - an error the server answers (NBD_EIO, NBD_ENOSPC, ...) is EIO with the NBD error named in the
//     message, not retried; a dropped connection is re-established up to `reconnect_attempts` times
//     (the requests that did not complete are re-sent: reads, writes and trims are idempotent),
//     after which the device is gone and every call fails with EIO at once.
//   - sequential reads are served ahead by NbdReadAhead (io/nbd_readahead.h); writes and discards
//     invalidate what it holds before and after they are sent.
//   - a read-only export is refused for kReadWrite with EROFS and a message saying to open it
//     read-only; a kReadOnly device never sends a write or trim.
// NBD has no lock: two clients writing one export corrupt it. One writer is the user's duty (the
// README says how to get the server's own exclusivity).
// Thread safety: every method may be called concurrently; all callers share one connection.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "io/block_device.h"
#include "io/nbd_connection.h"
#include "io/nbd_readahead.h"

namespace ubtrfs::io {

// True for the NBD URI schemes libnbd connects to: nbd://, nbds://, nbd+unix://, nbds+unix://
// (and nbd+vsock:// and nbds+vsock://).
bool is_nbd_uri(std::string_view path);

struct NbdOptions {
  std::chrono::milliseconds connect_timeout{10'000};  // per connection attempt, handshake included
  std::chrono::milliseconds request_timeout{30'000};  // no progress with requests in flight: drop
  unsigned reconnect_attempts = 3;                     // after a drop, before the device is gone
  std::chrono::milliseconds reconnect_delay{200};      // before the first attempt; doubles each time
  uint32_t max_request_bytes = 1u << 20;               // our chunk size for reads and writes
};

struct NbdDeviceStats {
  uint64_t requests = 0;    // NBD commands sent (each chunk counts)
  uint64_t reconnects = 0;  // connections re-established after a drop
  uint64_t bounced = 0;     // unaligned calls served through a bounce buffer
  uint64_t readahead_hits = 0;  // reads served from read-ahead windows
};

class NbdDevice final : public BlockDevice {
 public:
  // Connects to `uri`. Errors: EIO (no server, bad URI, handshake refused: libnbd's text),
  // ETIMEDOUT, EROFS (kReadWrite on a read-only export).
  [[nodiscard]] static Result<std::unique_ptr<NbdDevice>> open(const std::string& uri, OpenMode mode,
                                                               const NbdOptions& opts = {});
  ~NbdDevice() override;

  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  std::string name() const override { return uri_; }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  Status flush() override;
  Status discard(uint64_t off, uint64_t len) override;
  // Every range in flight at once on the connection (the writeback batches: tree/buffer_cache).
  std::vector<Status> write_many(std::span<const DeviceWrite> writes) override;

  const NbdExportInfo& export_info() const { return info_; }
  // Largest payload one read or write command carries.
  uint32_t chunk_bytes() const { return chunk_; }
  NbdDeviceStats stats() const;

 private:
  class Batch;
  struct Piece;
  struct Segment {
    uint64_t off = 0;
    uint8_t* buf = nullptr;
    uint64_t len = 0;
  };
  NbdDevice(std::string uri, OpenMode mode, NbdOptions opts, std::unique_ptr<NbdConnection> conn);
  // Sends [off, off+len) as pieces of at most `chunk` bytes, all in flight together; re-sends the
  // pieces a dropped connection lost. REQUIRES: off and len aligned to the minimum block size.
  Status transfer(NbdConnection::Op op, uint64_t off, uint8_t* buf, uint64_t len, uint64_t chunk, const char* what);
  // The same for several ranges at once; one Status per range, in order.
  std::vector<Status> transfer_many(NbdConnection::Op op, std::span<const Segment> segs, uint64_t chunk,
                                    const char* what);
  Result<std::shared_ptr<NbdConnection>> connection();
  // Replaces `failed` (unless another thread already did); fails when every attempt failed.
  Result<std::shared_ptr<NbdConnection>> reconnect(const std::shared_ptr<NbdConnection>& failed);
  Status check_range(uint64_t off, uint64_t len, const char* what) const;
  Status bounce_read(uint64_t off, std::span<uint8_t> buf);
  Status bounce_write(uint64_t off, std::span<const uint8_t> buf);

  const std::string uri_;
  const NbdOptions opts_;
  const NbdExportInfo info_;  // from the first handshake; reconnects must match size and mode
  const bool read_only_;
  const uint64_t size_;       // the export size rounded down to the minimum block size
  const uint32_t chunk_;

  mutable std::mutex conn_mu_;
  std::shared_ptr<NbdConnection> conn_;  // GUARDED_BY(conn_mu_)
  // Replaced connections live as long as the device: a read-ahead window may still be reading on
  // one, and a connection must never be destroyed by its own poller (the last reference dropped
  // in a completion).
  std::vector<std::shared_ptr<NbdConnection>> retired_;  // GUARDED_BY(conn_mu_)
  std::string gone_;                     // GUARDED_BY(conn_mu_): why the device is gone, or empty
  std::mutex reconnect_mu_;              // one reconnect at a time; taken before conn_mu_
  std::mutex rmw_mu_;                    // serializes the read-modify-write of unaligned writes

  // Flush accounting (see the invariants): write pieces the server acknowledged, and how many of
  // them the last successful flush covered.
  std::atomic<uint64_t> acked_writes_{0};
  std::atomic<uint64_t> flushed_writes_{0};
  std::atomic<bool> flush_poisoned_{false};
  std::string poison_reason_;  // GUARDED_BY(conn_mu_)

  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> reconnects_{0};
  std::atomic<uint64_t> bounced_{0};
  std::unique_ptr<NbdReadAhead> readahead_;  // destroyed first (~NbdDevice): it waits for its reads
};

}  // namespace ubtrfs::io
