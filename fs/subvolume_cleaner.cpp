// SubvolumeCleaner: see subvolume_cleaner.h for what it owns and the reference rules.
//
// The walk keeps one frame per level from the root block down to the node being worked on; a
// frame's slot is the child in progress (or next). A child is "done" once the dead tree's
// reference on it is dropped: a shared child right away (after the FULL_BACKREF conversion when
// the dead tree owned it), an exclusive leaf after its data references went, an exclusive node
// after all its own children were done. A step stops only between children, so the ROOT_ITEM's
// (drop_progress, drop_level) = (the first key of the next child, the level of the node holding
// it) describes exactly what is gone: every child left of the path at every level.
#include "fs/subvolume_cleaner.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>

#include <spdlog/spdlog.h>

#include "fs/dir_item.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "tree/ctree.h"

namespace ubtrfs::fs {

namespace {

// The ROOT_ITEM as the drop changes it (drop_progress, drop_level), rewritten in place.
Status write_root_item(TreeHandle& h, TreeRoot& root_tree, const FoundRootItem& r) {
  return write_item_body(h, root_tree, r.key,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&r.item), r.size));
}

// One level of the walk.
struct Frame {
  EbRef eb;
  int slot = 0;
  bool full_backref = false;  // the references this block holds on its children are shared ones
};

class DropWalk {
 public:
  DropWalk(FsInfo& fs, TreeHandle& h, uint64_t id) : fs_(fs), h_(h), id_(id), ext_(fs.allocator()) {}

  Result<EbRef> read(uint64_t bytenr, int level, uint64_t generation, std::optional<Key> first_key) {
    TreeBlockExpect ex;
    ex.bytenr = bytenr;
    ex.level = static_cast<uint8_t>(level);
    ex.generation = generation;
    ex.first_key = first_key;
    return fs_.cache().read(ex);
  }

  Result<EbRef> child(const Frame& f) {
    const ExtentBuffer& n = *f.eb;
    return read(n.node_blockptr(f.slot), n.level() - 1, n.node_ptr_generation(f.slot), n.node_key(f.slot));
  }

  // Drops the reference `parent` holds on block `bytenr` (of `level`).
  Status drop_ref_from(const Frame& parent, uint64_t bytenr, int level) {
    if (parent.full_backref)
      return ext_.drop_shared_tree_ref(h_, bytenr, level, parent.eb->start());
    ext_.drop_tree_block_ref(h_, parent.eb->owner(), bytenr, level);
    return {};
  }

  // `b` is owned by the dead root and other trees reach it: turn the keyed references it holds
  // (which name its owner) into shared ones held by b itself (FULL_BACKREF), and do the same for
  // every block below it the dead root owns — a block of ours reachable only through b would
  // otherwise keep keyed references naming a root that no longer exists, and the first COW of it
  // in a surviving tree could not tell whose they are. Blocks older than the dead root's creation
  // (origin_) were made by another tree and are skipped unread.
  Status update_backrefs(const EbRef& b, uint64_t flags) {
    if (!(flags & kBlockFlagFullBackref)) {
      UBTRFS_TRY_STATUS(ext_.inc_ref(h_, *b, true));
      UBTRFS_TRY_STATUS(ext_.dec_ref(h_, *b, false));
      UBTRFS_TRY_STATUS(ext_.set_extent_flags(h_, b->start(), kBlockFlagFullBackref));
      ++converted_;
    }
    if (b->is_leaf()) return {};
    for (int slot = 0; slot < static_cast<int>(b->nritems()); ++slot) {
      if (b->node_ptr_generation(slot) <= origin_) continue;
      EbRef x = UBTRFS_TRY(read(b->node_blockptr(slot), b->level() - 1, b->node_ptr_generation(slot), b->node_key(slot)));
      if (x->owner() != id_) continue;
      const auto info = UBTRFS_TRY(ext_.lookup_extent_info(x->start(), x->level()));
      UBTRFS_TRY_STATUS(update_backrefs(x, info.flags));
    }
    return {};
  }

  // Pushes the frame of an exclusive block (refs 1), checking the ownership invariant.
  Result<Frame> frame_of(EbRef eb, const alloc::ExtentAllocator::ExtentInfo& info) {
    Frame f;
    f.full_backref = info.flags & kBlockFlagFullBackref;
    if (!f.full_backref && eb->owner() != id_)
      return fail(EUCLEAN, "dropping root {}: block {} (level {}) is owned by root {}, has one reference and no FULL_BACKREF",
                  id_, eb->start(), eb->level(), eb->owner());
    f.eb = std::move(eb);
    return f;
  }

  // Drops one child of the top frame, or descends into it. Returns the blocks dropped (0 when it
  // only descended).
  Result<uint64_t> step_child(std::vector<Frame>& stack) {
    Frame& top = stack.back();
    const int level = top.eb->level() - 1;
    const uint64_t bytenr = top.eb->node_blockptr(top.slot);
    const auto info = UBTRFS_TRY(ext_.lookup_extent_info(bytenr, level));
    if (info.refs == 0) return fail(EUCLEAN, "dropping root {}: block {} has no reference left", id_, bytenr);
    if (info.refs > 1) {
      // Shared: only our reference goes. Blocks we own keep living in the other trees: first the
      // references they hold must stop naming us (the kernel's UPDATE_BACKREF stage).
      if (top.eb->node_ptr_generation(top.slot) > origin_) {
        EbRef c = UBTRFS_TRY(child(top));
        if (c->owner() == id_) UBTRFS_TRY_STATUS(update_backrefs(c, info.flags));
      }
      UBTRFS_TRY_STATUS(drop_ref_from(top, bytenr, level));
      ++top.slot;
      return 1;
    }
    EbRef c = UBTRFS_TRY(child(top));
    Frame f = UBTRFS_TRY(frame_of(std::move(c), info));
    if (level == 0) {
      UBTRFS_TRY_STATUS(ext_.dec_ref(h_, *f.eb, f.full_backref));  // its file extents' data refs
      UBTRFS_TRY_STATUS(drop_ref_from(top, bytenr, 0));
      fs_.cache().forget(f.eb);
      ++top.slot;
      return 1;
    }
    stack.push_back(std::move(f));
    return 0;
  }

  FsInfo& fs_;
  TreeHandle& h_;
  const uint64_t id_;
  alloc::ExtentAllocator& ext_;
  uint64_t origin_ = 0;     // the dead root's ROOT_ITEM key offset: a snapshot's creation transid
  uint64_t converted_ = 0;  // blocks turned to FULL_BACKREF
};

}  // namespace

void SubvolumeCleaner::start() {
  std::lock_guard g(mu_);
  if (thread_.joinable()) return;
  stop_ = false;
  woken_ = true;  // look once at mount: a crash or a kernel delete may have left dead roots
  thread_ = std::thread([this] { loop(); });
}

void SubvolumeCleaner::stop() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void SubvolumeCleaner::wake() {
  {
    std::lock_guard g(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

uint64_t SubvolumeCleaner::committed_generation() {
  std::lock_guard g(fs_.super_mu());
  return fs_.super().generation.get();
}

bool SubvolumeCleaner::eligible(uint64_t id, bool at_mount) {
  // As the kernel's cleaner, which takes a dead root only after the commit that recorded its
  // death (btrfs_add_dead_root at commit, the cleaner woken after it): seen dead by the first scan
  // of this mount means committed dead; seen later, it waits for the next commit — never forced.
  const uint64_t committed = committed_generation();
  auto it = dead_since_.try_emplace(id, at_mount ? 0 : committed).first;
  if (committed <= it->second) return false;
  if (!fs_.root_loaded(id)) return true;
  // Loaded by this mount: also only once the kernel holds none of its inodes (see Safety).
  return in_use_ && !in_use_(id);
}

void SubvolumeCleaner::loop() {
  bool waiting = false;
  bool first_scan = true;
  for (;;) {
    {
      std::unique_lock lk(mu_);
      if (waiting)
        cv_.wait_for(lk, std::chrono::seconds(2), [&] { return stop_ || woken_; });
      else
        cv_.wait(lk, [&] { return stop_ || woken_; });
      if (stop_) return;
      woken_ = false;
    }
    waiting = false;
    auto roots = dead_roots();
    if (!roots) {
      spdlog::error("{}: subvolume cleaner: {}", fs_.path(), roots.error().message);
      continue;
    }
    const bool at_mount = first_scan;
    first_scan = false;
    for (uint64_t id : *roots) {
      if (!eligible(id, at_mount)) {
        waiting = true;  // look again in a few seconds
        continue;
      }
      if (fs_.root_loaded(id)) {
        // Refuse new loads first, then look once more: a load (a file handle) that won the race
        // holds an inode now.
        fs_.set_root_dropped(id, true);
        if (in_use_(id)) {
          fs_.set_root_dropped(id, false);
          waiting = true;
          continue;
        }
      }
      spdlog::info("{}: dropping deleted subvolume {}", fs_.path(), id);
      for (;;) {
        {
          std::lock_guard g(mu_);
          if (stop_) return;
        }
        auto done = drop_step(id);
        if (!done) {
          spdlog::error("{}: subvolume cleaner: dropping subvolume {}: {}", fs_.path(), id, done.error().message);
          break;
        }
        if (*done) {
          spdlog::info("{}: deleted subvolume {} dropped", fs_.path(), id);
          break;
        }
        // The test knob also slows the drop down, so the kill lands in its middle.
        if (std::getenv("UBTRFS_TEST_CLEANER_STEP")) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
}

Result<std::vector<uint64_t>> SubvolumeCleaner::dead_roots() {
  std::vector<uint64_t> out;
  TreeRoot& rt = fs_.root_tree();
  Path p;
  UBTRFS_TRY(search_slot(nullptr, rt, Key{kOrphanObjectid, kOrphanItemKey, 0}, p, 0, false));
  bool valid = p.slots[0] < static_cast<int>(p.leaf().nritems());
  if (!valid && p.leaf().nritems() > 0) valid = UBTRFS_TRY(next_leaf(rt, p));
  std::vector<uint64_t> orphans;
  while (valid) {
    const Key k = p.leaf().item_key(p.slots[0]);
    if (k.objectid != kOrphanObjectid || k.type != kOrphanItemKey) break;
    orphans.push_back(k.offset);
    valid = UBTRFS_TRY(next_item(rt, p));
  }
  p.release();
  for (uint64_t id : orphans) {
    auto r = UBTRFS_TRY(find_root_item(rt, id));
    // An orphan item of a root whose item is gone is the tail of a finished drop (the kernel
    // removes both in one transaction, so this is not expected); one with refs is not dead.
    if (r && r->item.refs.get() == 0) out.push_back(id);
  }
  return out;
}

Result<bool> SubvolumeCleaner::drop_step(uint64_t id, uint64_t max_blocks) {
  if (max_blocks == 0) {
    // UBTRFS_TEST_CLEANER_STEP: a tiny step, so a test can kill the daemon in the middle of a drop.
    static const uint64_t test_step = [] {
      const char* v = std::getenv("UBTRFS_TEST_CLEANER_STEP");
      return v ? std::strtoull(v, nullptr, 10) : 0;
    }();
    max_blocks = test_step ? test_step : kStepBlocks;
  }
  auto th = UBTRFS_TRY(fs_.transactions().join());
  TreeHandle& h = th.tree();
  auto run = [&]() -> Result<bool> {
    TreeRoot& rt = fs_.root_tree();
    auto found = UBTRFS_TRY(find_root_item(rt, id));
    if (!found || found->item.refs.get() != 0)
      return fail(EINVAL, "subvolume {} is not a dead root", id);
    FoundRootItem ri = *found;
    DropWalk walk(fs_, h, id);
    walk.origin_ = ri.key.offset;
    alloc::ExtentAllocator& ext = fs_.allocator();

    // The root block: referenced by the ROOT_ITEM (keyed to the root), never shared.
    const int root_level = ri.item.level;
    EbRef root_eb = UBTRFS_TRY(walk.read(ri.item.bytenr.get(), root_level, ri.item.generation.get(), std::nullopt));
    const auto root_info = UBTRFS_TRY(ext.lookup_extent_info(root_eb->start(), root_level));
    std::vector<Frame> stack;
    bool root_done = false;
    if (root_info.refs != 1 || root_level == 0) {
      // A shared root block (not made by the kernel or us) only loses our reference; a leaf root
      // loses its data refs and goes.
      if (root_info.refs == 1) {
        Frame f = UBTRFS_TRY(walk.frame_of(root_eb, root_info));
        UBTRFS_TRY_STATUS(ext.dec_ref(h, *f.eb, f.full_backref));
      }
      ext.drop_tree_block_ref(h, id, root_eb->start(), root_level);
      root_done = true;
    } else {
      stack.push_back(UBTRFS_TRY(walk.frame_of(root_eb, root_info)));
      const Key progress = ri.item.drop_progress.cpu();
      if (progress.objectid != 0) {
        // Resume: follow drop_progress down to drop_level; everything left of the path is gone.
        const int drop_level = ri.item.drop_level;
        if (drop_level < 1 || drop_level > root_level)
          return fail(EUCLEAN, "dead root {}: drop_level {} outside 1..{}", id, drop_level, root_level);
        for (;;) {
          Frame& top = stack.back();
          const int n = static_cast<int>(top.eb->nritems());
          int slot = 0;
          while (slot + 1 < n && !(progress < top.eb->node_key(slot + 1))) ++slot;
          top.slot = slot;
          if (top.eb->level() == drop_level) {
            if (top.eb->node_key(slot) != progress)
              return fail(EUCLEAN, "dead root {}: drop_progress ({} {} {}) is not a child key at level {}", id,
                          progress.objectid, progress.type, progress.offset, drop_level);
            break;
          }
          EbRef c = UBTRFS_TRY(walk.child(top));
          const auto info = UBTRFS_TRY(ext.lookup_extent_info(c->start(), c->level()));
          if (info.refs != 1)
            return fail(EUCLEAN, "dead root {}: block {} on the drop path has {} references", id, c->start(), info.refs);
          stack.push_back(UBTRFS_TRY(walk.frame_of(std::move(c), info)));
        }
      }
    }

    uint64_t dropped = 0;
    while (!root_done) {
      Frame& top = stack.back();
      if (top.slot >= static_cast<int>(top.eb->nritems())) {
        // Every child done: the block itself goes (our reference on it is its last).
        Frame done = std::move(stack.back());
        stack.pop_back();
        if (stack.empty()) {
          ext.drop_tree_block_ref(h, id, done.eb->start(), done.eb->level());
          fs_.cache().forget(done.eb);
          root_done = true;
          break;
        }
        UBTRFS_TRY_STATUS(walk.drop_ref_from(stack.back(), done.eb->start(), done.eb->level()));
        fs_.cache().forget(done.eb);
        ++stack.back().slot;
        ++dropped;
        continue;
      }
      if (dropped >= max_blocks) break;
      dropped += UBTRFS_TRY(walk.step_child(stack));
    }
    {
      std::lock_guard g(mu_);
      blocks_dropped_ += dropped + (root_done ? 1 : 0);
    }
    if (root_done) {
      UBTRFS_TRY_STATUS(delete_item(h, rt, ri.key));
      UBTRFS_TRY_STATUS(delete_item(h, rt, Key{kOrphanObjectid, kOrphanItemKey, id}));
      return true;
    }
    // Where the next step starts: the next child of the deepest frame.
    const Frame& top = stack.back();
    ri.item.drop_progress.set(top.eb->node_key(top.slot));
    ri.item.drop_level = static_cast<uint8_t>(top.eb->level());
    UBTRFS_TRY_STATUS(write_root_item(h, rt, ri));
    return false;
  };
  auto r = run();
  if (!r) return th.abort(r.error());
  th.end();
  return *r;
}

Result<uint64_t> SubvolumeCleaner::run_until_idle() {
  uint64_t removed = 0;
  for (uint64_t id : UBTRFS_TRY(dead_roots())) {
    if (fs_.root_loaded(id)) continue;
    while (!UBTRFS_TRY(drop_step(id))) {
    }
    ++removed;
  }
  return removed;
}

}  // namespace ubtrfs::fs
