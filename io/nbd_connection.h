// NbdConnection: one libnbd handle connected to an NBD server, shared by every thread of the
// process, with a poller thread that drives libnbd's asynchronous state machine.
//
// Owns: the nbd_handle (closed by the destructor), an eventfd that wakes the poller, and the
// poller thread itself. It does not own the buffers of the commands it carries.
// Why a poller: libnbd's synchronous calls hold the handle's lock for a whole round trip, so two
// threads calling nbd_pwrite on one handle would wait for each other; a network round trip would
// then cap throughput at one request per round trip. Here any thread issues commands with
// nbd_aio_* (short, thread-safe calls) and one thread moves the bytes, so the server sees as many
// requests in flight as the callers have (NBD allows any number per connection, answered in any
// order; nbdkit serves them in parallel).
// Invariants:
//   - every command issued through submit() has its Completion called exactly once: with the
//     server's answer (0 or an errno from the NBD error), or with ENOTCONN/ESHUTDOWN when the
//     connection dies (libnbd aborts the commands in flight), or synchronously by submit() itself
//     when libnbd refuses the command.
//   - a connection that made no progress for `request_timeout` while commands were in flight is
//     killed (its socket shut down): its commands fail, nothing waits forever on a hung server.
//   - once dead a connection stays dead; the owner (NbdDevice) replaces it.
// Thread safety: submit(), dead(), kill() and the accessors may be called from any thread; the
// destructor must run after every command issued has completed (the owner holds a shared_ptr per
// in-flight batch).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "io/status.h"

struct nbd_handle;

namespace ubtrfs::io {

// What the server said at the handshake (NBD_OPT_GO / NBD_INFO_BLOCK_SIZE).
struct NbdExportInfo {
  uint64_t size = 0;
  bool read_only = false;
  bool can_flush = false;
  bool can_fua = false;
  bool can_trim = false;
  bool can_multi_conn = false;
  uint32_t min_block = 1;        // NBD_INFO_BLOCK_SIZE minimum (1 when not advertised)
  uint32_t preferred_block = 0;  // 0: not advertised
  uint32_t max_block = 0;        // NBD_INFO_BLOCK_SIZE maximum payload (0: not advertised)
};

class NbdConnection {
 public:
  enum class Op { kRead, kWrite, kFlush, kTrim };

  // Called once per command from the poller thread (or from submit()), with 0 or an errno.
  // Must not call into this connection.
  struct Completion {
    virtual void complete(int err) = 0;

   protected:
    ~Completion() = default;
  };

  // Connects to `uri` (nbd_connect_uri syntax) within `connect_timeout` and starts the poller.
  // Errors: EIO with libnbd's text (no server, refused handshake, bad URI), ETIMEDOUT.
  [[nodiscard]] static Result<std::unique_ptr<NbdConnection>> connect(const std::string& uri,
                                                                      std::chrono::milliseconds connect_timeout,
                                                                      std::chrono::milliseconds request_timeout);
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  const NbdExportInfo& info() const { return info_; }

  // Issues one command. REQUIRES: `buf` (read/write) stays valid until `done` is called; len fits
  // the server's limits. `fua` asks for NBD_CMD_FLAG_FUA (write only, when the server has it).
  // If libnbd refuses the command (dead connection, invalid request), `done` is called before
  // submit() returns, with ENOTCONN when the connection is dead and the errno libnbd gave otherwise;
  // `*why` (optional) then receives libnbd's message.
  void submit(Op op, uint64_t off, void* buf, uint64_t len, bool fua, Completion* done, std::string* why = nullptr);

  // True once the connection cannot carry commands any more (server gone, killed, timed out).
  bool dead() const { return dead_.load(std::memory_order_acquire); }
  // Why it died, for messages (empty while alive).
  std::string death_reason() const;
  // Shuts the socket down: every command in flight fails soon after with ENOTCONN.
  void kill(const std::string& why);

 private:
  NbdConnection(nbd_handle* h, int wake_fd, NbdExportInfo info, std::chrono::milliseconds request_timeout);
  void poll_loop();
  void wake();
  void mark_dead(const std::string& why);

  nbd_handle* const h_;
  const int wake_fd_;  // eventfd: a new command (which may need POLLOUT) or stop
  const NbdExportInfo info_;
  const std::chrono::milliseconds request_timeout_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> dead_{false};
  std::atomic<int64_t> last_progress_ns_{0};  // steady clock; a completion or a byte moved
  mutable std::mutex reason_mu_;
  std::string death_reason_;  // GUARDED_BY(reason_mu_)
  std::thread poller_;
};

// The NBD error a completion's errno stands for (NBD_EIO, NBD_ENOSPC, ...), for messages.
std::string nbd_error_name(int err);

}  // namespace ubtrfs::io
