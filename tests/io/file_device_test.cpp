// FileDevice through open_device(): exact I/O, range checks, read-only mode, errors, threads.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <optional>
#include <cstdint>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::pattern;
using ubtrfs::io::testing::TempFile;

TEST_CASE("file device reports size, name and fd", "[file_device]") {
  TempFile f(1 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  CHECK((*dev)->size() == (1u << 20));
  CHECK((*dev)->name() == f.path());
  CHECK_FALSE((*dev)->read_only());
  CHECK((*dev)->fd() >= 0);
}

TEST_CASE("file device writes and reads back exactly", "[file_device]") {
  TempFile f(8 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  BlockDevice& d = **dev;

  const auto a = pattern(4096, 1);
  const auto b = pattern(3 << 20, 2);  // several MiB in one call
  const auto c = pattern(17, 3);       // unaligned
  REQUIRE(d.write(0, a));
  REQUIRE(d.write(1 << 20, b));
  REQUIRE(d.write((8 << 20) - 17, c));  // ends exactly at the end
  REQUIRE(d.flush());

  std::vector<uint8_t> ra(a.size()), rb(b.size()), rc(c.size());
  REQUIRE(d.read(0, ra));
  REQUIRE(d.read(1 << 20, rb));
  REQUIRE(d.read((8 << 20) - 17, rc));
  CHECK((ra == a));
  CHECK((rb == b));
  CHECK((rc == c));

  // Untouched bytes read as zero (sparse file).
  std::vector<uint8_t> gap(4096, 0xAA);
  REQUIRE(d.read(8192, gap));
  CHECK((gap == std::vector<uint8_t>(4096, 0)));

  // Zero-length transfers at the very end are fine.
  CHECK(d.read(8 << 20, {}));
  CHECK(d.write(8 << 20, {}));
}

TEST_CASE("file device data survives reopen", "[file_device]") {
  TempFile f(1 << 20);
  const auto data = pattern(65536, 9);
  {
    auto dev = open_device(f.path(), OpenMode::kReadWrite);
    REQUIRE(dev);
    REQUIRE((*dev)->write(65536, data));
    REQUIRE((*dev)->flush());
  }
  auto dev = open_device(f.path(), OpenMode::kReadOnly);
  REQUIRE(dev);
  std::vector<uint8_t> back(data.size());
  REQUIRE((*dev)->read(65536, back));
  CHECK((back == data));
}

TEST_CASE("read-only file device refuses writes with EROFS", "[file_device]") {
  TempFile f(1 << 20);
  const auto data = pattern(4096, 4);
  {
    auto dev = open_device(f.path(), OpenMode::kReadWrite);
    REQUIRE(dev);
    REQUIRE((*dev)->write(0, data));
  }
  auto dev = open_device(f.path(), OpenMode::kReadOnly);
  REQUIRE(dev);
  CHECK((*dev)->read_only());
  auto st = (*dev)->write(0, pattern(4096, 5));
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EROFS);
  CHECK_THAT(st.error().message, Catch::Contains(f.path()) && Catch::Contains("offset 0"));
  CHECK((*dev)->flush());
  std::vector<uint8_t> back(4096);
  REQUIRE((*dev)->read(0, back));
  CHECK((back == data));  // not a byte changed
}

TEST_CASE("open_device errors", "[file_device]") {
  SECTION("missing file is ENOENT and is not created") {
    const std::string path = "/tmp/ubtrfs-io-test-does-not-exist-4711";
    auto dev = open_device(path, OpenMode::kReadWrite);
    REQUIRE_FALSE(dev);
    CHECK(dev.error().err == ENOENT);
    CHECK_THAT(dev.error().message, Catch::Contains(path));
    struct stat st {};
    CHECK(::stat(path.c_str(), &st) != 0);
  }
  SECTION("directory is EISDIR") {
    auto dev = open_device("/tmp", OpenMode::kReadOnly);
    REQUIRE_FALSE(dev);
    CHECK(dev.error().err == EISDIR);
  }
  SECTION("character device is refused") {
    auto dev = open_device("/dev/null", OpenMode::kReadOnly);
    REQUIRE_FALSE(dev);
    CHECK(dev.error().err == EINVAL);
  }
}

TEST_CASE("file device range checks are EINVAL and name the offset", "[file_device]") {
  TempFile f(1 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  BlockDevice& d = **dev;
  std::vector<uint8_t> buf(4096);

  auto r1 = d.read((1 << 20) - 100, buf);
  REQUIRE_FALSE(r1);
  CHECK(r1.error().err == EINVAL);
  CHECK_THAT(r1.error().message, Catch::Contains("offset 1048476"));

  auto w1 = d.write(1 << 20, buf);
  REQUIRE_FALSE(w1);
  CHECK(w1.error().err == EINVAL);

  // Offsets that would overflow off + len must not wrap around into range.
  auto w2 = d.write(UINT64_MAX - 10, buf);
  REQUIRE_FALSE(w2);
  CHECK(w2.error().err == EINVAL);
  auto r2 = d.read(UINT64_MAX, buf);
  REQUIRE_FALSE(r2);
  CHECK(r2.error().err == EINVAL);

  // The file did not grow.
  struct stat st {};
  REQUIRE(::stat(f.path().c_str(), &st) == 0);
  CHECK(st.st_size == (1 << 20));
}

TEST_CASE("file device reports a file truncated under it as a short read", "[file_device]") {
  TempFile f(1 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  REQUIRE(::truncate(f.path().c_str(), 1 << 19) == 0);
  std::vector<uint8_t> buf(8192);
  auto st = (*dev)->read((1 << 19) - 4096, buf);  // straddles the new end
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EIO);
  CHECK_THAT(st.error().message, Catch::Contains("short read") && Catch::Contains("offset 524288"));
}

TEST_CASE("file device serves concurrent preads and pwrites", "[file_device]") {
  constexpr int kThreads = 4;
  constexpr int kBlocksPerThread = 64;
  constexpr size_t kBlock = 4096;
  TempFile f(kThreads * kBlocksPerThread * kBlock + kBlock);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  BlockDevice& d = **dev;

  // A stable block every reader checks while writers work elsewhere.
  const uint64_t stable_off = kThreads * kBlocksPerThread * kBlock;
  const auto stable = pattern(kBlock, 777);
  REQUIRE(d.write(stable_off, stable));

  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> back(kBlock);
      for (int i = 0; i < kBlocksPerThread; ++i) {
        // Interleaved ownership: block j belongs to thread j % kThreads.
        const uint64_t off = static_cast<uint64_t>(i * kThreads + t) * kBlock;
        const auto data = pattern(kBlock, static_cast<uint32_t>(i * kThreads + t));
        if (!d.write(off, data)) ++failures;
        if (!d.read(off, back) || back != data) ++failures;
        if (!d.read(stable_off, back) || back != stable) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);

  std::vector<uint8_t> back(kBlock);
  for (int j = 0; j < kThreads * kBlocksPerThread; ++j) {
    REQUIRE(d.read(static_cast<uint64_t>(j) * kBlock, back));
    CHECK((back == pattern(kBlock, static_cast<uint32_t>(j))));
  }
}

namespace {

// Runs a shell command with the sbin directories on PATH; returns its stdout, or nullopt on failure.
std::optional<std::string> capture(const std::string& cmd) {
  const std::string full = "PATH=\"$PATH:/usr/sbin:/sbin\" " + cmd + " 2>/dev/null";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (::pclose(p) != 0) return std::nullopt;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// A loop device over an image, with an optional mount; everything is undone by the destructor.
struct LoopSetup {
  std::string dev;
  std::string mount_dir;
  ~LoopSetup() {
    if (!mount_dir.empty()) {
      (void)capture("umount '" + mount_dir + "'");
      ::rmdir(mount_dir.c_str());
    }
    if (!dev.empty()) (void)capture("losetup -d '" + dev + "'");
  }
};

}  // namespace

TEST_CASE("block device: size, I/O, and refusal while mounted", "[file_device][block]") {
  if (::geteuid() != 0) {
    WARN("not root: loop block device test skipped");
    return;
  }
  TempFile f(128 << 20);
  LoopSetup loop;
  auto dev_path = capture("losetup -f --show '" + f.path() + "'");
  if (!dev_path || dev_path->empty()) {
    WARN("losetup unavailable: loop block device test skipped");
    return;
  }
  loop.dev = *dev_path;

  {
    auto dev = open_device(loop.dev, OpenMode::kReadWrite);
    REQUIRE(dev);
    CHECK((*dev)->size() == (128u << 20));  // BLKGETSIZE64
    CHECK((*dev)->fd() >= 0);
    const auto data = pattern(65536, 5);
    REQUIRE((*dev)->write(1 << 20, data));
    REQUIRE((*dev)->flush());  // fsync on a block device
    std::vector<uint8_t> back(data.size());
    REQUIRE((*dev)->read(1 << 20, back));
    CHECK((back == data));
    // O_EXCL: a second read-write opener of the same block device is refused.
    auto second = open_device(loop.dev, OpenMode::kReadWrite);
    REQUIRE_FALSE(second);
    CHECK(second.error().err == EBUSY);
  }

  if (!capture("mkfs.btrfs -q -f '" + loop.dev + "'")) {
    WARN("mkfs.btrfs failed on the loop device: mounted case skipped");
    return;
  }
  char tmpl[] = "/tmp/ubtrfs-io-test-mnt-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  loop.mount_dir = tmpl;
  if (!capture("mount -t btrfs '" + loop.dev + "' '" + loop.mount_dir + "'")) {
    ::rmdir(loop.mount_dir.c_str());
    loop.mount_dir.clear();
    WARN("cannot mount btrfs here: mounted case skipped");
    return;
  }
  for (OpenMode mode : {OpenMode::kReadWrite, OpenMode::kReadOnly}) {
    auto dev = open_device(loop.dev, mode);
    REQUIRE_FALSE(dev);
    CHECK(dev.error().err == EBUSY);
    CHECK_THAT(dev.error().message, Catch::Contains(loop.dev) && Catch::Contains("mounted on"));
  }
  // The image behind the mounted loop device is refused too.
  auto img = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE_FALSE(img);
  CHECK(img.error().err == EBUSY);
  CHECK_THAT(img.error().message, Catch::Contains(loop.dev));
}
