// The daemon's log destinations (tools/daemon/log_sinks.h, log_ring.h, logging.h) without a
// mount: syslog records on real unix sockets of this test (datagram, stream fallback, reconnect
// after the listener restarts), the journal's native field encoding, the log file's mode and
// lines, the ring's bound and JSON, and the fallback file name.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "tools/daemon/log_ring.h"
#include "tools/daemon/log_sinks.h"
#include "tools/daemon/logging.h"

using namespace ubtrfs;
using namespace ubtrfs::daemon;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/ubtrfs-logtest.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// A listening unix socket of `type` at `path`.
int listen_at(const std::string& path, int type) {
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  if (type == SOCK_STREAM) REQUIRE(listen(fd, 4) == 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

std::string receive(int fd) {
  char buf[65536];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  REQUIRE(n >= 0);
  return std::string(buf, static_cast<size_t>(n));
}

// Logs one message through `sink` alone.
void log_through(std::shared_ptr<spdlog::sinks::sink> sink, spdlog::level::level_enum level, const std::string& msg) {
  spdlog::logger logger("test", std::move(sink));
  logger.set_level(spdlog::level::trace);
  logger.log(level, "{}", msg);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("log sinks: syslog records over a datagram socket, reconnecting after a restart") {
  TempDir dir;
  const std::string path = dir.path + "/log";
  int server = listen_at(path, SOCK_DGRAM);
  auto sock = LogSocket::connect(path, true);
  REQUIRE(sock);
  auto sink = std::make_shared<SyslogSink>(std::move(*sock), "ubtrfs");
  log_through(sink, spdlog::level::warn, "read-only now: transaction aborted");
  const std::string rec = receive(server);
  // <PRI> = LOG_DAEMON (3 << 3) | LOG_WARNING (4) = 28, then "Mmm dd hh:mm:ss ".
  CHECK(rec.starts_with("<28>"));
  CHECK(rec.ends_with(fmt::format(" ubtrfs[{}]: read-only now: transaction aborted", getpid())));
  CHECK(rec.size() == 4 + 16 + fmt::format("ubtrfs[{}]: read-only now: transaction aborted", getpid()).size());

  // The log daemon restarts: a new socket at the same path.
  close(server);
  unlink(path.c_str());
  server = listen_at(path, SOCK_DGRAM);
  log_through(sink, spdlog::level::err, "after restart");
  const std::string again = receive(server);
  CHECK(again.starts_with("<27>"));
  CHECK(again.ends_with("after restart"));
  close(server);
}

TEST_CASE("log sinks: a stream-only syslog gets NUL-terminated records; absent sockets are errors") {
  TempDir dir;
  const std::string path = dir.path + "/stream";
  int server = listen_at(path, SOCK_STREAM);
  auto sock = LogSocket::connect(path, true);
  REQUIRE(sock);
  int conn = accept(server, nullptr, nullptr);
  REQUIRE(conn >= 0);
  timeval tv{5, 0};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto sink = std::make_shared<SyslogSink>(std::move(*sock), "ubtrfs");
  log_through(sink, spdlog::level::info, "hello");
  const std::string rec = receive(conn);
  CHECK(rec.starts_with("<30>"));
  CHECK(rec.ends_with(std::string("hello") + '\0'));
  close(conn);
  close(server);

  // The journal takes datagrams only.
  server = listen_at(dir.path + "/stream2", SOCK_STREAM);
  auto journal = LogSocket::connect(dir.path + "/stream2", false);
  REQUIRE_FALSE(journal);
  close(server);

  auto none = LogSocket::connect(dir.path + "/absent", true);
  REQUIRE_FALSE(none);
  CHECK(none.error().err == ENOENT);
  CHECK_THAT(none.error().message, Catch::Contains("absent"));
}

TEST_CASE("log sinks: journal records use the native protocol, binary form for multi-line values") {
  const std::string plain = journal_record("mounted /a on /b", 6, "ubtrfs", "/img/a", 42);
  CHECK(plain ==
        "MESSAGE=mounted /a on /b\nPRIORITY=6\nSYSLOG_IDENTIFIER=ubtrfs\nSYSLOG_FACILITY=3\nSYSLOG_PID=42\n"
        "UBTRFS_IMAGE=/img/a\n");
  const std::string multi = journal_record("two\nlines", 3, "ubtrfs", "", 7);
  const std::string want_head = std::string("MESSAGE\n") + std::string("\x09\0\0\0\0\0\0\0", 8) + "two\nlines\n";
  CHECK(multi.starts_with(want_head));
  CHECK(multi.find("UBTRFS_IMAGE") == std::string::npos);

  TempDir dir;
  int server = listen_at(dir.path + "/journal", SOCK_DGRAM);
  auto sock = LogSocket::connect(dir.path + "/journal", false);
  REQUIRE(sock);
  log_through(std::make_shared<JournalSink>(std::move(*sock), "ubtrfs", "/img/x"), spdlog::level::critical, "boom");
  CHECK(receive(server) == fmt::format("MESSAGE=boom\nPRIORITY={}\nSYSLOG_IDENTIFIER=ubtrfs\nSYSLOG_FACILITY=3\n"
                                       "SYSLOG_PID={}\nUBTRFS_IMAGE=/img/x\n",
                                       LOG_CRIT, getpid()));
  close(server);
}

TEST_CASE("log sinks: the log file is created 0640 whatever the umask and takes whole lines") {
  TempDir dir;
  const std::string path = dir.path + "/a.log";
  const mode_t old = umask(0077);
  auto file = FileSink::open(path);
  umask(old);
  REQUIRE(file);
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  log_through(*file, spdlog::level::warn, "first");
  auto again = FileSink::open(path);  // an existing file is appended to
  REQUIRE(again);
  log_through(*again, spdlog::level::err, "second");
  const std::string text = read_file(path);
  CHECK_THAT(text, Catch::Matches(R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ubtrfs\[\d+\]: warning: first\n)"
                                  R"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ubtrfs\[\d+\]: error: second\n)"));
  auto bad = FileSink::open(dir.path + "/no/such/dir.log");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().err == ENOENT);
  CHECK_THAT(bad.error().message, Catch::StartsWith("cannot open log file " + dir.path + "/no/such/dir.log"));
}

TEST_CASE("log ring: info and above, the last N records oldest first, dropped counted, long messages cut") {
  auto ring = std::make_shared<LogRing>(3);
  spdlog::logger logger("ring", ring);
  logger.set_level(spdlog::level::trace);
  logger.debug("not kept");
  for (int i = 0; i < 5; ++i) logger.log(i % 2 ? spdlog::level::warn : spdlog::level::info, "message {}", i);
  logger.error("{}", std::string(3 * kLogRingMessageMax, 'x'));
  const auto j = nlohmann::json::parse(ring->to_json());
  CHECK(j["capacity"] == 3);
  CHECK(j["dropped"] == 3);
  REQUIRE(j["records"].size() == 3);
  CHECK(j["records"][0]["message"] == "message 3");
  CHECK(j["records"][0]["level"] == "warning");
  CHECK(j["records"][1]["message"] == "message 4");
  CHECK(j["records"][1]["level"] == "info");
  CHECK(j["records"][2]["level"] == "error");
  const std::string cut = j["records"][2]["message"];
  CHECK(cut.size() == kLogRingMessageMax);
  CHECK(cut.ends_with("..."));
  CHECK_THAT(j["records"][0]["time"].get<std::string>(), Catch::Matches(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"));
}

TEST_CASE("logging: the fallback file is named after the image path") {
  CHECK(log_file_name("/srv/images/a.img") == "srv-images-a.img.log");
  CHECK(log_file_name("/dev/sdb") == "dev-sdb.log");
  CHECK(log_file_name("/") == "image.log");
  const std::string deep = "/" + std::string(300, 'd') + "/tail.img";
  const std::string name = log_file_name(deep);
  CHECK(name.size() == 200 + 4);
  CHECK(name.ends_with("-tail.img.log"));
}
