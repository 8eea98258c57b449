// UringWriter: batched writes read back through the device, the synchronous fallback, error
// collection, and the completion arithmetic behind short-write resubmission.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "io/block_device.h"
#include "io/fault_device.h"
#include "io/uring_writer.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::pattern;
using ubtrfs::io::testing::TempFile;

namespace {

// A device whose fd is opened read-only although it claims to be writable, so io_uring itself
// reports the failure (EBADF) and the completion path must turn it into an error.
class WrongFdDevice final : public BlockDevice {
 public:
  explicit WrongFdDevice(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~WrongFdDevice() override { ::close(fd_); }
  uint64_t size() const override { return 1 << 20; }
  bool read_only() const override { return false; }
  std::string name() const override { return "wrongfd"; }
  ubtrfs::Status read(uint64_t, std::span<uint8_t>) override { return {}; }
  ubtrfs::Status write(uint64_t, std::span<const uint8_t>) override { return {}; }
  ubtrfs::Status flush() override { return {}; }
  int fd() const override { return fd_; }

 private:
  int fd_;
};

void warn_if_no_uring(const UringWriter& w) {
  if (!w.uses_uring()) WARN("io_uring is unavailable here: only the synchronous fallback was exercised");
}

}  // namespace

TEST_CASE("uring writer: many batched writes read back exactly", "[uring]") {
  constexpr size_t kBlock = 4096;
  constexpr size_t kBlocks = 1024;
  const unsigned depth = GENERATE(1u, 8u, 64u);
  TempFile f(kBlocks * kBlock);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);

  // Distinct blocks in shuffled order, sent as batches of varying size.
  std::vector<size_t> order(kBlocks);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(42));
  std::vector<std::vector<uint8_t>> bufs(kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) bufs[i] = pattern(kBlock, static_cast<uint32_t>(i + 1));

  UringWriter w(**dev, depth);
  CHECK(w.queue_depth() == depth);
  warn_if_no_uring(w);
  size_t pos = 0, batch = 1;
  while (pos < kBlocks) {
    std::vector<WriteRequest> reqs;
    for (size_t k = 0; k < batch && pos < kBlocks; ++k, ++pos)
      reqs.push_back({order[pos] * kBlock, bufs[order[pos]]});
    w.submit(reqs);
    batch = batch * 2 % 97 + 1;
  }
  REQUIRE(w.wait_all());
  const UringWriterStats s = w.stats();
  CHECK(s.writes_completed == kBlocks);
  CHECK(s.bytes_written == kBlocks * kBlock);
  CHECK(s.errors == 0);
  if (w.uses_uring()) CHECK(s.submit_calls > 0);

  REQUIRE((*dev)->flush());
  std::vector<uint8_t> back(kBlock);
  size_t mismatches = 0;
  for (size_t i = 0; i < kBlocks; ++i) {
    REQUIRE((*dev)->read(i * kBlock, back));
    mismatches += back != bufs[i];
  }
  CHECK(mismatches == 0);
}

TEST_CASE("uring writer: large writes, several windows, destructor waits", "[uring]") {
  TempFile f(16 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  const auto big = pattern(5 << 20, 11);
  const auto small = pattern(100, 12);
  const auto last = pattern(8192, 13);
  {
    UringWriter w(**dev, 4);
    warn_if_no_uring(w);
    const WriteRequest r1[] = {{1 << 20, big}, {7 << 20, small}};
    w.submit(r1);
    REQUIRE(w.wait_all());
    REQUIRE(w.wait_all());  // an empty window succeeds
    CHECK(w.stats().writes_completed == 2);
    const WriteRequest r2[] = {{(16 << 20) - 8192, last}, {0, {}}};
    w.submit(r2);
    // No wait_all: the destructor must finish the write before the buffers go away.
  }
  std::vector<uint8_t> b1(big.size()), b2(small.size()), b3(last.size());
  REQUIRE((*dev)->read(1 << 20, b1));
  REQUIRE((*dev)->read(7 << 20, b2));
  REQUIRE((*dev)->read((16 << 20) - 8192, b3));
  CHECK((b1 == big));
  CHECK((b2 == small));
  CHECK((b3 == last));
}

TEST_CASE("uring writer: invalid requests are reported, valid ones still land", "[uring]") {
  TempFile f(1 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadWrite);
  REQUIRE(dev);
  const auto good = pattern(4096, 21);
  const auto bad = pattern(4096, 22);
  UringWriter w(**dev);
  const WriteRequest reqs[] = {{(1 << 20) - 100, bad}, {4096, good}, {UINT64_MAX - 5, bad}};
  w.submit(reqs);
  auto st = w.wait_all();
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EINVAL);
  CHECK_THAT(st.error().message, Catch::Contains("offset 1048476") && Catch::Contains("1 more"));
  CHECK(w.stats().errors == 2);
  std::vector<uint8_t> back(4096);
  REQUIRE((*dev)->read(4096, back));
  CHECK((back == good));
  // Errors belong to one window: the next one starts clean.
  const WriteRequest again[] = {{8192, good}};
  w.submit(again);
  CHECK(w.wait_all());
}

TEST_CASE("uring writer: read-only device is EROFS", "[uring]") {
  TempFile f(1 << 20);
  auto dev = open_device(f.path(), OpenMode::kReadOnly);
  REQUIRE(dev);
  const auto data = pattern(4096, 31);
  UringWriter w(**dev);
  const WriteRequest reqs[] = {{0, data}};
  w.submit(reqs);
  auto st = w.wait_all();
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EROFS);
  std::vector<uint8_t> back(4096);
  REQUIRE((*dev)->read(0, back));
  CHECK((back == std::vector<uint8_t>(4096, 0)));
}

TEST_CASE("uring writer: a failing completion becomes an error", "[uring]") {
  TempFile f(1 << 20);
  WrongFdDevice dev(f.path());
  REQUIRE(dev.fd() >= 0);
  UringWriter w(dev, 8);
  if (!w.uses_uring()) {
    WARN("io_uring is unavailable here: completion errors not exercised");
    CHECK(w.wait_all());
    return;
  }
  const auto data = pattern(4096, 41);
  std::vector<WriteRequest> reqs;
  for (int i = 0; i < 20; ++i) reqs.push_back({static_cast<uint64_t>(i) * 4096, data});
  w.submit(reqs);
  auto st = w.wait_all();
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EBADF);
  CHECK_THAT(st.error().message, Catch::Contains("wrongfd") && Catch::Contains("19 more"));
  CHECK(w.stats().errors == 20);
  CHECK(w.stats().writes_completed == 0);
}

TEST_CASE("uring writer falls back to BlockDevice::write on a memory device", "[uring]") {
  MemoryDevice dev(1 << 20);
  UringWriter w(dev, 16);
  CHECK_FALSE(w.uses_uring());
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<WriteRequest> reqs;
  for (uint32_t i = 0; i < 100; ++i) bufs.push_back(pattern(4096 + i, i));
  for (uint32_t i = 0; i < 100; ++i) reqs.push_back({i * 8192ull, bufs[i]});
  w.submit(reqs);
  REQUIRE(w.wait_all());
  CHECK(w.stats().writes_completed == 100);
  CHECK(w.stats().submit_calls == 0);
  for (uint32_t i = 0; i < 100; ++i)
    CHECK(std::equal(bufs[i].begin(), bufs[i].end(), dev.bytes().begin() + i * 8192));
}

TEST_CASE("uring writer fallback reports device errors at wait_all", "[uring]") {
  MemoryDevice mem(1 << 20);
  FaultInjectingDevice dev(mem);
  dev.fail_nth_write(2);
  UringWriter w(dev);
  CHECK_FALSE(w.uses_uring());
  const auto data = pattern(4096, 51);
  const WriteRequest reqs[] = {{0, data}, {4096, data}, {8192, data}};
  w.submit(reqs);
  auto st = w.wait_all();
  REQUIRE_FALSE(st);
  CHECK(st.error().err == EIO);
  CHECK(dev.writes() == 3);
  CHECK(std::equal(data.begin(), data.end(), mem.bytes().begin() + 8192));
  CHECK(mem.bytes()[4096] == 0);
}

TEST_CASE("completion arithmetic: short writes advance and resubmit", "[uring]") {
  using namespace ubtrfs::io::detail;
  std::vector<uint8_t> buf(10000);
  WriteProgress w{1000, buf.data(), buf.size()};

  CHECK(complete_write(w, 10000, 4096) == CompletionAction::kResubmit);  // short
  CHECK(w.offset == 5096);
  CHECK(w.data == buf.data() + 4096);
  CHECK(w.length == 5904);

  CHECK(complete_write(w, 5904, -EINTR) == CompletionAction::kResubmit);  // transient: unchanged
  CHECK(complete_write(w, 5904, -EAGAIN) == CompletionAction::kResubmit);
  CHECK(w.length == 5904);

  CHECK(complete_write(w, 5904, 5904) == CompletionAction::kDone);
  CHECK(w.length == 0);
  CHECK(w.offset == 11000);

  WriteProgress z{0, buf.data(), 10};
  CHECK(complete_write(z, 10, 0) == CompletionAction::kFailed);  // no progress is not retried forever
  CHECK(complete_write(z, 10, -EIO) == CompletionAction::kFailed);
  CHECK(complete_write(z, 10, -ENOSPC) == CompletionAction::kFailed);
  CHECK(z.length == 10);

  // An SQE that covered only part of the remainder (the 1 GiB cap) completes fully but resubmits.
  WriteProgress p{0, buf.data(), 10000};
  CHECK(complete_write(p, 6000, 6000) == CompletionAction::kResubmit);
  CHECK(p.length == 4000);
}
