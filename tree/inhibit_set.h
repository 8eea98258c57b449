// InhibitSet: the extent buffers one transaction handle keeps background writeback away from (fix 2
// of the COW-amplification series, KERNEL.md §8: btrfs `writeback_inhibited_ebs`, and the follow-up
// that replaced its xarray with a fixed inline buffer of BTRFS_INHIBITED_EBS_SLOTS = 8 entries under
// CLOCK replacement).
//
// Owns: up to kSlots references, each holding one count of its buffer's `writeback_inhibitors`, one
// CLOCK reference bit per slot and the hand.
// Invariants:
// - a buffer is in at most one slot; every occupied slot holds exactly one inhibitor of its buffer;
// - slot reuse (the set is full and the hand finds a slot whose reference bit is clear) first drops
//   the old buffer's inhibitor, then takes the new one: the old buffer becomes writable by background
//   writeback again. A buffer touched again since the hand last passed keeps its slot (second chance);
// - release_all() drops every inhibitor; it runs at handle end before the handle stops counting as a
//   writer (a committer woken by that must find nothing inhibited), before the commit's write-out and
//   on abort. Moving a set transfers its inhibitors; the moved-from set is empty.
// Thread safety: none; a handle is used by one thread at a time. add() REQUIRES the buffer locked by
// the caller (read or write), so a writeback that try-locks the buffer and then re-reads the count
// cannot miss an inhibitor taken before it looked.
#pragma once

#include <array>
#include <cstdint>

#include "tree/extent_buffer.h"

namespace ubtrfs {

class InhibitSet {
 public:
  static constexpr int kSlots = 8;

  enum class AddResult {
    kAlreadyHeld,  // the buffer was in the set: its reference bit is set again
    kAdded,        // a free slot took it
    kReplaced,     // a slot was reused: another buffer lost this handle's inhibitor
  };

  InhibitSet() = default;
  InhibitSet(const InhibitSet&) = delete;
  InhibitSet& operator=(const InhibitSet&) = delete;
  InhibitSet(InhibitSet&& o) noexcept { take(o); }
  InhibitSet& operator=(InhibitSet&& o) noexcept {
    if (this != &o) {
      release_all();
      take(o);
    }
    return *this;
  }
  ~InhibitSet() { release_all(); }

  AddResult add(const EbRef& eb) {
    for (int i = 0; i < kSlots; ++i)
      if (slots_[i] == eb) {
        referenced_ |= 1u << i;
        return AddResult::kAlreadyHeld;
      }
    AddResult result = AddResult::kAdded;
    // CLOCK: at most two sweeps (the first clears every reference bit it passes).
    for (;;) {
      const int i = hand_;
      hand_ = static_cast<uint8_t>((hand_ + 1) % kSlots);
      if (!slots_[i]) {
        put(i, eb);
        return result;
      }
      if (referenced_ & (1u << i)) {
        referenced_ &= ~(1u << i);
        continue;
      }
      slots_[i]->writeback_inhibitors().fetch_sub(1, std::memory_order_acq_rel);
      slots_[i].reset();
      result = AddResult::kReplaced;
      put(i, eb);
      return result;
    }
  }

  void release_all() {
    for (auto& s : slots_) {
      if (!s) continue;
      s->writeback_inhibitors().fetch_sub(1, std::memory_order_acq_rel);
      s.reset();
    }
    referenced_ = 0;
    hand_ = 0;
  }

  bool contains(const EbRef& eb) const {
    for (const auto& s : slots_)
      if (s == eb) return true;
    return false;
  }
  int size() const {
    int n = 0;
    for (const auto& s : slots_) n += s != nullptr;
    return n;
  }

 private:
  void put(int i, const EbRef& eb) {
    eb->writeback_inhibitors().fetch_add(1, std::memory_order_acq_rel);
    slots_[i] = eb;
    referenced_ |= 1u << i;
  }
  void take(InhibitSet& o) {
    slots_ = std::move(o.slots_);
    for (auto& s : o.slots_) s.reset();
    referenced_ = o.referenced_;
    hand_ = o.hand_;
    o.referenced_ = 0;
    o.hand_ = 0;
  }

  std::array<EbRef, kSlots> slots_{};
  uint32_t referenced_ = 0;  // bit i: slot i was used since the hand last passed it
  uint8_t hand_ = 0;
};

}  // namespace ubtrfs
