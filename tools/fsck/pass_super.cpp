// Pass 1: superblocks (FORMAT.md §1).
//
// What it checks:
//  - the primary copy (64 KiB) and every mirror that fits on the device (64 MiB, 256 GiB) pass the
//    kernel's validation (magic, checksum, bytenr == own offset, sizes, levels, alignment,
//    sys_chunk_array bounds) — validate_superblock of tree/superblock.h, §1.7;
//  - every valid mirror is byte-identical to the primary apart from csum and bytenr (§1.1) — and
//    the log root fields while a log tree is pending, since an fsync updates only the primary (§7.6);
//  - the backup root ring (§1.6): used slots have generations <= the super generation, levels < 8,
//    sector-aligned bytenrs; exactly one slot is the newest (gen == super generation) and it names
//    the same root and chunk root as the superblock;
//  - super total_bytes == dev_item.total_bytes and <= the device size (§1.2), num_devices == 1.
// If the primary is invalid but a mirror is good, checking continues with the mirror (as
// `btrfs check -s 1` would) after reporting the primary. Returns false when no copy is usable; the
// caller then exits with "operational error" (not btrfs) or "errors left" (corrupt btrfs).
#include <cstring>

#include "io/checksum.h"
#include "tools/fsck/context.h"
#include "tree/superblock.h"

namespace ubtrfs::fsck {

namespace {

void check_backup_roots(Context& ctx) {
  const Superblock& sb = ctx.super;
  const uint64_t gen = sb.generation;
  const uint32_t ss = sb.sectorsize;
  int newest = -1;
  for (int i = 0; i < kNumBackupRoots; ++i) {
    const RootBackup& b = sb.super_roots[i];
    if (b.tree_root.get() == 0 && b.tree_root_gen.get() == 0) continue;  // never used
    auto where = Where{{}, sb.bytenr.get(), {}, {}};
    if (b.tree_root_gen.get() > gen)
      ctx.report().error("backup-root", where,
                         fmt::format("backup root slot {}: tree_root_gen {} is newer than super generation {}", i,
                                     b.tree_root_gen.get(), gen));
    const uint64_t addrs[] = {b.tree_root, b.chunk_root, b.extent_root, b.fs_root, b.dev_root, b.csum_root};
    const uint8_t levels[] = {b.tree_root_level, b.chunk_root_level, b.extent_root_level,
                              b.fs_root_level,   b.dev_root_level,   b.csum_root_level};
    static constexpr const char* kNames[] = {"tree", "chunk", "extent", "fs", "dev", "csum"};
    for (int j = 0; j < 6; ++j) {
      if (ss && addrs[j] % ss)
        ctx.report().error("backup-root", where,
                           fmt::format("backup root slot {}: {} root bytenr {} is not aligned to sectorsize {}", i,
                                       kNames[j], addrs[j], ss));
      if (levels[j] >= kMaxLevel)
        ctx.report().error("backup-root", where,
                           fmt::format("backup root slot {}: {} root level {} is invalid", i, kNames[j], levels[j]));
    }
    if (b.tree_root_gen.get() == gen) {
      if (newest >= 0)
        ctx.report().error("backup-root", where,
                           fmt::format("backup root slots {} and {} both claim generation {}", newest, i, gen));
      newest = i;
      if (b.tree_root.get() != sb.root.get())
        ctx.report().error("backup-root", where,
                           fmt::format("newest backup root slot {}: tree root {} differs from super root {}", i,
                                       b.tree_root.get(), sb.root.get()));
      if (b.chunk_root.get() != sb.chunk_root.get())
        ctx.report().error("backup-root", where,
                           fmt::format("newest backup root slot {}: chunk root {} differs from super chunk root {}", i,
                                       b.chunk_root.get(), sb.chunk_root.get()));
    }
  }
  if (newest < 0)
    ctx.report().warning("backup-root", Where{{}, sb.bytenr.get(), {}, {}},
                         fmt::format("no backup root slot holds the super generation {}", gen));
}

}  // namespace

bool check_superblocks(Context& ctx) {
  Report& rep = ctx.report();
  const uint64_t dev_size = ctx.dev().size();
  std::optional<Superblock> copies[kSuperMirrorMax];
  int first_valid = -1;
  bool any_magic = false;
  for (int m = 0; m < kSuperMirrorMax; ++m) {
    const uint64_t off = super_offset(m);
    if (off + kSuperInfoSize > dev_size) break;
    auto sb = read_superblock_raw(ctx.dev(), m);
    if (!sb) {
      rep.error(m == 0 ? "super" : "super-mirror", Where{{}, off, {}, {}},
                fmt::format("cannot read superblock copy {} at {}: {}", m, off, sb.error().message));
      continue;
    }
    const uint64_t magic = sb->magic;
    if (magic == kSuperMagic) any_magic = true;
    if (magic != kSuperMagic && m > 0) continue;  // mirrors are optional (small or fresh devices)
    auto ok = validate_superblock(*sb, off, dev_size);
    if (!ok) {
      if (magic == kSuperMagic)
        rep.error(m == 0 ? "super" : "super-mirror", Where{{}, off, {}, {}},
                  fmt::format("superblock copy {} at {} is invalid: {}", m, off, ok.error().message));
      continue;
    }
    copies[m] = *sb;
    if (first_valid < 0) first_valid = m;
  }
  if (!any_magic || first_valid < 0) return false;

  ctx.super = *copies[first_valid];
  ctx.super_bytenr = super_offset(first_valid);
  if (first_valid > 0)
    rep.error("super", Where{{}, kSuperInfoOffset, {}, {}},
              fmt::format("primary superblock unusable, checking with copy {} at {}", first_valid, ctx.super_bytenr));

  // Mirrors must be identical to the trusted copy apart from csum (0..31) and bytenr (0x30..0x37).
  // An fsync writes the log root into the primary only (the kernel's sync_log writes one mirror),
  // so the log fields may differ while a log tree is pending.
  const bool log_pending = ctx.super.log_root.get() != 0;
  auto normalized = [log_pending](Superblock s) {
    std::memset(s.csum, 0, sizeof(s.csum));
    s.bytenr = 0;
    if (log_pending) {
      s.log_root = 0;
      s.log_root_transid = 0;
      s.log_root_level = 0;
    }
    return s;
  };
  const Superblock ref = normalized(ctx.super);
  for (int m = 0; m < kSuperMirrorMax; ++m) {
    if (!copies[m] || m == first_valid) continue;
    const Superblock s = normalized(*copies[m]);
    if (std::memcmp(&s, &ref, sizeof(Superblock)) != 0) {
      const uint64_t g = copies[m]->generation;
      const uint64_t pg = ctx.super.generation.get();
      const std::string what = fmt::format("superblock copy {} at {} differs from copy {} (generation {} vs {})", m,
                                           super_offset(m), first_valid, g, pg);
      // A commit writes every copy after the trees are flushed; a power cut between two of those
      // writes leaves a copy one generation behind or ahead of the primary. Both trees are intact
      // (the older one's blocks are not reused before the commit completes), the kernel and btrfs
      // check read the primary, and the next commit rewrites every copy: a warning, not damage.
      if (g != pg && (g + 1 == pg || pg + 1 == g))
        rep.warning("super-mirror", Where{{}, super_offset(m), {}, {}},
                    what + ": an interrupted commit, rewritten by the next one");
      else
        rep.error("super-mirror", Where{{}, super_offset(m), {}, {}}, what);
    }
  }

  const Superblock& sb = ctx.super;
  if (sb.num_devices.get() != 1)
    rep.error(
        "super", Where{{}, ctx.super_bytenr, {}, {}},
        fmt::format("superblock num_devices {} (only single-device filesystems are checked)", sb.num_devices.get()));
  if (sb.total_bytes.get() != sb.dev_item.total_bytes.get())
    rep.error("super", Where{{}, ctx.super_bytenr, {}, {}},
              fmt::format("super total_bytes {} differs from dev_item total_bytes {}", sb.total_bytes.get(),
                          sb.dev_item.total_bytes.get()));
  if (sb.dev_item.total_bytes.get() > dev_size)
    rep.error(
        "super", Where{{}, ctx.super_bytenr, {}, {}},
        fmt::format("device size {} is smaller than dev_item total_bytes {}", dev_size, sb.dev_item.total_bytes.get()));
  if (sb.log_root.get() != 0)
    rep.warning("super", Where{{}, ctx.super_bytenr, {}, {}},
                fmt::format("log tree present at {} (generation {}): it will be replayed at the next kernel mount",
                            sb.log_root.get(), sb.generation.get() + 1));
  check_backup_roots(ctx);
  return true;
}

}  // namespace ubtrfs::fsck
