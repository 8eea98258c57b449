// Quota groups handed to the kernel's rescan; see qgroups.h.
#include "fs/qgroups.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

#include "fs/fs_info.h"
#include "tree/format.h"

namespace ubtrfs::fs {

namespace {

constexpr Key kStatusKey{0, kQgroupStatusKey, 0};

}  // namespace

Result<std::unique_ptr<Qgroups>> Qgroups::load(RootRecord& quota_root, const std::string& path) {
  auto body = UBTRFS_TRY(lookup_item(*quota_root.tree, kStatusKey));
  if (!body) {
    spdlog::warn("{}: quota tree without a QGROUP_STATUS item: quotas are treated as off", path);
    return std::unique_ptr<Qgroups>();
  }
  if (body->size() < sizeof(QgroupStatusItem))
    return fail(EUCLEAN, "{}: quota tree: QGROUP_STATUS [0 240 0] has size {}, expected at least {}", path,
                body->size(), sizeof(QgroupStatusItem));
  const auto st = ubtrfs::load<QgroupStatusItem>(body->data());
  // The kernel disables quotas for another version ("old qgroup version, quota disabled") and
  // has nothing to maintain when they are off.
  if (st.version.get() != kQgroupStatusVersion || !(st.flags.get() & kQgroupStatusFlagOn))
    return std::unique_ptr<Qgroups>();
  return std::unique_ptr<Qgroups>(new Qgroups(quota_root, path));
}

Status Qgroups::zero_counters(TreeHandle& h) {
  TreeRoot& tree = *root_.tree;
  // The keys first (a read-only walk), then one COW search per item: there is one qgroup per
  // subvolume, a handful of leaves at most.
  std::vector<Key> infos;
  {
    Path path;
    UBTRFS_TRY(search_slot(nullptr, tree, Key{0, kQgroupInfoKey, 0}, path, 0, false));
    bool more = path.slot() < static_cast<int>(path.leaf().nritems()) || UBTRFS_TRY(next_leaf(tree, path));
    while (more) {
      const Key k = path.leaf().item_key(path.slot());
      if (k.objectid != 0 || k.type != kQgroupInfoKey) break;
      infos.push_back(k);
      more = UBTRFS_TRY(next_item(tree, path));
    }
  }
  QgroupInfoItem zero{};
  zero.generation = h.transid;
  for (const Key& k : infos)
    UBTRFS_TRY_STATUS(overwrite_item_front(h, tree, k, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&zero),
                                                                           sizeof zero)));
  spdlog::info("{}: quota groups: {} counters zeroed and a rescan queued at transaction {} (the kernel runs it at "
               "its next read-write mount)",
               path_, infos.size(), h.transid);
  return {};
}

Status Qgroups::stamp_commit(TreeHandle& h) {
  TreeRoot& tree = *root_.tree;
  const bool first = !rescan_queued_.load(std::memory_order_acquire);
  if (first) UBTRFS_TRY_STATUS(zero_counters(h));
  auto body = UBTRFS_TRY(lookup_item(tree, kStatusKey));
  if (!body || body->size() < sizeof(QgroupStatusItem))
    return fail(EUCLEAN, "{}: quota tree: QGROUP_STATUS [0 240 0] vanished or shrank", path_);
  auto st = ubtrfs::load<QgroupStatusItem>(body->data());
  st.generation = h.transid;
  if (first) {
    // btrfs_qgroup_rescan's starting state: the kernel resumes from `rescan` with the counters as
    // they are, so they were zeroed above and the progress starts at the first extent.
    st.flags = st.flags.get() | kQgroupStatusFlagRescan | kQgroupStatusFlagInconsistent;
    st.rescan = 0;
  }
  UBTRFS_TRY_STATUS(
      overwrite_item_front(h, tree, kStatusKey, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&st), sizeof st)));
  if (first) rescan_queued_.store(true, std::memory_order_release);
  return {};
}

Status Qgroups::add_subvolume(TreeHandle& h, uint64_t subvol) {
  TreeRoot& tree = *root_.tree;
  QgroupInfoItem info{};
  info.generation = h.transid;
  const QgroupLimitItem limit{};
  const Key info_key{0, kQgroupInfoKey, subvol};
  const Key limit_key{0, kQgroupLimitKey, subvol};
  if (!UBTRFS_TRY(lookup_item(tree, info_key)))
    UBTRFS_TRY_STATUS(
        insert_item(h, tree, info_key, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&info), sizeof info)));
  if (!UBTRFS_TRY(lookup_item(tree, limit_key)))
    UBTRFS_TRY_STATUS(insert_item(h, tree, limit_key,
                                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&limit), sizeof limit)));
  return {};
}

}  // namespace ubtrfs::fs
