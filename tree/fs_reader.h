// FsReader: a small read-only view of an on-disk filesystem for tools and tests (the inspector,
// oracle comparisons, fsck passes that only read).
//
// Owns: the validated primary superblock, the FsParams derived from it, and the chunk map
// (bootstrapped from sys_chunk_array, then completed from every CHUNK_ITEM of the chunk tree).
// It reads tree blocks straight from the device through read_tree_block (checksum, mirror fallback,
// tree checker) with the expectations of the pointer it followed — it uses no cache and never
// writes, so it can open an image the B-tree layer would refuse and report exactly where it breaks.
//
// Invariants: every block it hands out passed check_tree_block with the expectations of its parent
// (level, generation, first key, owner); a tree walk visits blocks in key order, nodes before their
// children; every error names the tree and the block. Not thread-safe for concurrent opens; the
// const methods may be called from several threads (the chunk map is internally synchronized).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"
#include "tree/chunk_map.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/tree_checker.h"

namespace ubtrfs {

// Where a tree's root block lives, as the superblock or a ROOT_ITEM says.
struct RootLocation {
  uint64_t tree_id = 0;          // objectid of the tree (1 root, 3 chunk, 5 fs, 256.. subvolumes, -6 log)
  Key key{};                     // the ROOT_ITEM key it came from ((id, ROOT_ITEM, 0) for super-held roots)
  uint64_t bytenr = 0;
  uint64_t generation = 0;
  uint8_t level = 0;
  bool check_generation = true;  // false for the log root (written at generation + 1, not recorded)
};

class FsReader {
 public:
  // Reads and validates the primary superblock of `dev`, refuses unsupported checksum types and
  // incompat features (read gate), then loads the chunk map. The device must outlive the reader.
  // Errors: EINVAL (not btrfs), EOPNOTSUPP (csum type / features), EUCLEAN (corruption), EIO.
  [[nodiscard]] static Result<std::unique_ptr<FsReader>> open(io::BlockDevice& dev);
  // Same, opening `path` read-only; the reader owns the device.
  [[nodiscard]] static Result<std::unique_ptr<FsReader>> open_path(const std::string& path);

  const Superblock& super() const { return super_; }
  const FsParams& params() const { return params_; }
  const ChunkMap& chunk_map() const { return map_; }
  io::BlockDevice& device() const { return *dev_; }

  RootLocation root_tree_root() const;
  RootLocation chunk_tree_root() const;
  // The log root tree, if the superblock records one.
  std::optional<RootLocation> log_tree_root() const;

  // Every ROOT_ITEM of the root tree, in key order. Errors: from reading the root tree.
  [[nodiscard]] Result<std::vector<RootLocation>> list_roots() const;
  // Every ROOT_ITEM of `container` (the root tree, or the log root tree whose items point to the
  // per-subvolume log trees; those inherit its check_generation = false).
  [[nodiscard]] Result<std::vector<RootLocation>> list_roots_in(const RootLocation& container) const;
  // The root of tree `tree_id`: ROOT_TREE and CHUNK_TREE from the superblock, others from the first
  // ROOT_ITEM with that objectid. Errors: ENOENT "tree <id> not found in the root tree".
  [[nodiscard]] Result<RootLocation> find_root(uint64_t tree_id) const;

  // Reads one block with the given expectations (EUCLEAN / EIO on failure).
  [[nodiscard]] Result<std::vector<uint8_t>> read_block(const TreeBlockExpect& expect) const;

  // Visits every block of the tree, depth first, a node before its children (the dump-tree order).
  // The visitor may stop the walk by returning an error, which is passed through.
  using BlockVisitor = std::function<Status(std::span<const uint8_t> block)>;
  [[nodiscard]] Status walk_blocks(const RootLocation& root, const BlockVisitor& visit) const;

  // Visits every leaf item of the tree in key order with its body.
  using ItemVisitor = std::function<Status(const Key& key, std::span<const uint8_t> body)>;
  [[nodiscard]] Status for_each_item(const RootLocation& root, const ItemVisitor& visit) const;

  // The body of the item with exactly `key`, or nullopt if absent (full scan of the tree path).
  [[nodiscard]] Result<std::optional<std::vector<uint8_t>>> lookup(const RootLocation& root, const Key& key) const;

 private:
  explicit FsReader(io::BlockDevice& dev) : dev_(&dev) {}
  [[nodiscard]] Status load_chunk_tree();
  [[nodiscard]] Status walk(const RootLocation& root, const TreeBlockExpect& expect, const BlockVisitor& visit) const;

  std::unique_ptr<io::BlockDevice> owned_;
  io::BlockDevice* dev_;
  Superblock super_{};
  FsParams params_;
  ChunkMap map_;
};

// Decodes the items of a leaf that passed the tree checker: (key, body) per slot.
struct LeafItem {
  Key key;
  uint32_t offset = 0;  // item data offset as stored (relative to the end of the header)
  uint32_t size = 0;
  std::span<const uint8_t> body;
};
std::vector<LeafItem> leaf_items(std::span<const uint8_t> leaf);

// Name of a tree for messages and the dump-tree -t option: "root", "extent", "chunk", "dev", "fs",
// "csum", "uuid", "free-space", "data-reloc", "quota", "block-group", "log"; a number otherwise.
std::string tree_short_name(uint64_t tree_id);
// Parses a -t argument: one of the names above (also "device", "checksum", "free_space",
// "data_reloc", upper-case forms like FS_TREE) or a decimal id. nullopt if not understood.
std::optional<uint64_t> parse_tree_id(const std::string& s);

}  // namespace ubtrfs
