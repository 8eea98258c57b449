// Worker: the data operations — write, truncate, punch, fallocate, copy_file_range, read, fsync —
// each run on the real file and on the model, then compared (see worker.h for the contract).
//
// Invariants: files stay under kMaxFileSize (the data_budget is step()'s: above it, writes and
// fallocates turn into shrinking truncates); after each operation on an open file (after_data_op)
// the real size must equal the model's, and a read must return the model's bytes.
#include "tools/stress/worker.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "tools/stress/worker_internal.h"

namespace ubtrfs::stress {

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

}  // namespace ubtrfs::stress
