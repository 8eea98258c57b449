// NbdConnection implementation; see nbd_connection.h for the contract.
//
// The poller is libnbd's documented integration with an outside main loop: wait on the socket in
// the direction nbd_aio_get_direction() asks for, then nbd_aio_notify_read/write. The eventfd is
// there because a command issued by another thread may need POLLOUT while the poller sleeps in a
// poll() that asked for POLLIN only.
#include "io/nbd_connection.h"

#include <libnbd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace ubtrfs::io {
namespace {

// The poller wakes at least this often to check the request timeout.
constexpr std::chrono::milliseconds kPollTick{200};

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string libnbd_error() {
  const char* e = nbd_get_error();
  return e && *e ? e : "unknown libnbd error";
}

int libnbd_errno(int fallback) {
  const int e = nbd_get_errno();
  return e > 0 ? e : fallback;
}

int on_complete(void* user_data, int* error) {
  static_cast<NbdConnection::Completion*>(user_data)->complete(*error);
  return 1;  // retire the command: nobody calls nbd_aio_command_completed for it
}

}  // namespace

std::string nbd_error_name(int err) {
  switch (err) {
    case 0: return "success";
    case EPERM: return "NBD_EPERM (operation not permitted)";
    case EIO: return "NBD_EIO (input/output error)";
    case ENOMEM: return "NBD_ENOMEM (out of memory)";
    case EINVAL: return "NBD_EINVAL (invalid argument)";
    case ENOSPC: return "NBD_ENOSPC (no space left on device)";
    case EOVERFLOW: return "NBD_EOVERFLOW (value too large)";
    case ENOTSUP: return "NBD_ENOTSUP (operation not supported)";
    case ESHUTDOWN: return "NBD_ESHUTDOWN (server is shutting down)";
    case ENOTCONN: return "connection lost (ENOTCONN)";
    default: return fmt::format("errno {} ({})", err, std::strerror(err));
  }
}

Result<std::unique_ptr<NbdConnection>> NbdConnection::connect(const std::string& uri,
                                                              std::chrono::milliseconds connect_timeout,
                                                              std::chrono::milliseconds request_timeout) {
  nbd_handle* h = nbd_create();
  if (!h) return fail(ENOMEM, "cannot create an NBD handle for {}: {}", uri, libnbd_error());
  auto fail_closed = [&](int err, const std::string& what) {
    std::string text = fmt::format("cannot connect to NBD server {}: {}", uri, what);
    nbd_close(h);
    return fail(err, "{}", text);
  };
  nbd_set_handle_name(h, "ubtrfs");
  // The handshake asks for NBD_INFO_BLOCK_SIZE (libnbd's default), and libnbd enforces the
  // advertised alignment client-side (LIBNBD_STRICT_ALIGN), so a mistake of ours is EINVAL here,
  // not an undefined request on the server.
  if (nbd_aio_connect_uri(h, uri.c_str()) == -1) return fail_closed(libnbd_errno(EIO), libnbd_error());
  const auto deadline = std::chrono::steady_clock::now() + connect_timeout;
  while (nbd_aio_is_connecting(h) == 1) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return fail_closed(ETIMEDOUT, fmt::format("no handshake within {} ms", connect_timeout.count()));
    if (nbd_poll(h, static_cast<int>(left.count())) == -1) return fail_closed(libnbd_errno(EIO), libnbd_error());
  }
  if (nbd_aio_is_ready(h) != 1) return fail_closed(EIO, libnbd_error());

  NbdExportInfo info;
  const int64_t size = nbd_get_size(h);
  if (size < 0) return fail_closed(EIO, "cannot get the export size: " + libnbd_error());
  info.size = static_cast<uint64_t>(size);
  info.read_only = nbd_is_read_only(h) == 1;
  info.can_flush = nbd_can_flush(h) == 1;
  info.can_fua = nbd_can_fua(h) == 1;
  info.can_trim = nbd_can_trim(h) == 1;
  info.can_multi_conn = nbd_can_multi_conn(h) == 1;
  const int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  const int64_t preferred = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  const int64_t max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  info.min_block = min_block > 0 ? static_cast<uint32_t>(min_block) : 1;
  info.preferred_block = preferred > 0 ? static_cast<uint32_t>(preferred) : 0;
  info.max_block = max_block > 0 ? static_cast<uint32_t>(max_block) : 0;

  const int wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    const int err = errno;
    return fail_closed(err, fmt::format("eventfd: {}", std::strerror(err)));
  }
  return std::unique_ptr<NbdConnection>(new NbdConnection(h, wake, info, request_timeout));
}

NbdConnection::NbdConnection(nbd_handle* h, int wake_fd, NbdExportInfo info, std::chrono::milliseconds request_timeout)
    : h_(h), wake_fd_(wake_fd), info_(info), request_timeout_(request_timeout) {
  last_progress_ns_.store(now_ns());
  poller_ = std::thread([this] { poll_loop(); });
}

NbdConnection::~NbdConnection() {
  stop_.store(true, std::memory_order_release);
  wake();
  if (poller_.joinable()) poller_.join();
  // Nothing is in flight (the owner's contract); a live connection says goodbye (NBD_CMD_DISC)
  // inside nbd_close.
  nbd_close(h_);
  ::close(wake_fd_);
}

void NbdConnection::wake() {
  const uint64_t one = 1;
  ssize_t n;
  do n = ::write(wake_fd_, &one, sizeof one);
  while (n < 0 && errno == EINTR);
}

std::string NbdConnection::death_reason() const {
  std::lock_guard g(reason_mu_);
  return death_reason_;
}

void NbdConnection::mark_dead(const std::string& why) {
  {
    std::lock_guard g(reason_mu_);
    if (death_reason_.empty()) death_reason_ = why;
  }
  dead_.store(true, std::memory_order_release);
}

void NbdConnection::kill(const std::string& why) {
  mark_dead(why);
  const int fd = nbd_aio_get_fd(h_);
  // The poller sees the shutdown as end of file; libnbd then fails every command in flight.
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  wake();
}

void NbdConnection::submit(Op op, uint64_t off, void* buf, uint64_t len, bool fua, Completion* done, std::string* why) {
  const nbd_completion_callback cb{.callback = on_complete, .user_data = done, .free = nullptr};
  int64_t cookie = -1;
  switch (op) {
    case Op::kRead:
      cookie = nbd_aio_pread(h_, buf, len, off, cb, 0);
      break;
    case Op::kWrite:
      cookie = nbd_aio_pwrite(h_, buf, len, off, cb, fua && info_.can_fua ? LIBNBD_CMD_FLAG_FUA : 0);
      break;
    case Op::kFlush:
      cookie = nbd_aio_flush(h_, cb, 0);
      break;
    case Op::kTrim:
      cookie = nbd_aio_trim(h_, len, off, cb, 0);
      break;
  }
  if (cookie == -1) {
    // libnbd did not take the command, so it will never call `cb`.
    const std::string text = libnbd_error();
    int err = libnbd_errno(EIO);
    if (nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) {
      mark_dead(text);
      err = ENOTCONN;
    }
    if (why) *why = text;
    done->complete(err);
    return;
  }
  wake();
}

void NbdConnection::poll_loop() {
  while (!stop_.load(std::memory_order_acquire)) {
    // dead() may be set by kill() before libnbd has seen the end of file: keep polling until
    // libnbd itself is dead, so the commands in flight are failed, not forgotten.
    const bool lib_dead = nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1;
    if (lib_dead) mark_dead("the server closed the connection");
    const int fd = lib_dead ? -1 : nbd_aio_get_fd(h_);
    const unsigned dir = fd >= 0 ? nbd_aio_get_direction(h_) : 0;
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {fd, 0, 0}};
    if (dir & LIBNBD_AIO_DIRECTION_READ) fds[1].events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) fds[1].events |= POLLOUT;
    const nfds_t n = fd >= 0 ? 2 : 1;
    const int rc = ::poll(fds, n, static_cast<int>(kPollTick.count()));
    if (rc < 0 && errno != EINTR) {
      spdlog::error("nbd: poll failed: {}", std::strerror(errno));
      kill(fmt::format("poll failed: {}", std::strerror(errno)));
      continue;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      while (::read(wake_fd_, &v, sizeof v) > 0) {
      }
    }
    if (n == 2 && fds[1].revents) {
      last_progress_ns_.store(now_ns(), std::memory_order_relaxed);
      // A hang-up or error is read as end of file, which moves libnbd to its dead state and
      // fails the commands in flight with ENOTCONN.
      if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) nbd_aio_notify_read(h_);
      if ((fds[1].revents & POLLOUT) && !(fds[1].revents & (POLLHUP | POLLERR))) nbd_aio_notify_write(h_);
    }
    // The request timeout: in flight, and nothing moved for that long.
    if (nbd_aio_in_flight(h_) <= 0) {
      last_progress_ns_.store(now_ns(), std::memory_order_relaxed);
    } else if (!dead() && now_ns() - last_progress_ns_.load(std::memory_order_relaxed) >
                              std::chrono::duration_cast<std::chrono::nanoseconds>(request_timeout_).count()) {
      const std::string why = fmt::format("no answer from the server for {} ms with {} requests in flight",
                                          request_timeout_.count(), nbd_aio_in_flight(h_));
      spdlog::error("nbd: {}: dropping the connection", why);
      kill(why);
    }
  }
}

}  // namespace ubtrfs::io
