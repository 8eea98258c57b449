// copy_file_range as a reflink (fs/file_clone.cpp): aligned ranges share the source's data extents
// (one more EXTENT_DATA_REF each, no data space), unaligned edges are copied, overwriting either
// copy COWs only what is written, deleting both gives all the space back, and shared PREALLOC
// extents are never written in place. Every image ends judged by `btrfs check` and fsck.ubtrfs.
//
// Rules named here: copy_file_range_shares_aligned_extents,
// shared_extents_cow_on_overwrite_and_free_with_the_last_reference, write_into_shared_prealloc_cows,
// copy_file_range_copies_unaligned_edges_and_shares_the_rest, copy_file_range_shares_on_a_full_data_space,
// clone_on_full_metadata_fails_before_changing_anything, fsync_of_clone_logs_shared_extents.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "alloc/extent_tree.h"
#include "fs/file_extent.h"
#include "fs/filesystem.h"
#include "fs/transaction.h"
#include "fs/tree_log.h"
#include "tests/io/shell.h"
#include "tests/io/temp_file.h"
#include "tree/ctree.h"
#include "tests/test_support.h"
#include "tests/fs/fs_test_env.h"

namespace ubtrfs::fs {
namespace {

using test::check_clean;
using test::commit_now;
using test::create_file;
using test::extents_of;
using test::kMiB;
using test::make_btrfs_image;
using test::model_write;
using test::mount_manual_commits;
using test::oracles_required;
using test::read_whole;
using test::run;
using test::write_all;
using io::testing::pattern;
using io::testing::TempFile;
namespace stdfs = std::filesystem;

size_t copy(Filesystem& fs, uint64_t in, uint64_t off_in, uint64_t out, uint64_t off_out, size_t len) {
  auto r = fs.copy_file_range(in, off_in, out, off_out, len, 0);
  INFO("copy_file_range " << in << "@" << off_in << " -> " << out << "@" << off_out << " len " << len << ": "
                          << (r ? "" : r.error().message));
  REQUIRE(r);
  return *r;
}

uint64_t data_used(Filesystem& fs) { return fs.info().spaces().data().counters().used; }

std::set<uint64_t> disk_extents(Filesystem& fs, uint64_t ino) {
  std::set<uint64_t> out;
  for (const auto& e : extents_of(fs, ino))
    if (!e.is_inline() && !e.is_hole()) out.insert(e.disk_bytenr);
  return out;
}

// The committed EXTENT_ITEM of a data extent (refs and backrefs).
alloc::ExtentItemBody extent_item(Filesystem& fs, const FileExtent& e) {
  const Key key{e.disk_bytenr, kExtentItemKey, e.disk_num_bytes};
  auto body = lookup_item(*fs.info().extent_root().tree, key);
  REQUIRE(body);
  INFO("extent item of " << e.disk_bytenr);
  REQUIRE(body->has_value());
  auto parsed = alloc::parse_extent_item(key, **body);
  REQUIRE(parsed);
  return *parsed;
}

// btrfs check and fsck.ubtrfs (when built) both find the image clean.
void check_clean_and_fsck(const std::string& img) {
  check_clean(img);
  const std::string fsck = test::tool_binary("fsck/fsck.ubtrfs");
  if (fsck.empty()) {
    if (oracles_required()) FAIL("fsck.ubtrfs not built");
    WARN("fsck.ubtrfs not built: skipped");
    return;
  }
  std::string out;
  const int frc = run(fmt::format("{} {}", fsck, img), &out);
  INFO("fsck.ubtrfs: " << out);
  CHECK(frc == 0);
}

}  // namespace

TEST_CASE("copy_file_range_shares_aligned_extents", "[reflink]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  std::vector<uint8_t> a_model, b_model;
  uint64_t start_used = 0;
  uint64_t a = 0, b = 0;
  {
    auto fs = mount_manual_commits(img.path());
    commit_now(*fs);
    start_used = data_used(*fs);
    a = create_file(*fs, 1, "a");
    b = create_file(*fs, 1, "b");
    // Part committed, part still delalloc (the clone writes it out first), and an unaligned EOF.
    model_write(a_model, 0, pattern(2 * kMiB, 1));
    write_all(*fs, a, 0, pattern(2 * kMiB, 1));
    commit_now(*fs);
    model_write(a_model, 2 * kMiB, pattern(kMiB + 1000, 2));
    write_all(*fs, a, 2 * kMiB, pattern(kMiB + 1000, 2));
    const uint64_t size = a_model.size();
    REQUIRE(copy(*fs, a, 0, b, 0, size) == size);
    b_model = a_model;
    commit_now(*fs);
    const uint64_t used_after_a = start_used + 3 * kMiB + 4096;  // A's extents, EOF sector whole
    CHECK(data_used(*fs) == used_after_a);                       // the copy allocated nothing
    CHECK(disk_extents(*fs, b) == disk_extents(*fs, a));
    for (const auto& e : extents_of(*fs, a)) {
      const auto x = extent_item(*fs, e);
      CHECK(x.refs == 2);
      CHECK(x.inline_refs.size() == 2);
    }
    auto sa = fs->getattr(a), sb = fs->getattr(b);
    REQUIRE((sa && sb));
    CHECK(sb->st_size == sa->st_size);
    CHECK(sb->st_blocks == sa->st_blocks);
    CHECK(read_whole(*fs, b, 4 * kMiB) == b_model);
    CHECK(read_whole(*fs, a, 4 * kMiB) == a_model);
    REQUIRE(fs->unmount());
  }
  check_clean_and_fsck(img.path());
  {
    auto fs = mount_manual_commits(img.path());
    CHECK(read_whole(*fs, b, 4 * kMiB) == b_model);
    REQUIRE(fs->unmount());
  }
}

TEST_CASE("shared_extents_cow_on_overwrite_and_free_with_the_last_reference", "[reflink]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  std::vector<uint8_t> a_model = pattern(4 * kMiB, 3), b_model;
  uint64_t start_used = 0;
  {
    auto fs = mount_manual_commits(img.path());
    commit_now(*fs);
    start_used = data_used(*fs);
    const uint64_t a = create_file(*fs, 1, "a"), b = create_file(*fs, 1, "b");
    write_all(*fs, a, 0, a_model);
    commit_now(*fs);
    REQUIRE(copy(*fs, a, 0, b, 0, a_model.size()) == a_model.size());
    b_model = a_model;
    commit_now(*fs);
    CHECK(data_used(*fs) == start_used + 4 * kMiB);
    // Overwrite half of the copy, at an offset inside the extent: only that is COWed.
    const auto fresh = pattern(2 * kMiB, 4);
    write_all(*fs, b, kMiB, fresh);
    model_write(b_model, kMiB, fresh);
    commit_now(*fs);
    CHECK(data_used(*fs) == start_used + 6 * kMiB);
    CHECK(read_whole(*fs, a, 4 * kMiB) == a_model);
    CHECK(read_whole(*fs, b, 4 * kMiB) == b_model);
    // Each of A's extents: its own reference and one per item of B still pointing at it (the
    // overwrite left B bookends of the extents it cut).
    for (const auto& e : extents_of(*fs, a)) {
      uint64_t b_items = 0;
      for (const auto& x : extents_of(*fs, b)) b_items += x.disk_bytenr == e.disk_bytenr;
      CHECK(extent_item(*fs, e).refs == 1 + b_items);
    }
    CHECK(disk_extents(*fs, b).size() > disk_extents(*fs, a).size());
    // Deleting the source keeps the space B still uses.
    REQUIRE(fs->unlink(1, "a"));
    fs->forget(a, 1);
    commit_now(*fs);
    CHECK(data_used(*fs) == start_used + 6 * kMiB);
    CHECK(read_whole(*fs, b, 4 * kMiB) == b_model);
    REQUIRE(fs->unmount());
  }
  check_clean_and_fsck(img.path());
  {
    auto fs = mount_manual_commits(img.path());
    auto st = fs->lookup(1, "b");
    REQUIRE(st);
    CHECK(read_whole(*fs, st->st_ino, 4 * kMiB) == b_model);
    // The last reference goes: all the data space comes back.
    REQUIRE(fs->unlink(1, "b"));
    fs->forget(st->st_ino, 1);
    REQUIRE(fs->run_delayed_iputs());
    commit_now(*fs);
    CHECK(data_used(*fs) == start_used);
    REQUIRE(fs->unmount());
  }
  check_clean_and_fsck(img.path());
}

TEST_CASE("write_into_shared_prealloc_cows", "[reflink]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_manual_commits(img.path());
  const auto data = pattern(4096, 5);
  // Control: an exclusive PREALLOC extent is written in place (nothing allocated).
  const uint64_t solo = create_file(*fs, 1, "solo");
  REQUIRE(fs->fallocate(solo, 0, 0, kMiB));
  commit_now(*fs);
  uint64_t used = data_used(*fs);
  write_all(*fs, solo, 64 * 1024, data);
  commit_now(*fs);
  CHECK(data_used(*fs) == used);

  // Shared with another file: a write into either copy is COWed, the other keeps reading zeros.
  const uint64_t a = create_file(*fs, 1, "a"), b = create_file(*fs, 1, "b");
  REQUIRE(fs->fallocate(a, 0, 0, kMiB));
  REQUIRE(copy(*fs, a, 0, b, 0, kMiB) == kMiB);
  commit_now(*fs);
  const auto pre = extents_of(*fs, a);
  REQUIRE(pre.size() == 1);
  REQUIRE(pre[0].is_prealloc());
  for (const auto& e : extents_of(*fs, b)) {
    CHECK(e.is_prealloc());  // PREALLOC stays PREALLOC in the clone
    CHECK(e.disk_bytenr == pre[0].disk_bytenr);
  }
  used = data_used(*fs);
  write_all(*fs, a, 64 * 1024, data);
  write_all(*fs, b, 128 * 1024, data);
  commit_now(*fs);
  CHECK(data_used(*fs) == used + 2 * 4096);
  for (uint64_t ino : {a, b})
    for (const auto& e : extents_of(*fs, ino))
      if (!e.is_prealloc()) CHECK(e.disk_bytenr != pre[0].disk_bytenr);
  std::vector<uint8_t> a_model(kMiB, 0), b_model(kMiB, 0);
  model_write(a_model, 64 * 1024, data);
  model_write(b_model, 128 * 1024, data);
  CHECK(read_whole(*fs, a, 4 * kMiB) == a_model);
  CHECK(read_whole(*fs, b, 4 * kMiB) == b_model);

  // Shared with the same file at another position: COWed as well.
  const uint64_t c = create_file(*fs, 1, "c");
  REQUIRE(fs->fallocate(c, 0, 0, 2 * kMiB));
  REQUIRE(copy(*fs, c, 0, c, kMiB, kMiB) == kMiB);
  commit_now(*fs);
  used = data_used(*fs);
  write_all(*fs, c, 4096, data);
  commit_now(*fs);
  CHECK(data_used(*fs) == used + 4096);
  std::vector<uint8_t> c_model(2 * kMiB, 0);
  model_write(c_model, 4096, data);
  CHECK(read_whole(*fs, c, 4 * kMiB) == c_model);
  REQUIRE(fs->unmount());
  check_clean_and_fsck(img.path());
}

TEST_CASE("copy_file_range_copies_unaligned_edges_and_shares_the_rest", "[reflink]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_manual_commits(img.path());
  const uint64_t src = create_file(*fs, 1, "src");
  std::vector<uint8_t> s_model = pattern(kMiB + 5000, 6);
  write_all(*fs, src, 0, s_model);
  commit_now(*fs);
  const auto src_disk = disk_extents(*fs, src);

  // Offsets in different sector phases: copied, nothing shared.
  const uint64_t d1 = create_file(*fs, 1, "d1");
  REQUIRE(copy(*fs, src, 100, d1, 0, 300000) == 300000);
  std::vector<uint8_t> d1_model(s_model.begin() + 100, s_model.begin() + 300100);
  // Same phase: the head and tail sectors are copied, the middle shared.
  const uint64_t d2 = create_file(*fs, 1, "d2");
  write_all(*fs, d2, 0, pattern(20000, 7));
  std::vector<uint8_t> d2_model = pattern(20000, 7);
  REQUIRE(copy(*fs, src, 1000, d2, 4096 + 1000, 500000) == 500000);
  model_write(d2_model, 5096, std::vector<uint8_t>(s_model.begin() + 1000, s_model.begin() + 501000));
  // Landing past the destination's EOF: the gap reads as zeros.
  const uint64_t d3 = create_file(*fs, 1, "d3");
  write_all(*fs, d3, 0, pattern(3000, 8));
  std::vector<uint8_t> d3_model = pattern(3000, 8);
  REQUIRE(copy(*fs, src, 0, d3, 3 * 4096, s_model.size()) == s_model.size());
  model_write(d3_model, 3 * 4096, s_model);
  // The source's unaligned EOF into the middle of a longer file: that sector is copied.
  const uint64_t d4 = create_file(*fs, 1, "d4");
  std::vector<uint8_t> d4_model = pattern(2 * kMiB, 9);
  write_all(*fs, d4, 0, d4_model);
  REQUIRE(copy(*fs, src, 0, d4, 0, s_model.size()) == s_model.size());
  model_write(d4_model, 0, s_model);
  // Within one file, not overlapping; overlapping is EINVAL.
  const uint64_t d5 = create_file(*fs, 1, "d5");
  std::vector<uint8_t> d5_model = pattern(256 * 1024, 10);
  write_all(*fs, d5, 0, d5_model);
  REQUIRE(copy(*fs, d5, 0, d5, 128 * 1024, 128 * 1024) == 128 * 1024);
  model_write(d5_model, 128 * 1024, std::vector<uint8_t>(d5_model.begin(), d5_model.begin() + 128 * 1024));
  auto overlap = fs->copy_file_range(d5, 0, d5, 4096, 8192, 0);
  REQUIRE(!overlap);
  CHECK(overlap.error().err == EINVAL);
  // An inline source is copied.
  const uint64_t tiny = create_file(*fs, 1, "tiny"), d6 = create_file(*fs, 1, "d6");
  write_all(*fs, tiny, 0, pattern(100, 11));
  commit_now(*fs);
  REQUIRE(copy(*fs, tiny, 0, d6, 0, 100) == 100);
  // Past the source's EOF: clamped.
  CHECK(copy(*fs, src, s_model.size() - 10, d6, 8192, 1000) == 10);
  std::vector<uint8_t> d6_model = pattern(100, 11);
  model_write(d6_model, 8192, std::vector<uint8_t>(s_model.end() - 10, s_model.end()));
  commit_now(*fs);

  // One call answers at most 0xFFFFF000 bytes (the FUSE reply's count is 32 bits); the caller
  // loops for the rest. A sparse 5 GiB source costs only its one extent.
  const uint64_t big = create_file(*fs, 1, "big"), d7 = create_file(*fs, 1, "d7");
  const uint64_t big_size = 5ull << 30;
  write_all(*fs, big, big_size - 4096, pattern(4096, 12));
  REQUIRE(copy(*fs, big, 0, d7, 0, big_size) == 0xFFFFF000u);
  REQUIRE(copy(*fs, big, 0xFFFFF000u, d7, 0xFFFFF000u, big_size - 0xFFFFF000u) == big_size - 0xFFFFF000u);
  {
    std::vector<uint8_t> tail(8192);
    auto r = fs->read(d7, big_size - 8192, tail);
    REQUIRE(r);
    REQUIRE(*r == 8192);
    std::vector<uint8_t> want(4096, 0);
    const auto p12 = pattern(4096, 12);
    want.insert(want.end(), p12.begin(), p12.end());
    CHECK(tail == want);
    auto st = fs->getattr(d7);
    REQUIRE(st);
    CHECK(static_cast<uint64_t>(st->st_size) == big_size);
  }

  auto shared_with_src = [&](uint64_t ino) {
    size_t n = 0;
    for (uint64_t x : disk_extents(*fs, ino)) n += src_disk.count(x);
    return n;
  };
  CHECK(shared_with_src(d1) == 0);
  CHECK(shared_with_src(d2) > 0);
  CHECK(shared_with_src(d3) > 0);
  CHECK(shared_with_src(d4) > 0);
  CHECK(disk_extents(*fs, d7) == disk_extents(*fs, big));
  CHECK(read_whole(*fs, d1, 4 * kMiB) == d1_model);
  CHECK(read_whole(*fs, d2, 4 * kMiB) == d2_model);
  CHECK(read_whole(*fs, d3, 4 * kMiB) == d3_model);
  CHECK(read_whole(*fs, d4, 4 * kMiB) == d4_model);
  CHECK(read_whole(*fs, d5, 4 * kMiB) == d5_model);
  CHECK(read_whole(*fs, d6, 4 * kMiB) == d6_model);
  CHECK(read_whole(*fs, src, 4 * kMiB) == s_model);
  REQUIRE(fs->unmount());
  check_clean_and_fsck(img.path());
}

TEST_CASE("copy_file_range_shares_on_a_full_data_space", "[reflink]") {
  // Sharing needs no data space: with every data byte taken, the copy still succeeds.
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  auto fs = mount_manual_commits(img.path());
  const uint64_t a = create_file(*fs, 1, "a"), fill = create_file(*fs, 1, "fill"), b = create_file(*fs, 1, "b");
  const auto data = pattern(8 * kMiB, 13);
  write_all(*fs, a, 0, data);
  commit_now(*fs);
  const auto chunk = pattern(kMiB, 14);
  for (uint64_t off = 0;; off += chunk.size()) {
    auto r = fs->write(fill, off, chunk);
    if (!r || *r < chunk.size()) break;
    REQUIRE(off < 256 * kMiB);
  }
  commit_now(*fs);
  auto more = fs->write(b, 0, pattern(kMiB, 15));
  REQUIRE((!more || *more < kMiB));  // the data space is full
  SetAttr zero;
  zero.size = 0;
  REQUIRE(fs->setattr(b, zero, Caller{}));
  commit_now(*fs);
  const uint64_t used = data_used(*fs);
  REQUIRE(copy(*fs, a, 0, b, 0, data.size()) == data.size());
  commit_now(*fs);
  CHECK(data_used(*fs) == used);
  CHECK(read_whole(*fs, b, 4 * kMiB) == data);
  REQUIRE(fs->unmount());
  check_clean_and_fsck(img.path());
}

TEST_CASE("clone_on_full_metadata_fails_before_changing_anything", "[reflink]") {
  // Each piece's items are reserved before the piece changes anything: with metadata exhausted the
  // copy is ENOSPC or short, never an abort, and what it reports done is exactly what B holds.
  const std::string mkfs = test::mkfs_binary();
  if (mkfs.empty()) {
    if (oracles_required()) FAIL("mkfs.ubtrfs not built");
    WARN("mkfs.ubtrfs not built: skipped");
    return;
  }
  TempFile img(64 * kMiB);
  REQUIRE(run(fmt::format("{} -q -f -m single {}", mkfs, img.path())) == 0);
  auto fs = mount_manual_commits(img.path());
  const uint64_t a = create_file(*fs, 1, "a"), b = create_file(*fs, 1, "b");
  // Many extents: 64 pieces, one handle each.
  std::vector<uint8_t> a_model;
  for (int i = 0; i < 64; ++i) {
    const auto part = pattern(4096, 100 + i);
    write_all(*fs, a, a_model.size(), part);
    a_model.insert(a_model.end(), part.begin(), part.end());
    if (i % 2 == 0) commit_now(*fs);  // separate extents (adjacent flushes may merge otherwise)
  }
  commit_now(*fs);
  // Metadata filled fast: 3 KiB xattrs, a few per leaf.
  const uint64_t filler = create_file(*fs, 1, "filler");
  const auto value = pattern(3000, 99);
  int n = 0;
  for (;; ++n) {
    auto st = fs->setxattr(filler, fmt::format("user.x{:06}", n), value, 0);
    if (!st) {
      REQUIRE(st.error().err == ENOSPC);
      break;
    }
    if (n > 200000) FAIL("no ENOSPC after 200000 xattrs");
  }
  auto r = fs->copy_file_range(a, 0, b, 0, a_model.size(), 0);
  INFO("after " << n << " xattrs: copy " << (r ? std::to_string(*r) : r.error().message));
  if (!r) CHECK(r.error().err == ENOSPC);
  CHECK(!fs->info().transactions().aborted());
  const size_t done = r ? *r : 0;
  auto st = fs->getattr(b);
  REQUIRE(st);
  CHECK(static_cast<uint64_t>(st->st_size) == done);
  CHECK(read_whole(*fs, b, 4 * kMiB) ==
        std::vector<uint8_t>(a_model.begin(), a_model.begin() + static_cast<long>(done)));
  // Room again: the rest of the copy succeeds.
  REQUIRE(fs->unlink(1, "filler"));
  fs->forget(filler, 1);
  commit_now(*fs);
  REQUIRE(copy(*fs, a, done, b, done, a_model.size() - done) == a_model.size() - done);
  CHECK(read_whole(*fs, b, 4 * kMiB) == a_model);
  REQUIRE(fs->unmount());
  check_clean_and_fsck(img.path());
}

TEST_CASE("fsync_of_clone_logs_shared_extents", "[reflink]") {
  TempFile img(256 * kMiB);
  if (!make_btrfs_image(img)) return;
  std::vector<uint8_t> a_model = pattern(3 * kMiB, 12);
  uint64_t b = 0;
  {
    auto fs = mount_manual_commits(img.path());
    const uint64_t a = create_file(*fs, 1, "a");
    b = create_file(*fs, 1, "b");
    write_all(*fs, a, 0, a_model);
    commit_now(*fs);
    REQUIRE(copy(*fs, a, 0, b, 0, a_model.size()) == a_model.size());
    REQUIRE(fs->info().tree_log() != nullptr);
    const uint64_t synced = fs->info().tree_log()->stats().synced;
    REQUIRE(fs->fsync(b, false));
    REQUIRE(fs->info().tree_log()->stats().synced == synced + 1);  // served by the log, no commit
    // The crash: the image as the disk holds it after the fsync, before any commit.
    TempFile crash(1), kcrash(1);
    REQUIRE(run(fmt::format("cp --sparse=always {} {}", img.path(), crash.path())) == 0);
    REQUIRE(run(fmt::format("cp --sparse=always {} {}", img.path(), kcrash.path())) == 0);
    REQUIRE(fs->unmount());
    // The kernel replays the log (a read-write mount) and reads B right; the result is clean.
    if (::geteuid() == 0 && stdfs::exists("/dev/loop-control")) {
      test::KernelMount km;
      std::string out;
      const int rc = km.mount(kcrash.path(), false, &out);
      INFO("kernel mount of the crash image: " << out);
      REQUIRE(rc == 0);
      std::string got;
      run(fmt::format("sha256sum < {}/b", km.mnt), &got);
      std::string want;
      {
        TempFile model(0);
        FILE* f = std::fopen(model.path().c_str(), "wb");
        REQUIRE(f != nullptr);
        REQUIRE(std::fwrite(a_model.data(), 1, a_model.size(), f) == a_model.size());
        std::fclose(f);
        run(fmt::format("sha256sum < {}", model.path()), &want);
      }
      km.unmount();
      CHECK(got == want);
      check_clean_and_fsck(kcrash.path());
    }
    // ubtrfs replays the log at mount: B shares A's extents, with the references counted.
    {
      auto rfs = mount_manual_commits(crash.path());
      CHECK(read_whole(*rfs, b, 4 * kMiB) == a_model);
      CHECK(disk_extents(*rfs, b) == disk_extents(*rfs, a));
      commit_now(*rfs);
      for (const auto& e : extents_of(*rfs, a)) CHECK(extent_item(*rfs, e).refs == 2);
      REQUIRE(rfs->unmount());
    }
    check_clean_and_fsck(crash.path());
  }
  check_clean_and_fsck(img.path());
}

}  // namespace ubtrfs::fs
