// Deterministic pseudo-random numbers for ubtrfs-stress.
//
// Owns: the one generator every stress decision is drawn from (xoshiro256**, seeded through
// splitmix64). It is written out here rather than taken from <random> because the standard
// distributions are implementation-defined: the same seed must give the same operation
// sequence on every build, which is what makes a failing run reproducible with -s.
//
// Invariants: the generator state is never all zero; every helper consumes a fixed number of
// draws for the same arguments (no rejection loops whose length depends on the platform).
#pragma once

#include <cstdint>

namespace ubtrfs::stress {

// splitmix64 step: a good 64-bit mixer, also used to derive file content from a write seed.
constexpr uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

class Prng {
 public:
  explicit Prng(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : state_) {
      x += 0x9e3779b97f4a7c15ULL;
      s = splitmix64(x);
    }
    if ((state_[0] | state_[1] | state_[2] | state_[3]) == 0) state_[0] = 1;
  }

  uint64_t next() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  // Uniform in [0, n); returns 0 when n == 0. Multiply-shift (Lemire) without rejection: the
  // tiny bias is irrelevant here and keeps the draw count fixed.
  uint64_t below(uint64_t n) {
    if (n == 0) return 0;
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

  // Uniform in [lo, hi] (inclusive). REQUIRES: lo <= hi.
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }

  // True with probability p (0 <= p <= 1).
  bool chance(double p) { return static_cast<double>(next() >> 11) * 0x1.0p-53 < p; }

 private:
  static constexpr uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace ubtrfs::stress
