// Tree block I/O: checksums, mirror-fallback reads and all-copies writes; see block_io.h.
#include "tree/block_io.h"

#include <cstring>

#include <spdlog/spdlog.h>

namespace ubtrfs {

void csum_tree_block(const FsParams& fs, std::span<uint8_t> block) {
  auto c = io::compute_csum(fs.csum_type, block.subspan(io::kCsumFieldSize));
  std::memcpy(block.data(), c.data(), io::kCsumFieldSize);
}

bool verify_tree_block_csum(const FsParams& fs, std::span<const uint8_t> block) {
  if (block.size() < sizeof(Header)) return false;
  auto c = io::compute_csum(fs.csum_type, block.subspan(io::kCsumFieldSize));
  return std::memcmp(block.data(), c.data(), fs.csum_size()) == 0;
}

Result<std::vector<uint8_t>> read_tree_block(io::BlockDevice& dev, const ChunkMap& map, const FsParams& fs,
                                             const TreeBlockExpect& expect) {
  if (expect.bytenr == 0 || expect.bytenr % fs.sectorsize)
    return fail(EUCLEAN, "bad tree block {}: bytenr not aligned to sectorsize {}", expect.bytenr, fs.sectorsize);
  auto copies = UBTRFS_TRY(map.map(expect.bytenr, fs.nodesize));
  std::vector<uint8_t> block(fs.nodesize);
  std::optional<Error> first_error;
  for (size_t mirror = 0; mirror < copies.size(); ++mirror) {
    uint64_t phys = copies[mirror];
    if (phys > dev.size() || fs.nodesize > dev.size() - phys) {
      Error e{EIO, fmt::format("tree block {} mirror {} lies beyond the device end (physical {}, device size {})",
                               expect.bytenr, mirror + 1, phys, dev.size())};
      if (!first_error) first_error = e;
      continue;
    }
    auto rd = dev.read(phys, block);
    if (!rd) {
      spdlog::warn("read of tree block {} mirror {} failed: {}", expect.bytenr, mirror + 1, rd.error().message);
      if (!first_error) first_error = rd.error();
      continue;
    }
    auto ck = check_tree_block(fs, block, expect);
    if (ck) {
      if (mirror > 0)
        spdlog::warn("tree block {} read from mirror {} after mirror 1 failed: {}", expect.bytenr, mirror + 1,
                     first_error ? first_error->message : std::string("unknown"));
      return block;
    }
    spdlog::warn("tree block {} mirror {}: {}", expect.bytenr, mirror + 1, ck.error().message);
    if (!first_error) first_error = ck.error();
  }
  return fail(*first_error);
}

Status write_tree_block(io::BlockDevice& dev, const ChunkMap& map, uint64_t bytenr, std::span<const uint8_t> block) {
  auto copies = UBTRFS_TRY(map.map(bytenr, block.size()));
  for (uint64_t phys : copies) UBTRFS_TRY_STATUS(dev.write(phys, block));
  return {};
}

Status read_logical(io::BlockDevice& dev, const ChunkMap& map, uint64_t logical, std::span<uint8_t> out, int mirror) {
  auto copies = UBTRFS_TRY(map.map(logical, out.size()));
  if (mirror < 0 || static_cast<size_t>(mirror) >= copies.size())
    return fail(EINVAL, "logical {} has no mirror {}", logical, mirror + 1);
  return dev.read(copies[mirror], out);
}

}  // namespace ubtrfs
