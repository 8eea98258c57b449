// Test helper: an nbdkit server on a unix socket in a temporary directory, started in the
// foreground as a child of the test (--exit-with-parent: it cannot outlive a crashed test) and
// stopped by its pid. available() says whether nbdkit is installed; tests skip without it unless
// UBTRFS_REQUIRE_ORACLES=1.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/io/shell.h"

namespace ubtrfs::io::testing {

class NbdServer {
 public:
  static bool available() { return have_tool("nbdkit"); }

  // `args`: nbdkit's arguments after the socket options (filters, plugin, plugin parameters).
  explicit NbdServer(std::vector<std::string> args) : args_(std::move(args)) {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/ubtrfs-nbd-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = buf.data();
    socket_ = dir_ + "/nbd.sock";
    start();
  }
  ~NbdServer() {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  std::string uri() const { return "nbd+unix:///?socket=" + socket_; }
  const std::string& dir() const { return dir_; }

  // Starts nbdkit and waits until it accepts connections. Throws if it does not within 10 s.
  // The socket file alone is not enough: it appears at bind(), before listen(), and a connect in
  // between is refused (seen in CI); nbdkit writes its pidfile (-P) once it is listening.
  void start() {
    ::unlink(socket_.c_str());
    const std::string pidfile = dir_ + "/nbd.pid";
    ::unlink(pidfile.c_str());
    std::vector<std::string> argv = {"nbdkit", "-f", "--exit-with-parent", "-U", socket_, "-P", pidfile};
    argv.insert(argv.end(), args_.begin(), args_.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execvp("nbdkit", cargv.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    struct stat st {};
    while (::stat(pidfile.c_str(), &st) != 0 || st.st_size == 0) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("nbdkit exited at startup");
      }
      if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("nbdkit did not start");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // SIGKILL, as a crashed or killed server: connections drop without a goodbye.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::vector<std::string> args_;
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

}  // namespace ubtrfs::io::testing
