// Emergency shutdown (fs/shutdown.cpp) and the label (fs/label.cpp) through the Filesystem facade
// on a counting device (io/fault_device.h): after shutdown() returns not one write or flush reaches
// the image — not from operations, the commit thread, background writeback or unmount — every
// operation the kernel refuses fails with EIO, unmount completes, and the next mount holds what
// was fsynced and nothing of what was not.
//
// Rules named here: shutdown_writes_nothing_after_the_ioctl_and_fails_operations_with_eio,
// shutdown_during_concurrent_writes_writes_nothing_after_it_returns,
// shutdown_waits_for_the_write_in_flight_and_refuses_the_rest_of_the_commit,
// shutdown_sync_first_keeps_unsynced_data, set_label_is_in_every_superblock_copy_when_it_returns.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "fs/filesystem.h"
#include "io/block_device.h"
#include "io/fault_device.h"
#include "tests/io/temp_file.h"
#include "tree/format.h"
#include "tree/superblock.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

using namespace ubtrfs;
using namespace ubtrfs::fs;
namespace stdfs = std::filesystem;

namespace {

using test::device_options;
using test::err_of;
using test::fresh_image;
using test::kRootIno;
using test::make_file;
using test::mkfs_binary;
using test::seeded_bytes;

Result<std::unique_ptr<Filesystem>> mount_for_shutdown(io::BlockDevice& dev, bool writeback = false) {
  OpenOptions o = device_options(dev);
  o.writeback.enabled = writeback;
  o.writeback.interval_ms = 10;
  o.writeback.expire_ms = 1;
  o.writeback.thresh_bytes = 64 << 10;
  MountOptions m;
  m.commit_interval_s = 1;  // the commit thread is awake during the test
  return Filesystem::mount(o, m);
}

// The contents of `name` in the root (REQUIREs the lookup and the read).
std::vector<uint8_t> read_checked(Filesystem& f, const std::string& name) {
  auto st = f.lookup(kRootIno, name);
  REQUIRE(st);
  std::vector<uint8_t> out(static_cast<size_t>(st->st_size));
  auto n = f.read(st->st_ino, 0, out);
  REQUIRE(n);
  out.resize(*n);
  f.forget(st->st_ino, 1);
  return out;
}

// Passes I/O to `inner`, except that the write numbered `hold_at` (counted from 1 on this device)
// blocks inside write() until release(): a write the filesystem has issued and the device has not
// finished, as a commit's is when the shutdown arrives.
class HoldingDevice final : public io::BlockDevice {
 public:
  explicit HoldingDevice(io::BlockDevice& inner) : inner_(inner) {}
  uint64_t size() const override { return inner_.size(); }
  bool read_only() const override { return inner_.read_only(); }
  std::string name() const override { return "holding"; }
  Status read(uint64_t off, std::span<uint8_t> buf) override { return inner_.read(off, buf); }
  Status flush() override { return inner_.flush(); }
  Status write(uint64_t off, std::span<const uint8_t> buf) override {
    {
      std::unique_lock lk(mu_);
      if (++writes_ == hold_at_) {
        held_ = true;
        cv_.notify_all();
        cv_.wait(lk, [&] { return released_; });
      }
    }
    return inner_.write(off, buf);
  }
  void hold_write(uint64_t n) {
    std::lock_guard lk(mu_);
    hold_at_ = n;
  }
  uint64_t writes() {
    std::lock_guard lk(mu_);
    return writes_;
  }
  bool wait_held(std::chrono::milliseconds d) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, d, [&] { return held_; });
  }
  void release() {
    std::lock_guard lk(mu_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  io::BlockDevice& inner_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t writes_ = 0, hold_at_ = 0;
  bool held_ = false, released_ = false;
};

}  // namespace

TEST_CASE("shutdown_writes_nothing_after_the_ioctl_and_fails_operations_with_eio", "[shutdown]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);  // mkfs.ubtrfs of this build
  io::FaultInjectingDevice dev(*mem);
  const auto synced = seeded_bytes(300000, 1), unsynced = seeded_bytes(200000, 2), late = seeded_bytes(5000, 3);
  uint64_t writes_at_shutdown = 0, flushes_at_shutdown = 0;
  {
    auto mounted = mount_for_shutdown(dev, /*writeback=*/true);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    const uint64_t a = make_file(f, "synced", synced);
    REQUIRE(f.fsync(a, false));
    const uint64_t b = make_file(f, "unsynced", unsynced);
    REQUIRE(f.mkdir(kRootIno, "dir", 0755, Caller{}));

    REQUIRE(f.shutdown(ShutdownMode::kNoFlush, "the test"));
    CHECK(f.is_shutdown());
    writes_at_shutdown = dev.writes();
    flushes_at_shutdown = dev.flushes();

    CHECK(err_of(f.write(b, 0, late)) == EIO);
    CHECK(err_of(f.create(kRootIno, "new", S_IFREG | 0644, Caller{})) == EIO);
    CHECK(err_of(f.mkdir(kRootIno, "newdir", 0755, Caller{})) == EIO);
    SetAttr sa;
    sa.size = 1;
    CHECK(err_of(f.setattr(b, sa, Caller{})) == EIO);
    CHECK(err_of(f.fsync(b, false)) == EIO);
    CHECK(err_of(f.fsyncdir(kRootIno, false)) == EIO);
    std::vector<uint8_t> buf(100);
    CHECK(err_of(f.read(a, 0, buf)) == EIO);
    CHECK(err_of(f.lookup(kRootIno, "synced")) == EIO);
    CHECK(err_of(f.unlink(kRootIno, "synced")) == EIO);
    CHECK(err_of(f.rename(kRootIno, "synced", kRootIno, "moved", 0)) == EIO);
    CHECK(err_of(f.setxattr(a, "user.x", std::vector<uint8_t>{1}, 0)) == EIO);
    CHECK(err_of(f.set_label("x")) == EIO);
    CHECK(err_of(f.readdir(kRootIno, 0, false, [](const DirEntryOut&) { return true; })) == EIO);
    // statfs and getattr still answer.
    CHECK(f.statfs());
    CHECK(f.getattr(kRootIno));
    // Let the commit thread (commit=1s) and background writeback have their chances.
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    f.forget(a, 1);
    f.forget(b, 1);
    REQUIRE(f.unmount());  // completes, writes nothing
  }
  CHECK(dev.writes() == writes_at_shutdown);
  CHECK(dev.flushes() == flushes_at_shutdown);

  // The next mount: the fsynced file whole, nothing of what came after the fsync.
  auto again = mount_for_shutdown(dev);
  REQUIRE(again);
  CHECK(read_checked(**again, "synced") == synced);
  CHECK(err_of((*again)->lookup(kRootIno, "unsynced")) == ENOENT);
  CHECK(err_of((*again)->lookup(kRootIno, "dir")) == ENOENT);
  REQUIRE((*again)->unmount());
}

TEST_CASE("shutdown_during_concurrent_writes_writes_nothing_after_it_returns", "[shutdown]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  io::FaultInjectingDevice dev(*mem);
  const auto synced = seeded_bytes(100000, 4);
  uint64_t writes_at_shutdown = 0;
  {
    auto mounted = mount_for_shutdown(dev, /*writeback=*/true);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    const uint64_t a = make_file(f, "synced", synced);
    REQUIRE(f.fsync(a, false));
    // Writers and fsyncers race the shutdown; each stops at its first error, which must be EIO.
    std::atomic<bool> stop{false};
    std::atomic<int> bad_errors{0};
    std::mutex bad_mu;
    std::string bad_reason;  // the first error that was not EIO
    auto bad = [&](const Error& e) {
      ++bad_errors;
      std::lock_guard lk(bad_mu);
      if (bad_reason.empty()) bad_reason = fmt::format("errno {}: {}", e.err, e.message);
    };
    std::vector<std::thread> workers;
    for (int t = 0; t < 3; ++t) {
      workers.emplace_back([&, t] {
        auto st = f.create(kRootIno, "w" + std::to_string(t), S_IFREG | 0644, Caller{});
        if (!st) {
          if (st.error().err != EIO) bad(st.error());
          return;
        }
        const auto chunk = seeded_bytes(64 << 10, static_cast<uint8_t>(t));
        for (uint64_t off = 0; !stop.load(); off += chunk.size()) {
          auto n = f.write(st->st_ino, off % (8 << 20), chunk);
          Status s;
          if (n && t == 0 && (off / chunk.size()) % 16 == 0) s = f.fsync(st->st_ino, false);
          if (!n || !s) {
            const Error& e = !n ? n.error() : s.error();
            if (e.err != EIO) bad(e);
            break;
          }
        }
        f.forget(st->st_ino, 1);
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    REQUIRE(f.shutdown(ShutdownMode::kNoFlush, "the test"));
    writes_at_shutdown = dev.writes();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    stop.store(true);
    for (auto& w : workers) w.join();  // none hangs
    INFO(bad_reason);
    CHECK(bad_errors.load() == 0);
    f.forget(a, 1);
    REQUIRE(f.unmount());
  }
  CHECK(dev.writes() == writes_at_shutdown);
  auto again = mount_for_shutdown(dev);
  REQUIRE(again);
  CHECK(read_checked(**again, "synced") == synced);
  REQUIRE((*again)->unmount());
}

TEST_CASE("shutdown_waits_for_the_write_in_flight_and_refuses_the_rest_of_the_commit", "[shutdown]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  io::FaultInjectingDevice counted(*mem);
  HoldingDevice dev(counted);
  const auto old_data = seeded_bytes(100000, 6), new_data = seeded_bytes(100000, 7);
  {
    auto mounted = mount_for_shutdown(dev);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    const uint64_t a = make_file(f, "old", old_data);
    REQUIRE(f.fsync(a, false));
    const uint64_t b = make_file(f, "new", new_data);
    // The fsync writes the file's data (one extent), then its commit writes tree blocks: the device
    // sits on the second write, inside the commit, so the commit has more to write after it.
    dev.hold_write(dev.writes() + 2);
    Status fsync_result;
    std::thread syncer([&] { fsync_result = f.fsync(b, false); });
    REQUIRE(dev.wait_held(std::chrono::seconds(20)));
    std::atomic<bool> shut{false};
    std::thread shutter([&] {
      (void)f.shutdown(ShutdownMode::kNoFlush, "the test");
      shut.store(true);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK_FALSE(shut.load());  // the shutdown waits for the write the device is doing
    CHECK(f.is_shutdown());    // but operations already see it
    dev.release();
    shutter.join();
    const uint64_t writes_at_shutdown = counted.writes();
    syncer.join();
    // The commit's remaining writes (tree blocks, superblock) were refused: the fsync failed.
    CHECK(err_of(fsync_result) == EIO);
    f.forget(a, 1);
    f.forget(b, 1);
    REQUIRE(f.unmount());
    CHECK(counted.writes() == writes_at_shutdown);
  }
  // The image is the commit before: "old" whole, "new" absent.
  auto again = mount_for_shutdown(counted);
  REQUIRE(again);
  CHECK(read_checked(**again, "old") == old_data);
  CHECK(err_of((*again)->lookup(kRootIno, "new")) == ENOENT);
  REQUIRE((*again)->unmount());
}

TEST_CASE("shutdown_sync_first_keeps_unsynced_data", "[shutdown]") {
  auto mem = fresh_image();
  REQUIRE(mem != nullptr);
  io::FaultInjectingDevice dev(*mem);
  const auto data = seeded_bytes(150000, 5);
  {
    auto mounted = mount_for_shutdown(dev);
    REQUIRE(mounted);
    Filesystem& f = **mounted;
    const uint64_t a = make_file(f, "kept", data);
    REQUIRE(f.shutdown(ShutdownMode::kSyncFirst, "the test"));
    const uint64_t w = dev.writes();
    CHECK(err_of(f.write(a, 0, data)) == EIO);
    f.forget(a, 1);
    REQUIRE(f.unmount());
    CHECK(dev.writes() == w);
  }
  auto again = mount_for_shutdown(dev);
  REQUIRE(again);
  CHECK(read_checked(**again, "kept") == data);
  REQUIRE((*again)->unmount());
}

TEST_CASE("set_label_is_in_every_superblock_copy_when_it_returns", "[label]") {
  auto mem = fresh_image("-L before");
  REQUIRE(mem != nullptr);
  io::FaultInjectingDevice dev(*mem);
  auto label_at = [&](uint64_t off) {
    const Superblock sb = load<Superblock>(mem->bytes().data() + off);
    return std::string(sb.label, strnlen(sb.label, kLabelSize));
  };
  const uint64_t kMirror1 = 64ull << 20;
  REQUIRE(label_at(kSuperInfoOffset) == "before");
  REQUIRE(label_at(kMirror1) == "before");
  auto mounted = mount_for_shutdown(dev);
  REQUIRE(mounted);
  Filesystem& f = **mounted;
  CHECK(f.label().value() == "before");
  const std::string longest(255, 'x');
  REQUIRE(f.set_label(longest));
  // Durable now, before any unmount: every copy, checksummed, with a new generation.
  CHECK(label_at(kSuperInfoOffset) == longest);
  CHECK(label_at(kMirror1) == longest);
  CHECK(f.label().value() == longest);
  CHECK(err_of(f.set_label(std::string(256, 'y'))) == EINVAL);
  CHECK(err_of(f.set_label(std::string("a\0b", 3))) == EINVAL);
  REQUIRE(f.set_label(""));
  CHECK(label_at(kSuperInfoOffset).empty());
  REQUIRE(f.set_label("after"));
  REQUIRE(f.unmount());
  mounted->reset();
  auto again = mount_for_shutdown(dev);
  REQUIRE(again);
  CHECK((*again)->label().value() == "after");
  REQUIRE((*again)->unmount());
}
