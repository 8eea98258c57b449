// ubtrfs-fuzz-seeds: writes the seed corpora of the fuzz targets.
//
//   ubtrfs-fuzz-seeds OUTDIR [RAW_IMAGE...]
//
// Sources: images made here with the mkfs library on an in-memory device and then populated
// through the filesystem library (files inline, regular and sparse, directories, a symlink, a hard
// link, xattrs), in two geometries (16 KiB nodes DUP xxhash64, 4 KiB nodes SINGLE crc32c, the
// latter also with 120 more files: FS and extent trees of more than one level); and
// every RAW_IMAGE given (the reference images of images/, decompressed by scripts/fuzz.sh).
// For each source it writes
//   OUTDIR/image/NAME.ubfz       the fuzz image: primary superblock, one copy of every tree block
//                                reachable from the superblock, and up to 64 KiB of file data;
//   OUTDIR/superblock/NAME       flag byte 0 + the primary superblock (superblock_fuzzer);
//   OUTDIR/tree/NAME-BYTENR      two parameter bytes + one tree block, up to 32 blocks per source
//                                (tree_checker_fuzzer's input format).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "fs/filesystem.h"
#include "fuzz/fuzz_image.h"
#include "io/block_device.h"
#include "tools/mkfs/mkfs.h"
#include "tree/format.h"
#include "tree/fs_reader.h"

using namespace ubtrfs;
namespace stdfs = std::filesystem;

namespace {

constexpr uint64_t kDataBudget = 64 * 1024;
constexpr int kTreeSeedsPerSource = 32;

void write_file(const stdfs::path& p, std::span<const uint8_t> bytes) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

Status populate(io::BlockDevice& dev, int extra_files) {
  fs::OpenOptions open;
  open.path = "seed";
  open.device = fuzz::borrow(dev);
  open.writeback.enabled = false;
  fs::MountOptions opts;
  auto f = UBTRFS_TRY(fs::Filesystem::mount(open, opts));
  const fs::Caller c{0, 0, 022};
  std::vector<uint8_t> data(20000);
  for (size_t i = 0; i < data.size(); i++) data[i] = static_cast<uint8_t>(i % 251);
  auto dir = UBTRFS_TRY(f->mkdir(1, "dir", S_IFDIR | 0755, c));
  auto sub = UBTRFS_TRY(f->mkdir(dir.st_ino, "sub", S_IFDIR | 0700, c));
  auto small = UBTRFS_TRY(f->create(1, "inline", S_IFREG | 0644, c));
  UBTRFS_TRY(f->write(small.st_ino, 0, std::span(data).first(500)));
  auto big = UBTRFS_TRY(f->create(dir.st_ino, "regular", S_IFREG | 0644, c));
  UBTRFS_TRY(f->write(big.st_ino, 0, data));
  auto sparse = UBTRFS_TRY(f->create(sub.st_ino, "sparse", S_IFREG | 0600, c));
  UBTRFS_TRY(f->write(sparse.st_ino, 1 << 20, std::span(data).first(4096)));
  UBTRFS_TRY_STATUS(f->setxattr(big.st_ino, "user.note", std::span(data).first(64), 0));
  UBTRFS_TRY_STATUS(f->setxattr(dir.st_ino, "user.dir", std::span(data).first(8), 0));
  UBTRFS_TRY(f->symlink(1, "link", "dir/regular", c));
  UBTRFS_TRY(f->link(big.st_ino, 1, "hardlink"));
  UBTRFS_TRY(f->mknod(1, "fifo", S_IFIFO | 0644, 0, c));
  // Enough names for a multi-level FS tree with small nodes (a node above several leaves).
  for (int i = 0; i < extra_files; i++) {
    auto st = UBTRFS_TRY(f->create(sub.st_ino, "file-" + std::to_string(i), S_IFREG | 0644, c));
    f->forget(st.st_ino, 1);
  }
  return f->unmount();
}

// The fuzz image of `dev`: superblock, every reachable tree block (first copy), some data.
Result<fuzz::FuzzImage> convert(io::BlockDevice& dev, std::vector<std::vector<uint8_t>>& blocks) {
  auto reader = UBTRFS_TRY(FsReader::open(dev));
  fuzz::FuzzImage img;
  img.device_size = dev.size();
  std::vector<uint8_t> super(kSuperInfoSize);
  UBTRFS_TRY_STATUS(dev.read(kSuperInfoOffset, super));
  img.records.push_back({kSuperInfoOffset, super});
  std::set<uint64_t> seen;
  auto take = [&](std::span<const uint8_t> block) -> Status {
    const auto h = load<Header>(block.data());
    const uint64_t logical = h.bytenr.get();
    if (!seen.insert(logical).second) return {};
    auto m = reader->chunk_map().find(logical);
    if (!m || m->stripes.empty()) return fail(EUCLEAN, "tree block {} outside every chunk", logical);
    img.records.push_back({m->stripes[0].physical + (logical - m->logical), {block.begin(), block.end()}});
    blocks.emplace_back(block.begin(), block.end());
    return {};
  };
  UBTRFS_TRY_STATUS(reader->walk_blocks(reader->chunk_tree_root(), take));
  UBTRFS_TRY_STATUS(reader->walk_blocks(reader->root_tree_root(), take));
  if (auto log = reader->log_tree_root()) {
    UBTRFS_TRY_STATUS(reader->walk_blocks(*log, take));
    for (const auto& r : UBTRFS_TRY(reader->list_roots_in(*log))) UBTRFS_TRY_STATUS(reader->walk_blocks(r, take));
  }
  for (const auto& r : UBTRFS_TRY(reader->list_roots())) UBTRFS_TRY_STATUS(reader->walk_blocks(r, take));
  // File data: the first non-zero pages of the data chunks.
  uint64_t budget = kDataBudget;
  std::vector<uint8_t> page(4096);
  for (const auto& m : reader->chunk_map().all()) {
    if (!(m.type & kBlockGroupData) || m.stripes.empty()) continue;
    for (uint64_t off = 0; off < m.length && budget > 0; off += page.size()) {
      UBTRFS_TRY_STATUS(dev.read(m.stripes[0].physical + off, page));
      if (std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0; })) continue;
      img.records.push_back({m.stripes[0].physical + off, page});
      budget -= page.size();
    }
  }
  return img;
}

Status emit(io::BlockDevice& dev, const stdfs::path& out, const std::string& name) {
  std::vector<std::vector<uint8_t>> blocks;
  auto img = UBTRFS_TRY(convert(dev, blocks));
  const auto bytes = fuzz::serialize(img);
  write_file(out / "image" / (name + ".ubfz"), bytes);
  std::vector<uint8_t> super(1, 0);
  super.insert(super.end(), img.records[0].bytes.begin(), img.records[0].bytes.end());
  write_file(out / "superblock" / name, super);
  const Superblock sb = load<Superblock>(img.records[0].bytes.data());
  for (size_t i = 0; i < blocks.size() && i < kTreeSeedsPerSource; i++) {
    uint8_t p0 = 0;
    switch (sb.nodesize.get()) {
      case 4096: p0 = 0; break;
      case 8192: p0 = 1; break;
      case 32768: p0 = 3; break;
      case 65536: p0 = 4; break;
      default: p0 = 2;
    }
    if (sb.csum_type.get() == static_cast<uint16_t>(io::CsumType::kXxhash64)) p0 |= 8;
    const uint64_t inc = sb.incompat_flags.get();
    const uint8_t p1 = (inc & kIncompatSkinnyMetadata ? 1 : 0) | (inc & kIncompatNoHoles ? 2 : 0) |
                       (inc & kIncompatExtendedIref ? 4 : 0) | (inc & kIncompatMixedGroups ? 8 : 0) |
                       (inc & kIncompatCompressLzo ? 16 : 0) | (inc & kIncompatCompressZstd ? 32 : 0) |
                       (inc & kIncompatBigMetadata ? 64 : 0) | (inc & kIncompatMixedBackref ? 128 : 0);
    std::vector<uint8_t> seed{p0, p1};
    seed.insert(seed.end(), blocks[i].begin(), blocks[i].end());
    write_file(out / "tree" / (name + "-" + std::to_string(load<Header>(blocks[i].data()).bytenr.get())), seed);
  }
  std::printf("%s: %zu records, %zu bytes, %zu tree blocks\n", name.c_str(), img.records.size(), bytes.size(),
              blocks.size());
  return {};
}

Status made_here(const stdfs::path& out, const std::string& name, uint32_t nodesize, io::CsumType csum,
                 mkfs::Profile profile, int extra_files = 0) {
  fuzz::SparseDevice dev(128ull << 20, false);
  mkfs::MkfsConfig cfg;
  cfg.nodesize = nodesize;
  cfg.csum_type = csum;
  cfg.metadata_profile = profile;
  cfg.now_sec = 1700000000;
  cfg.fsid = mkfs::UuidBytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.dev_uuid = mkfs::UuidBytes{2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.chunk_tree_uuid = mkfs::UuidBytes{3, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  cfg.fs_tree_uuid = mkfs::UuidBytes{4, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  UBTRFS_TRY(mkfs::make_btrfs(dev, cfg));
  if (extra_files == 0) UBTRFS_TRY_STATUS(emit(dev, out, name + "-empty"));
  UBTRFS_TRY_STATUS(populate(dev, extra_files));
  return emit(dev, out, name);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUTDIR [RAW_IMAGE...]\n", argv[0]);
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  const stdfs::path out = argv[1];
  for (const char* sub : {"image", "superblock", "tree"}) stdfs::create_directories(out / sub);
  int rc = 0;
  auto report = [&](const std::string& what, const Status& st) {
    if (st) return;
    std::fprintf(stderr, "%s: %s\n", what.c_str(), st.error().message.c_str());
    rc = 1;
  };
  report("mkfs-16k-dup", made_here(out, "mkfs-16k-dup", 16384, io::CsumType::kXxhash64, mkfs::Profile::kDup));
  report("mkfs-4k-single", made_here(out, "mkfs-4k-single", 4096, io::CsumType::kCrc32c, mkfs::Profile::kSingle));
  report("mkfs-4k-multilevel",
         made_here(out, "mkfs-4k-multilevel", 4096, io::CsumType::kCrc32c, mkfs::Profile::kSingle, 120));
  for (int i = 2; i < argc; i++) {
    const std::string path = argv[i];
    auto dev = io::open_device(path, io::OpenMode::kReadOnly);
    if (!dev) {
      report(path, fail(dev.error()));
      continue;
    }
    report(path, emit(**dev, out, stdfs::path(path).parent_path().filename().string()));
  }
  return rc;
}
