// Worker: random operations checked against the model (see worker.h for the contract).
#include "tools/stress/worker.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/falloc.h>
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
#include <map>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace ubtrfs::stress {

namespace {

int errno_of(long ret) { return ret < 0 ? errno : 0; }

std::string errno_name(int err) {
  if (err == 0) return "success";
  return fmt::format("{} ({})", strerrorname_np(err) ? strerrorname_np(err) : "?", strerror(err));
}

std::string hex_bytes(const uint8_t* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += fmt::format("{}{:02x}", i ? " " : "", p[i]);
  return out;
}

NodeType type_of_mode(mode_t m) {
  if (S_ISDIR(m)) return NodeType::kDir;
  if (S_ISLNK(m)) return NodeType::kSymlink;
  return NodeType::kFile;
}

const char* mode_type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "special";
}

bool is_file(const Entry& e) { return e.type == NodeType::kFile; }
bool is_dir(const Entry& e) { return e.type == NodeType::kDir; }
bool is_not_root(const Entry& e) { return !e.path.empty(); }
bool is_xattr_target(const Entry& e) { return e.type != NodeType::kSymlink; }
bool is_unlinkable(const Entry& e) { return e.type != NodeType::kDir; }
bool is_removable_dir(const Entry& e) { return e.type == NodeType::kDir && !e.path.empty(); }

constexpr uint64_t kMiB = 1ULL << 20;
constexpr uint64_t kMaxReportedFailures = 20;

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

// ---- data operations ----

void Worker::after_data_op(int fd, const Entry& e) {
  if (!failed_ && prng_.chance(opts_.fsync_prob)) {
    const bool data_only = prng_.chance(0.5);
    count(data_only ? OpKind::kFdatasync : OpKind::kFsync);
    const int err = errno_of(data_only ? fdatasync(fd) : fsync(fd));
    check_errno(data_only ? "fdatasync" : "fsync", e.path, 0, err);
  }
  struct stat st;
  if (!failed_ && fstat(fd, &st) != 0) {
    fail(fmt::format("fstat {}: {}", e.path, strerror(errno)));
  } else if (!failed_ && static_cast<uint64_t>(st.st_size) != model_.inode(e.id).content.size()) {
    fail(fmt::format("{}: size after {} is {}, expected {}", e.path, op_label_, st.st_size,
                     model_.inode(e.id).content.size()));
  }
}

void Worker::do_write() {
  const auto e = pick_file();
  if (!e) return do_creat();
  count(OpKind::kWrite);
  FileContent& content = model_.inode(e->id).content;
  const uint64_t size = content.size();
  const uint64_t len = choose_len(kMiB);
  const uint64_t r = prng_.below(100);
  uint64_t off;
  if (r < 35) {
    off = prng_.below(size + 1);
  } else if (r < 55) {
    off = size;  // append
  } else if (r < 70) {
    off = size + prng_.range(1, 16 * kMiB);  // far past EOF: leaves a hole
  } else {
    off = prng_.below(size + 64 * 1024);
  }
  if (prng_.chance(0.3)) off &= ~4095ULL;
  if (off + len > kMaxFileSize) off = prng_.below(kMaxFileSize - len);
  uint64_t seed = prng_.next() | 1;
  spdlog::debug("p{} op {} write {} off {} len {}", opts_.id, op_no_, e->path, off, len);
  const int fd = openat(root_fd_, e->path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", e->path, strerror(errno)));
  buf_.resize(len);
  fill_pattern(seed, off, buf_);
  uint64_t done = 0;
  while (done < len) {
    const ssize_t n = pwrite(fd, buf_.data() + done, len - done, static_cast<off_t>(off + done));
    if (n <= 0) {
      fail(fmt::format("pwrite {} off {} len {}: {}", e->path, off + done, len - done,
                       n < 0 ? strerror(errno) : "wrote nothing"));
      close(fd);
      return;
    }
    done += static_cast<uint64_t>(n);
  }
  stats_->bytes_written += len;
  content.write(off, len, seed);
  after_data_op(fd, *e);
  close(fd);
}

void Worker::do_truncate(bool force_shrink) {
  std::optional<Entry> e;
  if (force_shrink) {
    // Over the space budget: cut the file that pins the most (first in walk order on ties).
    uint64_t most = 0;
    for (const Entry& cand : model_.entries()) {
      if (cand.type != NodeType::kFile) continue;
      const uint64_t a = model_.inode(cand.id).content.allocated();
      if (!e || a > most) {
        e = cand;
        most = a;
      }
    }
  } else {
    e = pick_file();
  }
  if (!e) return do_creat();
  count(OpKind::kTruncate);
  FileContent& content = model_.inode(e->id).content;
  const uint64_t size = content.size();
  uint64_t new_size;
  if (force_shrink) {
    new_size = prng_.below(size / 4 + 1);
  } else if (prng_.chance(0.5)) {
    new_size = prng_.below(size + 1);
  } else {
    new_size = std::min(kMaxFileSize, size + prng_.range(1, 4 * kMiB));
  }
  if (prng_.chance(0.3)) new_size &= ~4095ULL;
  const bool by_path = prng_.chance(0.5);
  spdlog::debug("p{} op {} truncate {} {} -> {}", opts_.id, op_no_, e->path, size, new_size);
  const int fd = openat(root_fd_, e->path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", e->path, strerror(errno)));
  const int err = by_path ? errno_of(truncate(abs_path(e->path).c_str(), static_cast<off_t>(new_size)))
                          : errno_of(ftruncate(fd, static_cast<off_t>(new_size)));
  if (check_errno("truncate", e->path, 0, err)) {
    content.truncate(new_size);
    after_data_op(fd, *e);
  }
  close(fd);
}

void Worker::do_punch() {
  const auto e = pick_file();
  if (!e) return do_creat();
  count(OpKind::kPunch);
  FileContent& content = model_.inode(e->id).content;
  uint64_t off = prng_.below(content.size() + 64 * 1024);
  const uint64_t len = choose_len(kMiB);
  if (prng_.chance(0.3)) off &= ~4095ULL;
  spdlog::debug("p{} op {} punch {} off {} len {}", opts_.id, op_no_, e->path, off, len);
  const int fd = openat(root_fd_, e->path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", e->path, strerror(errno)));
  const int err = errno_of(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                                     static_cast<off_t>(len)));
  if (check_errno("punch hole", e->path, 0, err)) {
    content.punch(off, len);
    after_data_op(fd, *e);
  }
  close(fd);
}

void Worker::do_fallocate() {
  const auto e = pick_file();
  if (!e) return do_creat();
  count(OpKind::kFallocate);
  FileContent& content = model_.inode(e->id).content;
  uint64_t off = prng_.below(content.size() + kMiB);
  uint64_t len = prng_.range(1, 4 * kMiB);
  if (prng_.chance(0.3)) {
    off &= ~4095ULL;
    len = std::max<uint64_t>(4096, len & ~4095ULL);
  }
  if (off + len > kMaxFileSize) off = prng_.below(kMaxFileSize - len);
  const bool keep_size = prng_.chance(0.5);
  spdlog::debug("p{} op {} fallocate {} off {} len {}{}", opts_.id, op_no_, e->path, off, len,
                keep_size ? " keep_size" : "");
  const int fd = openat(root_fd_, e->path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", e->path, strerror(errno)));
  const int err = errno_of(fallocate(fd, keep_size ? FALLOC_FL_KEEP_SIZE : 0, static_cast<off_t>(off),
                                     static_cast<off_t>(len)));
  if (check_errno("fallocate", e->path, 0, err)) {
    content.fallocate(off, len, keep_size);
    after_data_op(fd, *e);
  }
  close(fd);
}

// copy_file_range from one file to another at the same offset (the model's patterns depend on
// the offset), aligned or not: on ubtrfs the sector-aligned middle shares the source's extents and
// the edges are copied, so later writes, truncates and punches of either file exercise shared
// extents. Two names of one inode: EINVAL (overlapping ranges in one file).
void Worker::do_copy_range() {
  const auto src = pick_file();
  const auto dst = pick_file();
  if (!src || !dst) return do_creat();
  count(OpKind::kCopyRange);
  const FileContent& from = model_.inode(src->id).content;
  FileContent& to = model_.inode(dst->id).content;
  uint64_t off = prng_.below(from.size() + 4096);
  uint64_t len = prng_.chance(0.3) ? from.size() : choose_len(4 * kMiB);
  if (prng_.chance(0.5)) {
    off &= ~4095ULL;
    len = std::max<uint64_t>(4096, len & ~4095ULL);
  }
  if (off + len > kMaxFileSize) len = off < kMaxFileSize ? kMaxFileSize - off : 0;
  // The kernel clamps the length to the source's EOF before anything else.
  const uint64_t n = off >= from.size() ? 0 : std::min(len, from.size() - off);
  const bool same = src->id == dst->id;
  spdlog::debug("p{} op {} copy_range {} -> {} off {} len {}", opts_.id, op_no_, src->path, dst->path, off, len);
  const int in = openat(root_fd_, src->path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (in < 0) return fail(fmt::format("open {}: {}", src->path, strerror(errno)));
  const int out = openat(root_fd_, dst->path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
  if (out < 0) {
    close(in);
    return fail(fmt::format("open {}: {}", dst->path, strerror(errno)));
  }
  uint64_t done = 0;
  int err = 0;
  while (done < n) {
    loff_t oi = static_cast<loff_t>(off + done), oo = oi;
    const ssize_t r = copy_file_range(in, &oi, out, &oo, n - done, 0);
    if (r < 0) {
      err = errno;
      break;
    }
    if (r == 0) {
      fail(fmt::format("copy_file_range {} -> {} off {} len {}: copied nothing", src->path, dst->path, off + done,
                       n - done));
      break;
    }
    done += static_cast<uint64_t>(r);
  }
  if (!failed_ && check_errno("copy_file_range", dst->path, same && n > 0 ? EINVAL : 0, err) && !same) {
    stats_->bytes_written += n;
    to.copy_from(from, off, n);
    after_data_op(out, *dst);
  }
  close(in);
  close(out);
}

void Worker::do_read() {
  const auto e = pick_file();
  if (!e) return do_creat();
  count(OpKind::kRead);
  const uint64_t size = model_.inode(e->id).content.size();
  const uint64_t r = prng_.below(100);
  uint64_t off = r < 50 ? prng_.below(size + 1) : r < 70 ? 0 : prng_.below(size + 16384);
  uint64_t len = prng_.chance(0.2) && size - std::min(off, size) <= 4 * kMiB
                     ? std::max<uint64_t>(1, size - std::min(off, size))  // to EOF
                     : choose_len(kMiB);
  spdlog::debug("p{} op {} read {} off {} len {}", opts_.id, op_no_, e->path, off, len);
  const int fd = openat(root_fd_, e->path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", e->path, strerror(errno)));
  verify_range(e->path, e->id, fd, off, len);
  close(fd);
}

void Worker::do_sync(bool data_only) {
  const auto e = prng_.chance(0.8) ? pick_file() : std::nullopt;
  const std::string rel = e ? e->path : pick_dir();
  count(data_only ? OpKind::kFdatasync : OpKind::kFsync);
  spdlog::debug("p{} op {} {} {}", opts_.id, op_no_, op_label_, rel);
  const int fd = openat(root_fd_, at_path(rel), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(fmt::format("open {}: {}", rel, strerror(errno)));
  const int err = errno_of(data_only ? fdatasync(fd) : fsync(fd));
  close(fd);
  check_errno(op_label_, rel, 0, err);
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

// ---- verification ----

void Worker::do_stat() {
  const auto e = pick([](const Entry&) { return true; });
  count(OpKind::kStat);
  spdlog::debug("p{} op {} stat {}", opts_.id, op_no_, e->path);
  verify_entry(e->path, e->id, false);
}

void Worker::do_readdir() {
  const auto e = pick(is_dir);
  count(OpKind::kReaddir);
  spdlog::debug("p{} op {} readdir {}", opts_.id, op_no_, e->path);
  verify_dir_names(e->path, e->id);
}

bool Worker::verify_range(const std::string& rel, InodeId id, int fd, uint64_t off, uint64_t len) {
  buf_.resize(len);
  expected_.resize(len);
  uint64_t got = 0;
  while (got < len) {
    const ssize_t n = pread(fd, buf_.data() + got, len - got, static_cast<off_t>(off + got));
    if (n < 0) {
      fail(fmt::format("pread {} off {} len {}: {}", rel, off + got, len - got, strerror(errno)));
      return false;
    }
    if (n == 0) break;
    got += static_cast<uint64_t>(n);
  }
  stats_->bytes_read += got;
  const size_t want = model_.inode(id).content.read(off, expected_);
  if (memcmp(buf_.data(), expected_.data(), std::min<size_t>(got, want)) != 0) {
    size_t i = 0;
    while (buf_[i] == expected_[i]) ++i;
    size_t j = i;
    const size_t limit = std::min<size_t>(got, want);
    size_t differing = 0;
    for (; j < limit; ++j) differing += buf_[j] != expected_[j];
    const size_t show = std::min<size_t>(16, limit - i);
    fail(fmt::format("{}: content mismatch at offset {} (read off {} len {}; {} of the following {} bytes differ): "
                     "expected [{}] actual [{}]",
                     rel, off + i, off, len, differing, limit - i, hex_bytes(expected_.data() + i, show),
                     hex_bytes(buf_.data() + i, show)));
    return false;
  }
  if (got != want) {
    fail(fmt::format("{}: read off {} len {} returned {} bytes, expected {} (model size {})", rel, off, len, got,
                     want, model_.inode(id).content.size()));
    return false;
  }
  return true;
}

bool Worker::verify_xattrs(const std::string& rel, InodeId id) {
  const std::string path = abs_path(rel);
  const auto& want = model_.inode(id).xattrs;
  const ssize_t list_len = llistxattr(path.c_str(), nullptr, 0);
  if (list_len < 0) {
    fail(fmt::format("listxattr {}: {}", rel, strerror(errno)));
    return false;
  }
  std::string list(static_cast<size_t>(list_len), '\0');
  const ssize_t n = llistxattr(path.c_str(), list.data(), list.size());
  if (n < 0) {
    fail(fmt::format("listxattr {}: {}", rel, strerror(errno)));
    return false;
  }
  list.resize(static_cast<size_t>(n));
  std::set<std::string> names;
  for (size_t pos = 0; pos < list.size();) {
    const size_t end = list.find('\0', pos);
    std::string name = list.substr(pos, end - pos);
    pos = end == std::string::npos ? list.size() : end + 1;
    if (name.starts_with("user.")) names.insert(std::move(name));
  }
  std::set<std::string> want_names;
  for (const auto& [name, value] : want) want_names.insert(name);
  if (names != want_names) {
    fail(fmt::format("{}: xattr names [{}], expected [{}]", rel, fmt::join(names, ","), fmt::join(want_names, ",")));
    return false;
  }
  std::string value(4096, '\0');
  for (const auto& [name, expected] : want) {
    const ssize_t len = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (len < 0) {
      fail(fmt::format("getxattr {} {}: {}", rel, name, strerror(errno)));
      return false;
    }
    if (std::string_view(value.data(), static_cast<size_t>(len)) != expected) {
      const std::string_view got(value.data(), static_cast<size_t>(len));
      fail(fmt::format("{}: xattr {} has {} bytes [{}...], expected {} bytes [{}...]", rel, name, len,
                       hex_bytes(reinterpret_cast<const uint8_t*>(got.data()), std::min<size_t>(16, got.size())),
                       expected.size(),
                       hex_bytes(reinterpret_cast<const uint8_t*>(expected.data()),
                                 std::min<size_t>(16, expected.size()))));
      return false;
    }
  }
  return true;
}

bool Worker::verify_entry(const std::string& rel, InodeId id, bool full) {
  Inode& ino = model_.inode(id);
  struct stat st;
  if (fstatat(root_fd_, at_path(rel), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    fail(fmt::format("lstat {}: {}", rel, strerror(errno)));
    return false;
  }
  const std::string shown = rel.empty() ? "." : rel;
  if (!(S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) || type_of_mode(st.st_mode) != ino.type) {
    fail(fmt::format("{}: type {}, expected {}", shown, mode_type_name(st.st_mode), node_type_name(ino.type)));
    return false;
  }
  if (ino.type != NodeType::kSymlink && (st.st_mode & 07777) != ino.mode) {
    fail(fmt::format("{}: mode {:o}, expected {:o}", shown, st.st_mode & 07777, ino.mode));
    return false;
  }
  if (ino.real_ino == 0) {
    ino.real_ino = st.st_ino;
  } else if (ino.real_ino != st.st_ino) {
    fail(fmt::format("{}: inode number {}, earlier {}", shown, st.st_ino, ino.real_ino));
    return false;
  }
  if (ino.type == NodeType::kFile) {
    if (static_cast<uint64_t>(st.st_size) != ino.content.size()) {
      fail(fmt::format("{}: size {}, expected {}", shown, st.st_size, ino.content.size()));
      return false;
    }
    if (st.st_nlink != ino.nlink) {
      fail(fmt::format("{}: nlink {}, expected {}", shown, st.st_nlink, ino.nlink));
      return false;
    }
  } else if (ino.type == NodeType::kSymlink) {
    std::string target(8192, '\0');
    const ssize_t n = readlinkat(root_fd_, rel.c_str(), target.data(), target.size());
    if (n < 0) {
      fail(fmt::format("readlink {}: {}", rel, strerror(errno)));
      return false;
    }
    target.resize(static_cast<size_t>(n));
    if (target != ino.target || static_cast<uint64_t>(st.st_size) != ino.target.size() || st.st_nlink != 1) {
      fail(fmt::format("{}: symlink target '{}' (size {}, nlink {}), expected '{}'", shown, target, st.st_size,
                       st.st_nlink, ino.target));
      return false;
    }
  }
  if (ino.type != NodeType::kSymlink && !verify_xattrs(rel, id)) return false;
  if (full && ino.type == NodeType::kFile) {
    const int fd = openat(root_fd_, rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      fail(fmt::format("open {}: {}", rel, strerror(errno)));
      return false;
    }
    const uint64_t size = ino.content.size();
    bool ok = true;
    // Whole file in 1 MiB pieces, and one piece past EOF that must read nothing.
    for (uint64_t off = 0; ok && off <= size; off += kMiB) ok = verify_range(rel, id, fd, off, kMiB);
    close(fd);
    if (!ok) return false;
  }
  return true;
}

bool Worker::verify_dir_names(const std::string& rel, InodeId id) {
  const int fd = openat(root_fd_, at_path(rel), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    fail(fmt::format("open dir {}: {}", rel, strerror(errno)));
    return false;
  }
  DIR* d = fdopendir(fd);
  if (!d) {
    close(fd);
    fail(fmt::format("fdopendir {}: {}", rel, strerror(errno)));
    return false;
  }
  std::map<std::string, unsigned char> seen;
  bool dup = false;
  errno = 0;
  while (dirent* de = readdir(d)) {
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    dup = dup || seen.contains(name);
    seen[name] = de->d_type;
  }
  const int err = errno;
  closedir(d);
  if (err != 0) {
    fail(fmt::format("readdir {}: {}", rel, strerror(err)));
    return false;
  }
  const auto& children = model_.inode(id).children;
  std::vector<std::string> missing, extra, wrong_type;
  for (const auto& [name, child] : children) {
    auto it = seen.find(name);
    if (it == seen.end()) {
      missing.push_back(name);
      continue;
    }
    const NodeType t = model_.inode(child).type;
    const unsigned char want = t == NodeType::kDir ? DT_DIR : t == NodeType::kSymlink ? DT_LNK : DT_REG;
    if (it->second != DT_UNKNOWN && it->second != want) wrong_type.push_back(name);
  }
  for (const auto& [name, type] : seen) {
    if (!children.contains(name)) extra.push_back(name);
  }
  if (dup || !missing.empty() || !extra.empty() || !wrong_type.empty()) {
    fail(fmt::format("readdir {}: missing [{}] unexpected [{}] wrong d_type [{}]{}", rel.empty() ? "." : rel,
                     fmt::join(missing, ","), fmt::join(extra, ","), fmt::join(wrong_type, ","),
                     dup ? " and duplicate names" : ""));
    return false;
  }
  return true;
}

bool Worker::verify_tree() {
  op_label_ = "final-verify";
  std::map<uint64_t, InodeId> by_ino;
  bool ok = true;
  for (const Entry& e : model_.entries()) {
    if (e.type == NodeType::kDir && !verify_dir_names(e.path, e.id)) ok = false;
    if (!verify_entry(e.path, e.id, true)) {
      ok = false;
      continue;
    }
    const uint64_t real = model_.inode(e.id).real_ino;
    auto [it, inserted] = by_ino.emplace(real, e.id);
    if (!inserted && it->second != e.id) {
      fail(fmt::format("{}: shares inode number {} with another name of a different model inode", e.path, real));
      ok = false;
    }
    // Keep going after a difference to list more of them, but not forever.
    if (stats_->failures >= kMaxReportedFailures) {
      spdlog::error("p{}: stopping the final verify after {} differences", opts_.id, stats_->failures);
      break;
    }
  }
  return ok && !failed_;
}

}  // namespace ubtrfs::stress
