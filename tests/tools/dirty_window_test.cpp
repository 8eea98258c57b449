// The writeback cache's dirty window (tools/daemon/dirty_window.h): the sizing rules the window
// thread of PageCacheGuard follows. The safety rule is that what the guard holds for a limit
// (dirty_bound_for) never passes a quarter of the space a writer could still use; the liveness
// rules are that the window neither oscillates at a constant free space nor waits for the device
// to be full before it shrinks.
#include <catch2/catch.hpp>

#include <cstdint>

#include "tools/daemon/dirty_window.h"

namespace {

using ubtrfs::daemon::dirty_bound_for;
using ubtrfs::daemon::dirty_target_for;
using ubtrfs::daemon::DirtyWindowStep;
using ubtrfs::daemon::next_dirty_window;

constexpr uint64_t MiB = uint64_t{1} << 20;
constexpr uint64_t GiB = uint64_t{1} << 30;

}  // namespace

TEST_CASE("dirty_bound_is_twice_the_limit_plus_an_8_to_16_MiB_margin", "[dirty_window]") {
  CHECK(dirty_bound_for(256 << 10) == (512 << 10) + 8 * MiB);
  CHECK(dirty_bound_for(12 * MiB) == 24 * MiB + 12 * MiB);
  CHECK(dirty_bound_for(450 * MiB) == 900 * MiB + 16 * MiB);
}

TEST_CASE("dirty_window_holds_at_most_a_quarter_of_the_usable_space", "[dirty_window]") {
  const uint64_t floor = 8 * MiB;
  for (uint64_t usable = 0; usable <= 64 * GiB; usable += 37 * MiB + 4096) {
    const uint64_t t = dirty_target_for(usable, floor, GiB);
    INFO("usable " << usable << " target " << t);
    CHECK(t >= floor);
    CHECK(t <= GiB);
    CHECK(t % MiB == 0);
    // Above the floor the bound fits a quarter; at the floor the mount's own rule (1/64 of the
    // device) has already checked it.
    if (t > floor) CHECK(dirty_bound_for(t) <= usable / 4);
  }
  // A 4 GiB device with 3.6 GiB usable: a window of about 450 MiB, what random writes of 512 MiB
  // need to be merged by the kernel.
  CHECK(dirty_target_for(3663 * MiB, floor, GiB) == 449 * MiB);
  CHECK(dirty_target_for(64 * GiB, floor, GiB) == GiB);
  // The ceiling never goes under the floor.
  CHECK(dirty_target_for(64 * GiB, floor, MiB) == floor);
}

TEST_CASE("dirty_window_grows_only_for_writers_that_push_through_it", "[dirty_window]") {
  const uint64_t floor = 8 * MiB, usable = 3663 * MiB;
  // Writers open but little pushed: stays (a create workload's small files never grow it).
  CHECK(next_dirty_window(floor, floor, GiB, usable, 1 * MiB, true, false).kind == DirtyWindowStep::kStay);
  // Half the window pushed: grows straight to the target.
  const DirtyWindowStep g = next_dirty_window(floor, floor, GiB, usable, 4 * MiB, true, false);
  CHECK(g.kind == DirtyWindowStep::kGrow);
  CHECK(g.to == 449 * MiB);
  // No writer open: never grows, and goes back to the floor only after a second of that.
  CHECK(next_dirty_window(floor, floor, GiB, usable, 100 * MiB, false, true).kind == DirtyWindowStep::kStay);
  CHECK(next_dirty_window(449 * MiB, floor, GiB, usable, 0, false, false).kind == DirtyWindowStep::kStay);
  const DirtyWindowStep idle = next_dirty_window(449 * MiB, floor, GiB, usable, 0, false, true);
  CHECK(idle.kind == DirtyWindowStep::kToFloor);
  CHECK(idle.to == floor);
}

TEST_CASE("dirty_window_does_not_oscillate_at_a_constant_usable_space", "[dirty_window]") {
  const uint64_t floor = 8 * MiB;
  for (uint64_t usable = 64 * MiB; usable <= 16 * GiB; usable += 97 * MiB) {
    // From the floor, with writers pushing all the time: at most one change, then it stays.
    uint64_t limit = floor;
    int changes = 0;
    for (int i = 0; i < 10; ++i) {
      const DirtyWindowStep s = next_dirty_window(limit, floor, GiB, usable, 2 * limit + MiB, true, false);
      if (s.kind == DirtyWindowStep::kStay) continue;
      limit = s.to;
      ++changes;
    }
    INFO("usable " << usable << " limit " << limit);
    CHECK(changes <= 1);
  }
}

TEST_CASE("dirty_window_is_never_cut_while_a_cached_writer_is_open", "[dirty_window]") {
  const uint64_t floor = 8 * MiB;
  // A writer fills the device: `usable` falls to nothing while the window thread looks. With the
  // writer open the window never gets smaller (what it holds is the writer's, drawn on when the
  // rest is full), and it never grows past a quarter of what is left.
  uint64_t limit = 449 * MiB;
  for (uint64_t usable = 3663 * MiB; usable > 0; usable -= std::min<uint64_t>(usable, 8 * MiB)) {
    const DirtyWindowStep s = next_dirty_window(limit, floor, GiB, usable, GiB, true, true);
    CHECK(s.kind != DirtyWindowStep::kToFloor);
    if (s.kind == DirtyWindowStep::kGrow) {
      CHECK(s.to > limit);
      CHECK(dirty_bound_for(s.to) <= usable / 4);
      limit = s.to;
    }
  }
  CHECK(limit == 449 * MiB);
  // Once the writer is gone (a second later), back to the floor.
  const DirtyWindowStep s = next_dirty_window(limit, floor, GiB, 0, 0, false, true);
  CHECK(s.kind == DirtyWindowStep::kToFloor);
  CHECK(s.to == floor);
}
