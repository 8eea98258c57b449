// Scrub: see scrub.h.
//
// Why scrubbing the committed state is consistent with a running filesystem (the kernel's
// answer, adapted): the kernel scrubs what the commit roots describe (search_commit_root on the
// extent and csum trees), marks the block group read-only while it scrubs it, and makes every
// commit wait for scrub to pause (scrub_pause_on / btrfs_scrub_pause in the commit path), so an
// extent freed by the running transaction stays pinned — not reused — while scrub may still read
// it. ubtrfs does the same with a transaction handle: each batch joins the running transaction
// (reserving nothing) and keeps the handle while it (1) takes the committed superblock, (2) reads
// the committed extent and csum trees from disk, (3) reads, verifies and repairs the extents they
// list, then ends the handle. While the handle is held a commit cannot close its gate, so it
// cannot write a new superblock nor unpin: every extent the committed trees list is either still
// referenced or pinned, its bytes unchanged. What the running transaction writes meanwhile goes
// to free space only: COW never rewrites a committed block, cow_overwrite=on rewrites only blocks
// born in the running transaction, and data written in place (nodatacow, prealloc) has no
// checksum in the committed csum tree, so scrub does not judge it. Between batches commits run
// freely; the next batch starts from the next extent key in the new commit (an extent freed and
// reused between batches is simply scrubbed in its new life, or skipped if gone).
// A repair writes the good copy's bytes over a bad copy of a committed extent, under the same
// handle, so the extent cannot be reused while it is written.
// What is not scrubbed: the superblock copies are verified (super_errors) but not rewritten; log
// tree blocks (not in the extent tree) are not read.
#include "fs/scrub.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "alloc/extent_tree.h"
#include "fs/committed_tree.h"
#include "fs/csum_tree.h"
#include "fs/fs_info.h"
#include "fs/transaction.h"
#include "io/checksum.h"
#include "tree/block_io.h"
#include "tree/superblock.h"

namespace ubtrfs::fs {

const char* scrub_state_name(ScrubState s) {
  switch (s) {
    case ScrubState::kNever: return "never";
    case ScrubState::kRunning: return "running";
    case ScrubState::kFinished: return "finished";
    case ScrubState::kCanceled: return "canceled";
    case ScrubState::kAborted: return "aborted";
  }
  return "unknown";
}

namespace {

using json = nlohmann::json;

constexpr uint64_t kBatchBytes = 32ull << 20;  // data + metadata bytes per handle held
constexpr size_t kBatchExtents = 512;
constexpr uint64_t kDataChunk = 1ull << 20;    // bytes of one data read per copy
constexpr uint64_t kRootDirObjectid = 256;      // BTRFS_FIRST_FREE_OBJECTID: a subvolume's root dir

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }

#define SCRUB_FIELDS(X)                                                                              \
  X(data_extents_scrubbed) X(tree_extents_scrubbed) X(data_bytes_scrubbed) X(tree_bytes_scrubbed)  \
  X(read_errors) X(csum_errors) X(verify_errors) X(no_csum) X(csum_discards) X(super_errors)         \
  X(malloc_errors) X(uncorrectable_errors) X(corrected_errors) X(last_physical) X(unverified_errors)

// One extent of the committed extent tree with its keyed back-references.
struct ExtentRecord {
  Key key;
  alloc::ExtentItemBody body;
  std::vector<alloc::ExtentBackref> keyed_refs;
  bool metadata() const { return key.type == kMetadataItemKey || (body.flags & kExtentFlagTreeBlock); }
};

// The lowering of the scrub thread's priority: nice 19 and the lowest best-effort I/O priority.
// Not the idle class (btrfs-progs' default for its own process): the scrub thread reads while it
// holds a transaction handle, so an idle-class read starved by other I/O would hold up a commit.
//
// The ioprio values are spelled out here (the kernel's ABI, include/uapi/linux/ioprio.h) instead of
// including <linux/ioprio.h>: since linux-libc-dev 6.1.192 that header defines an inline function
// with a parameter named `class`, which does not compile as C++.
constexpr int kIoprioWhoProcess = 1;
constexpr int kIoprioClassBestEffort = 2;
constexpr int kIoprioClassShift = 13;
constexpr int kIoprioLowestBestEffort = (kIoprioClassBestEffort << kIoprioClassShift) | 7;

void lower_priority() {
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) != 0)
    spdlog::debug("scrub: setpriority: {}", std::strerror(errno));
  if (::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, kIoprioLowestBestEffort) != 0)
    spdlog::debug("scrub: ioprio_set: {}", std::strerror(errno));
}

// One run's work; the counters are published to the Scrub's status after every extent.
class ScrubRun {
 public:
  ScrubRun(FsInfo& fs, const ScrubOptions& opts, bool readonly, std::atomic<bool>& cancel,
           const std::atomic<uint64_t>& limit,
           std::function<void(const ScrubProgress&, std::vector<ScrubErrorRecord>&&)> publish)
      : fs_(fs), opts_(opts), readonly_(readonly), cancel_(cancel), limit_(limit), publish_(std::move(publish)) {}

  // Returns the final state (finished / canceled) or the error that aborted the run.
  Result<ScrubState> run();

 private:
  [[nodiscard]] Status scrub_supers();
  [[nodiscard]] Status scrub_tree_block(const CommittedTrees& view, const ExtentRecord& rec);
  [[nodiscard]] Status scrub_data(const CommittedTrees& view, const RootLocation& csum_root, const ExtentRecord& rec);
  [[nodiscard]] Result<CsumRange> committed_csums(const CommittedTrees& view, const RootLocation& csum_root,
                                                  uint64_t bytenr, uint64_t len);
  // "root R inode I offset O path P" for every reference of the data extent, at `logical`.
  std::vector<std::string> files_of(const CommittedTrees& view, const ExtentRecord& rec, uint64_t logical);
  Result<std::string> inode_path(const CommittedTrees& view, uint64_t root, uint64_t ino);
  void record(ScrubErrorRecord r);
  void flush_progress();
  void throttle(uint64_t bytes);

  FsInfo& fs_;
  const ScrubOptions& opts_;
  const bool readonly_;
  std::atomic<bool>& cancel_;
  const std::atomic<uint64_t>& limit_;  // Scrub::rate_limit(), read at every throttle
  std::function<void(const ScrubProgress&, std::vector<ScrubErrorRecord>&&)> publish_;
  ScrubProgress p_;
  std::vector<ScrubErrorRecord> pending_;
  std::chrono::steady_clock::time_point began_ = std::chrono::steady_clock::now();
  uint64_t bytes_read_ = 0;
  uint64_t pauses_ = 0;  // batches cut short for a waiting commit (debug log)
  bool holding_handle_ = false;  // a batch's transaction handle is held (throttle must not sleep
                                 // while a commit waits for it)
};

void ScrubRun::record(ScrubErrorRecord r) {
  const char* what = r.metadata ? "metadata" : "data";
  if (r.files.empty())
    spdlog::warn("{}: scrub: {} error at logical {} mirror {} physical {}: {}{}", fs_.path(), what, r.logical,
                 r.mirror, r.physical, r.reason, r.corrected ? " (fixed)" : "");
  for (const auto& f : r.files)
    spdlog::warn("{}: scrub: {} error at logical {} mirror {} physical {}, {}: {}{}", fs_.path(), what, r.logical,
                 r.mirror, r.physical, f, r.reason, r.corrected ? " (fixed)" : "");
  pending_.push_back(std::move(r));
}

void ScrubRun::flush_progress() { publish_(p_, std::move(pending_)), pending_.clear(); }

void ScrubRun::throttle(uint64_t bytes) {
  auto limit = [&] { return opts_.rate_limit ? opts_.rate_limit : limit_.load(std::memory_order_relaxed); };
  if (!limit()) {
    // Unlimited: restart the accounting, so that a limit set later paces from then on.
    began_ = std::chrono::steady_clock::now();
    bytes_read_ = 0;
    return;
  }
  bytes_read_ += bytes;
  // Sleep until the bytes read so far are due at the limit, re-reading it (a change, lifting it
  // included, applies at once). Never while a commit waits for this batch's handle: the sleep is
  // owed, and paid by the next throttle — between batches, without the handle, at the latest.
  while (!cancel_.load(std::memory_order_relaxed)) {
    const uint64_t l = limit();
    if (!l || std::chrono::steady_clock::now() >= began_ + std::chrono::microseconds(bytes_read_ * 1000000 / l))
      break;
    if (holding_handle_ && fs_.transactions().commit_waiting()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Status ScrubRun::scrub_supers() {
  io::BlockDevice& dev = fs_.device();
  const FsParams& params = fs_.params();
  for (int m = 0; m < kSuperMirrorMax; ++m) {
    const uint64_t off = super_offset(m);
    if (off + kSuperInfoSize > dev.size()) break;
    std::vector<uint8_t> buf(kSuperInfoSize);
    if (!dev.read(off, buf)) {
      ++p_.super_errors;
      continue;
    }
    const auto found = io::compute_csum(params.csum_type, std::span<const uint8_t>(buf).subspan(io::kCsumFieldSize));
    const auto* sb = reinterpret_cast<const Superblock*>(buf.data());
    if (sb->magic.get() != kSuperMagic || std::memcmp(buf.data(), found.data(), params.csum_size()) != 0) {
      ++p_.super_errors;
      spdlog::warn("{}: scrub: super block copy {} at physical {} is bad", fs_.path(), m, off);
    }
  }
  return {};
}

Status ScrubRun::scrub_tree_block(const CommittedTrees& view, const ExtentRecord& rec) {
  const FsParams& params = view.params();
  const uint64_t bytenr = rec.key.objectid;
  const uint32_t len = params.nodesize;
  TreeBlockExpect expect;
  expect.bytenr = bytenr;
  expect.level = rec.key.type == kMetadataItemKey ? static_cast<uint8_t>(rec.key.offset) : rec.body.block_level;
  expect.generation = rec.body.generation;
  const auto phys = UBTRFS_TRY(fs_.chunk_map().map(bytenr, len));
  io::BlockDevice& dev = fs_.device();
  std::vector<std::vector<uint8_t>> bufs(phys.size(), std::vector<uint8_t>(len));
  std::vector<std::string> bad(phys.size());  // the reason, empty when the copy is good
  // The kernel counts per sector, and a bad tree block (checksum, header or tree checker) as
  // verify errors on every sector of it.
  const uint64_t sectors = len / params.sectorsize;
  int good = -1;
  for (size_t i = 0; i < phys.size(); ++i) {
    if (auto r = dev.read(phys[i], bufs[i]); !r) {
      p_.read_errors += sectors;
      bad[i] = r.error().message;
    } else if (!verify_tree_block_csum(params, bufs[i])) {
      p_.verify_errors += sectors;
      bad[i] = "checksum mismatch";
    } else if (auto c = check_tree_block(params, bufs[i], expect); !c) {
      p_.verify_errors += sectors;
      bad[i] = c.error().message;
    } else if (good < 0) {
      good = static_cast<int>(i);
    }
  }
  throttle(static_cast<uint64_t>(len) * phys.size());
  // Per copy, as the kernel scrubs each stripe of a DUP chunk on its own.
  p_.tree_extents_scrubbed += phys.size();
  p_.tree_bytes_scrubbed += static_cast<uint64_t>(len) * phys.size();
  p_.last_physical = phys.back();
  for (size_t i = 0; i < phys.size(); ++i) {
    if (bad[i].empty()) continue;
    ScrubErrorRecord r{.logical = bytenr, .physical = phys[i], .mirror = static_cast<int>(i) + 1, .metadata = true,
                       .reason = bad[i]};
    if (good >= 0 && !readonly_) {
      // Rewrite the bad copy from the good one, then prove it by reading it back.
      std::vector<uint8_t> back(len);
      if (dev.write(phys[i], bufs[good]) && dev.flush() && dev.read(phys[i], back) && back == bufs[good]) {
        p_.corrected_errors += sectors;
        r.corrected = true;
      } else {
        p_.uncorrectable_errors += sectors;
        r.reason += "; rewriting it failed";
      }
    } else if (good < 0) {
      p_.uncorrectable_errors += sectors;
    }
    record(std::move(r));
  }
  return {};
}

Result<CsumRange> ScrubRun::committed_csums(const CommittedTrees& view, const RootLocation& csum_root,
                                            uint64_t bytenr, uint64_t len) {
  const FsParams& params = view.params();
  const size_t cs = params.csum_size();
  const uint64_t ss = params.sectorsize;
  const uint64_t nsec = len / ss;
  CsumRange out;
  out.csums.assign(nsec * cs, 0);
  out.present.assign(nsec, false);
  // An item starting before bytenr may cover it: start one item's reach earlier.
  const uint64_t reach = static_cast<uint64_t>(max_csums_per_item(params)) * ss;
  const Key start{kExtentCsumObjectid, kExtentCsumKey, bytenr > reach ? bytenr - reach : 0};
  UBTRFS_TRY_STATUS(view.for_each_from(csum_root, start, [&](const Key& k, std::span<const uint8_t> body) {
    if (k.objectid != kExtentCsumObjectid || k.type != kExtentCsumKey) return false;
    if (k.offset >= bytenr + len) return false;
    const uint64_t n = body.size() / cs;
    for (uint64_t j = 0; j < n; ++j) {
      const uint64_t sector = k.offset + j * ss;
      if (sector < bytenr || sector >= bytenr + len) continue;
      const uint64_t idx = (sector - bytenr) / ss;
      std::memcpy(out.csums.data() + idx * cs, body.data() + j * cs, cs);
      out.present[idx] = true;
    }
    return true;
  }));
  return out;
}

Status ScrubRun::scrub_data(const CommittedTrees& view, const RootLocation& csum_root, const ExtentRecord& rec) {
  const FsParams& params = view.params();
  const uint64_t bytenr = rec.key.objectid, len = rec.key.offset;
  const uint64_t ss = params.sectorsize;
  const size_t cs = params.csum_size();
  const auto csums = UBTRFS_TRY(committed_csums(view, csum_root, bytenr, len));
  const auto phys = UBTRFS_TRY(fs_.chunk_map().map(bytenr, len));
  io::BlockDevice& dev = fs_.device();
  std::optional<std::vector<std::string>> files;  // resolved once, on the first uncorrectable sector
  for (uint64_t off = 0; off < len && !cancel_.load(std::memory_order_relaxed); off += kDataChunk) {
    const uint64_t n = std::min(kDataChunk, len - off);
    std::vector<std::vector<uint8_t>> bufs(phys.size(), std::vector<uint8_t>(n));
    std::vector<bool> read_ok(phys.size());
    for (size_t i = 0; i < phys.size(); ++i) {
      read_ok[i] = static_cast<bool>(dev.read(phys[i] + off, bufs[i]));
      if (!read_ok[i]) ++p_.read_errors;
    }
    throttle(n * phys.size());
    for (uint64_t s = 0; s < n; s += ss) {
      const uint64_t idx = (off + s) / ss;
      if (!csums.present[idx]) {
        ++p_.no_csum;
        continue;
      }
      const uint8_t* want = csums.csums.data() + idx * cs;
      std::vector<bool> ok(phys.size());
      int good = -1;
      for (size_t i = 0; i < phys.size(); ++i) {
        if (!read_ok[i]) continue;
        const auto got = io::compute_csum(params.csum_type, std::span<const uint8_t>(bufs[i]).subspan(s, ss));
        ok[i] = std::memcmp(got.data(), want, cs) == 0;
        if (ok[i] && good < 0) good = static_cast<int>(i);
      }
      const uint64_t logical = bytenr + off + s;
      for (size_t i = 0; i < phys.size(); ++i) {
        if (ok[i]) continue;
        if (read_ok[i]) ++p_.csum_errors;
        ScrubErrorRecord r{.logical = logical, .physical = phys[i] + off + s, .mirror = static_cast<int>(i) + 1,
                           .metadata = false, .reason = read_ok[i] ? "checksum mismatch" : "read error"};
        if (good >= 0 && !readonly_) {
          const auto src = std::span<const uint8_t>(bufs[good]).subspan(s, ss);
          std::vector<uint8_t> back(ss);
          if (dev.write(r.physical, src) && dev.flush() && dev.read(r.physical, back) &&
              std::equal(back.begin(), back.end(), src.begin())) {
            ++p_.corrected_errors;
            r.corrected = true;
          } else {
            ++p_.uncorrectable_errors;
            r.reason += "; rewriting it failed";
          }
        } else if (good < 0) {
          ++p_.uncorrectable_errors;  // per copy, as the kernel (each stripe scrubbed on its own)
          if (!files) files = files_of(view, rec, logical);
          r.files = *files;
        }
        record(std::move(r));
      }
    }
  }
  p_.data_extents_scrubbed += phys.size();
  p_.data_bytes_scrubbed += len * phys.size();
  p_.last_physical = phys.back() + len;
  return {};
}

Result<std::string> ScrubRun::inode_path(const CommittedTrees& view, uint64_t root, uint64_t ino) {
  const RootLocation loc = UBTRFS_TRY(view.find_root(root));
  std::string path;
  for (int depth = 0; ino != kRootDirObjectid; ++depth) {
    if (depth > 4096) return fail(ELOOP, "inode {} of root {}: path too deep", ino, root);
    std::optional<std::pair<uint64_t, std::string>> up;  // parent, name
    UBTRFS_TRY_STATUS(view.for_each_from(loc, Key{ino, kInodeRefKey, 0}, [&](const Key& k, std::span<const uint8_t> b) {
      if (k.objectid != ino || (k.type != kInodeRefKey && k.type != kInodeExtrefKey)) return false;
      if (k.type == kInodeRefKey && b.size() >= sizeof(InodeRef)) {
        const auto ref = load<InodeRef>(b.data());
        const size_t n = std::min<size_t>(ref.name_len, b.size() - sizeof(InodeRef));
        up.emplace(k.offset, std::string(reinterpret_cast<const char*>(b.data()) + sizeof(InodeRef), n));
      } else if (k.type == kInodeExtrefKey && b.size() >= sizeof(InodeExtref)) {
        const auto ref = load<InodeExtref>(b.data());
        const size_t n = std::min<size_t>(ref.name_len, b.size() - sizeof(InodeExtref));
        up.emplace(ref.parent_objectid, std::string(reinterpret_cast<const char*>(b.data()) + sizeof(InodeExtref), n));
      }
      return false;
    }));
    if (!up) return fail(ENOENT, "inode {} of root {} has no inode ref", ino, root);
    path = "/" + up->second + path;
    if (up->first == ino) break;
    ino = up->first;
  }
  return path.empty() ? std::string("/") : path;
}

std::vector<std::string> ScrubRun::files_of(const CommittedTrees& view, const ExtentRecord& rec, uint64_t logical) {
  std::vector<std::string> out;
  const uint64_t bytenr = rec.key.objectid;
  auto describe = [&](uint64_t root, uint64_t ino, uint64_t offset) {
    auto p = inode_path(view, root, ino);
    out.push_back(fmt::format("root {} inode {} offset {} path {}", root, ino, offset,
                              p ? *p : "(unresolved: " + p.error().message + ")"));
  };
  std::vector<alloc::ExtentBackref> refs = rec.body.inline_refs;
  refs.insert(refs.end(), rec.keyed_refs.begin(), rec.keyed_refs.end());
  for (const auto& ref : refs) {
    if (out.size() >= 16) break;
    if (ref.type == kExtentDataRefKey) {
      describe(ref.root, ref.objectid, ref.data_offset + (logical - bytenr));
    } else if (ref.type == kSharedDataRefKey) {
      // The parent leaf's file extent items that point at this extent name the files.
      TreeBlockExpect e;
      e.bytenr = ref.offset;
      auto leaf = view.read_block(e);
      if (!leaf) {
        out.push_back(fmt::format("shared by leaf {} (unreadable: {})", ref.offset, leaf.error().message));
        continue;
      }
      const uint64_t owner = load<Header>(leaf->data()).owner;
      for (const auto& it : leaf_items(*leaf)) {
        if (it.key.type != kExtentDataKey || it.body.size() < sizeof(FileExtentItem)) continue;
        const auto fe = load<FileExtentItem>(it.body.data());
        if (fe.type == kFileExtentInline || fe.disk_bytenr.get() != bytenr) continue;
        describe(owner, it.key.objectid, it.key.offset - fe.offset.get() + (logical - bytenr));
      }
    }
  }
  if (out.empty()) out.push_back("no file references found");
  return out;
}

Result<ScrubState> ScrubRun::run() {
  UBTRFS_TRY_STATUS(scrub_supers());
  flush_progress();
  const uint64_t batch_limit = opts_.batch_bytes ? opts_.batch_bytes : kBatchBytes;
  Key cursor{0, 0, 0};
  for (;;) {
    if (cancel_.load(std::memory_order_acquire)) return ScrubState::kCanceled;
    // The handle keeps the next commit from completing while this batch reads (see the top).
    std::optional<TransHandle> th;
    if (!fs_.read_only() && !opts_.unguarded_for_test) {
      auto h = fs_.transactions().join();
      if (!h) return std::unexpected(h.error());
      th.emplace(std::move(*h));
      holding_handle_ = true;
    }
    CommittedTrees view(fs_);
    const RootLocation extent_root = UBTRFS_TRY(view.find_root(kExtentTreeObjectid));
    const RootLocation csum_root = UBTRFS_TRY(view.find_root(kCsumTreeObjectid));
    std::vector<ExtentRecord> batch;
    uint64_t batch_bytes = 0;
    bool more = false;
    Status parse_error;
    UBTRFS_TRY_STATUS(view.for_each_from(extent_root, cursor, [&](const Key& k, std::span<const uint8_t> body) {
      if (k.type == kExtentItemKey || k.type == kMetadataItemKey) {
        if (batch_bytes >= batch_limit || batch.size() >= kBatchExtents) {
          cursor = k;
          more = true;
          return false;
        }
        auto parsed = alloc::parse_extent_item(k, body);
        if (!parsed) {
          parse_error = std::unexpected(parsed.error());
          return false;
        }
        ExtentRecord rec{k, std::move(*parsed), {}};
        batch_bytes += rec.metadata() ? view.params().nodesize : k.offset;
        batch.push_back(std::move(rec));
      } else if ((k.type == kExtentDataRefKey || k.type == kSharedDataRefKey) && !batch.empty() &&
                 batch.back().key.objectid == k.objectid) {
        if (auto ref = alloc::parse_keyed_backref(k, body)) batch.back().keyed_refs.push_back(*ref);
      }
      return true;
    }));
    UBTRFS_TRY_STATUS(parse_error);
    if (opts_.mid_batch_hook) opts_.mid_batch_hook();
    for (size_t i = 0; i < batch.size(); ++i) {
      if (cancel_.load(std::memory_order_acquire)) return ScrubState::kCanceled;
      // A commit waiting for this handle: pause here (the kernel's scrub_pause_on), resume
      // from this extent in the next batch, so a commit waits for one extent at most.
      if (i > 0 && th && fs_.transactions().commit_waiting()) {
        cursor = batch[i].key;
        more = true;
        ++pauses_;
        break;
      }
      const auto& rec = batch[i];
      if (rec.metadata()) UBTRFS_TRY_STATUS(scrub_tree_block(view, rec));
      else UBTRFS_TRY_STATUS(scrub_data(view, csum_root, rec));
      flush_progress();
    }
    th.reset();
    holding_handle_ = false;
    throttle(0);  // the sleep owed for the batch, now that no commit can be waiting for it
    if (opts_.batch_hook) opts_.batch_hook(p_);
    if (!more) {
      spdlog::debug("{}: scrub: {} batches cut short for a waiting commit", fs_.path(), pauses_);
      return cancel_.load() ? ScrubState::kCanceled : ScrubState::kFinished;
    }
    std::this_thread::yield();
  }
}

json record_json(const ScrubErrorRecord& r) {
  return {{"logical", r.logical}, {"physical", r.physical}, {"mirror", r.mirror}, {"metadata", r.metadata},
          {"corrected", r.corrected}, {"reason", r.reason}, {"files", r.files}};
}

}  // namespace

std::string scrub_status_json(const ScrubStatus& s) {
  json p;
#define X(f) p[#f] = s.progress.f;
  SCRUB_FIELDS(X)
#undef X
  json errors = json::array();
  for (const auto& r : s.errors) errors.push_back(record_json(r));
  json j = {{"state", scrub_state_name(s.state)}, {"readonly", s.readonly},
            {"from_previous_mount", s.from_previous_mount}, {"started", s.started},
            {"ended", s.ended},           {"progress", p},
            {"errors", errors},           {"failure", s.failure},
            {"rate_limit", s.rate_limit}};
  return j.dump(2);
}

Result<ScrubStatus> scrub_status_from_json(std::string_view text) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(EINVAL, "scrub status: not a JSON object");
  ScrubStatus s;
  const std::string state = j.value("state", "");
  for (auto st : {ScrubState::kNever, ScrubState::kRunning, ScrubState::kFinished, ScrubState::kCanceled,
                  ScrubState::kAborted})
    if (state == scrub_state_name(st)) s.state = st;
  s.readonly = j.value("readonly", false);
  s.from_previous_mount = j.value("from_previous_mount", false);
  s.started = j.value("started", int64_t{0});
  s.ended = j.value("ended", int64_t{0});
  s.failure = j.value("failure", "");
  s.rate_limit = j.value("rate_limit", uint64_t{0});
  if (j.contains("progress") && j["progress"].is_object()) {
    const json& p = j["progress"];
#define X(f) s.progress.f = p.value(#f, uint64_t{0});
    SCRUB_FIELDS(X)
#undef X
  }
  if (j.contains("errors") && j["errors"].is_array())
    for (const json& e : j["errors"]) {
      ScrubErrorRecord r;
      r.logical = e.value("logical", uint64_t{0});
      r.physical = e.value("physical", uint64_t{0});
      r.mirror = e.value("mirror", 0);
      r.metadata = e.value("metadata", false);
      r.corrected = e.value("corrected", false);
      r.reason = e.value("reason", "");
      if (e.contains("files") && e["files"].is_array())
        for (const json& f : e["files"])
          if (f.is_string()) r.files.push_back(f.get<std::string>());
      s.errors.push_back(std::move(r));
    }
  return s;
}

Scrub::Scrub(FsInfo& fs) : fs_(fs) {}

Scrub::~Scrub() { stop(); }

Status Scrub::start(const ScrubOptions& opts) {
  std::lock_guard t(thread_mu_);
  {
    std::lock_guard g(mu_);
    if (stopped_) return fail(ESHUTDOWN, "{}: scrub: the filesystem is unmounting", fs_.path());
    if (status_.state == ScrubState::kRunning) return fail(EINPROGRESS, "{}: scrub is already running", fs_.path());
  }
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard g(mu_);
    status_ = ScrubStatus{};
    status_.state = ScrubState::kRunning;
    status_.readonly = opts.readonly || fs_.read_only();
    status_.started = now_seconds();
    cancel_.store(false);
  }
  spdlog::info("{}: scrub started{}", fs_.path(), opts.readonly || fs_.read_only() ? " (readonly)" : "");
  thread_ = std::thread([this, opts] { run(opts); });
  return {};
}

void Scrub::run(ScrubOptions opts) {
  if (opts.low_priority) lower_priority();
  bool readonly;
  {
    std::lock_guard g(mu_);
    readonly = status_.readonly;
  }
  ScrubRun work(fs_, opts, readonly, cancel_, limit_, [this](const ScrubProgress& p, std::vector<ScrubErrorRecord>&& recs) {
    std::lock_guard g(mu_);
    status_.progress = p;
    for (auto& r : recs)
      if (status_.errors.size() < kMaxScrubErrorRecords) status_.errors.push_back(std::move(r));
  });
  auto result = work.run();
  std::lock_guard g(mu_);
  status_.ended = now_seconds();
  if (result) {
    status_.state = *result;
  } else {
    status_.state = ScrubState::kAborted;
    status_.failure = result.error().message;
  }
  const auto& p = status_.progress;
  spdlog::info("{}: scrub {}: {} tree and {} data bytes, errors csum {} verify {} read {} super {}, corrected {}, "
               "uncorrectable {}{}",
               fs_.path(), scrub_state_name(status_.state), p.tree_bytes_scrubbed, p.data_bytes_scrubbed,
               p.csum_errors, p.verify_errors, p.read_errors, p.super_errors, p.corrected_errors,
               p.uncorrectable_errors, status_.failure.empty() ? "" : ": " + status_.failure);
  save_status_locked();
  cv_.notify_all();
}

void Scrub::save_status_locked() {
  if (status_file_.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(status_file_).parent_path(), ec);
  const std::string tmp = status_file_ + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << scrub_status_json(status_) << "\n";
    if (!f) {
      spdlog::warn("{}: cannot write the scrub status file {}", fs_.path(), tmp);
      return;
    }
  }
  std::filesystem::rename(tmp, status_file_, ec);
  if (ec) spdlog::warn("{}: cannot write the scrub status file {}: {}", fs_.path(), status_file_, ec.message());
}

void Scrub::set_status_file(std::string path) {
  std::lock_guard g(mu_);
  status_file_ = std::move(path);
  if (status_file_.empty() || status_.state != ScrubState::kNever) return;
  std::ifstream f(status_file_);
  if (!f) return;
  std::stringstream ss;
  ss << f.rdbuf();
  auto s = scrub_status_from_json(ss.str());
  if (!s) {
    spdlog::warn("{}: ignoring the scrub status file {}: {}", fs_.path(), status_file_, s.error().message);
    return;
  }
  status_ = std::move(*s);
  status_.from_previous_mount = true;
  if (status_.state == ScrubState::kRunning) status_.state = ScrubState::kAborted;  // the daemon died mid-run
}

ScrubStatus Scrub::wait() {
  std::unique_lock g(mu_);
  cv_.wait(g, [&] { return status_.state != ScrubState::kRunning; });
  return status_;
}

Status Scrub::cancel() {
  {
    std::lock_guard g(mu_);
    if (status_.state != ScrubState::kRunning) return fail(ENOTCONN, "{}: no scrub is running", fs_.path());
  }
  cancel_.store(true, std::memory_order_release);
  (void)wait();
  return {};
}

ScrubStatus Scrub::status() const {
  std::lock_guard g(mu_);
  ScrubStatus s = status_;
  s.rate_limit = rate_limit();
  return s;
}

bool Scrub::running() const {
  std::lock_guard g(mu_);
  return status_.state == ScrubState::kRunning;
}

void Scrub::stop() {
  std::lock_guard t(thread_mu_);
  {
    std::lock_guard g(mu_);
    stopped_ = true;
  }
  cancel_.store(true, std::memory_order_release);
  if (thread_.joinable()) thread_.join();
}

}  // namespace ubtrfs::fs
