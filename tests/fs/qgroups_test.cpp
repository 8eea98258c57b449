// Quota groups on a read-write mount (fs/qgroups.h):
// - a_commit_on_a_quota_enabled_filesystem_hands_the_counts_to_a_kernel_rescan: the first commit
//   that changes a filesystem with quotas on zeroes every QGROUP_INFO and sets the status to
//   ON|RESCAN|INCONSISTENT with progress 0; every commit stamps the status with its generation;
//   btrfs check accepts the image (the rescan is pending). The end to end with the kernel's rescan
//   is tests/oracle/qgroups_test.sh.
#include <catch2/catch.hpp>

#include <mutex>
#include <string>

#include "fs/fs_info.h"
#include "fs/qgroups.h"
#include "tests/fs/fs_test_env.h"
#include "tests/io/temp_file.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {
namespace {

// The quota tree of a mounted filesystem (it is among the loaded roots once quotas exist).
TreeRoot& quota_tree_of(Filesystem& f) {
  for (RootRecord* r : f.info().loaded_roots())
    if (r->objectid() == kQuotaTreeObjectid) return *r->tree;
  FAIL("no quota tree loaded");
  throw;  // unreachable: FAIL throws
}

QgroupStatusItem qgroup_status_of(Filesystem& f) {
  auto body = lookup_item(quota_tree_of(f), Key{0, kQgroupStatusKey, 0});
  REQUIRE(body);
  REQUIRE(*body);
  REQUIRE((*body)->size() >= sizeof(QgroupStatusItem));
  return load<QgroupStatusItem>((*body)->data());
}

QgroupInfoItem qgroup_info_of(Filesystem& f, uint64_t qgroupid) {
  auto body = lookup_item(quota_tree_of(f), Key{0, kQgroupInfoKey, qgroupid});
  REQUIRE(body);
  REQUIRE(*body);
  REQUIRE((*body)->size() == sizeof(QgroupInfoItem));
  return load<QgroupInfoItem>((*body)->data());
}

uint64_t committed_generation_of(Filesystem& f) {
  std::lock_guard g(f.info().super_mu());
  return f.info().committed_super().generation.get();
}

}  // namespace

TEST_CASE("a_commit_on_a_quota_enabled_filesystem_hands_the_counts_to_a_kernel_rescan", "[qgroups]") {
  if (!test::have_kernel_loop_mount()) return;
  io::testing::TempFile img(256 * test::kMiB);
  test::mkfs_btrfs(img.path());
  {
    test::KernelMount km;
    REQUIRE(km.mount(img.path(), false) == 0);
    REQUIRE(test::run(fmt::format("btrfs quota enable {0} && head -c 1048576 /dev/urandom > {0}/f && sync", km.mnt)) ==
            0);
    km.unmount();
  }
  auto f = test::mount_manual_commits(img.path());
  Qgroups* q = f->info().qgroups();
  REQUIRE(q != nullptr);
  CHECK_FALSE(q->rescan_queued());
  {
    // As the kernel left it: ON, consistent, counting the 1 MiB file.
    const QgroupStatusItem st = qgroup_status_of(*f);
    CHECK(st.flags.get() == kQgroupStatusFlagOn);
    CHECK(qgroup_info_of(*f, kFsTreeObjectid).referenced.get() >= test::kMiB);
  }

  test::make_file(*f, "g", test::seeded_bytes(64 * 1024, 7));
  test::commit_now(*f);
  const uint64_t first = committed_generation_of(*f);
  CHECK(q->rescan_queued());
  {
    const QgroupStatusItem st = qgroup_status_of(*f);
    CHECK(st.flags.get() == (kQgroupStatusFlagOn | kQgroupStatusFlagRescan | kQgroupStatusFlagInconsistent));
    CHECK(st.rescan.get() == 0);
    CHECK(st.generation.get() == first);
    const QgroupInfoItem info = qgroup_info_of(*f, kFsTreeObjectid);
    CHECK(info.referenced.get() == 0);
    CHECK(info.exclusive.get() == 0);
    CHECK(info.generation.get() == first);
  }

  // A later commit only moves the status generation.
  test::make_file(*f, "h", test::seeded_bytes(4096, 8));
  test::commit_now(*f);
  const uint64_t second = committed_generation_of(*f);
  REQUIRE(second > first);
  {
    const QgroupStatusItem st = qgroup_status_of(*f);
    CHECK(st.generation.get() == second);
    CHECK(st.flags.get() == (kQgroupStatusFlagOn | kQgroupStatusFlagRescan | kQgroupStatusFlagInconsistent));
    CHECK(qgroup_info_of(*f, kFsTreeObjectid).generation.get() == first);
  }
  REQUIRE(f->unmount());
  f.reset();
  test::btrfs_check_clean(img.path());
}

}  // namespace ubtrfs::fs
