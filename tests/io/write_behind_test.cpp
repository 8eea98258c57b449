// WriteBehindDevice (io/write_behind.h): queued data is seen by every later call as if written, a
// flush returns only when it is on the device, a failed queued write fails every later flush, and
// the queue never holds more than its bound.
//
// Rules named here: write_behind_reads_wait_for_a_queued_overlapping_write,
// write_behind_sync_write_is_not_overtaken_by_a_queued_one, write_behind_flush_waits_for_the_queue,
// write_behind_failed_write_fails_every_later_flush, write_behind_queue_stays_under_its_bound,
// write_behind_destructor_writes_what_is_queued.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "io/write_behind.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::Status;
using namespace std::chrono_literals;
using ubtrfs::io::testing::pattern;

namespace {

// A memory device whose writes wait while it is held: what the worker is doing can be frozen.
class HoldableDevice final : public BlockDevice {
 public:
  explicit HoldableDevice(uint64_t size) : mem_(size) {}
  uint64_t size() const override { return mem_.size(); }
  bool read_only() const override { return false; }
  std::string name() const override { return "holdable"; }
  Status read(uint64_t off, std::span<uint8_t> buf) override { return mem_.read(off, buf); }
  Status write(uint64_t off, std::span<const uint8_t> buf) override {
    {
      std::unique_lock lk(mu_);
      ++writes_started_;
      cv_.notify_all();
      cv_.wait(lk, [&] { return !held_; });
    }
    return mem_.write(off, buf);
  }
  Status flush() override {
    flushes_.fetch_add(1);
    return {};
  }
  void hold() {
    std::lock_guard lk(mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lk(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Waits until at least n writes have reached write() (held or not).
  void wait_started(uint64_t n) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return writes_started_ >= n; });
  }
  uint64_t flushes() const { return flushes_.load(); }
  MemoryDevice& mem() { return mem_; }

 private:
  MemoryDevice mem_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool held_ = false;
  uint64_t writes_started_ = 0;
  std::atomic<uint64_t> flushes_{0};
};

std::vector<uint8_t> read_back(BlockDevice& dev, uint64_t off, size_t len) {
  std::vector<uint8_t> b(len);
  REQUIRE(dev.read(off, b));
  return b;
}

}  // namespace

TEST_CASE("write_behind_reads_wait_for_a_queued_overlapping_write", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(4 << 20);
  WriteBehindDevice dev(inner);
  inner->hold();
  const auto data = pattern(65536, 7);
  const uint64_t offs[] = {1 << 20};
  REQUIRE(dev.write_behind(offs, std::vector<uint8_t>(data)));
  inner->wait_started(1);  // the worker is inside the device's write, held there
  // A read elsewhere is not held up by the queue.
  CHECK(read_back(dev, 0, 4096) == std::vector<uint8_t>(4096, 0));
  // A read overlapping the queued range by one sector waits for it.
  auto reader = std::async(std::launch::async, [&] { return read_back(dev, (1 << 20) + 61440, 8192); });
  CHECK(reader.wait_for(100ms) == std::future_status::timeout);
  inner->release();
  const auto got = reader.get();
  CHECK(std::equal(got.begin(), got.begin() + 4096, data.begin() + 61440));
  CHECK(std::all_of(got.begin() + 4096, got.end(), [](uint8_t b) { return b == 0; }));
  CHECK(dev.stats().overlap_waits == 1);
  CHECK(dev.stats().writes == 1);
}

TEST_CASE("write_behind_sync_write_is_not_overtaken_by_a_queued_one", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(4 << 20);
  WriteBehindDevice dev(inner);
  inner->hold();
  const uint64_t offs[] = {8192};
  REQUIRE(dev.write_behind(offs, pattern(4096, 1)));
  inner->wait_started(1);
  const auto newer = pattern(4096, 2);
  // The in-place write (a nocow overwrite, a scrub repair) of the same range waits for the queued
  // one, so the newer bytes land last.
  auto writer = std::async(std::launch::async, [&] { return dev.write(8192, newer).has_value(); });
  CHECK(writer.wait_for(100ms) == std::future_status::timeout);
  inner->release();
  CHECK(writer.get());
  CHECK(read_back(inner->mem(), 8192, 4096) == newer);
}

TEST_CASE("write_behind_flush_waits_for_the_queue", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(8 << 20);
  WriteBehindDevice dev(inner);
  inner->hold();
  // Two copies of one range (DUP data): both are on the device when flush returns.
  const auto data = pattern(1 << 20, 3);
  const uint64_t offs[] = {0, 4 << 20};
  REQUIRE(dev.write_behind(offs, std::vector<uint8_t>(data)));
  auto flusher = std::async(std::launch::async, [&] { return dev.flush().has_value(); });
  CHECK(flusher.wait_for(100ms) == std::future_status::timeout);
  CHECK(inner->flushes() == 0);  // the device flush comes after the queued writes, never before
  inner->release();
  CHECK(flusher.get());
  CHECK(inner->flushes() == 1);
  CHECK(read_back(inner->mem(), 0, data.size()) == data);
  CHECK(read_back(inner->mem(), 4 << 20, data.size()) == data);
  CHECK(dev.stats().bytes == 2 * data.size());
}

TEST_CASE("write_behind_failed_write_fails_every_later_flush", "[write_behind]") {
  MemoryDevice mem(4 << 20);
  auto fault = std::make_shared<FaultInjectingDevice>(mem);
  fault->fail_range(1 << 20, (1 << 20) + 4096, FaultOps::kWrite);
  WriteBehindDevice dev(fault);
  const uint64_t good[] = {0}, bad[] = {1 << 20};
  REQUIRE(dev.write_behind(good, pattern(4096, 1)));
  REQUIRE(dev.write_behind(bad, pattern(4096, 2)));
  auto f1 = dev.flush();
  REQUIRE_FALSE(f1);
  CHECK(f1.error().err == EIO);
  CHECK(f1.error().message.find("offset 1048576 length 4096") != std::string::npos);
  CHECK(fault->flushes() == 0);  // a flush after lost data never reaches the device
  // Sticky: the trees may already point at the lost data, so no later commit may succeed.
  fault->clear_faults();
  CHECK_FALSE(dev.flush());
  const uint64_t other[] = {2 << 20};
  auto w = dev.write_behind(other, pattern(4096, 3));
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  CHECK(dev.stats().failed == 1);
  CHECK(read_back(mem, 0, 4096) == pattern(4096, 1));  // the good write did land
}

TEST_CASE("write_behind_queue_stays_under_its_bound", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(16 << 20);
  constexpr uint64_t kBuf = 1 << 20;
  WriteBehindDevice dev(inner, 2 * kBuf);
  inner->hold();
  const uint64_t o0[] = {0}, o1[] = {kBuf}, o2[] = {2 * kBuf};
  REQUIRE(dev.write_behind(o0, pattern(kBuf, 1)));
  REQUIRE(dev.write_behind(o1, pattern(kBuf, 2)));
  // The third buffer does not fit until the worker finishes one.
  auto third = std::async(std::launch::async, [&] { return dev.write_behind(o2, pattern(kBuf, 3)).has_value(); });
  CHECK(third.wait_for(100ms) == std::future_status::timeout);
  inner->release();
  CHECK(third.get());
  REQUIRE(dev.flush());
  const WriteBehindStats st = dev.stats();
  CHECK(st.producer_waits == 1);
  CHECK(st.max_queued_bytes <= 2 * kBuf);
  CHECK(read_back(inner->mem(), 2 * kBuf, kBuf) == pattern(kBuf, 3));
  // Buffers come back through the pool with their capacity.
  auto b = dev.take_buffer();
  CHECK(b.empty());
  CHECK(b.capacity() >= kBuf);
}

TEST_CASE("write_behind_destructor_writes_what_is_queued", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(4 << 20);
  {
    WriteBehindDevice dev(inner);
    const uint64_t offs[] = {4096};
    REQUIRE(dev.write_behind(offs, pattern(4096, 9)));
  }
  CHECK(read_back(inner->mem(), 4096, 4096) == pattern(4096, 9));
}

TEST_CASE("write_behind_refuses_a_range_past_the_end", "[write_behind]") {
  auto inner = std::make_shared<HoldableDevice>(1 << 20);
  WriteBehindDevice dev(inner);
  const uint64_t offs[] = {(1 << 20) - 2048};
  auto w = dev.write_behind(offs, pattern(4096, 1));
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EINVAL);
  CHECK(dev.stats().writes == 0);
}
