// Compression options, the per-inode decision and the heuristic; see compress_policy.h.
#include "fs/compress_policy.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace ubtrfs::fs {

int compress_level_for(uint8_t type, int level) {
  switch (type) {
    case kCompressZlib: return level <= 0 ? kZlibDefaultLevel : std::min(level, kZlibMaxLevel);
    case kCompressZstd: return level <= 0 ? kZstdDefaultLevel : std::min(level, kZstdMaxLevel);
    default: return 0;
  }
}

std::string_view compress_type_name(uint8_t type) {
  switch (type) {
    case kCompressZlib: return "zlib";
    case kCompressLzo: return "lzo";
    case kCompressZstd: return "zstd";
    default: return "";
  }
}

std::optional<uint8_t> compress_type_from_prop(std::string_view value) {
  // The kernel compares prefixes (strncmp with the type name's length).
  if (value.starts_with("zlib")) return kCompressZlib;
  if (value.starts_with("lzo")) return kCompressLzo;
  if (value.starts_with("zstd")) return kCompressZstd;
  return std::nullopt;
}

Result<CompressOptions> parse_compress_option(std::optional<std::string_view> value, bool force) {
  CompressOptions o;
  o.force = force;
  if (!value) {  // bare `compress` / `compress-force`: zlib at its default level
    o.type = kCompressZlib;
    o.level = kZlibDefaultLevel;
    return o;
  }
  const std::string_view v = *value;
  if (v == "no" || v == "none") return CompressOptions{};  // both off, as the kernel does
  std::string_view name = v, level_str;
  bool has_level = false;
  if (auto colon = v.find(':'); colon != std::string_view::npos) {
    name = v.substr(0, colon);
    level_str = v.substr(colon + 1);
    has_level = true;
  }
  if (name == "zlib") o.type = kCompressZlib;
  else if (name == "lzo") o.type = kCompressLzo;
  else if (name == "zstd") o.type = kCompressZstd;
  else return fail(EINVAL, "unrecognized compression value '{}' for mount option '{}'", v, force ? "compress-force" : "compress");
  int level = 0;
  if (has_level && o.type != kCompressLzo) {
    // btrfs_compress_str2level: a level that does not parse is the default level.
    unsigned parsed = 0;
    auto [p, ec] = std::from_chars(level_str.data(), level_str.data() + level_str.size(), parsed);
    if (ec == std::errc() && p == level_str.data() + level_str.size() && parsed <= 1000) level = static_cast<int>(parsed);
  }
  o.level = compress_level_for(o.type, level);
  return o;
}

std::string compress_option_string(const CompressOptions& o) {
  if (o.type == kCompressNone) return "";
  std::string s = fmt::format("{}={}", o.force ? "compress-force" : "compress", compress_type_name(o.type));
  if (o.type != kCompressLzo) s += fmt::format(":{}", o.level);
  return s;
}

Result<std::optional<uint64_t>> apply_compression_prop(uint64_t inode_flags, uint32_t mode,
                                                       std::optional<std::string_view> value) {
  const bool empty = !value || value->empty();
  const bool off = value && (*value == "no" || *value == "none");
  if (!empty) {
    if (inode_flags & (kInodeNodatacow | kInodeNodatasum))
      return fail(EINVAL, "btrfs.compression '{}' on a nodatacow or nodatasum inode", *value);
    if (!off && !compress_type_from_prop(*value)) return fail(EINVAL, "btrfs.compression: invalid value '{}'", *value);
  }
  // prop_compression_ignore: only regular files and directories (for inheritance) keep it.
  if (!S_ISREG(mode) && !S_ISDIR(mode)) return std::optional<uint64_t>{};
  uint64_t flags = inode_flags & ~(kInodeCompress | kInodeNocompress);
  if (off)
    flags |= kInodeNocompress;
  else if (!empty)
    flags |= kInodeCompress;
  return std::optional<uint64_t>(flags);
}

InodeCompression inode_compression(const CompressOptions& mount, uint64_t inode_flags,
                                   std::optional<std::string_view> prop) {
  InodeCompression out;
  // btrfs_inode_can_compress: checksums are what make compressed extents verifiable; NODATACOW
  // rewrites in place, which a compressed extent cannot be.
  if (inode_flags & (kInodeNodatacow | kInodeNodatasum)) return out;
  const std::optional<uint8_t> prop_type = prop ? compress_type_from_prop(*prop) : std::nullopt;
  const bool candidate = mount.force || (!(inode_flags & kInodeNocompress) &&
                                         (mount.type != kCompressNone || (inode_flags & kInodeCompress) || prop_type));
  if (!candidate) return out;
  // compress_file_range: the property's type, else the mount's; an inode with only the COMPRESS
  // flag on a mount without the option gets zlib (chattr +c stores zlib then).
  out.type = prop_type ? *prop_type : mount.type != kCompressNone ? mount.type : uint8_t{kCompressZlib};
  out.level = out.type == mount.type ? compress_level_for(out.type, mount.level) : compress_level_for(out.type, 0);
  out.force = mount.force;
  out.has_prop = prop_type.has_value();
  return out;
}

namespace {

// The sample: the whole range when it is small, else kSlices slices of kSliceLen bytes spread
// evenly over it (the kernel reads 16 bytes every 256).
constexpr size_t kSliceLen = 16;
constexpr size_t kSlices = kHeuristicSampleMax / kSliceLen;

std::vector<uint8_t> take_sample(std::span<const uint8_t> data) {
  if (data.size() <= kHeuristicSampleMax) return {data.begin(), data.end()};
  std::vector<uint8_t> s;
  s.reserve(kHeuristicSampleMax);
  const size_t stride = data.size() / kSlices;  // >= kSliceLen here
  for (size_t i = 0; i < kSlices; ++i) {
    const uint8_t* p = data.data() + i * stride;
    s.insert(s.end(), p, p + kSliceLen);
  }
  return s;
}

}  // namespace

bool compress_heuristic(std::span<const uint8_t> data) {
  if (data.size() < 2 * kSliceLen) return true;  // too little to judge; compression decides
  const std::vector<uint8_t> sample = take_sample(data);
  const size_t n = sample.size();
  // Repeated data (a pattern that fills the range): the first half of the sample equals the second.
  if (n % 2 == 0 && std::memcmp(sample.data(), sample.data() + n / 2, n / 2) == 0) return true;
  std::array<uint32_t, 256> count{};
  for (uint8_t b : sample) count[b]++;
  // Few distinct byte values (text in a small alphabet, sparse binary): compressible.
  const size_t distinct = static_cast<size_t>(std::count_if(count.begin(), count.end(), [](uint32_t c) { return c; }));
  if (distinct < 64) return true;
  // The core set: how many of the most frequent values cover 90% of the sample. A small core
  // compresses well whatever the rest; a core of most of the alphabet is noise.
  std::array<uint32_t, 256> sorted = count;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  size_t core = 0;
  for (uint64_t covered = 0; core < sorted.size() && covered * 10 < n * 9; ++core) covered += sorted[core];
  if (core <= 64) return true;
  if (core >= 200) return false;
  // Shannon entropy of the byte distribution, as a percentage of 8 bits per byte: up to 80%
  // leaves enough redundancy for the entropy coders of zlib and zstd (the kernel's
  // ENTROPY_LVL_HIGH); above that the data is most likely compressed or encrypted already.
  double bits = 0;
  for (uint32_t c : count) {
    if (!c) continue;
    const double p = static_cast<double>(c) / static_cast<double>(n);
    bits -= p * std::log2(p);
  }
  return bits * 100.0 / 8.0 < 80.0;
}

}  // namespace ubtrfs::fs
