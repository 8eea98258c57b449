// Errors as values, for every layer (STYLE.md §5).
//
// A failing operation returns an Error: the errno the FUSE boundary (or a tool's exit path) will use,
// and a message in btrfs habit — lowercase, no trailing period, never split, naming where it happened
// (bytenr in decimal, keys as [objectid type offset], inode numbers). No exceptions cross layers.
#pragma once

#include <cerrno>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace ubtrfs {

struct Error {
  int err = EIO;        // errno value chosen where the failure is understood
  std::string message;  // what and where, e.g. "bad tree block 30769152: bytenr mismatch, have 30785536"
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

// Builds the unexpected value for a Result/Status return: `return fail(EIO, "read {} failed", off);`
template <class... Args>
[[nodiscard]] inline std::unexpected<Error> fail(int err, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected<Error>(Error{err, fmt::format(f, std::forward<Args>(args)...)});
}

[[nodiscard]] inline std::unexpected<Error> fail(Error e) { return std::unexpected<Error>(std::move(e)); }

// Propagates an error from an expression returning Result/Status; yields the value otherwise.
#define UBTRFS_TRY(expr)                                                  \
  ({                                                                      \
    auto&& ubtrfs_try_r_ = (expr);                                        \
    if (!ubtrfs_try_r_) return ::std::unexpected(ubtrfs_try_r_.error());  \
    std::move(ubtrfs_try_r_).value();                                     \
  })

#define UBTRFS_TRY_STATUS(expr)                                           \
  do {                                                                    \
    auto&& ubtrfs_try_s_ = (expr);                                        \
    if (!ubtrfs_try_s_) return ::std::unexpected(ubtrfs_try_s_.error());  \
  } while (0)

}  // namespace ubtrfs
