// Private to the ubtrfs-stress worker (worker.cpp, worker_data_ops.cpp, worker_verify.cpp): the
// small helpers more than one of them uses. Not part of the stress library's interface.
#pragma once

#include <cerrno>
#include <cstdint>

#include "tools/stress/model.h"

namespace ubtrfs::stress {

inline int errno_of(long ret) { return ret < 0 ? errno : 0; }

inline bool is_dir(const Entry& e) { return e.type == NodeType::kDir; }

inline constexpr uint64_t kMiB = 1ULL << 20;

}  // namespace ubtrfs::stress
