// Fix 2's per-handle inhibit set (tree/inhibit_set.h): 8 inline slots under CLOCK replacement, one
// inhibitor per occupied slot, the slot-reuse rule, release at handle end, moves.
#include <catch2/catch.hpp>

#include <vector>

#include "tree/inhibit_set.h"

using namespace ubtrfs;

namespace {
std::vector<EbRef> buffers(int n) {
  std::vector<EbRef> v;
  for (int i = 0; i < n; ++i) v.push_back(std::make_shared<ExtentBuffer>(static_cast<uint64_t>(i + 1) << 14, 4096));
  return v;
}
}  // namespace

TEST_CASE("inhibit_set: one inhibitor per buffer however often it is added", "[inhibit]") {
  auto b = buffers(3);
  InhibitSet s;
  CHECK(s.add(b[0]) == InhibitSet::AddResult::kAdded);
  CHECK(s.add(b[0]) == InhibitSet::AddResult::kAlreadyHeld);
  CHECK(s.add(b[1]) == InhibitSet::AddResult::kAdded);
  CHECK(b[0]->inhibitors() == 1);
  CHECK(b[1]->inhibitors() == 1);
  CHECK(b[2]->inhibitors() == 0);
  CHECK(s.size() == 2);
  s.release_all();
  CHECK(b[0]->inhibitors() == 0);
  CHECK(b[1]->inhibitors() == 0);
  CHECK(s.size() == 0);
}

TEST_CASE("inhibit_set: the ninth buffer reuses a slot and the old buffer loses its inhibitor", "[inhibit]") {
  auto b = buffers(10);
  InhibitSet s;
  for (int i = 0; i < 8; ++i) CHECK(s.add(b[i]) == InhibitSet::AddResult::kAdded);
  CHECK(s.size() == 8);
  // Every slot was just referenced: the hand sweeps once clearing bits, then takes slot 0.
  CHECK(s.add(b[8]) == InhibitSet::AddResult::kReplaced);
  CHECK(s.size() == 8);
  CHECK(b[0]->inhibitors() == 0);
  CHECK_FALSE(s.contains(b[0]));
  for (int i = 1; i <= 8; ++i) CHECK(b[i]->inhibitors() == 1);
  int held = 0;
  for (auto& e : b) held += e->inhibitors();
  CHECK(held == 8);
}

TEST_CASE("inhibit_set: a buffer touched again keeps its slot (second chance)", "[inhibit]") {
  auto b = buffers(10);
  InhibitSet s;
  for (int i = 0; i < 8; ++i) s.add(b[i]);
  s.add(b[8]);  // sweep clears all bits, replaces b[0]; hand now at slot 1
  // b[1] is used again: its bit is set, so the next replacement skips it and takes b[2].
  CHECK(s.add(b[1]) == InhibitSet::AddResult::kAlreadyHeld);
  CHECK(s.add(b[9]) == InhibitSet::AddResult::kReplaced);
  CHECK(s.contains(b[1]));
  CHECK_FALSE(s.contains(b[2]));
  CHECK(b[1]->inhibitors() == 1);
  CHECK(b[2]->inhibitors() == 0);
}

TEST_CASE("inhibit_set: two handles inhibit the same buffer independently", "[inhibit]") {
  auto b = buffers(1);
  InhibitSet a, c;
  a.add(b[0]);
  c.add(b[0]);
  CHECK(b[0]->inhibitors() == 2);
  a.release_all();  // the first handle ends: the second still protects the buffer (v3's bug fixed in v4)
  CHECK(b[0]->inhibitors() == 1);
  c.release_all();
  CHECK(b[0]->inhibitors() == 0);
}

TEST_CASE("inhibit_set: moving transfers the inhibitors, destruction releases them", "[inhibit]") {
  auto b = buffers(2);
  {
    InhibitSet a;
    a.add(b[0]);
    a.add(b[1]);
    InhibitSet moved(std::move(a));
    CHECK(a.size() == 0);  // NOLINT(bugprone-use-after-move): the moved-from set is defined empty
    CHECK(moved.size() == 2);
    CHECK(b[0]->inhibitors() == 1);
    a.release_all();  // releases nothing
    CHECK(b[0]->inhibitors() == 1);
    InhibitSet other;
    other = std::move(moved);
    CHECK(b[1]->inhibitors() == 1);
  }
  CHECK(b[0]->inhibitors() == 0);
  CHECK(b[1]->inhibitors() == 0);
}
