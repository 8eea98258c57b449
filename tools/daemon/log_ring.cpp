// The in-memory ring of recent log records; see log_ring.h.
#include "tools/daemon/log_ring.h"

#include <ctime>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ubtrfs::daemon {

namespace {

std::string utc_time(std::chrono::system_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const time_t secs = static_cast<time_t>(ms / 1000);
  tm utc;
  gmtime_r(&secs, &utc);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03d}Z", buf, static_cast<int>(ms % 1000));
}

}  // namespace

LogRing::LogRing(size_t capacity) : capacity_(capacity) { set_level(spdlog::level::info); }

void LogRing::sink_it_(const spdlog::details::log_msg& msg) {
  std::string text(msg.payload.data(), msg.payload.size());
  if (text.size() > kLogRingMessageMax) {
    text.resize(kLogRingMessageMax - 3);
    text += "...";
  }
  if (records_.size() == capacity_) {
    records_.pop_front();
    ++dropped_;
  }
  records_.push_back(Record{msg.time, msg.level, std::move(text)});
}

std::string LogRing::to_json() {
  std::deque<Record> copy;
  uint64_t dropped;
  {
    std::lock_guard lk(mutex_);
    copy = records_;
    dropped = dropped_;
  }
  nlohmann::ordered_json j;
  j["capacity"] = capacity_;
  j["dropped"] = dropped;
  auto& records = j["records"] = nlohmann::ordered_json::array();
  for (const auto& r : copy) {
    const auto level = spdlog::level::to_string_view(r.level);
    records.push_back({{"time", utc_time(r.time)},
                       {"level", std::string(level.data(), level.size())},
                       {"message", r.message}});
  }
  // A cut message may end inside a UTF-8 sequence: replace, never throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace ubtrfs::daemon
