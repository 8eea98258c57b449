// The daemon's recent messages, kept in memory for `ubtrfs-inspect log MNT` (the "log" payload of
// the control channel, tools/common/control_protocol.h): wherever the log lines go (syslog, the
// journal, a file, nowhere after detaching), the last kLogRingCapacity records at info level and
// above stay readable while the filesystem is mounted.
//
// Owns: the ring (a spdlog sink at level info that the default logger writes through) and its JSON
// form {"capacity": N, "dropped": D, "records": [{"time", "level", "message"}, ...]}, oldest
// record first; "time" is UTC wall-clock time "YYYY-mm-ddTHH:MM:SS.mmmZ", "level" one of info,
// warning, error, critical; "dropped" counts the records pushed out since the daemon started.
// Invariants: at most capacity records, each message at most kLogRingMessageMax bytes (longer
// ones are cut and end in "..."), so the payload stays bounded (about 1 MiB).
// Thread safety: spdlog's base_sink mutex guards the ring; to_json() takes it for a copy only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>

#include <spdlog/sinks/base_sink.h>

namespace ubtrfs::daemon {

inline constexpr size_t kLogRingCapacity = 512;
inline constexpr size_t kLogRingMessageMax = 2048;

class LogRing final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit LogRing(size_t capacity = kLogRingCapacity);
  std::string to_json();

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  struct Record {
    std::chrono::system_clock::time_point time;
    spdlog::level::level_enum level;
    std::string message;
  };
  const size_t capacity_;
  std::deque<Record> records_;  // GUARDED_BY(mutex_)
  uint64_t dropped_ = 0;        // GUARDED_BY(mutex_)
};

}  // namespace ubtrfs::daemon
