// Logging of the ubtrfs daemon: one spdlog logger, installed as the default logger so every layer's
// spdlog::warn() etc. lands in it, writing through a dist_sink whose destinations can change while
// other threads log: stderr in the foreground; in the background syslog (LOG_DAEMON, ident
// "ubtrfs", with the pid), plus warnings and errors on stderr until the daemon has detached.
// libfuse's own messages (fuse_log) are routed into the same logger.
// Thread safety: all functions may be called from any thread; detach_stderr_logging() changes sinks under
// the dist_sink's lock, so concurrent log calls never see a destroyed sink.
#pragma once

#include <string>

namespace ubtrfs::daemon {

// Installs the default logger at `level` (spdlog level name). Call once, first. Foreground: to
// stderr. Background: to syslog, and warnings and errors also to stderr until detach_stderr_logging()
// (the terminal of `mount` sees why a mount failed, but not the routine info lines).
void init_logging(const std::string& level, bool background);
// Drops the stderr destination (after detaching from the terminal); syslog stays.
void detach_stderr_logging();

}  // namespace ubtrfs::daemon
