// probe_existing_filesystem over libblkid; see probe.h. The probe handle is owned by a unique_ptr so
// every return path frees it.
#include "io/probe.h"

#include <blkid/blkid.h>

#include <cerrno>
#include <cstring>
#include <memory>

namespace ubtrfs::io {
namespace {

struct ProbeDeleter {
  void operator()(blkid_probe pr) const { blkid_free_probe(pr); }
};
using ProbePtr = std::unique_ptr<std::remove_pointer_t<blkid_probe>, ProbeDeleter>;

std::optional<std::string> lookup_type(blkid_probe pr) {
  const char* type = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, "TYPE", &type, &len) != 0 || type == nullptr) return std::nullopt;
  return std::string(type);  // NUL-terminated; len counts the terminator
}

}  // namespace

Result<std::optional<std::string>> probe_existing_filesystem(const std::string& path) {
  errno = 0;
  ProbePtr pr(blkid_new_probe_from_filename(path.c_str()));
  if (!pr) {
    const int err = errno != 0 ? errno : EIO;
    return fail(err, "cannot probe {} for an existing filesystem: {}", path, std::strerror(err));
  }
  if (blkid_probe_enable_superblocks(pr.get(), 1) != 0 ||
      blkid_probe_set_superblocks_flags(pr.get(), BLKID_SUBLKS_TYPE) != 0)
    return fail(EIO, "cannot set up the blkid probe of {}", path);

  const int rc = blkid_do_safeprobe(pr.get());
  if (rc == 1) return std::optional<std::string>{};
  if (rc == 0) {
    if (auto type = lookup_type(pr.get())) return type;
    return fail(EIO, "blkid found a signature on {} but reported no type", path);
  }
  if (rc == -2) {
    // Several signatures: safeprobe refuses to pick one, the low-level probe returns them in turn.
    blkid_reset_probe(pr.get());
    if (blkid_do_probe(pr.get()) == 0) {
      if (auto type = lookup_type(pr.get())) return type;
    }
    return std::optional<std::string>{"ambivalent"};
  }
  return fail(EIO, "blkid probe of {} failed", path);
}

}  // namespace ubtrfs::io
