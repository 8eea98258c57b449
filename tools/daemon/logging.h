// Logging of the ubtrfs daemon: one spdlog logger, installed as the default logger so every layer's
// spdlog::warn() etc. lands in it, writing through a dist_sink whose destinations can change while
// other threads log. libfuse's own messages (fuse_log) are routed into the same logger.
//
// Where messages go (chosen once, at start):
//   foreground (-f, -d): stderr;
//   background: the first destination that is there —
//     1. syslog, if its socket ($UBTRFS_SYSLOG_SOCKET, default /dev/log) accepts a connection;
//     2. the systemd journal, if its socket ($UBTRFS_JOURNAL_SOCKET, default
//        /run/systemd/journal/socket) accepts a connection;
//     3. a file $UBTRFS_LOG_DIR/<image>.log (default directory /run/ubtrfs for root,
//        $XDG_RUNTIME_DIR/ubtrfs for a user, none for a user without it; created 0755, the
//        file 0640), <image> being the canonical image path with '/' turned into '-'; the daemon
//        names it on stderr before detaching when it creates the file (kFile with automatic and
//        created; later mounts of the image say nothing, as a mount that works is silent — test
//        suites compare mount's output);
//     plus warnings and errors on stderr until detach_stderr_logging() (the terminal of `mount`
//     sees why a mount failed, but not the routine info lines);
//   -o log_file=PATH: that file instead of the background choice, and besides stderr in the
//     foreground.
// Always, in addition: the in-memory ring of the last records at info level and above
// (log_ring.h), read through recent_log_json() by the control channel.
// Thread safety: all functions may be called from any thread after init_logging();
// detach_stderr_logging() changes sinks under the dist_sink's lock, so concurrent log calls never
// see a destroyed sink.
#pragma once

#include <string>

#include "io/status.h"

namespace ubtrfs::daemon {

struct LogConfig {
  std::string level = "info";  // spdlog level name (log_level=)
  bool background = false;
  std::string log_file;        // -o log_file=PATH; empty: the automatic choice
  std::string image;           // canonical image path: names the fallback file, tags journal records
};

enum class LogTarget { kStderr, kSyslog, kJournal, kFile, kNone };

struct LogDestination {
  LogTarget target = LogTarget::kStderr;
  std::string path;        // the socket or the file
  bool automatic = false;  // kFile: chosen because there was neither syslog nor journal
  std::string why;         // kFile automatic or kNone: why syslog and journal were not used
  bool created = false;    // kFile automatic: this mount created the file (say where it is once)
};

// Installs the default logger and picks the destination (see above). Call once, first; the
// logger is installed (stderr and the ring) even when an error is returned.
// Errors: the -o log_file cannot be opened ("cannot open log file PATH: reason").
[[nodiscard]] Result<LogDestination> init_logging(const LogConfig& config);
// Drops the stderr destination (after detaching from the terminal).
void detach_stderr_logging();
// The "log" payload of the control channel: the ring as JSON (log_ring.h).
std::string recent_log_json();

// The fallback log file's name for a canonical image path, e.g. "/srv/img/a.img" ->
// "srv-img-a.img.log" (a long path: its last 200 characters).
std::string log_file_name(const std::string& image);

}  // namespace ubtrfs::daemon
