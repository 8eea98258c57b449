// Daemon logging; see logging.h.
#include "tools/daemon/logging.h"

#include <syslog.h>

#include <cstdarg>
#include <cstdio>
#include <memory>

#include <fuse_log.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

namespace ubtrfs::daemon {

namespace {

// Kept alive for the process lifetime: the default logger and its sink switchboard.
std::shared_ptr<spdlog::sinks::dist_sink_mt> g_dist;
std::shared_ptr<spdlog::sinks::sink> g_stderr;

// libfuse builds some messages from several fuse_log calls; they are joined per thread up to the
// newline so each message is one log line.
void fuse_log_to_spdlog(enum fuse_log_level level, const char* fmt, va_list ap) {
  thread_local std::string pending;
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  pending += buf;
  if (pending.empty() || pending.back() != '\n') return;
  std::string_view msg(pending);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.remove_suffix(1);
  if (msg.starts_with("fuse: ")) msg.remove_prefix(6);
  spdlog::level::level_enum l = spdlog::level::debug;
  if (level <= FUSE_LOG_ERR) l = spdlog::level::err;
  else if (level == FUSE_LOG_WARNING) l = spdlog::level::warn;
  else if (level <= FUSE_LOG_INFO) l = spdlog::level::info;
  if (!msg.empty()) spdlog::log(l, "fuse: {}", msg);
  pending.clear();
}

}  // namespace

void init_logging(const std::string& level, bool background) {
  g_dist = std::make_shared<spdlog::sinks::dist_sink_mt>();
  g_stderr = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  g_stderr->set_pattern("ubtrfs[%P]: %l: %v");
  g_dist->add_sink(g_stderr);
  if (background) {
    g_stderr->set_level(spdlog::level::warn);
    auto sys = std::make_shared<spdlog::sinks::syslog_sink_mt>("ubtrfs", LOG_PID, LOG_DAEMON, false);
    sys->set_pattern("%v");
    g_dist->add_sink(sys);
  }
  auto logger = std::make_shared<spdlog::logger>("ubtrfs", g_dist);
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  fuse_set_log_func(fuse_log_to_spdlog);
}

void detach_stderr_logging() { g_dist->remove_sink(g_stderr); }

}  // namespace ubtrfs::daemon
