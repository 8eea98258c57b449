// POSIX suite: O_DIRECT and the page cache. A buffered read that follows a completed direct write
// returns what the direct write wrote, also when the write was asynchronous (Linux AIO, io_submit)
// and other processes read the file through the page cache meanwhile (xfstests generic/451).
//
// Rule named here: a_buffered_read_after_an_async_direct_write_sees_it. Through FUSE it holds only
// when the daemon refuses FUSE_ASYNC_DIO (tools/daemon/fuse_ops.cpp, op_init): with it the
// kernel skips the page-cache invalidation after an asynchronous direct write.
#include "posix_util.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

using namespace posix_test;

namespace {

// Linux AIO through the raw system calls (no libaio).
class AioContext {
 public:
  AioContext() {
    if (::syscall(SYS_io_setup, 4, &ctx_) != 0) ctx_ = 0;
  }
  ~AioContext() {
    if (ctx_) ::syscall(SYS_io_destroy, ctx_);
  }
  AioContext(const AioContext&) = delete;
  AioContext& operator=(const AioContext&) = delete;
  bool valid() const { return ctx_ != 0; }
  // One asynchronous pwrite, waited for: the bytes written, or -errno.
  long pwrite_and_wait(int fd, const void* buf, size_t len, off_t off) {
    iocb cb{};
    cb.aio_lio_opcode = IOCB_CMD_PWRITE;
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_buf = reinterpret_cast<uint64_t>(buf);
    cb.aio_nbytes = len;
    cb.aio_offset = off;
    iocb* list[1] = {&cb};
    if (::syscall(SYS_io_submit, ctx_, 1, list) != 1) return -errno;
    io_event ev{};
    if (::syscall(SYS_io_getevents, ctx_, 1, 1, &ev, nullptr) != 1) return -errno;
    return static_cast<long>(ev.res);
  }

 private:
  aio_context_t ctx_ = 0;
};

}  // namespace

TEST_CASE("a buffered read after an asynchronous direct write returns its data, with buffered readers racing",
          "[direct_io]") {
  TestDir d;
  const std::string path = d / "f";
  constexpr size_t kSize = 640 * 1024;
  void* raw[2] = {nullptr, nullptr};
  REQUIRE(::posix_memalign(&raw[0], 4096, kSize) == 0);
  REQUIRE(::posix_memalign(&raw[1], 4096, kSize) == 0);
  std::unique_ptr<void, decltype(&std::free)> keep0(raw[0], &std::free), keep1(raw[1], &std::free);
  std::memset(raw[0], 0x55, kSize);
  std::memset(raw[1], 0xaa, kSize);
  {
    Fd fd(::open(path.c_str(), O_CREAT | O_RDWR, 0644));
    REQUIRE(fd.valid());
    REQUIRE(::pwrite(fd.get(), raw[0], kSize, 0) == static_cast<ssize_t>(kSize));
    REQUIRE(err(::fsync(fd.get())) == 0);
  }
  AioContext aio;
  REQUIRE(aio.valid());
  // Two readers keep pulling the file through the page cache, each read on a fresh open.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&] {
      std::vector<char> buf(kSize);
      while (!stop.load(std::memory_order_relaxed)) {
        Fd fd(::open(path.c_str(), O_RDONLY));
        if (!fd.valid()) continue;
        if (::pread(fd.get(), buf.data(), kSize, 0) > 0) reads.fetch_add(1, std::memory_order_relaxed);
      }
    });
  // Alternate the two patterns for a few seconds; after each direct write a buffered open + read
  // must see exactly what was written.
  std::vector<char> got(kSize);
  long written_bad = 0;
  int rounds = 0, stale_round = -1;
  off_t stale_at = -1;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(4);
  while (std::chrono::steady_clock::now() < end && stale_round < 0) {
    const int i = ++rounds % 2;
    {
      Fd fd(::open(path.c_str(), O_RDWR | O_DIRECT));
      REQUIRE(fd.valid());
      const long n = aio.pwrite_and_wait(fd.get(), raw[i], kSize, 0);
      if (n != static_cast<long>(kSize)) {
        written_bad = n;
        break;
      }
    }
    Fd fd(::open(path.c_str(), O_RDONLY));
    REQUIRE(fd.valid());
    REQUIRE(::pread(fd.get(), got.data(), kSize, 0) == static_cast<ssize_t>(kSize));
    for (size_t k = 0; k < kSize; ++k)
      if (got[k] != static_cast<const char*>(raw[i])[k]) {
        stale_round = rounds;
        stale_at = static_cast<off_t>(k);
        break;
      }
  }
  stop = true;
  for (auto& t : readers) t.join();
  INFO("rounds " << rounds << ", racing buffered reads " << reads.load() << ", first stale byte at " << stale_at
                 << " in round " << stale_round);
  CHECK(written_bad == 0);
  CHECK(stale_round == -1);
  CHECK(rounds > 10);
}
