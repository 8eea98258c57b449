// Daemon logging and the choice of its destination; see logging.h.
#include "tools/daemon/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fuse_log.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "tools/daemon/log_ring.h"
#include "tools/daemon/log_sinks.h"

namespace ubtrfs::daemon {

namespace {

constexpr const char* kIdent = "ubtrfs";

// Kept alive for the process lifetime: the default logger's sink switchboard and its members.
std::shared_ptr<spdlog::sinks::dist_sink_mt> g_dist;
std::shared_ptr<spdlog::sinks::sink> g_stderr;
std::shared_ptr<LogRing> g_ring;

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

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : std::string(fallback);
}

// The destination of a background daemon without -o log_file.
LogDestination choose_background_destination(const LogConfig& config) {
  const std::string syslog_path = env_or("UBTRFS_SYSLOG_SOCKET", "/dev/log");
  auto sys = LogSocket::connect(syslog_path, /*allow_stream=*/true);
  if (sys) {
    g_dist->add_sink(std::make_shared<SyslogSink>(std::move(*sys), kIdent));
    return {LogTarget::kSyslog, syslog_path, false, ""};
  }
  const std::string journal_path = env_or("UBTRFS_JOURNAL_SOCKET", "/run/systemd/journal/socket");
  auto journal = LogSocket::connect(journal_path, /*allow_stream=*/false);
  if (journal) {
    g_dist->add_sink(std::make_shared<JournalSink>(std::move(*journal), kIdent, config.image));
    return {LogTarget::kJournal, journal_path, false, ""};
  }
  const std::string why = fmt::format("no syslog at {} ({}) nor journal at {} ({})", syslog_path,
                                      strerror(sys.error().err), journal_path, strerror(journal.error().err));
  // Root's default is /run/ubtrfs; a user cannot create that, so theirs is their runtime
  // directory ($XDG_RUNTIME_DIR, /run/user/UID under systemd-logind) when there is one.
  std::string dir = env_or("UBTRFS_LOG_DIR", "");
  if (dir.empty() && geteuid() == 0) dir = "/run/ubtrfs";
  if (dir.empty() && std::getenv("XDG_RUNTIME_DIR") && *std::getenv("XDG_RUNTIME_DIR"))
    dir = std::string(std::getenv("XDG_RUNTIME_DIR")) + "/ubtrfs";
  if (dir.empty())
    return {LogTarget::kNone, "", false, fmt::format("{}, and a user without $XDG_RUNTIME_DIR has no log directory", why)};
  if (mkdir(dir.c_str(), 0755) == 0) {
    chmod(dir.c_str(), 0755);  // whatever the umask
  } else if (errno != EEXIST) {
    return {LogTarget::kNone, dir, false, fmt::format("{}, cannot create {}: {}", why, dir, strerror(errno))};
  }
  const std::string path = dir + "/" + log_file_name(config.image);
  struct stat st;
  const bool created = ::stat(path.c_str(), &st) != 0;
  auto file = FileSink::open(path);
  if (!file) return {LogTarget::kNone, path, false, fmt::format("{}, {}", why, file.error().message)};
  g_dist->add_sink(*file);
  return {LogTarget::kFile, path, true, why, created};
}

}  // namespace

std::string log_file_name(const std::string& image) {
  std::string name;
  for (char c : image) {
    if (c == '/') {
      if (!name.empty() && name.back() != '-') name.push_back('-');
    } else {
      name.push_back(c);
    }
  }
  while (!name.empty() && name.back() == '-') name.pop_back();
  if (name.empty() || name == "." || name == "..") name = "image";
  constexpr size_t kMaxStem = 200;  // NAME_MAX is 255
  if (name.size() > kMaxStem) name = name.substr(name.size() - kMaxStem);
  return name + ".log";
}

Result<LogDestination> init_logging(const LogConfig& config) {
  g_dist = std::make_shared<spdlog::sinks::dist_sink_mt>();
  g_stderr = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  g_stderr->set_pattern("ubtrfs[%P]: %l: %v");
  g_dist->add_sink(g_stderr);
  g_ring = std::make_shared<LogRing>();
  g_dist->add_sink(g_ring);
  if (config.background) g_stderr->set_level(spdlog::level::warn);
  auto logger = std::make_shared<spdlog::logger>(kIdent, g_dist);
  logger->set_level(spdlog::level::from_str(config.level));
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  fuse_set_log_func(fuse_log_to_spdlog);

  if (!config.log_file.empty()) {
    // Opened now, before the daemon changes to /: a relative path is relative to where it started.
    std::error_code ec;
    std::string path = std::filesystem::absolute(config.log_file, ec).string();
    if (ec) path = config.log_file;
    auto file = FileSink::open(path);
    if (!file) return fail(file.error());
    g_dist->add_sink(*file);
    return LogDestination{LogTarget::kFile, path, false, ""};
  }
  if (!config.background) return LogDestination{};
  return choose_background_destination(config);
}

void detach_stderr_logging() { g_dist->remove_sink(g_stderr); }

std::string recent_log_json() { return g_ring ? g_ring->to_json() : std::string("{}"); }

}  // namespace ubtrfs::daemon
