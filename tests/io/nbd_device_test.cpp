// NbdDevice against a real nbdkit on a unix socket: exact I/O, splitting above the server's
// maximum payload, unaligned I/O under a minimum block size, trim, read-only exports, server
// errors named in the message, flush failures, killed and hung servers, and the flush rule across
// a reconnect. Skips without nbdkit unless UBTRFS_REQUIRE_ORACLES=1.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "io/block_device.h"
#include "io/nbd_device.h"
#include "tests/io/nbd_server.h"
#include "tests/io/temp_file.h"

using namespace ubtrfs::io;
using ubtrfs::io::testing::NbdServer;
using ubtrfs::io::testing::oracles_required;
using ubtrfs::io::testing::pattern;
using ubtrfs::io::testing::TempFile;

namespace {

bool skip_without_nbdkit() {
  if (NbdServer::available()) return false;
  if (oracles_required()) FAIL("nbdkit is not installed (UBTRFS_REQUIRE_ORACLES=1)");
  WARN("nbdkit is not installed: skipped");
  return true;
}

#ifdef UBTRFS_NBDKIT_FLUSHERROR_FILTER
const std::string kFlushErrorFilter = UBTRFS_NBDKIT_FLUSHERROR_FILTER;
#else
const std::string kFlushErrorFilter;
#endif

// Short timeouts: the failure tests must fail fast.
NbdOptions quick() {
  NbdOptions o;
  o.connect_timeout = std::chrono::milliseconds(2000);
  o.reconnect_attempts = 2;
  o.reconnect_delay = std::chrono::milliseconds(50);
  return o;
}

std::unique_ptr<NbdDevice> open_rw(const NbdServer& s, NbdOptions o = quick()) {
  auto dev = NbdDevice::open(s.uri(), OpenMode::kReadWrite, o);
  if (!dev) FAIL(dev.error().message);
  return std::move(*dev);
}

}  // namespace

TEST_CASE("nbd uri detection", "[nbd]") {
  CHECK(is_nbd_uri("nbd://host/export"));
  CHECK(is_nbd_uri("nbds://host:10809/"));
  CHECK(is_nbd_uri("nbd+unix:///?socket=/run/x.sock"));
  CHECK(is_nbd_uri("nbds+unix:///e?socket=/x"));
  CHECK_FALSE(is_nbd_uri("/tmp/nbd://x"));
  CHECK_FALSE(is_nbd_uri("image.img"));
  CHECK_FALSE(is_nbd_uri("nbd:/x"));
}

TEST_CASE("nbd device writes and reads back exactly, through open_device", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "64M"});
  auto opened = open_device(s.uri(), OpenMode::kReadWrite);
  REQUIRE(opened);
  BlockDevice& d = **opened;
  CHECK(d.size() == (64u << 20));
  CHECK(d.name() == s.uri());
  CHECK_FALSE(d.read_only());
  CHECK(d.fd() == -1);  // no io_uring on a socket: UringWriter falls back to write()

  const auto a = pattern(4096, 1);
  const auto b = pattern(5 << 20, 2);  // five chunks in flight at once
  const auto c = pattern(17, 3);       // unaligned, but the server's minimum block is 1
  REQUIRE(d.write(0, a));
  REQUIRE(d.write(1 << 20, b));
  REQUIRE(d.write((64 << 20) - 17, c));
  REQUIRE(d.flush());
  std::vector<uint8_t> ra(a.size()), rb(b.size()), rc(c.size());
  REQUIRE(d.read(0, ra));
  REQUIRE(d.read(1 << 20, rb));
  REQUIRE(d.read((64 << 20) - 17, rc));
  CHECK((ra == a));
  CHECK((rb == b));
  CHECK((rc == c));

  auto beyond = d.read((64 << 20) - 16, rc);
  REQUIRE_FALSE(beyond);
  CHECK(beyond.error().err == EINVAL);

  // Trim: the memory plugin frees the range, which reads back as zeros.
  REQUIRE(d.discard(1 << 20, 1 << 20));
  std::vector<uint8_t> z(1 << 20, 0xAA);
  REQUIRE(d.read(1 << 20, z));
  CHECK((z == std::vector<uint8_t>(1 << 20, 0)));
}

TEST_CASE("nbd device splits requests above the server's maximum block size", "[nbd]") {
  if (skip_without_nbdkit()) return;
  // blocksize-error-policy=error: the server refuses what breaks its limits, so a request we did
  // not split or align would fail the test.
  NbdServer s({"--filter=blocksize-policy", "memory", "16M", "blocksize-minimum=4096", "blocksize-preferred=65536",
               "blocksize-maximum=65536", "blocksize-error-policy=error"});
  auto d = open_rw(s);
  CHECK(d->export_info().min_block == 4096);
  CHECK(d->export_info().max_block == 65536);
  CHECK(d->chunk_bytes() == 65536);
  const auto big = pattern(3 << 20, 7);
  REQUIRE(d->write(4096, big));
  std::vector<uint8_t> back(big.size());
  REQUIRE(d->read(4096, back));
  CHECK((back == big));
  CHECK(d->stats().bounced == 0);
  CHECK(d->stats().requests >= 2 * (3 << 20) / 65536);

  // Unaligned: a bounce buffer with read-modify-write keeps the neighbouring bytes.
  const auto small = pattern(100, 8);
  REQUIRE(d->write(4096 + 4000, small));
  CHECK(d->stats().bounced == 1);
  std::vector<uint8_t> around(8192);
  REQUIRE(d->read(4096, around));
  std::vector<uint8_t> want(big.begin(), big.begin() + 8192);
  std::copy(small.begin(), small.end(), want.begin() + 4000);
  CHECK((around == want));
}

TEST_CASE("nbd device refuses a read-write open of a read-only export", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"-r", "memory", "8M"});
  auto rw = NbdDevice::open(s.uri(), OpenMode::kReadWrite, quick());
  REQUIRE_FALSE(rw);
  CHECK(rw.error().err == EROFS);
  CHECK_THAT(rw.error().message, Catch::Contains("read-only") && Catch::Contains(s.uri()));
  auto ro = NbdDevice::open(s.uri(), OpenMode::kReadOnly, quick());
  REQUIRE(ro);
  CHECK((*ro)->read_only());
  const auto a = pattern(4096, 1);
  auto w = (*ro)->write(0, a);
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EROFS);
}

TEST_CASE("nbd server errors become EIO naming the NBD error", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"--filter=error", "memory", "8M", "error-pwrite=EIO", "error-pwrite-rate=100%"});
  auto d = open_rw(s);
  const auto a = pattern(4096, 1);
  auto w = d->write(8192, a);
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  CHECK_THAT(w.error().message, Catch::Contains("NBD_EIO") && Catch::Contains("offset 8192"));
  // A server error is an answer, not a dropped connection: nothing was retried, reads still work.
  CHECK(d->stats().reconnects == 0);
  std::vector<uint8_t> r(4096);
  CHECK(d->read(0, r));
}

TEST_CASE("nbd flush failure is reported, never swallowed", "[nbd]") {
  if (skip_without_nbdkit()) return;
  if (kFlushErrorFilter.empty()) {
    if (oracles_required()) FAIL("the flusherror test filter was not built (nbdkit-plugin-dev missing)");
    WARN("flusherror filter not built: skipped");
    return;
  }
  TempFile img(8 << 20);
  NbdServer s({"--filter=" + kFlushErrorFilter, "file", img.path(), "flush-error-file=" + img.path() + ".fail"});
  auto d = open_rw(s);
  const auto a = pattern(4096, 1);
  REQUIRE(d->write(0, a));
  REQUIRE(d->flush());
  { std::ofstream(img.path() + ".fail") << "1"; }
  REQUIRE(d->write(4096, a));
  auto f = d->flush();
  ::unlink((img.path() + ".fail").c_str());
  REQUIRE_FALSE(f);
  CHECK(f.error().err == EIO);
  CHECK_THAT(f.error().message, Catch::Contains("flush") && Catch::Contains("NBD_EIO"));
  CHECK(d->flush());  // the server is fine again, the connection was never lost
}

// The rule: writes the server acknowledged on a connection that then dropped, before any flush
// covered them, may be lost with it; a flush on the new connection must not call them durable.
TEST_CASE("flush after a reconnect fails when acknowledged writes were not flushed", "[nbd]") {
  if (skip_without_nbdkit()) return;
  TempFile img(8 << 20);
  NbdServer s({"file", img.path()});
  auto d = open_rw(s);
  const auto a = pattern(4096, 1);

  // Flushed before the drop: the reconnect is transparent, flush keeps working.
  REQUIRE(d->write(0, a));
  REQUIRE(d->flush());
  s.kill();
  s.start();
  std::vector<uint8_t> r(4096);
  REQUIRE(d->read(0, r));
  CHECK((r == a));
  CHECK(d->stats().reconnects == 1);
  REQUIRE(d->flush());

  // Acknowledged, not flushed, then the drop: every later flush fails.
  REQUIRE(d->write(4096, a));
  s.kill();
  s.start();
  REQUIRE(d->write(8192, a));  // reconnects; the write itself is fine
  CHECK(d->stats().reconnects == 2);
  auto f = d->flush();
  REQUIRE_FALSE(f);
  CHECK(f.error().err == EIO);
  CHECK_THAT(f.error().message, Catch::Contains("acknowledged writes not yet flushed"));
  CHECK_FALSE(d->flush());  // sticky
}

TEST_CASE("nbd requests fail with EIO within a bounded time once the server is killed", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "8M"});
  auto d = open_rw(s);
  const auto a = pattern(4096, 1);
  REQUIRE(d->write(0, a));
  s.kill();
  const auto t0 = std::chrono::steady_clock::now();
  auto w = d->write(4096, a);
  REQUIRE_FALSE(w);
  CHECK(w.error().err == EIO);
  CHECK_THAT(w.error().message, Catch::Contains("gone"));
  // Later calls fail at once: the device is gone, no new reconnect rounds.
  std::vector<uint8_t> r(4096);
  auto rd = d->read(0, r);
  REQUIRE_FALSE(rd);
  CHECK(rd.error().err == EIO);
  CHECK_FALSE(d->flush());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("a hung nbd server is dropped after the request timeout", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"--filter=delay", "memory", "8M", "delay-read=20"});
  NbdOptions o = quick();
  o.request_timeout = std::chrono::milliseconds(500);
  o.reconnect_attempts = 1;
  auto d = open_rw(s, o);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> r(4096);
  auto rd = d->read(0, r);
  REQUIRE_FALSE(rd);
  CHECK(rd.error().err == EIO);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(8));
}

TEST_CASE("nbd device serves many threads at once on one connection", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "64M"});
  auto d = open_rw(s);
  constexpr int kThreads = 8;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 32; ++i) {
        const auto p = pattern(64 << 10, t * 100 + i);
        const uint64_t off = (uint64_t(t) * 32 + i) * (64 << 10);
        if (!d->write(off, p)) ++failures;
        std::vector<uint8_t> back(p.size());
        if (!d->read(off, back) || back != p) ++failures;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  CHECK(d->flush());
}

TEST_CASE("nbd read-ahead serves a sequential stream from windows", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "64M"});
  auto d = open_rw(s);
  const auto data = pattern(16 << 20, 11);
  REQUIRE(d->write(0, data));
  std::vector<uint8_t> back(data.size());
  for (uint64_t off = 0; off < data.size(); off += 128 << 10)
    REQUIRE(d->read(off, std::span<uint8_t>(back.data() + off, 128 << 10)));
  CHECK((back == data));
  // All but the first two reads (which start the stream) can come from windows.
  CHECK(d->stats().readahead_hits >= 100);
  // Tree-block-sized reads neither start a stream nor are served ahead.
  const uint64_t hits = d->stats().readahead_hits;
  std::vector<uint8_t> blk(16 << 10);
  for (uint64_t off = 32 << 20; off < (33 << 20); off += 16 << 10) REQUIRE(d->read(off, blk));
  CHECK(d->stats().readahead_hits == hits);
}

// The rule: a read that starts after a write completed never sees bytes older than that write,
// even where a read-ahead window was fetched (or was in flight) before it.
TEST_CASE("read-ahead window never serves bytes older than a completed write", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "64M"});
  auto d = open_rw(s);
  const auto old_data = pattern(8 << 20, 21);
  REQUIRE(d->write(0, old_data));
  for (int round = 0; round < 20; ++round) {
    std::vector<uint8_t> r(128 << 10);
    // Start a stream at 0: windows now cover what follows.
    REQUIRE(d->read(0, r));
    REQUIRE(d->read(128 << 10, r));
    // Overwrite a block well inside the windows, then read it.
    const uint64_t off = (1 << 20) + round * 4096;
    const auto fresh = pattern(4096, 100 + round);
    REQUIRE(d->write(off, fresh));
    std::vector<uint8_t> got(4096);
    REQUIRE(d->read(off, got));
    REQUIRE((got == fresh));
    // And through a stream read that covers it.
    std::vector<uint8_t> big(128 << 10);
    REQUIRE(d->read(off & ~uint64_t((128 << 10) - 1), big));
    REQUIRE(std::equal(fresh.begin(), fresh.end(), big.begin() + (off & ((128 << 10) - 1))));
  }
}

TEST_CASE("nbd write_many sends every range and reports each one", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"memory", "16M"});
  auto d = open_rw(s);
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<DeviceWrite> ws;
  for (int i = 0; i < 40; ++i) bufs.push_back(pattern(16 << 10, 300 + i));
  for (int i = 0; i < 40; ++i) ws.push_back({uint64_t(i) * (64 << 10), bufs[i]});
  ws.push_back({(16 << 20) - 4096, bufs[0]});  // beyond the end: EINVAL for this one only
  const uint64_t before = d->stats().requests;
  auto results = d->write_many(ws);
  REQUIRE(results.size() == ws.size());
  for (int i = 0; i < 40; ++i) CHECK(results[i]);
  REQUIRE_FALSE(results[40]);
  CHECK(results[40].error().err == EINVAL);
  CHECK(d->stats().requests - before == 40);
  for (int i = 0; i < 40; ++i) {
    std::vector<uint8_t> back(16 << 10);
    REQUIRE(d->read(ws[i].offset, back));
    CHECK((back == bufs[i]));
  }
}

TEST_CASE("nbd write_many reports a server error for each failed range", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"--filter=error", "memory", "8M", "error-pwrite=ENOSPC", "error-pwrite-rate=100%"});
  auto d = open_rw(s);
  const auto a = pattern(4096, 1);
  std::vector<DeviceWrite> ws = {{0, a}, {8192, a}, {65536, a}};
  auto results = d->write_many(ws);
  for (auto& r : results) {
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EIO);
    CHECK_THAT(r.error().message, Catch::Contains("NBD_ENOSPC"));
  }
  CHECK(d->stats().reconnects == 0);
}

// Requests in flight together: with 200 ms per write on the server, ten ranges in one write_many
// (or one 10-chunk write) take about one delay, not ten.
TEST_CASE("nbd requests of one call are in flight together", "[nbd]") {
  if (skip_without_nbdkit()) return;
  NbdServer s({"--filter=delay", "memory", "64M", "delay-write=200ms"});
  NbdOptions o = quick();
  o.max_request_bytes = 64 << 10;
  auto d = open_rw(s, o);
  const auto a = pattern(64 << 10, 5);
  std::vector<DeviceWrite> ws;
  for (int i = 0; i < 10; ++i) ws.push_back({uint64_t(i) << 20, a});
  auto t0 = std::chrono::steady_clock::now();
  for (auto& r : d->write_many(ws)) REQUIRE(r);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));
  const auto big = pattern(640 << 10, 6);  // ten chunks of 64 KiB
  t0 = std::chrono::steady_clock::now();
  REQUIRE(d->write(32 << 20, big));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1000));
}
