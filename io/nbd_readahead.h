// NbdReadAhead: sequential read-ahead for NbdDevice, so that a stream of reads (a file read from
// start to end: FUSE hands the daemon 128 KiB at a time, one or two at once) keeps several
// requests in flight instead of paying one network round trip per read.
//
// Owns: a few windows of prefetched device bytes (kWindowBytes each, at most kMaxWindows), each
// filled by one asynchronous NBD read. It does not own the connection: the device passes a
// function that issues a read command.
// Invariants:
//   - coherence: a write or discard calls invalidate() before it is sent and again after it
//     completes, so no window issued before the write completed can serve a read that starts
//     after it (a window issued between the two calls is dropped by the second).
//   - a window serves a read only if it covers the whole read and its NBD read succeeded; a
//     failed or dropped window is simply not used (the read goes to the server as usual).
//   - the destructor waits for every window still in flight (their buffers are the commands').
// Thread safety: all methods may be called concurrently; one mutex guards the window list, and
// a waiting reader does not hold it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "io/nbd_connection.h"

namespace ubtrfs::io {

class NbdReadAhead {
 public:
  static constexpr uint64_t kWindowBytes = 512 << 10;
  static constexpr size_t kMaxWindows = 12;        // 6 MiB ahead of the reader at most
  static constexpr uint64_t kMinStreamRead = 32 << 10;  // tree block reads (16 KiB) never start a stream
  // Issues one NBD read of [off, off+len) into buf; `done` is called exactly once.
  using Issue = std::function<void(uint64_t off, uint8_t* buf, uint64_t len, NbdConnection::Completion* done)>;

  // REQUIRES: `device_size` is the device's size, `align` its minimum block size.
  NbdReadAhead(uint64_t device_size, uint32_t align, Issue issue);
  ~NbdReadAhead();
  NbdReadAhead(const NbdReadAhead&) = delete;
  NbdReadAhead& operator=(const NbdReadAhead&) = delete;

  // Copies [off, off+buf.size()) from a window if one covers it (waiting for it if in flight).
  // False: not covered, or the window's read failed; the caller reads from the server.
  bool serve(uint64_t off, std::span<uint8_t> buf);
  // After a read from the server: detects a sequential stream and tops its windows up.
  void note_read(uint64_t off, uint64_t len);
  // Drops every window overlapping [off, off+len) (see the coherence invariant).
  void invalidate(uint64_t off, uint64_t len);

  uint64_t hits() const;

 private:
  struct Window;
  void top_up(uint64_t from, uint64_t to);  // REQUIRES: mu_ held

  const uint64_t size_;
  const uint32_t align_;
  const Issue issue_;
  mutable std::mutex mu_;
  std::deque<std::shared_ptr<Window>> windows_;  // GUARDED_BY(mu_), ascending offsets
  uint64_t last_end_ = 0;                         // GUARDED_BY(mu_): end of the last read seen
  unsigned streak_ = 0;                           // GUARDED_BY(mu_): sequential reads in a row
  uint64_t hits_ = 0;                             // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Window>> in_flight_;  // GUARDED_BY(mu_): dropped windows still reading
};

}  // namespace ubtrfs::io
