// Context: everything fsck.ubtrfs learns about one filesystem, shared by its passes.
//
// fsck.ubtrfs is a sequence of passes in the manner of `btrfs check` (STYLE.md §11), each in its own
// file and each checking one family of rules of FORMAT.md:
//
//   [1/9] superblocks          pass_super.cpp        §1   mirrors, backup roots, features
//   [2/9] tree blocks          pass_tree_blocks.cpp  §2   every block of every tree, both DUP copies
//   [3/9] chunks and devices   pass_chunks.cpp       §3.10, §1.3
//   [4/9] extents              pass_extents.cpp      §3.9, §6.1.1-2  backrefs vs actual references
//   [5/9] block groups         pass_block_groups.cpp §3.11, §6.1.3   used bytes, super bytes_used
//   [6/9] free space tree      pass_free_space.cpp   §3.12, §6.1.4
//   [7/9] inodes               pass_inodes.cpp       §3.3, §4.5      nlink, nbytes, dir isize
//   [8/9] directories          pass_dirs.cpp         §4.2            DIR_ITEM/DIR_INDEX/INODE_REF
//   [9/9] data checksums       pass_csums.cpp        §3.8            coverage (+ values on request)
//
// The tree-block pass is the only one that reads tree blocks: it keeps every readable block in
// memory (BlockRecord::data) and records who points at it, so the later passes work on the
// recorded items and never touch the device again (except --check-data-csum reading data). This
// costs the filesystem's metadata size in memory, which is fine for images and small devices.
//
// Damage policy: a block that cannot be used (every copy fails the checksum or the tree checker)
// is reported once, where it is, and its tree is marked damaged; passes that would report the
// consequences of missing items (missing backrefs, wrong link counts) skip what the damaged tree
// would have supplied, and say so in one line, instead of cascading.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "tools/fsck/report.h"
#include "tree/chunk_map.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/fs_reader.h"

namespace ubtrfs::fsck {

struct Options {
  bool check_data_csum = false;
  bool verbose = false;
};

// One pointer to a tree block: from a node (parent = its bytenr) or from a root item / the
// superblock (parent = 0), while walking tree `tree`.
struct ParentRef {
  uint64_t parent = 0;
  uint64_t tree = 0;
};

struct BlockRecord {
  uint64_t bytenr = 0;
  uint8_t level = 0;
  uint64_t generation = 0;
  uint64_t header_owner = 0;
  uint64_t first_tree = 0;  // tree whose walk reached it first
  bool readable = false;    // data holds a block that passed the checks (or only failed transid)
  bool is_log = false;      // reached from the log root: not in the extent tree
  std::vector<ParentRef> parents;
  std::vector<uint8_t> data;
};

// Where a tree's root block is, as the superblock or a ROOT_ITEM says (what its pointer promises).
struct RootPointer {
  uint64_t tree_id = 0;
  Key key{};  // the ROOT_ITEM key it came from (unset for roots the superblock holds)
  uint64_t bytenr = 0;
  uint64_t generation = 0;
  uint8_t level = 0;
  bool check_generation = true;  // false for log trees (written at generation + 1)
};

struct TreeInfo {
  uint64_t id = 0;
  RootPointer root;
  bool is_log = false;
  bool damaged = false;
  std::vector<uint64_t> leaves;  // leaf bytenrs in key order (shared leaves included)
};

// One leaf item as the passes see it.
struct ItemView {
  Key key;
  uint64_t leaf = 0;        // bytenr of the leaf holding it
  uint64_t leaf_owner = 0;  // header owner of that leaf
  std::span<const uint8_t> body;
};

// A reference listed by an extent item (inline or keyed).
struct ExtentRef {
  uint8_t type = 0;  // TREE_BLOCK_REF, SHARED_BLOCK_REF, EXTENT_DATA_REF, SHARED_DATA_REF, OWNER
  uint64_t root_or_parent = 0;
  uint64_t ino = 0;     // EXTENT_DATA_REF only
  uint64_t offset = 0;  // EXTENT_DATA_REF only
  uint64_t count = 1;
  bool keyed = false;
};

struct ExtentRecord {
  Key key;
  uint64_t start = 0;
  uint64_t length = 0;
  bool tree_block = false;
  uint8_t level = 0;
  uint64_t refs = 0;
  uint64_t flags = 0;
  std::vector<ExtentRef> listed;
};

struct BlockGroupRecord {
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t used = 0;
  uint64_t flags = 0;
  uint64_t chunk_objectid = 0;
};

class Context {
 public:
  Context(io::BlockDevice& dev, Report& report, Options opts) : dev_(dev), report_(report), opts_(opts) {}

  io::BlockDevice& dev() const { return dev_; }
  Report& report() const { return report_; }
  const Options& opts() const { return opts_; }

  Superblock super{};
  uint64_t super_bytenr = kSuperInfoOffset;  // which copy we trust (the primary unless it is bad)
  FsParams params;
  ChunkMap map;
  std::map<uint64_t, BlockRecord> blocks;
  std::vector<TreeInfo> trees;
  bool chunk_tree_ok = false;

  // Derived indexes, filled after the tree-block pass by index_extent_tree().
  std::map<uint64_t, ExtentRecord> extents;           // by start; tree blocks and data
  std::map<uint64_t, BlockGroupRecord> block_groups;  // by start
  bool extent_tree_available = false;

  const TreeInfo* tree(uint64_t id) const;
  bool any_damaged() const;
  bool damaged(uint64_t id) const;
  // Subvolume-like trees holding inodes: FS_TREE, subvolumes (256..), DATA_RELOC.
  static bool is_fs_tree(uint64_t id);

  // Every item of the tree in key order (leaves of a damaged tree that were lost are simply absent).
  std::vector<ItemView> items(const TreeInfo& t) const;
  std::vector<ItemView> items(uint64_t tree_id) const;

  void index_extent_tree();

 private:
  io::BlockDevice& dev_;
  Report& report_;
  Options opts_;
};

// The passes, in order; each reports what it finds to ctx.report().
// Returns false when the filesystem cannot be read further (no usable superblock).
bool check_superblocks(Context& ctx);
void check_tree_blocks(Context& ctx);
void check_chunks(Context& ctx);
void check_extents(Context& ctx);
void check_block_groups(Context& ctx);
void check_free_space(Context& ctx);
void check_inodes(Context& ctx);
void check_dirs(Context& ctx);
void check_csums(Context& ctx);

// Logical ranges of the superblock mirror stripes inside chunks (FORMAT.md §5.5): [start, end).
std::vector<std::pair<uint64_t, uint64_t>> super_stripe_ranges(const Context& ctx);

// Parses an extent item body (EXTENT_ITEM or METADATA_ITEM); false if it is too short or a ref is
// malformed (the tree checker has normally refused such a block already).
bool parse_extent_item(const FsParams& fs, const Key& key, std::span<const uint8_t> body, ExtentRecord& out);

inline std::string tree_name(uint64_t id) { return tree_short_name(id); }

}  // namespace ubtrfs::fsck
