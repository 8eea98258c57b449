// The random mix and the ACE-style generator (workloads.h).
#include "tests/crash/workloads.h"

#include "tests/crash/fs_state.h"

#include <fmt/format.h>

#include <memory>
#include <random>

namespace ubtrfs::crash {
namespace {

Op mk(OpKind k, std::string p, std::string p2 = {}, uint64_t off = 0, uint64_t len = 0, uint8_t fill = 0,
      bool keep = false, std::string x = {}) {
  Op o;
  o.kind = k;
  o.path = std::move(p);
  o.path2 = std::move(p2);
  o.off = off;
  o.len = len;
  o.fill = fill;
  o.keep_size = keep;
  o.xname = std::move(x);
  return o;
}

// The core op instances of the ACE set. Small: one instance per kind (11); full: each over every
// file of the set, with two variants where the arguments matter.
std::vector<Op> ace_core_ops(AceSet set) {
  std::vector<Op> ops;
  if (set == AceSet::kSmall) {
    ops.push_back(mk(OpKind::kCreat, "bar"));
    ops.push_back(mk(OpKind::kWrite, "foo", {}, 2000, 7000, 3));
    ops.push_back(mk(OpKind::kFalloc, "foo", {}, 8192, 16384, 0, false));
    ops.push_back(mk(OpKind::kPunch, "foo", {}, 4096, 4096));
    ops.push_back(mk(OpKind::kLink, "foo", "A/bar"));
    ops.push_back(mk(OpKind::kUnlink, "A/foo"));
    ops.push_back(mk(OpKind::kRename, "foo", "A/foo"));
    ops.push_back(mk(OpKind::kMkdir, "B"));
    ops.push_back(mk(OpKind::kRmdir, "B"));
    ops.push_back(mk(OpKind::kSetxattr, "foo", {}, 0, 0, 5, false, "user.k"));
    ops.push_back(mk(OpKind::kTruncate, "A/foo", {}, 3000));
    return ops;
  }
  const std::vector<std::string> files{"foo", "bar", "A/foo", "A/bar"};
  for (const auto& f : files) {
    ops.push_back(mk(OpKind::kCreat, f));
    ops.push_back(mk(OpKind::kWrite, f, {}, 2000, 7000, 3));
    ops.push_back(mk(OpKind::kWrite, f, {}, 16384, 4096, 4));  // append (beyond the setup sizes)
    ops.push_back(mk(OpKind::kFalloc, f, {}, 8192, 16384, 0, false));
    ops.push_back(mk(OpKind::kFalloc, f, {}, 12288, 8192, 0, true));
    ops.push_back(mk(OpKind::kPunch, f, {}, 4096, 4096));
    ops.push_back(mk(OpKind::kTruncate, f, {}, 3000));
    ops.push_back(mk(OpKind::kTruncate, f, {}, 20000));
    ops.push_back(mk(OpKind::kUnlink, f));
    ops.push_back(mk(OpKind::kSetxattr, f, {}, 0, 0, 5, false, "user.k"));
  }
  for (auto [a, b] : std::vector<std::pair<const char*, const char*>>{
           {"foo", "bar"}, {"foo", "A/bar"}, {"A/foo", "bar"}, {"A/foo", "A/bar"}}) {
    ops.push_back(mk(OpKind::kLink, a, b));
    ops.push_back(mk(OpKind::kRename, a, b));
  }
  ops.push_back(mk(OpKind::kRename, "foo", "A/foo"));
  ops.push_back(mk(OpKind::kRename, "A", "B"));
  ops.push_back(mk(OpKind::kMkdir, "B"));
  ops.push_back(mk(OpKind::kRmdir, "B"));
  ops.push_back(mk(OpKind::kRmdir, "A"));
  ops.push_back(mk(OpKind::kSetxattr, "A", {}, 0, 0, 6, false, "user.d"));
  return ops;
}

// The persistence ops that may follow `op` in state `after`: fsync (fdatasync for data ops) of the
// object it touched, fsync of that object's directory; the full set adds sync.
std::vector<Op> persistence_after(const Op& op, const FsState& after, AceSet set) {
  std::vector<Op> out;
  const std::string obj = (op.kind == OpKind::kRename || op.kind == OpKind::kLink) ? op.path2 : op.path;
  const InodeState* n = after.at(obj);
  const bool data_op = op.kind == OpKind::kWrite || op.kind == OpKind::kFalloc || op.kind == OpKind::kPunch ||
                       op.kind == OpKind::kTruncate;
  if (n && !n->dir) out.push_back(mk(data_op && set == AceSet::kFull ? OpKind::kFdatasync : OpKind::kFsync, obj));
  if (n && n->dir) out.push_back(mk(OpKind::kFsyncDir, obj));
  if (set == AceSet::kFull && n && !n->dir && data_op) out.push_back(mk(OpKind::kFsync, obj));
  out.push_back(mk(OpKind::kFsyncDir, parent_of(obj)));
  if (set == AceSet::kFull) out.push_back(mk(OpKind::kSync, ""));
  return out;
}

void ace_extend(const FsState& state, const std::vector<Op>& core, AceSet set, int depth, uint64_t& ino,
                std::vector<Op>& prefix, std::vector<std::vector<Op>>& out) {
  if (depth == 0) return;
  for (const Op& op : core) {
    FsState s = state;
    if (apply_to_model(s, op, ++ino) != 0) continue;
    for (const Op& p : persistence_after(op, s, set)) {
      FsState s2 = s;
      if (apply_to_model(s2, p) != 0) continue;
      prefix.push_back(op);
      prefix.push_back(p);
      out.push_back(prefix);
      ace_extend(s2, core, set, depth - 1, ino, prefix, out);
      prefix.pop_back();
      prefix.pop_back();
    }
  }
}

}  // namespace

std::vector<Op> setup_ops() {
  return {mk(OpKind::kMkdir, "A"), mk(OpKind::kCreat, "foo"), mk(OpKind::kWrite, "foo", {}, 0, 12288, 1),
          mk(OpKind::kCreat, "A/foo"), mk(OpKind::kWrite, "A/foo", {}, 0, 8192, 2)};
}

NextOp random_mix(uint64_t seed, size_t n_ops) {
  auto rng = std::make_shared<std::mt19937_64>(seed);
  return [rng, n_ops](const FsState& now, size_t index) -> std::optional<Op> {
    if (index >= n_ops) return std::nullopt;
    auto rnd = [&](uint64_t n) { return n ? (*rng)() % n : 0; };
    const std::vector<std::string> dirs{"", "A", "D"};
    auto any_path = [&]() {
      const std::string& d = dirs[rnd(dirs.size())];
      const std::string name = fmt::format("f{}", rnd(3));
      return d.empty() ? name : d + "/" + name;
    };
    for (int attempt = 0; attempt < 1000; ++attempt) {
      Op op;
      const uint64_t p = rnd(100);
      const std::string path = any_path();
      if (p < 10) op = mk(OpKind::kCreat, path);
      else if (p < 30) op = mk(OpKind::kWrite, path, {}, rnd(40000), 1 + rnd(12000), static_cast<uint8_t>(rnd(250)));
      else if (p < 36) op = mk(OpKind::kTruncate, path, {}, rnd(30000));
      else if (p < 41) op = mk(OpKind::kPunch, path, {}, rnd(8) * 4096, (1 + rnd(4)) * 4096);
      else if (p < 46) op = mk(OpKind::kFalloc, path, {}, rnd(8) * 4096, (1 + rnd(4)) * 4096, 0, rnd(2) == 0);
      else if (p < 53) op = mk(OpKind::kRename, path, any_path());
      else if (p < 57) op = mk(OpKind::kLink, path, any_path());
      else if (p < 63) op = mk(OpKind::kUnlink, path);
      else if (p < 66) op = mk(OpKind::kMkdir, rnd(2) ? "D" : "A");
      else if (p < 68) op = mk(OpKind::kRmdir, rnd(2) ? "D" : "A");
      else if (p < 70) op = mk(OpKind::kRename, rnd(2) ? "D" : "A", rnd(2) ? "A/D" : "D");
      else if (p < 76) op = mk(OpKind::kSetxattr, path, {}, 0, 0, static_cast<uint8_t>(rnd(250)), false,
                                 fmt::format("user.x{}", rnd(2)));
      else if (p < 86) op = mk(OpKind::kFsync, path);
      else if (p < 90) op = mk(OpKind::kFdatasync, path);
      else if (p < 96) op = mk(OpKind::kFsyncDir, dirs[rnd(dirs.size())]);
      else op = mk(OpKind::kSync, "");
      FsState probe = now;
      if (apply_to_model(probe, op, 1ull << 40) == 0) return op;
    }
    return mk(OpKind::kSync, "");
  };
}

std::vector<std::vector<Op>> ace_sequences(const FsState& base, AceSet set, int depth) {
  std::vector<std::vector<Op>> out;
  std::vector<Op> prefix;
  uint64_t ino = 1ull << 40;  // placeholder numbers: validity does not depend on them
  ace_extend(base, ace_core_ops(set), set, depth, ino, prefix, out);
  return out;
}

NextOp fixed_ops(std::vector<Op> ops) {
  auto list = std::make_shared<std::vector<Op>>(std::move(ops));
  return [list](const FsState&, size_t i) -> std::optional<Op> {
    if (i >= list->size()) return std::nullopt;
    return (*list)[i];
  };
}

std::string ops_text(const std::vector<Op>& ops) {
  std::string s;
  for (size_t i = 0; i < ops.size(); ++i) s += fmt::format("{}{}", i ? "; " : "", ops[i].text());
  return s;
}

}  // namespace ubtrfs::crash
