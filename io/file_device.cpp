// FileDevice: the BlockDevice for disk image files and real block devices, and open_device().
//
// Owns: one file descriptor, opened O_CLOEXEC, closed by the destructor; the device size fixed at
// open time (BLKGETSIZE64 for a block device, st_size for a regular file).
// Invariants:
//   - read()/write() are exact: pread/pwrite are looped over short counts and EINTR; an unexpected
//     zero-byte transfer is EIO, never a silent partial result.
//   - every access is range-checked against the size taken at open: beyond the end is EINVAL, so an
//     image file never grows through this interface.
//   - a kReadOnly device is opened O_RDONLY and write() returns EROFS without touching the fd.
//   - discard() punches a hole in an image file (fallocate PUNCH_HOLE | KEEP_SIZE: the size never
//     changes) and sends BLKDISCARD to a block device; EOPNOTSUPP from either means the device
//     cannot discard, and is passed up as such (FITRIM then fails the way it does on a disk
//     without discard support).
//   - a mounted block device is never opened: /proc/self/mountinfo is checked (by major:minor and by
//     mount source) for a clear message, and kReadWrite opens use O_EXCL, which the kernel refuses
//     with EBUSY while the device is mounted or claimed by another exclusive opener. An image file
//     attached to a mounted loop device is refused the same way (EBUSY).
// Thread safety: all methods may run concurrently (pread/pwrite carry their own offsets); fd() is
// exposed for the io_uring writer, which submits against the same descriptor.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/block_device.h"
#include "io/nbd_device.h"

namespace ubtrfs::io {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

// Canonical path for comparing a mount source with our path; the input itself if it cannot resolve.
std::string canonical_path(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return path;
  return buf;
}

// Undoes the octal escapes (\040 for space, ...) that mountinfo uses in paths.
std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '7' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out.push_back(static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Returns the mount point where the block device `rdev` (or, by source path, `path`) is mounted,
// or an empty string. btrfs reports an anonymous 0:N device in mountinfo, so the mount source is
// compared as well.
std::string find_mount_point(dev_t rdev, const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return {};
  const std::string want_source = canonical_path(path);
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    std::istringstream fields(line);
    std::string id, parent, majmin, root, mount_point;
    if (!(fields >> id >> parent >> majmin >> root >> mount_point)) continue;
    unsigned maj = 0, min = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &maj, &min) == 2 && makedev(maj, min) == rdev)
      return unescape_mountinfo(mount_point);
    std::string tok;
    while (fields >> tok && tok != "-") {
    }
    std::string fstype, source;
    if (fields >> fstype >> source) {
      source = unescape_mountinfo(source);
      if (!source.empty() && source[0] == '/' && canonical_path(source) == want_source)
        return unescape_mountinfo(mount_point);
    }
  }
  return {};
}

// For an image file: the mount point of a loop device backed by it (compared by inode, as listed in
// /sys/block/loop*/loop/backing_file), or an empty string. The kernel would write the same blocks
// behind our back, so a loop-mounted image is refused like a mounted block device.
std::string find_loop_mount(const struct stat& file, std::string* loop_dev) {
  std::error_code ec;
  // increment(ec), not a range-for: nothing here may throw.
  for (std::filesystem::directory_iterator it("/sys/block", ec), end; !ec && it != end; it.increment(ec)) {
    const std::filesystem::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (name.rfind("loop", 0) != 0) continue;
    std::ifstream backing(entry.path() / "loop" / "backing_file");
    std::string backing_path;
    if (!backing || !std::getline(backing, backing_path) || backing_path.empty()) continue;
    struct stat bst {};
    if (::stat(backing_path.c_str(), &bst) != 0 || bst.st_dev != file.st_dev || bst.st_ino != file.st_ino)
      continue;
    std::ifstream devno(entry.path() / "dev");
    unsigned maj = 0, min = 0;
    char colon = 0;
    if (!(devno >> maj >> colon >> min) || colon != ':') continue;
    const std::string dev_path = "/dev/" + name;
    std::string mount_point = find_mount_point(makedev(maj, min), dev_path);
    if (!mount_point.empty()) {
      *loop_dev = dev_path;
      return mount_point;
    }
  }
  return {};
}

class FileDevice final : public BlockDevice {
 public:
  FileDevice(int fd, std::string path, uint64_t size, bool read_only, bool is_block)
      : fd_(fd), path_(std::move(path)), size_(size), read_only_(read_only), is_block_(is_block) {}
  ~FileDevice() override { ::close(fd_); }
  FileDevice(const FileDevice&) = delete;
  FileDevice& operator=(const FileDevice&) = delete;

  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  std::string name() const override { return path_; }
  int fd() const override { return fd_; }

  Status read(uint64_t off, std::span<uint8_t> buf) override {
    if (off > size_ || buf.size() > size_ - off)
      return fail(EINVAL, "read beyond end of device {}: offset {} length {} size {}", path_, off, buf.size(),
                  size_);
    size_t done = 0;
    while (done < buf.size()) {
      const ssize_t n = ::pread(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        return fail(err, "read error on {} at offset {} length {}: {}", path_, off + done, buf.size() - done,
                    errno_text(err));
      }
      if (n == 0)
        return fail(EIO, "short read on {} at offset {}: end of file before {} more bytes", path_, off + done,
                    buf.size() - done);
      done += static_cast<size_t>(n);
    }
    return {};
  }

  Status write(uint64_t off, std::span<const uint8_t> buf) override {
    if (read_only_)
      return fail(EROFS, "device {} is read-only, write at offset {} length {} refused", path_, off, buf.size());
    if (off > size_ || buf.size() > size_ - off)
      return fail(EINVAL, "write beyond end of device {}: offset {} length {} size {}", path_, off, buf.size(),
                  size_);
    size_t done = 0;
    while (done < buf.size()) {
      const ssize_t n = ::pwrite(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(off + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        return fail(err, "write error on {} at offset {} length {}: {}", path_, off + done, buf.size() - done,
                    errno_text(err));
      }
      if (n == 0)
        return fail(EIO, "short write on {} at offset {}: device accepted no bytes", path_, off + done);
      done += static_cast<size_t>(n);
    }
    return {};
  }

  Status discard(uint64_t off, uint64_t len) override {
    if (read_only_)
      return fail(EROFS, "device {} is read-only, discard at offset {} length {} refused", path_, off, len);
    if (off > size_ || len > size_ - off)
      return fail(EINVAL, "discard beyond end of device {}: offset {} length {} size {}", path_, off, len, size_);
    if (len == 0) return {};
    int rc;
    do {
      if (is_block_) {
        uint64_t range[2] = {off, len};
        rc = ::ioctl(fd_, BLKDISCARD, &range);
      } else {
        rc = ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                         static_cast<off_t>(len));
      }
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      const int err = errno;
      // ENOTTY/EINVAL from BLKDISCARD on a device without discard mean the same as EOPNOTSUPP.
      if (err == EOPNOTSUPP || (is_block_ && err == ENOTTY))
        return fail(EOPNOTSUPP, "{} does not support discard: {}", path_, errno_text(err));
      return fail(err, "discard of {} at offset {} length {} failed: {}", path_, off, len, errno_text(err));
    }
    return {};
  }

  Status flush() override {
    if (read_only_) return {};
    // A block device has no file metadata worth skipping; fsync also flushes the device cache.
    const int rc = is_block_ ? ::fsync(fd_) : ::fdatasync(fd_);
    if (rc != 0) {
      const int err = errno;
      return fail(err, "flush of {} failed: {}", path_, errno_text(err));
    }
    return {};
  }

 private:
  const int fd_;
  const std::string path_;
  const uint64_t size_;
  const bool read_only_;
  const bool is_block_;
};

}  // namespace

Result<bool> write_protected(const std::string& path) {
  if (is_nbd_uri(path)) return false;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return fail(err, "cannot open device {}: {}", path, errno_text(err));
  }
  // An image file that cannot be written fails its read-write open with a precise errno (and the
  // daemon refuses it before that, naming -o ro): only block devices fall back.
  if (!S_ISBLK(st.st_mode)) return false;
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    return fail(err, "cannot open device {}: {}", path, errno_text(err));
  }
  int ro = 0;
  const int rc = ::ioctl(fd, BLKROGET, &ro);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return fail(err, "cannot ask whether block device {} is read-only (BLKROGET): {}", path, errno_text(err));
  return ro != 0;
}

Result<std::unique_ptr<BlockDevice>> open_device(const std::string& path, OpenMode mode) {
  // An NBD URI names an export on a server (io/nbd_device.h), not a path.
  if (is_nbd_uri(path)) return UBTRFS_TRY(NbdDevice::open(path, mode));
  const bool read_only = mode == OpenMode::kReadOnly;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return fail(err, "cannot open device {}: {}", path, errno_text(err));
  }
  const bool is_block = S_ISBLK(st.st_mode);
  if (S_ISDIR(st.st_mode)) return fail(EISDIR, "cannot open device {}: is a directory", path);
  if (!is_block && !S_ISREG(st.st_mode))
    return fail(EINVAL, "cannot open device {}: not a regular file or block device", path);

  if (is_block) {
    const std::string mount_point = find_mount_point(st.st_rdev, path);
    if (!mount_point.empty())
      return fail(EBUSY, "device {} is mounted on {}, refusing to open it", path, mount_point);
  } else {
    std::string loop_dev;
    const std::string mount_point = find_loop_mount(st, &loop_dev);
    if (!mount_point.empty())
      return fail(EBUSY, "image {} is mounted on {} through {}, refusing to open it", path, mount_point, loop_dev);
  }

  int flags = O_CLOEXEC | (read_only ? O_RDONLY : O_RDWR);
  if (is_block && !read_only) flags |= O_EXCL;  // the kernel refuses this with EBUSY while mounted
  int fd;
  do {
    fd = ::open(path.c_str(), flags);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    if (err == EBUSY)
      return fail(EBUSY, "device {} is busy (mounted or held exclusively by another program)", path);
    return fail(err, "cannot open device {}: {}", path, errno_text(err));
  }

  // Root may open a read-only block device for writing; every write would then fail (EPERM) at the
  // first commit. Refuse it here, where the message can still say why.
  if (is_block && !read_only) {
    int ro = 0;
    if (::ioctl(fd, BLKROGET, &ro) == 0 && ro) {
      ::close(fd);
      return fail(EROFS, "device {} is write-protected (read-only block device): open it read-only", path);
    }
  }
  // The path could have been replaced between stat() and open(): trust only the descriptor.
  struct stat fst {};
  if (::fstat(fd, &fst) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(err, "cannot stat device {}: {}", path, errno_text(err));
  }
  if (S_ISBLK(fst.st_mode) != is_block || (!S_ISBLK(fst.st_mode) && !S_ISREG(fst.st_mode))) {
    ::close(fd);
    return fail(EAGAIN, "device {} changed type while being opened", path);
  }

  uint64_t size = 0;
  if (is_block) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      const int err = errno;
      ::close(fd);
      return fail(err, "cannot get size of block device {}: {}", path, errno_text(err));
    }
  } else {
    size = static_cast<uint64_t>(fst.st_size);
  }
  return std::make_unique<FileDevice>(fd, path, size, read_only, is_block);
}

}  // namespace ubtrfs::io
