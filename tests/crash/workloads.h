// The workloads of the crash harness: the seeded random mix and the ACE-style bounded generator
// (every sequence of 1..depth core operations over a small fixed file set, each followed by a
// persistence call), after CrashMonkey's ACE.
//
// Owns: the setup ops every workload's base image starts from (files "foo" and "A/foo", directory
// "A", committed), the random mix (random_mix_next) and the ACE enumeration (ace_sequences).
// Invariants: both only propose ops the model accepts in the state they run in; an ACE sequence
// in which some op is invalid (creat of an existing name, rmdir of a non-empty directory...) is
// dropped, so the enumeration holds each distinct valid sequence once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/crash/recorder.h"

namespace ubtrfs::crash {

std::vector<Op> setup_ops();

// The random mix: create/write/truncate/punch/fallocate/rename/link/unlink/mkdir/rmdir/setxattr
// with fsync/fdatasync/fsyncdir/sync over at most 6 files in the root and two subdirectories,
// `n_ops` ops from `seed`.
NextOp random_mix(uint64_t seed, size_t n_ops);

enum class AceSet { kSmall, kFull };
// Every valid sequence of 1..depth core ops from the set, each followed by a persistence op; the
// model state `base` decides validity.
std::vector<std::vector<Op>> ace_sequences(const FsState& base, AceSet set, int depth);

// Feeds a fixed op list to record().
NextOp fixed_ops(std::vector<Op> ops);

std::string ops_text(const std::vector<Op>& ops);

}  // namespace ubtrfs::crash
