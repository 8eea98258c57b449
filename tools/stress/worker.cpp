// Worker: random operations checked against the model (see worker.h for the contract).
// This file: setup, run, the snapshots, the choice of operation and arguments, the namespace
// operations and the xattrs. The data operations are in worker_data_ops.cpp, the checks of the
// real tree against the model in worker_verify.cpp; worker_internal.h holds the helpers they share.
#include "tools/stress/worker.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "tools/stress/worker_internal.h"

namespace ubtrfs::stress {

namespace {

std::string errno_name(int err) {
  if (err == 0) return "success";
  return fmt::format("{} ({})", strerrorname_np(err) ? strerrorname_np(err) : "?", strerror(err));
}

bool is_file(const Entry& e) { return e.type == NodeType::kFile; }
bool is_not_root(const Entry& e) { return !e.path.empty(); }
bool is_xattr_target(const Entry& e) { return e.type != NodeType::kSymlink; }
bool is_unlinkable(const Entry& e) { return e.type != NodeType::kDir; }
bool is_removable_dir(const Entry& e) { return e.type == NodeType::kDir && !e.path.empty(); }

}  // namespace

Worker::Worker(WorkerOptions opts, WorkerStats* stats)
    : opts_(std::move(opts)), stats_(stats), prng_(opts_.seed), model_(0755) {}

Worker::~Worker() {
  if (root_fd_ >= 0) close(root_fd_);
  if (snaps_fd_ >= 0) close(snaps_fd_);
}

bool Worker::setup(std::string* error) {
  // Modes are modelled exactly, so nothing may be masked (this sets the process umask).
  umask(0);
  if (opts_.subvolume) {
    // The root becomes a subvolume made in its parent, and ROOT.snaps a plain directory beside it.
    const auto slash = opts_.root.find_last_of('/');
    const std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : opts_.root.substr(0, slash));
    const std::string name = slash == std::string::npos ? opts_.root : opts_.root.substr(slash + 1);
    const int pfd = open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (pfd < 0) {
      *error = fmt::format("cannot open {}: {}", parent, strerror(errno));
      return false;
    }
    btrfs_ioctl_vol_args args{};
    std::snprintf(args.name, sizeof args.name, "%s", name.c_str());
    const int rc = ioctl(pfd, BTRFS_IOC_SUBVOL_CREATE, &args);
    const int err = errno;
    close(pfd);
    if (rc != 0) {
      *error = fmt::format("cannot create subvolume {}: {}", opts_.root, strerror(err));
      return false;
    }
    const std::string snaps = opts_.root + ".snaps";
    if (mkdir(snaps.c_str(), 0755) != 0 || (snaps_fd_ = open(snaps.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
      *error = fmt::format("cannot create {}: {}", snaps, strerror(errno));
      return false;
    }
  } else if (mkdir(opts_.root.c_str(), 0755) != 0) {
    *error = fmt::format("cannot create {}: {}", opts_.root, strerror(errno));
    return false;
  }
  // The umask must not mask the model's modes; chmod makes the root exact regardless.
  if (chmod(opts_.root.c_str(), 0755) != 0) {
    *error = fmt::format("cannot chmod {}: {}", opts_.root, strerror(errno));
    return false;
  }
  root_fd_ = open(opts_.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_fd_ < 0) {
    *error = fmt::format("cannot open {}: {}", opts_.root, strerror(errno));
    return false;
  }
  if (opts_.xattr_bytes_per_inode == 0) {
    struct statfs sfs;
    if (fstatfs(root_fd_, &sfs) != 0) {
      *error = fmt::format("cannot statfs {}: {}", opts_.root, strerror(errno));
      return false;
    }
    constexpr long kBtrfsMagic = 0x9123683e;
    constexpr long kFuseMagic = 0x65735546;
    const bool roomy = sfs.f_type == kBtrfsMagic || sfs.f_type == kFuseMagic;
    opts_.xattr_bytes_per_inode = roomy ? 64 * 1024 : 2500;
  }
  return true;
}

bool Worker::run() {
  while (op_no_ < opts_.nops && step()) {
  }
  if (failed_) return false;
  bool ok = verify_tree();
  for (size_t i = 0; i < snapshots_.size(); ++i) ok = verify_snapshot(i) && ok;
  return ok;
}

void Worker::do_snapshot() {
  constexpr size_t kMaxSnapshots = 4;
  if (snaps_fd_ < 0) return do_stat();  // not a subvolume: nothing to snapshot
  if (snapshots_.size() >= kMaxSnapshots) return do_snapdelete();
  count(OpKind::kSnapshot);
  Snapshot snap;
  snap.name = fmt::format("s{}", ++snap_counter_);
  snap.readonly = prng_.below(2) == 0;
  btrfs_ioctl_vol_args_v2 args{};
  args.fd = root_fd_;
  args.flags = snap.readonly ? BTRFS_SUBVOL_RDONLY : 0;
  std::snprintf(args.name, sizeof args.name, "%s", snap.name.c_str());
  spdlog::debug("p{} op {} snapshot {}{}", opts_.id, op_no_, snap.name, snap.readonly ? " (read-only)" : "");
  if (ioctl(snaps_fd_, BTRFS_IOC_SNAP_CREATE_V2, &args) != 0) {
    fail(fmt::format("snapshot {}: {}", snap.name, strerror(errno)));
    return;
  }
  snap.model = model_;
  // Inode numbers in a snapshot are its own to observe (ubtrfs maps them per subvolume).
  for (const Entry& e : snap.model.entries()) snap.model.inode(e.id).real_ino = 0;
  snapshots_.push_back(std::move(snap));
}

void Worker::do_snapdelete() {
  if (snapshots_.empty()) return do_snapshot();
  count(OpKind::kSnapDelete);
  const size_t i = prng_.below(snapshots_.size());
  if (!verify_snapshot(i)) return;
  btrfs_ioctl_vol_args args{};
  std::snprintf(args.name, sizeof args.name, "%s", snapshots_[i].name.c_str());
  spdlog::debug("p{} op {} snapdelete {}", opts_.id, op_no_, snapshots_[i].name);
  if (ioctl(snaps_fd_, BTRFS_IOC_SNAP_DESTROY, &args) != 0) {
    fail(fmt::format("delete snapshot {}: {}", snapshots_[i].name, strerror(errno)));
    return;
  }
  snapshots_.erase(snapshots_.begin() + static_cast<std::ptrdiff_t>(i));
}

bool Worker::verify_snapshot(size_t i) {
  Snapshot& snap = snapshots_[i];
  int fd = openat(snaps_fd_, snap.name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    fail(fmt::format("snapshot {}: cannot open: {}", snap.name, strerror(errno)));
    return false;
  }
  // verify_tree works on root_fd_ and model_: point them at the snapshot for the walk.
  std::swap(root_fd_, fd);
  std::swap(model_, snap.model);
  verify_root_ = opts_.root + ".snaps/" + snap.name;
  const char* label = op_label_;
  const bool ok = verify_tree();
  op_label_ = label;
  verify_root_.clear();
  std::swap(model_, snap.model);
  std::swap(root_fd_, fd);
  close(fd);
  if (!ok) spdlog::error("p{}: snapshot {} differs from the tree it was taken of", opts_.id, snap.name);
  return ok;
}

void Worker::count(OpKind op) {
  op_label_ = op_name(op);
  ++stats_->counts[static_cast<size_t>(op)];
}

void Worker::fail(const std::string& message) {
  ++stats_->failures;
  failed_ = true;
  spdlog::error("p{} op {} {}: {}", opts_.id, op_no_, op_label_, message);
}

std::string Worker::abs_path(const std::string& rel) const {
  const std::string& root = verify_root_.empty() ? opts_.root : verify_root_;
  return rel.empty() ? root : root + "/" + rel;
}

bool Worker::check_errno(std::string_view what, const std::string& rel, int expected, int actual) {
  if (expected == actual) {
    if (actual != 0) ++stats_->expected_errors;
    return true;
  }
  fail(fmt::format("{} {}: expected {}, got {}", what, rel, errno_name(expected), errno_name(actual)));
  return false;
}

// ---- argument choice ----

OpKind Worker::draw_op() {
  uint64_t total = 0;
  for (uint32_t w : opts_.weights) total += w;
  uint64_t r = prng_.below(total);
  for (size_t i = 0; i < kNumOps; ++i) {
    if (r < opts_.weights[i]) return static_cast<OpKind>(i);
    r -= opts_.weights[i];
  }
  return OpKind::kStat;
}

std::optional<Entry> Worker::pick(bool (*want)(const Entry&)) {
  const auto& all = model_.entries();
  std::vector<size_t> idx;
  for (size_t i = 0; i < all.size(); ++i) {
    if (want(all[i])) idx.push_back(i);
  }
  if (idx.empty()) return std::nullopt;
  return all[idx[prng_.below(idx.size())]];
}

std::optional<Entry> Worker::pick_file() { return pick(is_file); }

std::string Worker::pick_dir() { return pick(is_dir)->path; }  // the root always exists

std::string Worker::fresh_name(char prefix) { return fmt::format("{}{}", prefix, name_counter_++); }

uint64_t Worker::choose_len(uint64_t max_len) {
  const uint64_t r = prng_.below(100);
  uint64_t len;
  if (r < 45) {
    len = prng_.range(1, 4096);
  } else if (r < 75) {
    len = prng_.range(4097, 64 * 1024);
  } else if (r < 93) {
    len = prng_.range(64 * 1024 + 1, 256 * 1024);
  } else {
    len = prng_.range(256 * 1024 + 1, kMiB);
  }
  if (prng_.chance(0.3)) len = std::max<uint64_t>(4096, len & ~4095ULL);
  return std::min(len, max_len);
}

uint32_t Worker::choose_mode(bool dir) {
  // The owner keeps rw (rwx for directories) so the tool also works unprivileged.
  uint32_t mode = (dir ? 0700 : 0600) | static_cast<uint32_t>(prng_.below(0100));
  if (!dir && prng_.chance(0.2)) mode |= 0100;
  return mode;
}

bool Worker::step() {
  if (failed_) return false;
  OpKind op = draw_op();
  const size_t names = model_.entries().size();
  const bool grows = op == OpKind::kCreat || op == OpKind::kMkdir || op == OpKind::kSymlink || op == OpKind::kLink;
  if (grows && names > opts_.max_entries) op = prng_.chance(0.7) ? OpKind::kUnlink : OpKind::kRmdir;
  const bool allocates = op == OpKind::kWrite || op == OpKind::kFallocate || op == OpKind::kCopyRange;
  const bool over_budget = allocates && model_.allocated_bytes() > opts_.data_budget;
  if (over_budget) spdlog::debug("p{} op {} over the data budget: {} bytes", opts_.id, op_no_, model_.allocated_bytes());
  switch (over_budget ? OpKind::kTruncate : op) {
    case OpKind::kCreat: do_creat(); break;
    case OpKind::kWrite: do_write(); break;
    case OpKind::kRead: do_read(); break;
    case OpKind::kTruncate: do_truncate(over_budget); break;
    case OpKind::kPunch: do_punch(); break;
    case OpKind::kFallocate: do_fallocate(); break;
    case OpKind::kRename: do_rename(); break;
    case OpKind::kLink: do_link(); break;
    case OpKind::kUnlink: do_unlink(); break;
    case OpKind::kMkdir: do_mkdir(); break;
    case OpKind::kRmdir: do_rmdir(); break;
    case OpKind::kSymlink: do_symlink(); break;
    case OpKind::kSetxattr: do_setxattr(); break;
    case OpKind::kRemovexattr: do_removexattr(); break;
    case OpKind::kFsync: do_sync(false); break;
    case OpKind::kFdatasync: do_sync(true); break;
    case OpKind::kStat: do_stat(); break;
    case OpKind::kReaddir: do_readdir(); break;
    case OpKind::kChmod: do_chmod(); break;
    case OpKind::kCopyRange: do_copy_range(); break;
    case OpKind::kSnapshot: do_snapshot(); break;
    case OpKind::kSnapDelete: do_snapdelete(); break;
    case OpKind::kCount: break;
  }
  ++op_no_;
  std::atomic_ref<uint64_t>(stats_->ops_done).store(op_no_, std::memory_order_relaxed);
  return !failed_;
}

// ---- namespace operations ----

void Worker::do_creat() {
  count(OpKind::kCreat);
  std::string rel;
  const auto existing = prng_.chance(0.05) ? pick(is_not_root) : std::nullopt;
  rel = existing ? existing->path : Model::join(pick_dir(), fresh_name('f'));
  const uint32_t mode = choose_mode(false);
  spdlog::debug("p{} op {} creat {} {:o}", opts_.id, op_no_, rel, mode);
  const int fd = openat(root_fd_, rel.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
  const int err = errno_of(fd);
  if (fd >= 0) close(fd);
  check_errno("creat", rel, model_.create(rel, mode), err);
}

void Worker::do_mkdir() {
  count(OpKind::kMkdir);
  const auto existing = prng_.chance(0.05) ? pick(is_not_root) : std::nullopt;
  const std::string rel = existing ? existing->path : Model::join(pick_dir(), fresh_name('d'));
  const uint32_t mode = choose_mode(true);
  spdlog::debug("p{} op {} mkdir {} {:o}", opts_.id, op_no_, rel, mode);
  const int err = errno_of(mkdirat(root_fd_, rel.c_str(), mode));
  check_errno("mkdir", rel, model_.mkdir(rel, mode), err);
}

void Worker::do_symlink() {
  count(OpKind::kSymlink);
  const std::string rel = Model::join(pick_dir(), fresh_name('s'));
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789/._-";
  const uint64_t len = prng_.chance(0.05) ? prng_.range(256, 3000) : prng_.range(1, 100);
  std::string target;
  for (uint64_t i = 0; i < len; ++i) target += kChars[prng_.below(sizeof(kChars) - 1)];
  spdlog::debug("p{} op {} symlink {} -> {} bytes", opts_.id, op_no_, rel, target.size());
  const int err = errno_of(symlinkat(target.c_str(), root_fd_, rel.c_str()));
  check_errno("symlink", rel, model_.symlink(rel, target), err);
}

void Worker::do_link() {
  const auto src = pick_file();
  if (!src) return do_creat();
  count(OpKind::kLink);
  const auto existing = prng_.chance(0.1) ? pick(is_not_root) : std::nullopt;
  const std::string rel = existing ? existing->path : Model::join(pick_dir(), fresh_name('h'));
  spdlog::debug("p{} op {} link {} {}", opts_.id, op_no_, src->path, rel);
  const int err = errno_of(linkat(root_fd_, src->path.c_str(), root_fd_, rel.c_str(), 0));
  check_errno("link", src->path + " -> " + rel, model_.link(src->path, rel), err);
}

void Worker::do_unlink() {
  // Mostly files and symlinks; now and then a directory, which must fail with EISDIR.
  const auto victim = prng_.chance(0.08) ? pick(is_removable_dir) : pick(is_unlinkable);
  if (!victim) return do_creat();
  count(OpKind::kUnlink);
  spdlog::debug("p{} op {} unlink {}", opts_.id, op_no_, victim->path);
  const int err = errno_of(unlinkat(root_fd_, victim->path.c_str(), 0));
  check_errno("unlink", victim->path, model_.unlink(victim->path), err);
}

void Worker::do_rmdir() {
  // Prefer empty directories so rmdir succeeds often; the rest must fail with ENOTEMPTY.
  std::optional<Entry> victim;
  if (prng_.chance(0.6)) {
    const auto& all = model_.entries();
    std::vector<size_t> empty;
    for (size_t i = 0; i < all.size(); ++i) {
      if (is_removable_dir(all[i]) && model_.inode(all[i].id).children.empty()) empty.push_back(i);
    }
    if (!empty.empty()) victim = all[empty[prng_.below(empty.size())]];
  }
  if (!victim) victim = pick(is_removable_dir);
  if (!victim) return do_mkdir();
  count(OpKind::kRmdir);
  spdlog::debug("p{} op {} rmdir {}", opts_.id, op_no_, victim->path);
  const int err = errno_of(unlinkat(root_fd_, victim->path.c_str(), AT_REMOVEDIR));
  check_errno("rmdir", victim->path, model_.rmdir(victim->path), err);
}

void Worker::do_rename() {
  const auto src = pick(is_not_root);
  if (!src) return do_creat();
  count(OpKind::kRename);
  std::string dst;
  if (prng_.chance(0.45)) {
    dst = pick(is_not_root)->path;  // over an existing name: replace, no-op or a type error
  } else {
    dst = Model::join(pick_dir(), fresh_name('r'));
  }
  spdlog::debug("p{} op {} rename {} {}", opts_.id, op_no_, src->path, dst);
  const int err = errno_of(renameat(root_fd_, src->path.c_str(), root_fd_, dst.c_str()));
  check_errno("rename", src->path + " -> " + dst, model_.rename(src->path, dst), err);
}

void Worker::do_chmod() {
  const auto e = pick(is_xattr_target);  // symlinks have no mode of their own
  count(OpKind::kChmod);
  const uint32_t mode = choose_mode(e->type == NodeType::kDir);
  spdlog::debug("p{} op {} chmod {} {:o}", opts_.id, op_no_, e->path, mode);
  const int err = errno_of(fchmodat(root_fd_, at_path(e->path), mode, 0));
  if (check_errno("chmod", e->path, 0, err)) model_.inode(e->id).mode = mode;
}

// ---- xattrs ----

void Worker::do_setxattr() {
  const auto e = pick(is_xattr_target);
  count(OpKind::kSetxattr);
  const std::string name = fmt::format("user.x{}", prng_.below(6));
  const uint64_t r = prng_.below(100);
  uint64_t len = r < 70 ? prng_.below(64) : r < 95 ? prng_.range(64, 1024) : prng_.range(1025, 3900);
  uint64_t others = 0;
  for (const auto& [n, v] : model_.inode(e->id).xattrs) others += n == name ? 0 : v.size();
  len = std::min(len, opts_.xattr_bytes_per_inode - std::min(others, opts_.xattr_bytes_per_inode));
  std::string value(len, '\0');
  for (auto& c : value) c = static_cast<char>(prng_.next() & 0xff);
  const uint64_t f = prng_.below(100);
  const int flags = f < 80 ? 0 : f < 90 ? XATTR_CREATE : XATTR_REPLACE;
  spdlog::debug("p{} op {} setxattr {} {} len {} flags {}", opts_.id, op_no_, e->path, name, len, flags);
  const int err = errno_of(lsetxattr(abs_path(e->path).c_str(), name.c_str(), value.data(), value.size(), flags));
  check_errno("setxattr " + name, e->path, model_.setxattr(e->id, name, value, flags), err);
}

void Worker::do_removexattr() {
  const auto e = pick(is_xattr_target);
  count(OpKind::kRemovexattr);
  const auto& xattrs = model_.inode(e->id).xattrs;
  std::string name;
  if (!xattrs.empty() && prng_.chance(0.8)) {
    auto it = xattrs.begin();
    std::advance(it, static_cast<long>(prng_.below(xattrs.size())));
    name = it->first;
  } else {
    name = fmt::format("user.x{}", prng_.below(6));
  }
  spdlog::debug("p{} op {} removexattr {} {}", opts_.id, op_no_, e->path, name);
  const int err = errno_of(lremovexattr(abs_path(e->path).c_str(), name.c_str()));
  check_errno("removexattr " + name, e->path, model_.removexattr(e->id, name), err);
}

}  // namespace ubtrfs::stress
