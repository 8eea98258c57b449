// The operation table (see ops.h).
#include "tools/stress/ops.h"

#include <charconv>

namespace ubtrfs::stress {

namespace {

struct OpInfo {
  const char* name;
  uint32_t weight;
};

// Default mix: data operations dominate, namespace churn keeps the tree moving, and the
// verifying reads are frequent enough that a wrong byte is caught near the op that caused it.
constexpr std::array<OpInfo, kNumOps> kOps = {{
    {"creat", 8},
    {"write", 20},
    {"read", 12},
    {"truncate", 5},
    {"punch", 4},
    {"fallocate", 3},
    {"rename", 6},
    {"link", 3},
    {"unlink", 4},
    {"mkdir", 3},
    {"rmdir", 2},
    {"symlink", 3},
    {"setxattr", 4},
    {"removexattr", 2},
    {"fsync", 2},
    {"fdatasync", 1},
    {"stat", 8},
    {"readdir", 3},
    {"chmod", 2},
    {"copy_range", 0},
    {"snapshot", 0},
    {"snapdelete", 0},
}};

}  // namespace

const char* op_name(OpKind op) { return kOps[static_cast<size_t>(op)].name; }

std::optional<OpKind> op_from_name(std::string_view name) {
  for (size_t i = 0; i < kNumOps; ++i) {
    if (name == kOps[i].name) return static_cast<OpKind>(i);
  }
  return std::nullopt;
}

OpWeights default_op_weights() {
  OpWeights w{};
  for (size_t i = 0; i < kNumOps; ++i) w[i] = kOps[i].weight;
  return w;
}

std::optional<OpWeights> parse_op_list(std::string_view list, std::string* error) {
  OpWeights w{};
  bool any = false;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    if (item.empty()) continue;
    std::string_view name = item;
    std::optional<uint32_t> weight;
    if (const size_t eq = item.find('='); eq != std::string_view::npos) {
      name = item.substr(0, eq);
      const std::string_view num = item.substr(eq + 1);
      uint32_t v = 0;
      auto [ptr, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
      if (ec != std::errc() || ptr != num.data() + num.size()) {
        *error = "bad weight in --ops item '" + std::string(item) + "'";
        return std::nullopt;
      }
      weight = v;
    }
    const auto op = op_from_name(name);
    if (!op) {
      *error = "unknown op '" + std::string(name) + "' (known: " + all_op_names() + ")";
      return std::nullopt;
    }
    w[static_cast<size_t>(*op)] = weight.value_or(kOps[static_cast<size_t>(*op)].weight);
    any = any || w[static_cast<size_t>(*op)] > 0;
  }
  if (!any) {
    *error = "--ops enables no operation";
    return std::nullopt;
  }
  return w;
}

std::string all_op_names() {
  std::string out;
  for (const auto& op : kOps) {
    if (!out.empty()) out += ',';
    out += op.name;
  }
  return out;
}

}  // namespace ubtrfs::stress
