// The control channel's chunked protocol (tools/common/control_protocol.h) without a mount: the
// daemon's SnapshotStore and the client's read_payload joined by a loopback transport that
// behaves as the kernel does for a restricted FUSE ioctl (the reply overwrites only as many bytes
// of the caller's buffer as the daemon sent), then each way a reply or a request can be wrong.
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "tools/common/control_protocol.h"

using namespace ubtrfs;
using namespace ubtrfs::control;

namespace {

std::string pattern(size_t n, char seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + (i * 7 + i / 251) % 61);
  return s;
}

// Serves requests from a store; counts exchanges; `now` can be moved by the test.
struct Loopback {
  SnapshotStore store{4, std::chrono::seconds(10)};
  SnapshotStore::Clock::time_point now = SnapshotStore::Clock::now();
  SnapshotStore::Producer produce;
  int exchanges = 0;
  std::function<void(int)> before_exchange;  // test hook, gets the exchange number

  Status operator()(Message& msg) {
    if (before_exchange) before_exchange(exchanges);
    ++exchanges;
    auto reply = std::make_unique<Message>();
    auto n = store.serve(msg, *reply, produce, now);
    if (!n) return std::unexpected(n.error());
    std::memcpy(&msg, reply.get(), *n);  // the kernel copies back only what the daemon replied
    return {};
  }
  Transport transport() {
    return [this](Message& m) { return (*this)(m); };
  }
};

}  // namespace

TEST_CASE("control: the ioctl command and message layout") {
  CHECK(_IOC_TYPE(kIocControlRead) == 0xD7);
  CHECK(_IOC_TYPE(kIocControlRead) != 0x94);  // btrfs's magic
  CHECK(_IOC_NR(kIocControlRead) == 1);
  CHECK(_IOC_DIR(kIocControlRead) == (_IOC_READ | _IOC_WRITE));
  CHECK(_IOC_SIZE(kIocControlRead) == kMessageSize);
  CHECK(kHeaderSize + kChunkCapacity == sizeof(Message));
  CHECK(payload_name(1) == "stats");
  CHECK(payload_name(2) == "log");
  CHECK(payload_name(9) == "payload 9");
  CHECK_FALSE(payload_from(0));
}

TEST_CASE("control: payloads of every size arrive whole, in as few chunks as fit") {
  for (size_t size : {size_t{0}, size_t{1}, kChunkCapacity - 1, kChunkCapacity, kChunkCapacity + 1,
                      3 * kChunkCapacity + 17, size_t{1} << 20}) {
    INFO("payload of " << size << " bytes");
    Loopback lb;
    const std::string want = pattern(size, 'A');
    lb.produce = [&](Payload p) {
      CHECK(p == Payload::kLog);
      return want;
    };
    auto got = read_payload(Payload::kLog, lb.transport());
    REQUIRE(got);
    CHECK(*got == want);
    const size_t chunks = size == 0 ? 1 : (size + kChunkCapacity - 1) / kChunkCapacity;
    CHECK(lb.exchanges == static_cast<int>(chunks));
  }
}

TEST_CASE("control: a multi-chunk read sees one snapshot although the source changes") {
  Loopback lb;
  int renders = 0;
  lb.produce = [&](Payload) { return pattern(2 * kChunkCapacity + 5, static_cast<char>('a' + renders++)); };
  auto first = read_payload(Payload::kStats, lb.transport());
  REQUIRE(first);
  CHECK(renders == 1);
  CHECK(*first == pattern(2 * kChunkCapacity + 5, 'a'));
  auto second = read_payload(Payload::kStats, lb.transport());
  REQUIRE(second);
  CHECK(renders == 2);
  CHECK(*second == pattern(2 * kChunkCapacity + 5, 'b'));
}

TEST_CASE("control: interleaved readers each keep their own snapshot") {
  SnapshotStore store{4, std::chrono::seconds(10)};
  int renders = 0;
  auto produce = [&](Payload) { return pattern(kChunkCapacity + 10, static_cast<char>('0' + renders++)); };
  auto reply = std::make_unique<Message>();
  auto a1 = store.serve(make_request(Payload::kStats, 0, 0), *reply, produce);
  REQUIRE(a1);
  const uint64_t snap_a = reply->snapshot;
  auto b1 = store.serve(make_request(Payload::kStats, 0, 0), *reply, produce);
  REQUIRE(b1);
  const uint64_t snap_b = reply->snapshot;
  CHECK(snap_a != snap_b);
  REQUIRE(store.serve(make_request(Payload::kStats, snap_a, kChunkCapacity), *reply, produce));
  CHECK(reply->chunk_len == 10);
  CHECK(std::string(reinterpret_cast<char*>(reply->data), 10) == pattern(kChunkCapacity + 10, '0').substr(kChunkCapacity));
  REQUIRE(store.serve(make_request(Payload::kStats, snap_b, kChunkCapacity), *reply, produce));
  CHECK(std::string(reinterpret_cast<char*>(reply->data), 10) == pattern(kChunkCapacity + 10, '1').substr(kChunkCapacity));
  CHECK(renders == 2);
}

TEST_CASE("control: snapshots expire when idle and the oldest go beyond capacity") {
  SnapshotStore store{2, std::chrono::seconds(10)};
  auto produce = [](Payload) { return std::string(100, 'x'); };
  auto reply = std::make_unique<Message>();
  const auto t0 = SnapshotStore::Clock::now();
  REQUIRE(store.serve(make_request(Payload::kLog, 0, 0), *reply, produce, t0));
  const uint64_t s1 = reply->snapshot;
  // Used at t0+8 s: the idle time starts again.
  REQUIRE(store.serve(make_request(Payload::kLog, s1, 0), *reply, produce, t0 + std::chrono::seconds(8)));
  REQUIRE(store.serve(make_request(Payload::kLog, s1, 50), *reply, produce, t0 + std::chrono::seconds(17)));
  CHECK(reply->chunk_len == 50);
  auto stale = store.serve(make_request(Payload::kLog, s1, 0), *reply, produce, t0 + std::chrono::seconds(28));
  REQUIRE_FALSE(stale);
  CHECK(stale.error().err == ESTALE);
  CHECK(store.size() == 0);

  REQUIRE(store.serve(make_request(Payload::kLog, 0, 0), *reply, produce, t0));
  const uint64_t a = reply->snapshot;
  REQUIRE(store.serve(make_request(Payload::kLog, 0, 0), *reply, produce, t0));
  REQUIRE(store.serve(make_request(Payload::kLog, 0, 0), *reply, produce, t0));
  CHECK(store.size() == 2);
  CHECK(store.serve(make_request(Payload::kLog, a, 0), *reply, produce, t0).error().err == ESTALE);
}

TEST_CASE("control: the reader starts over when its snapshot expires, a bounded number of times") {
  Loopback lb;
  int renders = 0;
  lb.produce = [&](Payload) { return pattern(3 * kChunkCapacity, static_cast<char>('a' + renders++)); };
  // The second exchange of the first attempt comes after the snapshot expired.
  lb.before_exchange = [&](int n) {
    if (n == 1) lb.now += std::chrono::seconds(11);
  };
  auto got = read_payload(Payload::kStats, lb.transport());
  REQUIRE(got);
  CHECK(renders == 2);
  CHECK(*got == pattern(3 * kChunkCapacity, 'b'));
  CHECK(lb.exchanges == 2 + 3);

  Loopback always;
  always.produce = [&](Payload) { return pattern(2 * kChunkCapacity, 'z'); };
  always.before_exchange = [&](int) { always.now += std::chrono::seconds(11); };
  auto gone = read_payload(Payload::kStats, always.transport());
  REQUIRE_FALSE(gone);
  CHECK(gone.error().err == ESTALE);
  CHECK(always.exchanges == 2 * kReadAttempts);
}

TEST_CASE("control: the daemon refuses malformed requests") {
  SnapshotStore store;
  auto produce = [](Payload) { return std::string(10, 's'); };
  auto reply = std::make_unique<Message>();
  auto req = make_request(Payload::kStats, 0, 0);
  req.magic = kReplyMagic;
  CHECK(store.serve(req, *reply, produce).error().err == EPROTO);
  req = make_request(Payload::kStats, 0, 0);
  req.version = kVersion + 1;
  CHECK(store.serve(req, *reply, produce).error().err == EPROTO);
  req = make_request(Payload::kStats, 0, 0);
  req.payload = 7;
  CHECK(store.serve(req, *reply, produce).error().err == EINVAL);
  CHECK(store.serve(make_request(Payload::kStats, 0, 5), *reply, produce).error().err == EINVAL);
  CHECK(store.serve(make_request(Payload::kStats, 12345, 0), *reply, produce).error().err == ESTALE);
  REQUIRE(store.serve(make_request(Payload::kStats, 0, 0), *reply, produce));
  const uint64_t s = reply->snapshot;
  CHECK(store.serve(make_request(Payload::kStats, s, 11), *reply, produce).error().err == EINVAL);
  CHECK(store.serve(make_request(Payload::kLog, s, 0), *reply, produce).error().err == EINVAL);
  auto end = store.serve(make_request(Payload::kStats, s, 10), *reply, produce);  // at the end: an empty chunk
  REQUIRE(end);
  CHECK(*end == kHeaderSize);
  CHECK(reply->chunk_len == 0);
}

TEST_CASE("control: the reader refuses malformed replies") {
  const std::string body = pattern(2 * kChunkCapacity + 3, 'q');
  // A transport answering like a good daemon, then letting `tamper` spoil reply number `which`.
  auto run = [&](int which, std::function<void(Message&)> tamper) {
    Loopback lb;
    lb.produce = [&](Payload) { return body; };
    int n = 0;
    Transport t = [&](Message& m) -> Status {
      UBTRFS_TRY_STATUS(lb(m));
      if (n++ == which) tamper(m);
      return {};
    };
    return read_payload(Payload::kStats, t);
  };
  auto is_eproto = [](const Result<std::string>& r, const char* what) {
    INFO(what);
    REQUIRE_FALSE(r);
    CHECK(r.error().err == EPROTO);
  };
  is_eproto(run(0, [](Message& m) { m.magic = kRequestMagic; }), "nothing written back");
  is_eproto(run(0, [](Message& m) { m.version = 2; }), "other version");
  is_eproto(run(0, [](Message& m) { m.payload = 2; }), "other payload");
  is_eproto(run(0, [](Message& m) { m.snapshot = 0; }), "no snapshot id");
  is_eproto(run(1, [](Message& m) { m.snapshot += 1; }), "snapshot changed");
  is_eproto(run(1, [](Message& m) { m.total_len += 1; }), "length changed");
  is_eproto(run(1, [](Message& m) { m.offset += 1; }), "wrong offset");
  is_eproto(run(0, [](Message& m) { m.chunk_len = kChunkCapacity + 1; }), "chunk beyond capacity");
  is_eproto(run(2, [](Message& m) { m.chunk_len = 4; }), "chunk beyond the total");
  is_eproto(run(1, [](Message& m) { m.chunk_len = 0; }), "no progress");
  auto big = run(0, [](Message& m) { m.total_len = kMaxPayload + 1; });
  REQUIRE_FALSE(big);
  CHECK(big.error().err == EFBIG);

  Transport refuses = [](Message&) -> Status { return fail(ENOTTY, "Inappropriate ioctl for device"); };
  auto r = read_payload(Payload::kLog, refuses);
  REQUIRE_FALSE(r);
  CHECK(r.error().err == ENOTTY);
}
