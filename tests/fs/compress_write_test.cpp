// Compression on write (fs/compress_policy.h, fs/file_compress.cpp): the mount option parsed as the
// kernel parses it, the heuristic, compressed REG and inline extents in each format, the
// incompressible rule (NOCOMPRESS) and compress-force, 128 KiB pieces, and partial overwrite,
// truncate, punch hole, reflink and SEEK_DATA over compressed extents. Images are judged by
// `btrfs check` (mkfs.btrfs images; skipped with a warning without btrfs-progs unless
// UBTRFS_REQUIRE_ORACLES=1).
//
// Rules named here: compress_option_parses_as_the_kernel, heuristic_accepts_text_and_refuses_noise,
// compressible_data_is_stored_compressed_in_pieces_of_at_most_128k,
// random_data_is_stored_uncompressed_and_the_inode_is_not_marked,
// a_piece_that_saves_no_sector_marks_the_inode_nocompress, compress_force_compresses_a_nocompress_inode,
// small_file_becomes_a_compressed_inline_extent, chattr_c_compresses_without_the_mount_option,
// partial_overwrite_truncate_punch_and_reflink_of_compressed_extents.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <string>

#include "fs/compress_policy.h"
#include "fs/compression.h"
#include "fs/file_extent.h"
#include "fs/filesystem.h"
#include "fs/inode.h"
#include "fs/inode_flags.h"
#include "fs/mount_options.h"
#include "fs/xattr.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::check_clean;
using test::create_file;
using test::extents_of;
using test::kMiB;
using test::make_btrfs_image;
using test::model_write;
using test::mount_manual_commits;
using test::read_whole;
using test::run;
using test::write_all;

using io::testing::TempFile;

constexpr uint64_t kKiB = 1 << 10;

// Text-like data: words from a small vocabulary, varied enough that it is not one repeated block.
std::vector<uint8_t> text(size_t n, uint32_t seed) {
  static const char* kWords[] = {"btrfs ", "extent ", "compress ", "the ", "tree ", "of ", "data\n", "checksum ",
                                 "sector ", "inline ", "zstd ", "copy-on-write ", "subvolume ", "and ", "a "};
  std::mt19937 rng(seed);
  std::vector<uint8_t> v;
  v.reserve(n + 16);
  while (v.size() < n) {
    const char* w = kWords[rng() % std::size(kWords)];
    v.insert(v.end(), w, w + std::strlen(w));
  }
  v.resize(n);
  return v;
}

std::vector<uint8_t> noise(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// Uniform letters from a 60-symbol alphabet: few distinct values (the heuristic says yes) but about
// 6 bits of entropy per byte, so 8 KiB compresses to ~6 KiB and saves no sector.
std::vector<uint8_t> letters(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>('A' + rng() % 60);
  return v;
}

// The image mounted with `options` parsed as the kernel parses them; the tests decide when commits
// happen.
std::unique_ptr<Filesystem> mount_with_options(const std::string& path, const std::string& options) {
  auto m = parse_mount_options(options);
  REQUIRE(m);
  INFO("-o " << options);
  return mount_manual_commits(path, *m);
}

void sync(Filesystem& fs, uint64_t ino) { REQUIRE(fs.fsync(ino, false)); }

uint64_t inode_flags(Filesystem& fs, uint64_t ino) {
  auto rec = fs.info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  auto ii = read_inode(fs.info(), *(*rec)->tree, ino);
  REQUIRE(ii);
  return ii->flags.get();
}

struct Usage {
  uint64_t disk = 0, ram = 0, compressed_extents = 0, plain_extents = 0;
};
Usage usage(const std::vector<FileExtent>& exts) {
  Usage u;
  for (const auto& e : exts) {
    if (e.is_hole() || e.is_inline()) continue;
    u.disk += e.disk_num_bytes;
    u.ram += e.num_bytes;
    (e.compression != kCompressNone ? u.compressed_extents : u.plain_extents)++;
  }
  return u;
}

}  // namespace

TEST_CASE("compress_option_parses_as_the_kernel", "[fs][compress]") {
  auto opt = [](const std::string& s) {
    auto m = parse_mount_options(s);
    REQUIRE(m);
    return m->compress;
  };
  CHECK(opt("") == CompressOptions{});
  CHECK(opt("compress") == CompressOptions{kCompressZlib, 3, false});
  CHECK(opt("compress=zlib") == CompressOptions{kCompressZlib, 3, false});
  CHECK(opt("compress=zlib:9") == CompressOptions{kCompressZlib, 9, false});
  CHECK(opt("compress=zlib:12") == CompressOptions{kCompressZlib, 9, false});  // clamped to the maximum
  CHECK(opt("compress=zlib:0") == CompressOptions{kCompressZlib, 3, false});   // 0: the default
  CHECK(opt("compress=zstd") == CompressOptions{kCompressZstd, 3, false});
  CHECK(opt("compress=zstd:15") == CompressOptions{kCompressZstd, 15, false});
  CHECK(opt("compress=zstd:22") == CompressOptions{kCompressZstd, 15, false});
  CHECK(opt("compress=lzo") == CompressOptions{kCompressLzo, 0, false});
  CHECK(opt("compress-force=zstd:1") == CompressOptions{kCompressZstd, 1, true});
  CHECK(opt("compress-force") == CompressOptions{kCompressZlib, 3, true});
  CHECK(opt("compress-force=zstd,compress=no") == CompressOptions{});
  CHECK(opt("compress-force=zstd,compress=lzo") == CompressOptions{kCompressLzo, 0, false});
  CHECK(opt("compress=none") == CompressOptions{});
  auto bad = parse_mount_options("compress=gzip");
  REQUIRE(!bad);
  CHECK(bad.error().err == EINVAL);
  CHECK(bad.error().message.find("gzip") != std::string::npos);
  CHECK(compress_option_string(opt("compress=zstd:7")) == "compress=zstd:7");
  CHECK(compress_option_string(opt("compress-force=lzo")) == "compress-force=lzo");
  CHECK(compress_option_string(opt("")).empty());
}

TEST_CASE("heuristic_accepts_text_and_refuses_noise", "[fs][compress]") {
  CHECK(compress_heuristic(text(128 * kKiB, 1)));
  CHECK(compress_heuristic(std::vector<uint8_t>(128 * kKiB, 0)));
  CHECK(compress_heuristic(letters(128 * kKiB, 2)));
  CHECK_FALSE(compress_heuristic(noise(128 * kKiB, 3)));
  CHECK_FALSE(compress_heuristic(noise(4 * kKiB, 4)));
  // Already-compressed data looks like noise.
  auto z = compress_extent(kCompressZstd, text(1 * kMiB, 5), 4096, 19);
  REQUIRE(z);
  REQUIRE(z->size() > 16 * kKiB);
  CHECK_FALSE(compress_heuristic(std::span<const uint8_t>(*z).first(16 * kKiB)));
  // A repeated block of noise is data the compressor removes.
  auto block = noise(4 * kKiB, 6);
  std::vector<uint8_t> twice = block;
  twice.insert(twice.end(), block.begin(), block.end());
  CHECK(compress_heuristic(twice));
}

TEST_CASE("inode_compression follows inode_need_compress", "[fs][compress]") {
  const CompressOptions none{}, zstd{kCompressZstd, 3, false}, force{kCompressLzo, 0, true};
  CHECK(inode_compression(none, 0, std::nullopt).type == kCompressNone);
  CHECK(inode_compression(zstd, 0, std::nullopt).type == kCompressZstd);
  CHECK(inode_compression(zstd, kInodeNocompress, std::nullopt).type == kCompressNone);
  CHECK(inode_compression(force, kInodeNocompress, std::nullopt).type == kCompressLzo);
  CHECK(inode_compression(force, kInodeNodatacow | kInodeNodatasum, std::nullopt).type == kCompressNone);
  CHECK(inode_compression(zstd, kInodeNodatasum, std::nullopt).type == kCompressNone);
  CHECK(inode_compression(none, kInodeCompress, std::nullopt).type == kCompressZlib);
  CHECK(inode_compression(none, kInodeCompress, "lzo").type == kCompressLzo);
  CHECK(inode_compression(zstd, 0, "zlib").type == kCompressZlib);
  CHECK(inode_compression(zstd, 0, "zlib").has_prop);
}

TEST_CASE("compressible_data_is_stored_compressed_in_pieces_of_at_most_128k", "[fs][compress]") {
  for (const char* type : {"zlib", "lzo", "zstd"}) {
    DYNAMIC_SECTION(type) {
      TempFile img(256 * kMiB);
      if (!make_btrfs_image(img)) return;
      const uint8_t want = std::string(type) == "zlib" ? kCompressZlib : std::string(type) == "lzo" ? kCompressLzo
                                                                                                   : kCompressZstd;
      auto data = text(2 * kMiB + 5000, 11);
      {
        auto fs = mount_with_options(img.path(), std::string("compress=") + type);
        const uint64_t ino = create_file(*fs, 1, "text");
        // Written in odd-sized pieces, as an application would.
        for (size_t off = 0; off < data.size(); off += 100000)
          write_all(*fs, ino, off,
                    std::vector<uint8_t>(data.begin() + off, data.begin() + std::min(data.size(), off + 100000)));
        sync(*fs, ino);
        const auto exts = extents_of(*fs, ino);
        const Usage u = usage(exts);
        CHECK(u.compressed_extents >= 16);
        for (const auto& e : exts) {
          INFO("extent at " << e.file_offset << " compression " << int(e.compression) << " num_bytes " << e.num_bytes);
          CHECK(e.num_bytes <= kMaxUncompressed);
          CHECK(e.ram_bytes <= kMaxUncompressed);
          if (e.compression != kCompressNone) {
            CHECK(e.compression == want);
            CHECK(e.disk_num_bytes % 4096 == 0);
            CHECK(e.disk_num_bytes + 4096 <= e.num_bytes);
          }
        }
        // lzo trades ratio for speed: it keeps about a third of this text.
        CHECK(u.disk * (want == kCompressLzo ? 2 : 3) < u.ram);
        CHECK(read_whole(*fs, ino, 128 * kKiB) == data);
        // The sectors' data reservation is all accounted for: none left in may_use, and used is
        // the compressed size.
        CHECK(fs->info().spaces().data().counters().may_use == 0);
        const uint64_t sb_incompat = fs->info().super().incompat_flags.get();
        if (want == kCompressZstd) CHECK((sb_incompat & kIncompatCompressZstd) != 0);
        if (want == kCompressLzo) CHECK((sb_incompat & kIncompatCompressLzo) != 0);
        REQUIRE(fs->unmount());
      }
      {
        auto fs = mount_with_options(img.path(), "");
        CHECK(read_whole(*fs, 257, 128 * kKiB) == data);
        REQUIRE(fs->unmount());
      }
      check_clean(img.path());
    }
  }
}

TEST_CASE("random_data_is_stored_uncompressed_and_the_inode_is_not_marked", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_with_options(img.path(), "compress=zstd");
  const uint64_t ino = create_file(*fs, 1, "random");
  auto data = noise(1 * kMiB, 21);
  write_all(*fs, ino, 0, data);
  sync(*fs, ino);
  const Usage u = usage(extents_of(*fs, ino));
  CHECK(u.compressed_extents == 0);
  CHECK(u.disk == 1 * kMiB);
  // The heuristic's "no" is not the incompressible rule: the inode may compress later data.
  CHECK((inode_flags(*fs, ino) & kInodeNocompress) == 0);
  auto more = text(256 * kKiB, 22);
  write_all(*fs, ino, 1 * kMiB, more);
  sync(*fs, ino);
  CHECK(usage(extents_of(*fs, ino)).compressed_extents == 2);
  data.insert(data.end(), more.begin(), more.end());
  CHECK(read_whole(*fs, ino, 128 * kKiB) == data);
  REQUIRE(fs->unmount());
  check_clean(img.path());
}

TEST_CASE("a_piece_that_saves_no_sector_marks_the_inode_nocompress", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  std::vector<uint8_t> model;
  {
    auto fs = mount_with_options(img.path(), "compress=zstd");
    const uint64_t ino = create_file(*fs, 1, "letters");
    auto l = letters(8 * kKiB, 31);
    write_all(*fs, ino, 0, l);
    model_write(model, 0, l);
    sync(*fs, ino);
    CHECK(usage(extents_of(*fs, ino)).compressed_extents == 0);
    CHECK((inode_flags(*fs, ino) & kInodeNocompress) != 0);
    // From now on this inode's data is not compressed, however compressible.
    auto t = text(512 * kKiB, 32);
    write_all(*fs, ino, 8 * kKiB, t);
    model_write(model, 8 * kKiB, t);
    sync(*fs, ino);
    CHECK(usage(extents_of(*fs, ino)).compressed_extents == 0);
    REQUIRE(fs->unmount());
  }
  SECTION("compress_force_compresses_a_nocompress_inode") {
    auto fs = mount_with_options(img.path(), "compress-force=zstd");
    const uint64_t ino = 257;
    auto t = text(512 * kKiB, 33);
    write_all(*fs, ino, 1 * kMiB, t);
    model_write(model, 1 * kMiB, t);
    // compress-force writes random data uncompressed (the codec cannot shrink it) but never marks.
    auto n = noise(256 * kKiB, 34);
    write_all(*fs, ino, 2 * kMiB, n);
    model_write(model, 2 * kMiB, n);
    sync(*fs, ino);
    const auto exts = extents_of(*fs, ino);
    uint64_t compressed_at_1m = 0, plain_at_2m = 0;
    for (const auto& e : exts) {
      if (e.file_offset >= 1 * kMiB && e.file_offset < 1 * kMiB + 512 * kKiB && e.compression == kCompressZstd)
        compressed_at_1m += e.num_bytes;
      if (e.file_offset >= 2 * kMiB && e.compression == kCompressNone && !e.is_hole()) plain_at_2m += e.num_bytes;
    }
    CHECK(compressed_at_1m == 512 * kKiB);
    CHECK(plain_at_2m == 256 * kKiB);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == model);
    REQUIRE(fs->unmount());
    check_clean(img.path());
  }
}

TEST_CASE("small_file_becomes_a_compressed_inline_extent", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto small = text(3000, 41), sector = text(4096, 42);
  {
    auto fs = mount_with_options(img.path(), "compress=zlib");
    const uint64_t a = create_file(*fs, 1, "small"), b = create_file(*fs, 1, "sector");
    const uint64_t c = create_file(*fs, 1, "random");
    write_all(*fs, a, 0, small);
    write_all(*fs, b, 0, sector);
    auto r = noise(1500, 43);
    write_all(*fs, c, 0, r);
    REQUIRE(fs->info().transactions().commit());
    for (uint64_t ino : {a, b}) {
      const auto exts = extents_of(*fs, ino);
      REQUIRE(exts.size() == 1);
      CHECK(exts[0].is_inline());
      CHECK(exts[0].compression == kCompressZlib);
      CHECK(exts[0].inline_data.size() < 2048);
    }
    CHECK(extents_of(*fs, a)[0].ram_bytes == 3000);
    CHECK(extents_of(*fs, b)[0].ram_bytes == 4096);
    // Noise stays a plain inline extent.
    const auto rc = extents_of(*fs, c);
    REQUIRE(rc.size() == 1);
    CHECK(rc[0].is_inline());
    CHECK(rc[0].compression == kCompressNone);
    CHECK(read_whole(*fs, a, 128 * kKiB) == small);
    CHECK(read_whole(*fs, b, 128 * kKiB) == sector);
    REQUIRE(fs->getattr(b)->st_blocks == 8);
    REQUIRE(fs->unmount());
  }
  {
    auto fs = mount_with_options(img.path(), "");
    CHECK(read_whole(*fs, 257, 128 * kKiB) == small);
    CHECK(read_whole(*fs, 258, 128 * kKiB) == sector);
    // Appending to a compressed inline file moves it to a regular extent (no compression now).
    auto more = text(10000, 44);
    write_all(*fs, 257, 3000, more);
    sync(*fs, 257);
    auto model = small;
    model.insert(model.end(), more.begin(), more.end());
    CHECK(read_whole(*fs, 257, 128 * kKiB) == model);
    REQUIRE(fs->unmount());
  }
  check_clean(img.path());
}

TEST_CASE("chattr_c_compresses_without_the_mount_option", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_with_options(img.path(), "");
  const uint64_t ino = create_file(*fs, 1, "c"), plain = create_file(*fs, 1, "plain");
  REQUIRE(fs->set_fsflags(ino, FS_COMPR_FL, Caller{}));
  auto data = text(1 * kMiB, 51);
  write_all(*fs, ino, 0, data);
  write_all(*fs, plain, 0, data);
  sync(*fs, ino);
  sync(*fs, plain);
  const Usage u = usage(extents_of(*fs, ino));
  CHECK(u.compressed_extents == 8);
  for (const auto& e : extents_of(*fs, ino)) CHECK(e.compression == kCompressZlib);  // the property chattr stores
  CHECK(usage(extents_of(*fs, plain)).compressed_extents == 0);
  CHECK(read_whole(*fs, ino, 128 * kKiB) == data);
  REQUIRE(fs->unmount());
  check_clean(img.path());
}

TEST_CASE("partial_overwrite_truncate_punch_and_reflink_of_compressed_extents", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  std::vector<uint8_t> model, copy_model;
  {
    auto fs = mount_with_options(img.path(), "compress=zstd");
    const uint64_t ino = create_file(*fs, 1, "f");
    model = text(1 * kMiB, 61);
    write_all(*fs, ino, 0, model);
    sync(*fs, ino);
    REQUIRE(usage(extents_of(*fs, ino)).compressed_extents == 8);
    // Overwrite inside the second compressed extent (not sector-aligned), and a few sectors across
    // the boundary of the third and fourth.
    auto o1 = noise(100, 62), o2 = text(3 * 4096, 63);
    write_all(*fs, ino, 200000, o1);
    model_write(model, 200000, o1);
    write_all(*fs, ino, 3 * kMaxUncompressed - 4096, o2);
    model_write(model, 3 * kMaxUncompressed - 4096, o2);
    sync(*fs, ino);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == model);
    // Punch a hole inside the fifth extent (sector-aligned) and one unaligned inside the sixth.
    REQUIRE(fs->fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * kMaxUncompressed + 8192, 16384));
    std::fill(model.begin() + 4 * kMaxUncompressed + 8192, model.begin() + 4 * kMaxUncompressed + 8192 + 16384, 0);
    REQUIRE(fs->fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * kMaxUncompressed + 1000, 5000));
    std::fill(model.begin() + 5 * kMaxUncompressed + 1000, model.begin() + 5 * kMaxUncompressed + 6000, 0);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == model);
    // SEEK_DATA / SEEK_HOLE see the punched hole.
    auto hole = fs->lseek(ino, 4 * kMaxUncompressed, SEEK_HOLE);
    REQUIRE(hole);
    CHECK(*hole == 4 * kMaxUncompressed + 8192);
    auto data_at = fs->lseek(ino, 4 * kMaxUncompressed + 8192, SEEK_DATA);
    REQUIRE(data_at);
    CHECK(*data_at == 4 * kMaxUncompressed + 8192 + 16384);
    // Reflink a range that starts and ends inside compressed extents to a new file.
    const uint64_t dst = create_file(*fs, 1, "copy");
    auto n = fs->copy_file_range(ino, 64 * kKiB, dst, 0, 300 * kKiB, 0);
    REQUIRE(n);
    CHECK(*n == 300 * kKiB);
    copy_model.assign(model.begin() + 64 * kKiB, model.begin() + 364 * kKiB);
    sync(*fs, dst);
    CHECK(read_whole(*fs, dst, 128 * kKiB) == copy_model);
    // Truncate inside the seventh extent.
    SetAttr sa;
    sa.size = 6 * kMaxUncompressed + 7777;
    REQUIRE(fs->setattr(ino, sa, Caller{}));
    model.resize(6 * kMaxUncompressed + 7777);
    sync(*fs, ino);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == model);
    // Grow again: the bytes past the old size read as zeros.
    sa.size = 7 * kMaxUncompressed;
    REQUIRE(fs->setattr(ino, sa, Caller{}));
    model.resize(7 * kMaxUncompressed, 0);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == model);
    REQUIRE(fs->unmount());
  }
  check_clean(img.path());
  {
    auto fs = mount_with_options(img.path(), "");
    CHECK(read_whole(*fs, 257, 128 * kKiB) == model);
    CHECK(read_whole(*fs, 258, 128 * kKiB) == copy_model);
    REQUIRE(fs->unmount());
  }
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

TEST_CASE("truncate_of_a_compressed_inline_extent", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto small = text(3500, 71);
  {
    auto fs = mount_with_options(img.path(), "compress=zstd");
    const uint64_t ino = create_file(*fs, 1, "small");
    write_all(*fs, ino, 0, small);
    sync(*fs, ino);
    REQUIRE(extents_of(*fs, ino).size() == 1);
    REQUIRE(extents_of(*fs, ino)[0].compression == kCompressZstd);
    SetAttr sa;
    sa.size = 1000;
    REQUIRE(fs->setattr(ino, sa, Caller{}));
    small.resize(1000);
    sync(*fs, ino);
    CHECK(read_whole(*fs, ino, 128 * kKiB) == small);
    CHECK(fs->getattr(ino)->st_size == 1000);
    REQUIRE(fs->unmount());
  }
  check_clean(img.path());
  auto fs = mount_with_options(img.path(), "");
  CHECK(read_whole(*fs, 257, 128 * kKiB) == small);
  REQUIRE(fs->unmount());
}

TEST_CASE("fsync_of_compressed_extents_is_replayed_after_a_crash", "[fs][compress][tree_log]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto data = text(700 * kKiB, 81);
  TempFile crash(1);
  {
    auto fs = mount_with_options(img.path(), "compress=zstd");
    REQUIRE(fs->info().transactions().commit());
    const uint64_t ino = create_file(*fs, 1, "logged");
    write_all(*fs, ino, 0, data);
    REQUIRE(fs->fsync(ino, false));
    REQUIRE(usage(extents_of(*fs, ino)).compressed_extents == 6);
    // The crash: the image as the disk holds it after the fsync, before any commit.
    REQUIRE(run(fmt::format("cp --sparse=always {} {}", img.path(), crash.path())) == 0);
    REQUIRE(fs->unmount());
  }
  {
    auto fs = mount_with_options(crash.path(), "");  // replays the log
    auto st = fs->lookup(1, "logged");
    REQUIRE(st);
    CHECK(read_whole(*fs, st->st_ino, 128 * kKiB) == data);
    CHECK(usage(extents_of(*fs, st->st_ino)).compressed_extents == 6);
    REQUIRE(fs->unmount());
  }
  check_clean(crash.path());
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

TEST_CASE("chattr_c_stores_the_mount_compression_type", "[fs][compress]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_with_options(img.path(), "compress=lzo");
  const uint64_t ino = create_file(*fs, 1, "c");
  REQUIRE(fs->set_fsflags(ino, FS_COMPR_FL, Caller{}));
  auto rec = fs->info().fs_root(kFsTreeObjectid);
  REQUIRE(rec);
  auto prop = get_xattr(*(*rec)->tree, ino, kCompressionProp);
  REQUIRE(prop);
  REQUIRE(prop->has_value());
  CHECK(std::string((*prop)->begin(), (*prop)->end()) == "lzo");
  REQUIRE(fs->unmount());
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

// Seeded random writes, truncates, punches, reflinks and fsyncs of compressible and random data
// on two files under compress=zstd, checked against a model after every flush and after a
// remount; the image ends check-clean.
TEST_CASE("random_operations_on_compressed_files_match_the_model", "[fs][compress]") {
  TempFile img(512 * kMiB);
  if (!make_btrfs_image(img)) return;
  const char* seed_env = std::getenv("UBTRFS_COMPRESS_SEED");  // other seeds by hand
  std::mt19937 rng(seed_env ? static_cast<uint32_t>(std::atoi(seed_env)) : 1601u);
  std::vector<uint8_t> model[2];
  uint64_t inos[2] = {0, 0};
  {
    const char* opts_env = std::getenv("UBTRFS_COMPRESS_OPTS");  // e.g. compress-force=lzo, by hand
    auto fs = mount_with_options(img.path(), opts_env ? opts_env : "compress=zstd");
    inos[0] = create_file(*fs, 1, "a");
    inos[1] = create_file(*fs, 1, "b");
    for (int op = 0; op < 300; ++op) {
      const int f = static_cast<int>(rng() % 2);
      const uint64_t ino = inos[f];
      auto& m = model[f];
      const unsigned kind = rng() % 10;
      INFO("op " << op << " kind " << kind << " file " << f << " size " << m.size());
      if (kind < 5) {
        const uint64_t off = rng() % (m.size() + 256 * kKiB + 1);
        const size_t len = 1 + rng() % (kind < 2 ? 300 * kKiB : 20 * kKiB);
        auto data = (rng() % 4 == 0) ? noise(len, static_cast<uint32_t>(op)) : text(len, static_cast<uint32_t>(op));
        write_all(*fs, ino, off, data);
        model_write(m, off, data);
      } else if (kind == 5) {
        SetAttr sa;
        sa.size = m.empty() ? 0 : rng() % (m.size() + 64 * kKiB);
        REQUIRE(fs->setattr(ino, sa, Caller{}));
        m.resize(*sa.size, 0);
      } else if (kind == 6 && m.size() > 8192) {
        const uint64_t off = rng() % m.size(), len = 1 + rng() % (m.size() - off);
        REQUIRE(fs->fallocate(ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len));
        std::fill(m.begin() + static_cast<std::ptrdiff_t>(off), m.begin() + static_cast<std::ptrdiff_t>(off + len), 0);
      } else if (kind == 7 && model[1 - f].size() > 8192) {
        // Reflink a sector-aligned range of the other file into this one.
        auto& src = model[1 - f];
        const uint64_t soff = (rng() % (src.size() - 4096)) / 4096 * 4096;
        const uint64_t doff = (rng() % (m.size() + 4096)) / 4096 * 4096;
        const uint64_t len = std::min<uint64_t>(src.size() - soff, 1 + rng() % (200 * kKiB));
        auto n = fs->copy_file_range(inos[1 - f], soff, ino, doff, len, 0);
        REQUIRE(n);
        REQUIRE(*n == len);
        model_write(m, doff, std::vector<uint8_t>(src.begin() + static_cast<std::ptrdiff_t>(soff),
                                          src.begin() + static_cast<std::ptrdiff_t>(soff + len)));
      } else if (kind == 8) {
        sync(*fs, ino);
        CHECK(read_whole(*fs, ino, 128 * kKiB) == m);
      } else if (kind == 9 && rng() % 4 == 0) {
        REQUIRE(fs->info().transactions().commit());
      }
    }
    for (int f = 0; f < 2; ++f) {
      sync(*fs, inos[f]);
      CHECK(read_whole(*fs, inos[f], 128 * kKiB) == model[f]);
      for (const auto& e : extents_of(*fs, inos[f])) CHECK(e.ram_bytes <= (e.compression ? kMaxUncompressed : 128 * kMiB));
    }
    // Some compressed extents survive (a piece mixing text and noise that saves no sector marks its
    // inode NOCOMPRESS early, as in the kernel, so not many).
    CHECK(usage(extents_of(*fs, inos[0])).compressed_extents + usage(extents_of(*fs, inos[1])).compressed_extents > 0);
    REQUIRE(fs->unmount());
  }
  check_clean(img.path());
  auto fs = mount_with_options(img.path(), "");
  for (int f = 0; f < 2; ++f) CHECK(read_whole(*fs, inos[f], 128 * kKiB) == model[f]);
  REQUIRE(fs->unmount());
}

}  // namespace ubtrfs::fs

namespace ubtrfs::fs {

TEST_CASE("btrfs_compression_property_sets_the_flags_as_the_kernel", "[fs][compress]") {
  // Pure rules (props.c prop_compression_validate / _ignore / _apply).
  const uint32_t reg = 0100644, dir = 040755, fifo = 010644;
  CHECK(apply_compression_prop(0, reg, "zstd").value() == std::optional<uint64_t>(kInodeCompress));
  CHECK(apply_compression_prop(kInodeNocompress, dir, "lzo").value() == std::optional<uint64_t>(kInodeCompress));
  CHECK(apply_compression_prop(kInodeCompress, reg, "none").value() == std::optional<uint64_t>(kInodeNocompress));
  CHECK(apply_compression_prop(kInodeCompress, reg, "no").value() == std::optional<uint64_t>(kInodeNocompress));
  CHECK(apply_compression_prop(kInodeCompress | 0x20, reg, std::nullopt).value() == std::optional<uint64_t>(0x20));
  CHECK(apply_compression_prop(kInodeCompress, reg, "").value() == std::optional<uint64_t>(0));
  CHECK(!apply_compression_prop(0, fifo, "zstd").value().has_value());
  CHECK(apply_compression_prop(0, reg, "gzip").error().err == EINVAL);
  CHECK(apply_compression_prop(0, fifo, "gzip").error().err == EINVAL);  // validated before ignored
  CHECK(apply_compression_prop(kInodeNodatacow | kInodeNodatasum, reg, "zstd").error().err == EINVAL);

  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_with_options(img.path(), "");
  const uint64_t a = create_file(*fs, 1, "a"), b = create_file(*fs, 1, "b");
  auto sv = [](std::string_view s) { return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  REQUIRE(fs->setxattr(a, kCompressionProp, sv("zstd"), 0));
  CHECK((inode_flags(*fs, a) & kInodeCompress) != 0);
  auto bad = fs->setxattr(b, kCompressionProp, sv("gzip"), 0);
  REQUIRE(!bad);
  CHECK(bad.error().err == EINVAL);
  auto data = text(512 * kKiB, 91);
  write_all(*fs, a, 0, data);
  write_all(*fs, b, 0, data);
  sync(*fs, a);
  sync(*fs, b);
  CHECK(usage(extents_of(*fs, a)).compressed_extents == 4);
  for (const auto& e : extents_of(*fs, a)) CHECK(e.compression == kCompressZstd);
  CHECK(usage(extents_of(*fs, b)).compressed_extents == 0);
  // "none" stops compression (NOCOMPRESS); removing the property clears both flags.
  REQUIRE(fs->setxattr(a, kCompressionProp, sv("none"), 0));
  CHECK((inode_flags(*fs, a) & (kInodeCompress | kInodeNocompress)) == kInodeNocompress);
  write_all(*fs, a, 1 * kMiB, data);
  sync(*fs, a);
  CHECK(usage(extents_of(*fs, a)).compressed_extents == 4);
  REQUIRE(fs->removexattr(a, kCompressionProp));
  CHECK((inode_flags(*fs, a) & (kInodeCompress | kInodeNocompress)) == 0);
  REQUIRE(fs->unmount());
  check_clean(img.path());
}

}  // namespace ubtrfs::fs
