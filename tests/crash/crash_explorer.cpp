// Enumeration and judgement of crash states (crash_explorer.h).
#include "tests/crash/crash_explorer.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

#include "fs/filesystem.h"
#include "tests/crash/sector_overlay.h"
#include "tools/fsck/check.h"
#include "tree/superblock.h"

namespace ubtrfs::crash {
namespace {

bool is_superblock_write(const io::WriteRecord& w) {
  return w.length == 4096 && (w.offset == (64ull << 10) || w.offset == (64ull << 20) || w.offset == (256ull << 30));
}

fs::MountOptions mount_options(bool ro) {
  fs::MountOptions m;
  m.read_only = ro;
  m.writeback = false;
  m.atime = fs::MountOptions::Atime::kNoatime;
  m.commit_interval_s = 300;
  return m;
}

fs::OpenOptions open_options(std::shared_ptr<io::BlockDevice> dev, bool ro) {
  fs::OpenOptions o;
  o.path = "crash-image";
  o.device = std::move(dev);
  o.read_only = ro;
  o.cache_bytes = 8ull << 20;
  o.writeback.enabled = false;
  return o;
}

}  // namespace

void CrashExplorer::model_check(const Recording& rec, size_t f, const FsState& img, bool whole, Verdict& v) const {
  size_t lo = 0;
  std::vector<const DurabilityPoint*> required;
  for (const DurabilityPoint& d : rec.durable)
    if (d.at_return.flushes <= f) {
      required.push_back(&d);
      lo = std::max(lo, d.snapshot);
    }
  size_t hi = 0;  // snapshots up to the number of ops started
  for (const io::LogPosition& p : rec.op_start)
    if (p.flushes <= f) ++hi;
  hi = std::max(hi, lo);
  // Per object: what each required fsync promised is there (the object as some allowed snapshot
  // from that fsync on has it).
  for (const DurabilityPoint* d : required) {
    if (d->kind == OpKind::kSync || d->ino == 0) continue;
    if (!whole && d->kind == OpKind::kFsyncDir) {
      // A log image: a directory is the last commit's plus what replay changed — the names of
      // inodes fsynced later come and go one by one (btrfs logs a new file's name with the file,
      // not its siblings'). What the directory fsync promised is per entry: a name it had that no
      // later op removed is there, and every name there existed at some allowed point.
      dir_entries_check(rec, *d, hi, img, v);
      continue;
    }
    const bool data_only = d->kind == OpKind::kFdatasync;
    const std::string have = img.object_view(d->ino, data_only);
    bool ok = false;
    for (size_t i = d->snapshot; i <= hi && !ok; ++i) ok = rec.snapshots[i].object_view(d->ino, data_only) == have;
    if (!ok) {
      const std::string want = rec.snapshots[d->snapshot].object_view(d->ino, data_only);
      v.problems.emplace_back("lost-fsynced-object",
                              fmt::format("'{}' (op {}) returned before the crash; inode {} is {} but was {}",
                                          d->text, d->snapshot, d->ino, have.substr(0, 60), want.substr(0, 60)));
    }
  }
  if (!whole) return;
  for (size_t i = lo; i <= hi; ++i)
    if (rec.snapshots[i] == img) return;
  v.problems.emplace_back(
      "not-a-model-snapshot",
      fmt::format("the image is none of the model states after ops {}..{} (lost sync, resurrected delete, half rename "
                  "or state from the future); vs after op {}: {}; vs after op {}: {}",
                  lo, hi, lo, state_diff(rec.snapshots[lo], img), hi, state_diff(rec.snapshots[hi], img)));
}

namespace {
// The entries of directory inode `dino` in `st` (empty if no name reaches it; the root is ino 1).
std::map<std::string, uint64_t> entries_of(const FsState& st, uint64_t dino) {
  if (dino == 1) return st.entries("");
  const std::vector<std::string> paths = st.paths_of(dino);
  if (paths.empty()) return {};
  return st.entries(paths.front());
}
}  // namespace

void CrashExplorer::dir_entries_check(const Recording& rec, const DurabilityPoint& d, size_t hi, const FsState& img,
                                      Verdict& v) const {
  const auto have = entries_of(img, d.ino);
  for (const auto& [name, ino] : entries_of(rec.snapshots[d.snapshot], d.ino)) {
    bool kept = true;
    for (size_t i = d.snapshot + 1; i <= hi && kept; ++i) {
      const auto later = entries_of(rec.snapshots[i], d.ino);
      auto it = later.find(name);
      kept = it != later.end() && it->second == ino;
    }
    auto it = have.find(name);
    if (kept && (it == have.end() || it->second != ino))
      v.problems.emplace_back("lost-fsynced-object",
                              fmt::format("'{}' (op {}) returned before the crash; directory {} lost entry '{}' -> {}",
                                          d.text, d.snapshot, d.ino, name, ino));
  }
  for (const auto& [name, ino] : have) {
    bool seen = false;
    for (size_t i = d.snapshot; i <= hi && !seen; ++i) {
      const auto at = entries_of(rec.snapshots[i], d.ino);
      auto it = at.find(name);
      seen = it != at.end() && it->second == ino;
    }
    if (!seen)
      v.problems.emplace_back("lost-fsynced-object",
                              fmt::format("'{}' (op {}): directory {} has entry '{}' -> {} that no state from op {} to "
                                          "{} had (resurrected or invented)",
                                          d.text, d.snapshot, d.ino, name, ino, d.snapshot, hi));
  }
}

CrashExplorer::Verdict CrashExplorer::judge(const Recording& rec, size_t f, const SectorMap& persisted,
                                            const SectorMap& epoch, bool epoch_has_super) {
  Verdict v;
  ++stats_.full_judgements;
  const SectorStack stack{base_.bytes, {&epoch, &persisted}};
  // An image with a log tree (an fsync served by the log, then the power cut before the next
  // commit): what the fsyncs promised is in the log, so the model is checked on the state the
  // read-write mount has after replaying it; the read-only mount ignores the log (it must not
  // write) and shows the last commit. Without a log the image is one commit, a whole snapshot.
  bool has_log = false;
  {
    OverlayDevice dev(stack, "crash-image");
    if (auto sb = read_superblock(dev)) has_log = sb->log_root.get() != 0;
  }
  if (has_log) ++stats_.log_images;
  {
    auto dev = std::make_shared<OverlayDevice>(stack, "crash-image");
    auto f_ro = fs::Filesystem::mount(open_options(dev, true), mount_options(true));
    if (!f_ro) {
      v.problems.emplace_back("ubtrfs-ro-mount", f_ro.error().message);  // the model cannot be checked
    } else {
      if (!has_log) {
        auto img = read_fs_state(**f_ro);
        if (!img) v.problems.emplace_back("ubtrfs-read", img.error().message);
        else model_check(rec, f, *img, cfg_.atomic_commits, v);
      }
      (void)(*f_ro)->unmount();
    }
    if (dev->scratch().size() != 0)
      v.problems.emplace_back("ubtrfs-ro-wrote", fmt::format("{} sectors written by a read-only mount", dev->scratch().size()));
  }
  {
    OverlayDevice dev(stack, "crash-image");
    fsck::Report rep(fsck::kPasses, false);
    rep.set_streaming(false);
    fsck::Context ctx(dev, rep, fsck::Options{});
    const fsck::PassesResult r = fsck::run_passes(ctx, "crash-image");
    std::string d = r.message;
    int counted = 0, tolerated = 0;
    for (const fsck::Problem& p : rep.problems()) {
      // fsck warns (exit 0) about a superblock copy one generation off the primary: a power cut
      // between the copies' writes. Only an epoch that writes superblocks may leave one.
      if (p.severity == fsck::Severity::kWarning && p.cls == "super-mirror") {
        if (epoch_has_super) {
          ++tolerated;
          continue;
        }
      } else if (p.severity != fsck::Severity::kError) {
        continue;
      }
      if (++counted <= 4) d += fmt::format("{}[{}] {}", d.empty() ? "" : "; ", p.cls, p.message);
    }
    if (tolerated) ++stats_.tolerated_mirror_mismatch;
    if (r.exit_code != fsck::kExitOk || counted > 0)
      v.problems.emplace_back("fsck", fmt::format("exit {}: {}", r.exit_code, d));
  }
  {
    auto dev = std::make_shared<OverlayDevice>(stack, "crash-image");
    auto f_rw = fs::Filesystem::mount(open_options(dev, false), mount_options(false));
    if (!f_rw) {
      v.problems.emplace_back("ubtrfs-rw-mount", f_rw.error().message);
    } else {
      if (has_log) {
        auto img = read_fs_state(**f_rw);
        if (!img) v.problems.emplace_back("ubtrfs-read", img.error().message);
        else model_check(rec, f, *img, /*whole=*/false, v);
      }
      if (auto st = (*f_rw)->unmount(); !st) v.problems.emplace_back("ubtrfs-rw-unmount", st.error().message);
    }
  }
  if (cfg_.oracles && (avail_.btrfs_check || avail_.kernel_mount)) {
    const uint64_t hash = persisted.hash() + epoch.hash();
    auto it = oracle_cache_.find(hash);
    if (it == oracle_cache_.end() && (cfg_.oracle_budget == 0 || stats_.oracle_runs < cfg_.oracle_budget)) {
      ++stats_.oracle_runs;
      const std::string dir = fmt::format("{}/ubtrfs-crash-{}", cfg_.scratch_dir, ::getpid());
      ::mkdir(dir.c_str(), 0700);
      const std::string path = dir + "/image";
      write_image(path, persisted, epoch);
      std::vector<std::pair<std::string, std::string>> found;
      for (auto& o : run_external_oracles(path, avail_, dir)) found.emplace_back(o.kind, o.detail);
      ::unlink(path.c_str());
      ::rmdir((dir + "/mnt").c_str());
      ::rmdir(dir.c_str());
      it = oracle_cache_.emplace(hash, std::move(found)).first;
    }
    if (it != oracle_cache_.end())
      for (const auto& p : it->second) v.problems.push_back(p);
  }
  return v;
}

void CrashExplorer::write_image(const std::string& path, const SectorMap& persisted, const SectorMap& epoch) const {
  auto st = write_sparse_image(path, base_.bytes.size(), [&](const auto& put) {
    constexpr size_t kChunk = 64 << 10;
    static const std::vector<uint8_t> zeros(kChunk);
    for (size_t off = 0; off < base_.bytes.size(); off += kChunk)
      if (std::memcmp(base_.bytes.data() + off, zeros.data(), kChunk) != 0) put(off, base_.bytes.data() + off, kChunk);
    for (const auto& [s, d] : persisted.sectors()) put(s * kSector, d.data(), kSector);
    for (const auto& [s, d] : epoch.sectors()) put(s * kSector, d.data(), kSector);
  });
  if (!st) fmt::print(stderr, "crash: cannot write image {}: {}\n", path, st.error().message);
}

std::vector<CrashFailure> CrashExplorer::explore(const Recording& rec, const std::string& workload) {
  std::vector<CrashFailure> failures;
  ++stats_.recordings;
  stats_.background_writes += rec.background_writes;
  stats_.log_writes += rec.log.size();
  stats_.log_flushes += rec.flush_points.size();
  std::map<std::pair<uint64_t, size_t>, Verdict> cache;
  SectorMap persisted;
  const SectorStack base_stack{base_.bytes, {}};
  const size_t nflush = rec.flush_points.size();
  size_t begin = 0;
  for (size_t f = 0; f <= nflush; ++f) {
    const size_t end = f < nflush ? std::min<size_t>(rec.flush_points[f], rec.log.size()) : rec.log.size();
    const size_t n = end > begin ? end - begin : 0;
    const SectorStack below{base_.bytes, {&persisted}};
    bool epoch_has_super = false;
    for (size_t i = begin; i < end; ++i) epoch_has_super |= is_superblock_write(rec.log[i]);
    // One state: `pick` lists epoch writes (indexes from begin) applied whole; `torn` one more
    // write applied in part.
    auto state = [&](const std::vector<size_t>& pick, std::optional<size_t> torn, uint64_t gran, const std::string& what) {
      SectorMap epoch;
      for (size_t i : pick) {
        const io::WriteRecord& w = rec.log[begin + i];
        if (w.outcome != io::WriteOutcome::kFailed) epoch.write(w.offset, w.data, below);
      }
      std::string label = what;
      if (torn) {
        const io::WriteRecord& w = rec.log[begin + *torn];
        const uint64_t units = (w.length + gran - 1) / gran;
        std::vector<uint64_t> keep;
        for (uint64_t u = 0; u < units; ++u)
          if (rng_() & 1)
            for (uint64_t s = u * gran / kSector; s < std::min<uint64_t>((u + 1) * gran, w.length) / kSector; ++s)
              keep.push_back(s);
        epoch.write_sectors(w.offset, w.data, keep, below);
        label += fmt::format(", write {} (offset {} length {}) torn at {} B keeping {} of {} sectors", w.seq, w.offset,
                             w.length, gran, keep.size(), w.length / kSector);
      }
      ++stats_.crash_points;
      const uint64_t hash = persisted.hash() + epoch.hash();
      stats_.image_hashes.insert(hash);
      const auto key = std::make_pair(hash, f);
      auto it = cfg_.verdict_cache ? cache.find(key) : cache.end();
      if (it == cache.end()) it = cache.insert_or_assign(key, judge(rec, f, persisted, epoch, epoch_has_super)).first;
      if (!it->second.problems.empty()) {
        ++stats_.failing_points;
        const std::string point = fmt::format("flush {} of {} (epoch writes {}..{} of {}): {}", f, nflush, begin + 1,
                                              end, rec.log.size(), label);
        for (const auto& [kind, detail] : it->second.problems) {
          ++stats_.failures_by_kind[kind];
          failures.push_back({workload, point, kind, detail});
        }
        if (!cfg_.save_failures_dir.empty())
          write_image(fmt::format("{}/fail-{:016x}.img", cfg_.save_failures_dir, hash), persisted, epoch);
      }
    };
    auto range = [](size_t a, size_t b) {
      std::vector<size_t> v;
      for (size_t i = a; i < b; ++i) v.push_back(i);
      return v;
    };
    state({}, std::nullopt, 0, "at the flush point");
    if (n >= 2) {
      const size_t step = std::max<size_t>(1, (n - 1 + cfg_.max_prefixes - 1) / cfg_.max_prefixes);
      for (size_t k = 1; k < n; k += step) state(range(0, k), std::nullopt, 0, fmt::format("in-order prefix of {}", k));
      for (size_t r = 0; r < cfg_.random_subsets; ++r) {
        std::vector<size_t> pick;
        for (size_t i = 0; i < n; ++i)
          if (rng_() & 1) pick.push_back(i);
        std::string which;
        for (size_t i = 0; i < pick.size() && i < 24; ++i) which += fmt::format("{}{}", i ? "," : "", begin + pick[i] + 1);
        state(pick, std::nullopt, 0, fmt::format("random subset of {}: writes {}{}", pick.size(), which, pick.size() > 24 ? ",..." : ""));
      }
      state(range(n / 2, n), std::nullopt, 0, fmt::format("writes {}..{} without the earlier ones", begin + n / 2 + 1, end));
      state({n - 1}, std::nullopt, 0, fmt::format("only the last write {}", end));
    }
    for (size_t t = 0; t < cfg_.torn && n >= 1; ++t) {
      const size_t k = rng_() % n;
      if (is_superblock_write(rec.log[begin + k]) || rec.log[begin + k].length < 2 * kSector) continue;
      state(range(0, k), k, (t % 2) ? 4096 : kSector, fmt::format("in-order prefix of {}", k));
    }
    for (size_t i = begin; i < end; ++i)
      if (rec.log[i].outcome != io::WriteOutcome::kFailed) persisted.write(rec.log[i].offset, rec.log[i].data, base_stack);
    begin = end;
  }
  return failures;
}

}  // namespace ubtrfs::crash
