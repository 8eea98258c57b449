// The pass sequence of fsck.ubtrfs as a library call, so the checker can run in process on any
// BlockDevice (the crash harness, tests/crash, judges thousands of images this way) with exactly
// the rules and order the command runs.
//
// Owns: the fsck(8) exit codes and run_passes(). run_passes() only reads the device and reports to
// ctx.report(); printing the summary stays with the caller (tools/fsck/main.cpp).
#pragma once

#include <string>

#include "tools/fsck/context.h"

namespace ubtrfs::fsck {

inline constexpr int kExitOk = 0;
inline constexpr int kExitErrorsLeft = 4;
inline constexpr int kExitOperational = 8;
inline constexpr int kExitUsage = 16;
inline constexpr int kPasses = 9;

struct PassesResult {
  int exit_code = kExitOk;  // kExitOk, kExitErrorsLeft or kExitOperational
  std::string message;      // why checking stopped early (operational or fatal), empty otherwise
};

// Runs the nine passes on ctx.dev() in order (context.h lists them), stopping early when the
// filesystem cannot be read further. `device` names it in messages.
PassesResult run_passes(Context& ctx, const std::string& device);

}  // namespace ubtrfs::fsck
