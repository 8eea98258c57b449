// Fuzz target 2: the tree checker on one block (tree-checker.c's role) — check_tree_block with the
// expectations a parent pointer gives, check_leaf / check_node, and for a block that passes, the
// leaf decoder and the tree printer that the inspector runs on hostile images.
//
// Input: two parameter bytes, then the block (zero-padded or cut to the node size).
//   byte 0: bits 0-2 node size (4, 8, 16, 32, 64 KiB; 5-7 mean 16 KiB), bit 3 xxhash64 instead of
//           crc32c, bit 4 leave the checksum as it is (otherwise it is recomputed so that the
//           structural checks run), bit 5 pass the header's level and owner as expectations.
//   byte 1: incompat bits: SKINNY_METADATA, NO_HOLES, EXTENDED_IREF, MIXED_GROUPS, COMPRESS_*, ...
// The fsid and chunk tree uuid expected are the block's own, and the last committed generation is
// the block's, so the header checks pass unless the fuzzer breaks bytenr or generation itself.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "tree/block_io.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/fs_reader.h"
#include "tree/print_tree.h"
#include "tree/tree_checker.h"

using namespace ubtrfs;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static constexpr uint32_t kNodeSizes[8] = {4096, 8192, 16384, 32768, 65536, 16384, 16384, 16384};
  static constexpr uint64_t kIncompatBits[8] = {kIncompatSkinnyMetadata, kIncompatNoHoles, kIncompatExtendedIref,
                                                kIncompatMixedGroups,    kIncompatCompressLzo, kIncompatCompressZstd,
                                                kIncompatBigMetadata,    kIncompatMixedBackref};
  FsParams params;
  params.nodesize = kNodeSizes[data[0] & 7];
  params.sectorsize = 4096;
  params.csum_type = data[0] & 8 ? io::CsumType::kXxhash64 : io::CsumType::kCrc32c;
  for (int i = 0; i < 8; i++)
    if (data[1] & (1u << i)) params.incompat_flags |= kIncompatBits[i];

  std::vector<uint8_t> block(params.nodesize, 0);
  std::memcpy(block.data(), data + 2, std::min<size_t>(size - 2, block.size()));
  const auto h = load<Header>(block.data());
  std::memcpy(params.fsid.data(), h.fsid, 16);
  std::memcpy(params.chunk_tree_uuid.data(), h.chunk_tree_uuid, 16);
  params.super_generation = h.generation.get();
  if (!(data[0] & 16)) csum_tree_block(params, block);

  TreeBlockExpect expect;
  expect.bytenr = h.bytenr.get();
  if (data[0] & 32) {
    expect.level = h.level;
    expect.owner = h.owner.get();
    expect.generation = h.generation.get();
  }
  const bool leaf = h.level == 0;
  const auto structural = leaf ? check_leaf(params, block) : check_node(params, block);
  const auto full = check_tree_block(params, block, expect);
  if (full && !structural) {
    std::fprintf(stderr, "check_tree_block accepted a block check_%s refused: %s\n", leaf ? "leaf" : "node",
                 structural.error().message.c_str());
    std::abort();
  }
  if (!full) return 0;
  std::string out;
  print_tree_block(out, params, block);
  if (leaf) {
    for (const auto& item : leaf_items(block)) {
      out.clear();
      print_item_body(out, params, item.key, item.body);
    }
  }
  return 0;
}
