// Chunk planning: the sizing policy, the reserved first MiB, DUP stripes, holes, and ENOSPC only
// when the device is really full.
#include <catch2/catch.hpp>

#include "alloc/chunk_alloc.h"
#include "tests/test_support.h"

using namespace ubtrfs;
using namespace ubtrfs::alloc;

namespace {

using test::kMiB;
using test::kGiB;
}  // namespace

TEST_CASE("chunk sizes follow the kernel policy: type cap and 10% of the device rounded up to 16 MiB") {
  CHECK(chunk_size_limit(kBlockGroupData, 256 * kMiB) == 32 * kMiB);  // FORMAT.md §5.3: kernel made 32 MiB
  CHECK(chunk_size_limit(kBlockGroupData, 16 * kGiB) == kGiB);
  CHECK(chunk_size_limit(kBlockGroupMetadata, 16 * kGiB) == 256 * kMiB);
  CHECK(chunk_size_limit(kBlockGroupMetadata, 100 * kGiB) == kGiB);
  CHECK(chunk_size_limit(kBlockGroupSystem, 16 * kGiB) == 32 * kMiB);
}

TEST_CASE("the first MiB is never allocated and dev extents never overlap") {
  DeviceSpace dev(128 * kMiB);
  auto c = plan_chunk(dev, 1 * kMiB, kBlockGroupSystem, 4 * kMiB);
  REQUIRE(c);
  CHECK(c->stripes[0].physical >= kReserved1MForSuper);
  CHECK_FALSE(dev.add_extent(c->stripes[0].physical + 4096, 4096));
  CHECK(dev.allocated_bytes() == 4 * kMiB);
}

TEST_CASE("DUP chunks get two stripes of the chunk length on the one device") {
  DeviceSpace dev(kGiB);
  auto c = plan_chunk(dev, 30 * kMiB, kBlockGroupMetadata | kBlockGroupDup);
  REQUIRE(c);
  REQUIRE(c->stripes.size() == 2);
  CHECK(c->length == 112 * kMiB);  // 10% of 1 GiB rounded up to 16 MiB
  CHECK(c->stripes[1].physical >= c->stripes[0].physical + c->length);
  CHECK(dev.allocated_bytes() == 2 * c->length);
}

TEST_CASE("chunks shrink to the space left and ENOSPC comes only when the device is full") {
  DeviceSpace dev(64 * kMiB);
  uint64_t logical = 1 * kMiB;
  uint64_t total = 0;
  int chunks = 0;
  for (;;) {
    auto c = plan_chunk(dev, logical, kBlockGroupData);
    if (!c) {
      CHECK(c.error().err == ENOSPC);
      break;
    }
    logical += c->length;
    total += c->length;
    ++chunks;
  }
  CHECK(chunks >= 2);
  CHECK(dev.unallocated_bytes() < kMiB);  // everything usable was handed out
  CHECK(total == dev.allocated_bytes());
}

TEST_CASE("DUP uses two separate holes when no single hole fits both stripes") {
  DeviceSpace dev(64 * kMiB);
  REQUIRE(dev.add_extent(21 * kMiB, 22 * kMiB));  // leaves holes [1, 21) and [43, 64) MiB
  auto c = plan_chunk(dev, 100 * kMiB, kBlockGroupMetadata | kBlockGroupDup, 16 * kMiB);
  REQUIRE(c);
  CHECK(c->length == 16 * kMiB);
  CHECK(c->stripes[0].physical == 1 * kMiB);
  CHECK(c->stripes[1].physical == 43 * kMiB);
}
