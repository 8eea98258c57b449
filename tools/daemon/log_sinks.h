// The destinations the background daemon can log to, as spdlog sinks written by us (so that tests
// can point them at sockets of their own; glibc's syslog(3) always uses /dev/log):
//
//   SyslogSink   RFC 3164 records "<PRI>Mmm dd hh:mm:ss ubtrfs[PID]: message" (facility daemon)
//                on a unix socket, as glibc's syslog(3) sends them: datagrams, or NUL-terminated
//                records on a stream socket when the listener only accepts streams.
//   JournalSink  systemd-journald's native protocol: one datagram per record holding
//                MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, SYSLOG_FACILITY, SYSLOG_PID and
//                UBTRFS_IMAGE as KEY=value lines (a value containing a newline in the
//                length-prefixed binary form), so `journalctl -t ubtrfs` and
//                `journalctl UBTRFS_IMAGE=/path` find them.
//   FileSink     lines "YYYY-mm-dd HH:MM:SS.mmm ubtrfs[PID]: level: message" appended with one
//                write(2) each (O_APPEND: lines of several daemons sharing a file never mix).
//
// LogSocket::connect is also the probe that decides whether a destination is there: a socket
// that exists but accepts no connection (a stale socket of a stopped daemon) counts as absent.
// A send that finds the listener gone (a restarted syslog daemon) reconnects once. Sends block
// at most kSendTimeout, so a stuck log daemon delays a FUSE request by that much, never forever;
// a record that cannot be sent is dropped (the in-memory ring, log_ring.h, still has it).
// Thread safety: spdlog's base_sink serializes sink_it_ with its mutex.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <spdlog/sinks/base_sink.h>

#include "io/status.h"

namespace ubtrfs::daemon {

inline constexpr std::chrono::seconds kSendTimeout{1};

class LogSocket {
 public:
  // allow_stream: fall back to a stream connection when the listener is not a datagram socket.
  // Errors: the connect errno, "cannot connect to PATH: reason".
  [[nodiscard]] static Result<std::unique_ptr<LogSocket>> connect(const std::string& path, bool allow_stream);
  ~LogSocket();
  LogSocket(const LogSocket&) = delete;
  LogSocket& operator=(const LogSocket&) = delete;

  // Sends one record (a datagram; on a stream socket the bytes and a NUL). false: dropped.
  bool send(std::string_view record);
  const std::string& path() const { return path_; }

 private:
  LogSocket(std::string path, bool allow_stream) : path_(std::move(path)), allow_stream_(allow_stream) {}
  [[nodiscard]] Status open_connection();

  std::string path_;
  bool allow_stream_;
  int fd_ = -1;
  bool stream_ = false;
};

// syslog(3) severity of an spdlog level.
int syslog_severity(spdlog::level::level_enum level);

class SyslogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  SyslogSink(std::unique_ptr<LogSocket> socket, std::string ident);

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::unique_ptr<LogSocket> socket_;
  std::string ident_;
};

class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  JournalSink(std::unique_ptr<LogSocket> socket, std::string ident, std::string image);

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::unique_ptr<LogSocket> socket_;
  std::string ident_;
  std::string image_;
};

// Builds one journal datagram (exposed for the unit test of the binary field form).
std::string journal_record(std::string_view message, int priority, std::string_view ident, std::string_view image,
                           long pid);

class FileSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // Opens PATH for appending; a file it creates gets mode 0640 whatever the umask.
  // Errors: the open errno, "cannot open log file PATH: reason".
  [[nodiscard]] static Result<std::shared_ptr<FileSink>> open(const std::string& path);
  ~FileSink() override;
  const std::string& path() const { return path_; }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  FileSink(std::string path, int fd);
  std::string path_;
  int fd_;
};

}  // namespace ubtrfs::daemon
