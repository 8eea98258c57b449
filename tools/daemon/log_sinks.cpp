// Syslog, journal and file log sinks; see log_sinks.h.
#include "tools/daemon/log_sinks.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <spdlog/pattern_formatter.h>

namespace ubtrfs::daemon {

namespace {

// Longest message a record carries; longer ones are cut (datagram size limits of the listeners).
constexpr size_t kMaxSyslogMessage = 8 * 1024;
constexpr size_t kMaxJournalMessage = 48 * 1024;

std::string_view payload_of(const spdlog::details::log_msg& msg, size_t max) {
  std::string_view v(msg.payload.data(), msg.payload.size());
  return v.substr(0, max);
}

}  // namespace

// ---- LogSocket --------------------------------------------------------------------------------

Result<std::unique_ptr<LogSocket>> LogSocket::connect(const std::string& path, bool allow_stream) {
  std::unique_ptr<LogSocket> s(new LogSocket(path, allow_stream));
  UBTRFS_TRY_STATUS(s->open_connection());
  return s;
}

LogSocket::~LogSocket() {
  if (fd_ >= 0) close(fd_);
}

Status LogSocket::open_connection() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path) return fail(ENAMETOOLONG, "cannot connect to {}: path too long", path_);
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  const timeval timeout{static_cast<time_t>(kSendTimeout.count()), 0};
  int last_err = 0;
  for (int type : {SOCK_DGRAM, SOCK_STREAM}) {
    if (type == SOCK_STREAM && !allow_stream_) break;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(errno, "cannot connect to {}: {}", path_, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      fd_ = fd;
      stream_ = type == SOCK_STREAM;
      return {};
    }
    last_err = errno;
    close(fd);
    if (last_err != EPROTOTYPE) break;  // only a socket of the other type is worth a second try
  }
  return fail(last_err, "cannot connect to {}: {}", path_, strerror(last_err));
}

bool LogSocket::send(std::string_view record) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (fd_ < 0 && !open_connection()) return false;
    ssize_t n;
    if (stream_) {
      std::string framed(record);
      framed.push_back('\0');
      n = ::send(fd_, framed.data(), framed.size(), MSG_NOSIGNAL);
      if (n == static_cast<ssize_t>(framed.size())) return true;
    } else {
      n = ::send(fd_, record.data(), record.size(), MSG_NOSIGNAL);
      if (n == static_cast<ssize_t>(record.size())) return true;
    }
    // The listener went away (restarted log daemon): one reconnect. A timeout is not retried.
    if (n >= 0 || (errno != ECONNREFUSED && errno != ENOTCONN && errno != EPIPE && errno != ECONNRESET)) return false;
    close(fd_);
    fd_ = -1;
  }
  return false;
}

int syslog_severity(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical: return LOG_CRIT;
    case spdlog::level::err: return LOG_ERR;
    case spdlog::level::warn: return LOG_WARNING;
    case spdlog::level::info: return LOG_INFO;
    default: return LOG_DEBUG;
  }
}

// ---- syslog -----------------------------------------------------------------------------------

SyslogSink::SyslogSink(std::unique_ptr<LogSocket> socket, std::string ident)
    : socket_(std::move(socket)), ident_(std::move(ident)) {}

void SyslogSink::sink_it_(const spdlog::details::log_msg& msg) {
  const time_t t = std::chrono::system_clock::to_time_t(msg.time);
  tm local;
  localtime_r(&t, &local);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &local);
  socket_->send(fmt::format("<{}>{} {}[{}]: {}", LOG_DAEMON | syslog_severity(msg.level), stamp, ident_, getpid(),
                            payload_of(msg, kMaxSyslogMessage)));
}

// ---- journal ----------------------------------------------------------------------------------

std::string journal_record(std::string_view message, int priority, std::string_view ident, std::string_view image,
                           long pid) {
  std::string out;
  auto field = [&](std::string_view key, std::string_view value) {
    if (value.find('\n') == std::string_view::npos) {
      out.append(key);
      out.push_back('=');
      out.append(value);
      out.push_back('\n');
      return;
    }
    // Binary form: KEY '\n' <64-bit little-endian length> VALUE '\n'.
    out.append(key);
    out.push_back('\n');
    uint64_t len = value.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
    out.append(value);
    out.push_back('\n');
  };
  field("MESSAGE", message);
  field("PRIORITY", std::to_string(priority));
  field("SYSLOG_IDENTIFIER", ident);
  field("SYSLOG_FACILITY", std::to_string(LOG_DAEMON >> 3));
  field("SYSLOG_PID", std::to_string(pid));
  if (!image.empty()) field("UBTRFS_IMAGE", image);
  return out;
}

JournalSink::JournalSink(std::unique_ptr<LogSocket> socket, std::string ident, std::string image)
    : socket_(std::move(socket)), ident_(std::move(ident)), image_(std::move(image)) {}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  socket_->send(
      journal_record(payload_of(msg, kMaxJournalMessage), syslog_severity(msg.level), ident_, image_, getpid()));
}

// ---- file -------------------------------------------------------------------------------------

Result<std::shared_ptr<FileSink>> FileSink::open(const std::string& path) {
  constexpr int kFlags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY;
  int fd = ::open(path.c_str(), kFlags | O_CREAT | O_EXCL, 0640);
  if (fd >= 0) {
    fchmod(fd, 0640);  // the umask must not widen or narrow it
  } else if (errno == EEXIST) {
    fd = ::open(path.c_str(), kFlags);
  }
  if (fd < 0) return fail(errno, "cannot open log file {}: {}", path, strerror(errno));
  return std::shared_ptr<FileSink>(new FileSink(path, fd));
}

FileSink::FileSink(std::string path, int fd) : path_(std::move(path)), fd_(fd) {
  set_formatter_(std::make_unique<spdlog::pattern_formatter>("%Y-%m-%d %H:%M:%S.%e ubtrfs[%P]: %l: %v"));
}

FileSink::~FileSink() { close(fd_); }

void FileSink::sink_it_(const spdlog::details::log_msg& msg) {
  spdlog::memory_buf_t line;
  formatter_->format(msg, line);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // full disk or an I/O error: the ring still has the record
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace ubtrfs::daemon
