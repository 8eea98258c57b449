// list_signatures over libblkid's low-level probe, iterated the way wipefs(8) does (each
// blkid_do_probe call returns the next signature); see signatures.h.
#include "tools/mkfs/signatures.h"

#include <blkid/blkid.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace ubtrfs::mkfs {
namespace {

struct ProbeDeleter {
  void operator()(blkid_probe pr) const { blkid_free_probe(pr); }
};

std::string value(blkid_probe pr, const char* name) {
  const char* v = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, name, &v, &len) != 0 || v == nullptr) return {};
  return std::string(v, len ? len - 1 : 0);  // len counts the terminating NUL
}

size_t raw_length(blkid_probe pr, const char* name) {
  const char* v = nullptr;
  size_t len = 0;
  if (blkid_probe_lookup_value(pr, name, &v, &len) != 0) return 0;
  return len;  // binary values (the magics) are stored without a terminator
}

}  // namespace

Result<std::vector<Signature>> list_signatures(const std::string& path) {
  errno = 0;
  std::unique_ptr<std::remove_pointer_t<blkid_probe>, ProbeDeleter> pr(blkid_new_probe_from_filename(path.c_str()));
  if (!pr) {
    const int err = errno ? errno : EIO;
    return fail(err, "cannot probe {} for signatures: {}", path, std::strerror(err));
  }
  if (blkid_probe_enable_superblocks(pr.get(), 1) != 0 ||
      blkid_probe_set_superblocks_flags(pr.get(), BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_TYPE | BLKID_SUBLKS_BADCSUM) != 0 ||
      blkid_probe_enable_partitions(pr.get(), 1) != 0 ||
      blkid_probe_set_partitions_flags(pr.get(), BLKID_PARTS_MAGIC) != 0)
    return fail(EIO, "cannot set up the blkid probe of {}", path);

  std::vector<Signature> out;
  while (blkid_do_probe(pr.get()) == 0) {
    Signature s;
    std::string off;
    size_t magic_len = 0;
    if (!(off = value(pr.get(), "SBMAGIC_OFFSET")).empty()) {
      s.type = value(pr.get(), "TYPE");
      magic_len = raw_length(pr.get(), "SBMAGIC");
    } else if (!(off = value(pr.get(), "PTMAGIC_OFFSET")).empty()) {
      s.type = value(pr.get(), "PTTYPE");
      s.partition_table = true;
      magic_len = raw_length(pr.get(), "PTMAGIC");
    } else {
      continue;
    }
    s.offset = std::strtoull(off.c_str(), nullptr, 10);
    s.length = magic_len ? magic_len : 1;
    if (s.type.empty()) s.type = "unknown";
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ubtrfs::mkfs
