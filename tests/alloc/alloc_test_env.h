// Helpers shared by the alloc unit tests (header-only: the test binaries are unity builds).
#pragma once

#include <catch2/catch.hpp>

#include <memory>

#include "alloc/block_group.h"
#include "tests/test_support.h"

namespace ubtrfs::test {

// A block group at logical == physical `start` (>= 1 GiB: no superblock mirror inside, those sit at
// 64K, 64M, 256G), all free.
inline std::unique_ptr<alloc::BlockGroup> make_group(uint64_t start, uint64_t len, uint64_t flags) {
  ChunkMapping m{start, len, flags, {ChunkStripe{1, start, {}}}};
  auto bg = std::make_unique<alloc::BlockGroup>(m, 0);
  REQUIRE(bg->init_free_from_allocated({}));
  return bg;
}

}  // namespace ubtrfs::test
