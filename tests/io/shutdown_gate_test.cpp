// ShutdownGate / GatedDevice (io/shutdown_gate.h): after shut_down() returns, no write and no
// flush reaches the device by either path (BlockDevice::write, the io_uring writer on fd()), and
// shut_down() waits for the writes already in flight instead of cutting them.
//
// Rules named here: shutdown_gate_refuses_every_write_and_flush_after_shutdown,
// shutdown_gate_waits_for_writes_in_flight, uring_writer_passes_the_shutdown_gate.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "io/shutdown_gate.h"
#include "io/uring_writer.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::pattern;
using ubtrfs::io::testing::TempFile;

TEST_CASE("shutdown_gate_refuses_every_write_and_flush_after_shutdown", "[shutdown]") {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  auto fault = std::make_shared<FaultInjectingDevice>(*mem);
  GatedDevice dev(fault);
  REQUIRE(dev.shutdown_gate() != nullptr);
  const auto a = pattern(4096, 1);
  REQUIRE(dev.write(0, a));
  REQUIRE(dev.flush());
  CHECK(fault->writes() == 1);
  CHECK(fault->flushes() == 1);

  dev.shutdown_gate()->shut_down();
  CHECK(dev.shutdown_gate()->is_shut());
  const auto b = pattern(4096, 2);
  auto w = dev.write(8192, b);
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  auto f = dev.flush();
  REQUIRE_FALSE(f);
  CHECK(f.error().err == EIO);
  CHECK(fault->writes() == 1);  // nothing reached the device below the gate
  CHECK(fault->flushes() == 1);
  CHECK(dev.shutdown_gate()->refused() == 2);
  // Reads still pass (unmount after a shutdown may read), and see only the write before it.
  std::vector<uint8_t> back(4096);
  REQUIRE(dev.read(0, back));
  CHECK(back == a);
  REQUIRE(dev.read(8192, back));
  CHECK(back == std::vector<uint8_t>(4096, 0));
  // Idempotent.
  dev.shutdown_gate()->shut_down();
  CHECK_FALSE(dev.write(0, a));
}

TEST_CASE("shutdown_gate_waits_for_writes_in_flight", "[shutdown]") {
  ShutdownGate gate;
  REQUIRE(gate.enter());
  std::atomic<bool> returned{false};
  std::thread t([&] {
    gate.shut_down();
    returned.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK_FALSE(returned.load());  // an entered write is waited for
  CHECK_FALSE(gate.enter());     // but nothing new gets in meanwhile
  gate.leave();
  t.join();
  CHECK(returned.load());
  CHECK_FALSE(gate.enter());
}

TEST_CASE("uring_writer_passes_the_shutdown_gate", "[shutdown][uring]") {
  TempFile tf(1 << 20);
  auto file = open_device(tf.path(), OpenMode::kReadWrite);
  REQUIRE(file);
  std::shared_ptr<BlockDevice> inner(std::move(*file));
  GatedDevice dev(inner);
  REQUIRE(dev.fd() >= 0);  // the writer submits on the inner fd, bypassing GatedDevice::write
  UringWriter writer(dev);
  const auto a = pattern(8192, 3), b = pattern(8192, 4);
  std::vector<WriteRequest> first{{0, a, 1}};
  writer.submit(first);
  REQUIRE(writer.wait_all());

  dev.shutdown_gate()->shut_down();
  std::vector<WriteRequest> second{{65536, b, 7}, {131072, b, 8}};
  writer.submit(second);
  std::vector<uint64_t> failed;
  auto st = writer.wait_all(&failed);
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EIO);
  CHECK(failed.size() == 2);
  std::vector<uint8_t> back(8192);
  REQUIRE(inner->read(0, back));
  CHECK(back == a);
  REQUIRE(inner->read(65536, back));
  CHECK(back == std::vector<uint8_t>(8192, 0));  // refused: the image does not have it
  REQUIRE(inner->read(131072, back));
  CHECK(back == std::vector<uint8_t>(8192, 0));
}

// write_many on a gated device (the path the io_uring writer's fallback takes for devices without
// a descriptor, NBD among them): each range passes the gate like a write().
TEST_CASE("gated write_many passes the shutdown gate range by range", "[shutdown]") {
  auto mem = std::make_shared<MemoryDevice>(1 << 20);
  GatedDevice dev(mem);
  const auto a = pattern(4096, 1);
  std::vector<DeviceWrite> ws = {{0, a}, {8192, a}, {65536, a}};
  for (auto& r : dev.write_many(ws)) CHECK(r);
  std::vector<uint8_t> back(4096);
  REQUIRE(mem->read(65536, back));
  CHECK((back == a));
  dev.shutdown_gate()->shut_down();
  const auto b = pattern(4096, 2);
  std::vector<DeviceWrite> ws2 = {{0, b}, {8192, b}};
  for (auto& r : dev.write_many(ws2)) {
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EIO);
  }
  CHECK(dev.shutdown_gate()->refused() == 2);
  REQUIRE(mem->read(0, back));
  CHECK((back == a));
}
