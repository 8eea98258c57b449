// ubtrfs-corrupt: damages a btrfs image precisely, for the fsck and oracle tests (the kernel's
// btrfs-corrupt-block is not installed here; FORMAT.md §6.2 describes the method this automates).
// A test utility: built into <build>/tools/corrupt, never installed.
//
//   ubtrfs-corrupt IMAGE TARGET ACTION [--mirror N] [--no-recsum]
// TARGET:
//   --tree TREE --key "OBJECTID TYPE OFFSET"   the leaf item with that key (TREE: name or id)
//   --block BYTENR                             a tree block by logical address
//   --super FIELD                              a superblock field (every copy that fits)
//   --data LOGICAL                             file data at a logical address (with --flip-byte)
// ACTION:
//   --field NAME --value V        rewrite a field of the item body (see --list-fields)
//   --header-field NAME --value V rewrite a header field of the block (or of the leaf holding KEY)
//   --item-byte OFF --value V     rewrite one byte of the item body
//   --flip-byte OFF               invert one byte of the block (or of the superblock)
//   --delete-item                 remove the item and repack the leaf (parents' keys follow)
//   --swap-next                   exchange the item's key with the next one (bad key order)
//   --set-key "O T F"             give the item another key (parents' keys follow for slot 0)
//   --locate                      only print where the key or block is: "leaf B slot S level L"
// V is decimal, 0x hex, or +N / -N relative to the current value (write -N as --value=-N).
// The block checksum (or superblock checksum) is recomputed afterwards unless --no-recsum, and
// every copy is written (both stripes of a DUP chunk, every superblock mirror) unless --mirror N
// (1-based) names one copy, which is then also the copy the edit starts from.
// Exit status: 0 done, 1 error (message on stderr), 2 usage.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "tools/corrupt/leaf_edit.h"
#include "tree/block_io.h"
#include "tree/chunk_map.h"
#include "tree/fs_params.h"
#include "tree/fs_reader.h"
#include "tree/superblock.h"

namespace ubtrfs::corrupt {
namespace {

constexpr const char* kProg = "ubtrfs-corrupt";

struct Cli {
  std::string image;
  std::string tree;
  std::string key;
  std::optional<uint64_t> block;
  std::optional<uint64_t> data;
  std::string super_field;
  std::string field;
  std::string header_field;
  std::optional<size_t> item_byte;
  std::optional<size_t> flip_byte;
  std::string value;
  bool delete_item = false;
  bool swap_next = false;
  std::string set_key;
  bool locate = false;
  int mirror = 0;  // 0 = all copies
  bool no_recsum = false;
};

struct PathStep {
  uint64_t bytenr = 0;
  int slot = 0;
};

class Image {
 public:
  Status open(const std::string& path) {
    dev_ = UBTRFS_TRY(io::open_device(path, io::OpenMode::kReadWrite));
    sb_ = UBTRFS_TRY(read_superblock_raw(*dev_, 0));
    if (sb_.magic.get() != kSuperMagic) return fail(EINVAL, "{}: not a btrfs filesystem", path);
    fs_ = FsParams::from_super(sb_);
    UBTRFS_TRY_STATUS(map_.load_sys_chunk_array(sb_));
    load_chunks(sb_.chunk_root, sb_.chunk_root_level, 0);
    return {};
  }

  io::BlockDevice& dev() { return *dev_; }
  Superblock& super() { return sb_; }
  const FsParams& fs() const { return fs_; }

  Result<std::vector<uint8_t>> read(uint64_t bytenr, int mirror) {
    std::vector<uint8_t> b(fs_.nodesize);
    UBTRFS_TRY_STATUS(read_logical(*dev_, map_, bytenr, b, mirror > 0 ? mirror - 1 : 0));
    return b;
  }

  Status write(uint64_t bytenr, std::span<uint8_t> block, int mirror, bool recsum) {
    if (recsum) csum_tree_block(fs_, block);
    auto copies = UBTRFS_TRY(map_.map(bytenr, block.size()));
    if (mirror > static_cast<int>(copies.size()))
      return fail(EINVAL, "block {} has {} copies, no copy {}", bytenr, copies.size(), mirror);
    for (size_t m = 0; m < copies.size(); ++m)
      if (mirror == 0 || static_cast<int>(m) + 1 == mirror) UBTRFS_TRY_STATUS(dev_->write(copies[m], block));
    return dev_->flush();
  }

  // Inverts the byte at logical address `logical` in every copy (or copy `mirror`).
  Status flip_data(uint64_t logical, int mirror) {
    auto copies = UBTRFS_TRY(map_.map(logical, 1));
    for (size_t m = 0; m < copies.size(); ++m) {
      if (mirror && static_cast<int>(m) + 1 != mirror) continue;
      uint8_t byte = 0;
      UBTRFS_TRY_STATUS(dev_->read(copies[m], std::span<uint8_t>(&byte, 1)));
      byte ^= 0xFF;
      UBTRFS_TRY_STATUS(dev_->write(copies[m], std::span<const uint8_t>(&byte, 1)));
      std::printf("data byte at logical %lu (physical %lu) flipped\n", static_cast<unsigned long>(logical),
                  static_cast<unsigned long>(copies[m]));
    }
    return dev_->flush();
  }

  // Root block of a tree: superblock for root/chunk, else the first ROOT_ITEM with that objectid.
  Result<std::pair<uint64_t, uint8_t>> tree_root(uint64_t id) {
    if (id == kRootTreeObjectid) return std::make_pair(sb_.root.get(), sb_.root_level);
    if (id == kChunkTreeObjectid) return std::make_pair(sb_.chunk_root.get(), sb_.chunk_root_level);
    if (id == kTreeLogObjectid) return std::make_pair(sb_.log_root.get(), sb_.log_root_level);
    auto path = UBTRFS_TRY(descend(sb_.root.get(), Key{id, kRootItemKey, 0}, 0));
    auto leaf = UBTRFS_TRY(read(path.back().bytenr, 0));
    for (const auto& it : leaf_items(leaf))
      if (it.key.objectid == id && it.key.type == kRootItemKey && it.body.size() >= kRootItemLegacySize) {
        const RootItem ri = load_root_item(it.body);
        return std::make_pair(ri.bytenr.get(), ri.level);
      }
    return fail(ENOENT, "tree {} has no ROOT_ITEM", id);
  }

  // Path from the root block to the leaf that holds (or would hold) `key`; the last step's slot is
  // the leaf slot of the key (or -1 if absent).
  Result<std::vector<PathStep>> descend(uint64_t root, const Key& key, int mirror) {
    std::vector<PathStep> path;
    uint64_t bytenr = root;
    for (int depth = 0; depth <= kMaxLevel; ++depth) {
      auto b = UBTRFS_TRY(read(bytenr, mirror));
      const auto h = load<Header>(b.data());
      const uint32_t n = h.nritems;
      if (h.level == 0) {
        auto slot = find_slot(b, key);
        path.push_back(PathStep{bytenr, slot ? *slot : -1});
        return path;
      }
      int pick = 0;
      for (uint32_t i = 0; i < n && sizeof(Header) + (i + 1) * sizeof(KeyPtr) <= b.size(); ++i) {
        const auto kp = load<KeyPtr>(b.data() + sizeof(Header) + i * sizeof(KeyPtr));
        if (i > 0 && key < kp.key.cpu()) break;
        pick = static_cast<int>(i);
      }
      path.push_back(PathStep{bytenr, pick});
      bytenr = load<KeyPtr>(b.data() + sizeof(Header) + pick * sizeof(KeyPtr)).blockptr;
    }
    return fail(EUCLEAN, "tree deeper than {} levels", kMaxLevel);
  }

 private:
  void load_chunks(uint64_t bytenr, uint8_t level, int depth) {
    if (depth > kMaxLevel) return;
    auto b = read(bytenr, 0);
    if (!b) return;
    const auto h = load<Header>(b->data());
    if (h.level == 0) {
      for (const auto& it : leaf_items(*b))
        if (it.key.type == kChunkItemKey) (void)map_.add_chunk_item(it.key.offset, it.body);
      return;
    }
    (void)level;
    for (uint32_t i = 0; i < h.nritems.get() && sizeof(Header) + (i + 1) * sizeof(KeyPtr) <= b->size(); ++i)
      load_chunks(load<KeyPtr>(b->data() + sizeof(Header) + i * sizeof(KeyPtr)).blockptr, h.level - 1, depth + 1);
  }

  std::unique_ptr<io::BlockDevice> dev_;
  Superblock sb_{};
  FsParams fs_;
  ChunkMap map_;
};

Result<uint64_t> new_value(const std::string& v, uint64_t current) {
  if (v.empty()) return fail(EINVAL, "--value is required");
  if (v[0] == '+' || v[0] == '-') {
    const std::string digits = v.substr(1);
    uint64_t d = 0;
    try {
      d = std::stoull(digits, nullptr, 0);
    } catch (...) {
      return fail(EINVAL, "bad value '{}'", v);
    }
    return v[0] == '+' ? current + d : current - d;
  }
  try {
    return static_cast<uint64_t>(std::stoull(v, nullptr, 0));
  } catch (...) {
    return fail(EINVAL, "bad value '{}'", v);
  }
}

Status set_field(uint8_t* p, Field f, const std::string& value, const char* what) {
  const uint64_t old = get_le(p + f.offset, f.size);
  const uint64_t v = UBTRFS_TRY(new_value(value, old));
  put_le(p + f.offset, f.size, v);
  std::printf("%s: %lu -> %lu\n", what, static_cast<unsigned long>(old), static_cast<unsigned long>(v));
  return {};
}

Status edit_super(Image& img, const Cli& cli) {
  const uint64_t size = img.dev().size();
  int done = 0;
  for (int m = 0; m < kSuperMirrorMax; ++m) {
    if (super_offset(m) + kSuperInfoSize > size) break;
    if (cli.mirror && cli.mirror != m + 1) continue;
    auto sb = read_superblock_raw(img.dev(), m);
    if (!sb || sb->magic.get() != kSuperMagic) continue;
    auto* p = reinterpret_cast<uint8_t*>(&*sb);
    if (cli.flip_byte) {
      if (*cli.flip_byte >= kSuperInfoSize) return fail(EINVAL, "offset {} outside the superblock", *cli.flip_byte);
      p[*cli.flip_byte] ^= 0xFF;
    } else {
      auto f = UBTRFS_TRY(super_field(cli.super_field));
      UBTRFS_TRY_STATUS(set_field(p, f, cli.value, fmt::format("super copy {} {}", m, cli.super_field).c_str()));
    }
    if (!cli.no_recsum) csum_superblock(*sb);
    UBTRFS_TRY_STATUS(img.dev().write(super_offset(m), std::span<const uint8_t>(p, kSuperInfoSize)));
    ++done;
  }
  if (done == 0) return fail(ENOENT, "no superblock copy written");
  return img.dev().flush();
}

// Keeps the parents' key pointers in step after the first key of block path[child] changed: the
// parent's pointer follows, and so on upwards while the pointer was the parent's first.
Status fix_parent_keys(Image& img, const std::vector<PathStep>& path, size_t child, const Key& first, const Cli& cli) {
  for (size_t i = child; i > 0; --i) {
    const PathStep& parent = path[i - 1];
    auto b = UBTRFS_TRY(img.read(parent.bytenr, cli.mirror));
    UBTRFS_TRY_STATUS(set_key(b, parent.slot, first));
    UBTRFS_TRY_STATUS(img.write(parent.bytenr, b, cli.mirror, !cli.no_recsum));
    if (parent.slot != 0) break;
  }
  return {};
}

Status run(const Cli& cli) {
  Image img;
  UBTRFS_TRY_STATUS(img.open(cli.image));
  if (cli.data) return img.flip_data(*cli.data + cli.flip_byte.value_or(0), cli.mirror);
  if (!cli.super_field.empty() || (cli.flip_byte && cli.block == std::nullopt && cli.tree.empty()))
    return edit_super(img, cli);

  uint64_t bytenr = 0;
  std::vector<PathStep> path;
  int slot = -1;
  if (!cli.tree.empty()) {
    auto id = parse_tree_id(cli.tree);
    if (!id) return fail(EINVAL, "unknown tree '{}'", cli.tree);
    const Key key = UBTRFS_TRY(parse_key(cli.key));
    auto [root, level] = UBTRFS_TRY(img.tree_root(*id));
    (void)level;
    path = UBTRFS_TRY(img.descend(root, key, cli.mirror));
    bytenr = path.back().bytenr;
    slot = path.back().slot;
    if (slot < 0) return fail(ENOENT, "key {} not found in tree {} (leaf {})", cli.key, cli.tree, bytenr);
  } else if (cli.block) {
    bytenr = *cli.block;
  } else {
    return fail(EINVAL, "give --tree/--key, --block or --super");
  }
  auto b = UBTRFS_TRY(img.read(bytenr, cli.mirror));
  const auto h = load<Header>(b.data());
  if (cli.locate) {
    std::printf("leaf %lu slot %d level %u generation %lu owner %lu\n", static_cast<unsigned long>(bytenr), slot,
                h.level, static_cast<unsigned long>(h.generation.get()), static_cast<unsigned long>(h.owner.get()));
    return {};
  }

  std::optional<Key> new_first;
  if (!cli.header_field.empty()) {
    auto f = UBTRFS_TRY(header_field(cli.header_field));
    UBTRFS_TRY_STATUS(
        set_field(b.data(), f, cli.value, fmt::format("block {} header {}", bytenr, cli.header_field).c_str()));
  } else if (cli.flip_byte) {
    if (*cli.flip_byte >= b.size()) return fail(EINVAL, "offset {} outside the block", *cli.flip_byte);
    b[*cli.flip_byte] ^= 0xFF;
    std::printf("block %lu byte %zu flipped\n", static_cast<unsigned long>(bytenr), *cli.flip_byte);
  } else if (slot < 0) {
    return fail(EINVAL, "this action needs --tree and --key");
  } else if (!cli.field.empty()) {
    const Key key = UBTRFS_TRY(parse_key(cli.key));
    auto f = UBTRFS_TRY(item_field(key.type, cli.field, key.type == kMetadataItemKey));
    auto [off, size] = UBTRFS_TRY(item_body_range(b, slot));
    if (f.offset + f.size > size)
      return fail(EINVAL, "field {} lies beyond the item body of {} bytes", cli.field, size);
    UBTRFS_TRY_STATUS(set_field(b.data() + off, f, cli.value, fmt::format("item {} {}", cli.key, cli.field).c_str()));
  } else if (cli.item_byte) {
    auto [off, size] = UBTRFS_TRY(item_body_range(b, slot));
    if (*cli.item_byte >= size)
      return fail(EINVAL, "byte {} lies beyond the item body of {} bytes", *cli.item_byte, size);
    UBTRFS_TRY_STATUS(set_field(b.data() + off, Field{*cli.item_byte, 1}, cli.value, "item byte"));
  } else if (cli.delete_item) {
    UBTRFS_TRY_STATUS(delete_item(b, slot));
    std::printf("deleted item %s from leaf %lu slot %d\n", cli.key.c_str(), static_cast<unsigned long>(bytenr), slot);
    if (slot == 0 && load<Header>(b.data()).nritems.get() > 0)
      new_first = load<Item>(b.data() + sizeof(Header)).key.cpu();
  } else if (cli.swap_next) {
    UBTRFS_TRY_STATUS(swap_keys(b, slot));
    std::printf("swapped keys of slots %d and %d of leaf %lu\n", slot, slot + 1, static_cast<unsigned long>(bytenr));
  } else if (!cli.set_key.empty()) {
    const Key k = UBTRFS_TRY(parse_key(cli.set_key));
    UBTRFS_TRY_STATUS(set_key(b, slot, k));
    std::printf("key of leaf %lu slot %d set to %s\n", static_cast<unsigned long>(bytenr), slot, cli.set_key.c_str());
    if (slot == 0) new_first = k;
  } else {
    return fail(EINVAL,
                "no action given (--field, --header-field, --item-byte, --flip-byte, --delete-item, --swap-next, "
                "--set-key, --locate)");
  }
  UBTRFS_TRY_STATUS(img.write(bytenr, b, cli.mirror, !cli.no_recsum));
  if (new_first && path.size() > 1) UBTRFS_TRY_STATUS(fix_parent_keys(img, path, path.size() - 1, *new_first, cli));
  return {};
}

}  // namespace
}  // namespace ubtrfs::corrupt

int main(int argc, char** argv) {
  using namespace ubtrfs::corrupt;
  Cli cli;
  CLI::App app{"Damage a btrfs image precisely (test utility; see the header of tools/corrupt/main.cpp)", kProg};
  app.set_version_flag("-V,--version", std::string(kProg) + " " + UBTRFS_VERSION);
  app.add_option("image", cli.image, "image file")->required();
  app.add_option("--tree", cli.tree, "tree name or id (fs, extent, chunk, dev, csum, free-space, root, 5, 256...)");
  app.add_option("--key", cli.key, "item key 'OBJECTID TYPE OFFSET'");
  app.add_option("--block", cli.block, "tree block logical address");
  app.add_option("--data", cli.data, "file data logical address (the byte at --flip-byte OFF from it is inverted)");
  app.add_option("--super", cli.super_field, "superblock field to rewrite");
  app.add_option("--field", cli.field, "item body field to rewrite");
  app.add_option("--header-field", cli.header_field, "tree block header field to rewrite");
  app.add_option("--item-byte", cli.item_byte, "byte offset inside the item body to rewrite");
  app.add_option("--flip-byte", cli.flip_byte, "byte offset in the block (or superblock) to invert");
  app.add_option("--value", cli.value, "new value: N, 0xN, +N, -N");
  app.add_flag("--delete-item", cli.delete_item, "delete the item");
  app.add_flag("--swap-next", cli.swap_next, "swap the item's key with the next item's key");
  app.add_option("--set-key", cli.set_key, "new key for the item");
  app.add_flag("--locate", cli.locate, "print the leaf and slot of the key");
  app.add_option("--mirror", cli.mirror, "only this copy (1-based); default every copy")->check(CLI::Range(0, 3));
  app.add_flag("--no-recsum", cli.no_recsum, "do not recompute the checksum");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "%s: error: %s\n", kProg, e.what());
    return 2;
  }
  spdlog::set_level(spdlog::level::off);
  if (auto st = run(cli); !st) {
    std::fprintf(stderr, "%s: error: %s\n", kProg, st.error().message.c_str());
    return 1;
  }
  return 0;
}
