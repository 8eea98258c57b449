// run_passes (check.h): the nine passes of fsck.ubtrfs in order, shared by the command and the
// crash harness.
#include "tools/fsck/check.h"

#include <fmt/format.h>

#include "io/checksum.h"
#include "tree/superblock.h"

namespace ubtrfs::fsck {

PassesResult run_passes(Context& ctx, const std::string& device) {
  ctx.report().begin_pass("checking superblocks");
  const bool have_super = check_superblocks(ctx);
  ctx.report().end_pass();
  if (!have_super) {
    if (ctx.report().error_count() == 0) {
      return PassesResult{kExitOperational, fmt::format("{} is not a btrfs filesystem (no superblock magic)", device)};
    }
    return PassesResult{kExitErrorsLeft, fmt::format("{}: no usable superblock copy, cannot check further", device)};
  }
  const uint16_t ct = ctx.super.csum_type;
  if (!io::csum_supported(ct)) {
    return PassesResult{kExitOperational, fmt::format("{}: checksum type {} ({}) is not supported", device, ct, io::csum_name(ct))};
  }
  if (auto st = check_features(ctx.super, /*for_write=*/false); !st) {
    return PassesResult{kExitOperational, fmt::format("{}: {}", device, st.error().message)};
  }
  ctx.params = FsParams::from_super(ctx.super);
  if (auto st = ctx.map.load_sys_chunk_array(ctx.super); !st) {
    if (st.error().err == EOPNOTSUPP) {
      return PassesResult{kExitOperational, fmt::format("{}: {}", device, st.error().message)};
    }
    ctx.report().error("sys-chunk-array", Where{{}, ctx.super_bytenr, {}, {}},
              fmt::format("sys_chunk_array cannot be loaded: {}", st.error().message));
    return PassesResult{kExitErrorsLeft, "cannot read the chunk tree without the system chunks, cannot check further"};
  }

  ctx.report().begin_pass("checking tree blocks");
  check_tree_blocks(ctx);
  ctx.index_extent_tree();
  ctx.report().end_pass();

  ctx.report().begin_pass("checking chunks and devices");
  check_chunks(ctx);
  ctx.report().end_pass();

  ctx.report().begin_pass("checking extents");
  check_extents(ctx);
  ctx.report().end_pass();

  ctx.report().begin_pass("checking block groups");
  check_block_groups(ctx);
  ctx.report().end_pass();

  if (ctx.params.compat_ro_flags & kCompatRoFreeSpaceTree) {
    ctx.report().begin_pass("checking free space tree");
    check_free_space(ctx);
    ctx.report().end_pass();
  } else {
    ctx.report().skip_pass("checking free space tree", "no free space tree (space cache v1 is not checked)");
  }

  ctx.report().begin_pass("checking inodes");
  check_inodes(ctx);
  ctx.report().end_pass();

  ctx.report().begin_pass("checking directories");
  check_dirs(ctx);
  ctx.report().end_pass();

  ctx.report().begin_pass(ctx.opts().check_data_csum ? "checking data checksums (and data)" : "checking data checksums");
  check_csums(ctx);
  ctx.report().end_pass();

  return PassesResult{ctx.report().error_count() ? kExitErrorsLeft : kExitOk, {}};
}

}  // namespace ubtrfs::fsck
