// The operations of ubtrfs-cowbench (workload.h): the prepopulated tree and the worker threads.
#include "tools/cowbench/workload.h"

#include <fcntl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <fmt/format.h>

namespace ubtrfs::cowbench {
namespace {

constexpr uint64_t kRootIno = 1;  // FUSE number of the mounted subvolume's root directory
constexpr uint32_t kDirMode = 040755, kFileMode = 0100644;
constexpr uint64_t kWriteSpan = 64 << 10;  // writes land below this offset
constexpr size_t kMinOwned = 16;           // below this many files a thread creates instead of unlinking

// The operation mix, in percent (cumulative bounds in pick_kind).
constexpr int kPercentCreate = 30, kPercentWrite = 15, kPercentRename = 20, kPercentUnlink = 15;

struct OwnedFile {
  uint32_t leaf = 0;
  std::string name;
};

// One worker: its files, its random stream, its share of the counters.
class Worker {
 public:
  Worker(fs::Filesystem& fs, const std::vector<uint64_t>& leaves, const WorkloadOptions& o, WorkloadCounters& c,
         int index)
      : fs_(fs), leaves_(leaves), opts_(o), counters_(c), index_(index), rng_(o.seed * 1000003 + index) {
    for (uint64_t i = index; i < o.prepopulated; i += o.threads)
      files_.push_back({static_cast<uint32_t>(i % leaves.size()), fmt::format("p{}", i)});
  }

  void run() {
    while (!counters_.stop.load(std::memory_order_relaxed)) {
      const uint64_t n = counters_.ops.fetch_add(1, std::memory_order_relaxed);
      if (opts_.max_ops && n >= opts_.max_ops) {
        counters_.ops.fetch_sub(1, std::memory_order_relaxed);
        counters_.stop.store(true, std::memory_order_relaxed);
        break;
      }
      const OpKind kind = pick_kind();
      counters_.by_kind[static_cast<int>(kind)].fetch_add(1, std::memory_order_relaxed);
      if (step(kind)) counters_.ok.fetch_add(1, std::memory_order_relaxed);
    }
  }

  std::string first_error;

 private:
  uint64_t rnd(uint64_t n) { return n ? rng_() % n : 0; }

  OpKind pick_kind() {
    const int p = static_cast<int>(rnd(100));
    if (files_.empty()) return OpKind::kCreate;
    if (p < kPercentCreate) return OpKind::kCreate;
    if (p < kPercentCreate + kPercentWrite) return OpKind::kWrite;
    if (p < kPercentCreate + kPercentWrite + kPercentRename) return OpKind::kRename;
    if (p < kPercentCreate + kPercentWrite + kPercentRename + kPercentUnlink)
      return files_.size() > kMinOwned ? OpKind::kUnlink : OpKind::kCreate;
    return OpKind::kSetxattr;
  }

  // Counts a failure; false. EROFS (the filesystem aborted a transaction) stops every worker.
  bool failed(const Error& e, const std::string& what) {
    if (e.err == ENOSPC) {
      counters_.enospc.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    counters_.other_errors.fetch_add(1, std::memory_order_relaxed);
    if (first_error.empty()) first_error = fmt::format("thread {}: {}: {}", index_, what, e.message);
    if (e.err == EROFS) counters_.stop.store(true, std::memory_order_relaxed);
    return false;
  }

  std::string fresh_name() { return fmt::format("t{}n{}", index_, next_name_++); }
  uint32_t random_leaf() { return static_cast<uint32_t>(rnd(leaves_.size())); }

  bool step(OpKind kind) {
    switch (kind) {
      case OpKind::kCreate: return create();
      case OpKind::kWrite: return with_inode(/*write=*/true);
      case OpKind::kRename: return rename();
      case OpKind::kUnlink: return unlink();
      case OpKind::kSetxattr: return with_inode(/*write=*/false);
    }
    return false;
  }

  bool create() {
    OwnedFile f{random_leaf(), fresh_name()};
    auto st = fs_.create(leaves_[f.leaf], f.name, kFileMode, fs::Caller{});
    if (!st) return failed(st.error(), "create " + f.name);
    fs_.forget(st->st_ino, 1);  // the kernel would drop the dentry later; we hold nothing
    files_.push_back(std::move(f));
    return true;
  }

  // lookup + write (or setxattr) + forget, as a FUSE client's open/write or setxattr(2) arrive.
  bool with_inode(bool write) {
    OwnedFile& f = files_[rnd(files_.size())];
    auto st = fs_.lookup(leaves_[f.leaf], f.name);
    if (!st) return failed(st.error(), "lookup " + f.name);
    const uint64_t ino = st->st_ino;
    bool ok;
    if (write) {
      const uint64_t len = 1 + rnd(opts_.write_max);
      const uint64_t off = rnd(kWriteSpan);
      buf_.assign(len, static_cast<uint8_t>(rng_()));
      auto w = fs_.write(ino, off, buf_);
      ok = w ? true : failed(w.error(), fmt::format("write {} at {} len {}", f.name, off, len));
    } else {
      buf_.assign(1 + rnd(opts_.xattr_max), static_cast<uint8_t>(rng_()));
      const std::string name = fmt::format("user.cb{}", rnd(4));
      auto s = fs_.setxattr(ino, name, buf_, 0);
      ok = s ? true : failed(s.error(), fmt::format("setxattr {} {}", f.name, name));
    }
    fs_.forget(ino, 1);
    return ok;
  }

  bool rename() {
    const size_t i = rnd(files_.size());
    OwnedFile to{random_leaf(), fresh_name()};
    auto s = fs_.rename(leaves_[files_[i].leaf], files_[i].name, leaves_[to.leaf], to.name, 0);
    if (!s) return failed(s.error(), fmt::format("rename {} {}", files_[i].name, to.name));
    files_[i] = std::move(to);
    return true;
  }

  bool unlink() {
    const size_t i = rnd(files_.size());
    auto s = fs_.unlink(leaves_[files_[i].leaf], files_[i].name);
    if (!s) return failed(s.error(), "unlink " + files_[i].name);
    files_[i] = std::move(files_.back());
    files_.pop_back();
    return true;
  }

  fs::Filesystem& fs_;
  const std::vector<uint64_t>& leaves_;
  const WorkloadOptions& opts_;
  WorkloadCounters& counters_;
  const int index_;
  std::mt19937_64 rng_;
  std::vector<OwnedFile> files_;
  std::vector<uint8_t> buf_;
  uint64_t next_name_ = 0;
};

// Creates the directories of every level; returns the leaf directories' numbers by index.
Result<std::vector<uint64_t>> make_dirs(fs::Filesystem& fs, const TreeShape& shape) {
  std::vector<uint64_t> level{kRootIno};
  for (int d = 0; d < shape.depth; ++d) {
    std::vector<uint64_t> next;
    next.reserve(level.size() * shape.fanout);
    for (uint64_t parent : level)
      for (int k = 0; k < shape.fanout; ++k) {
        auto st = fs.mkdir(parent, fmt::format("d{}", k), kDirMode, fs::Caller{});
        if (!st) return fail(st.error().err, "mkdir d{} in {}: {}", k, parent, st.error().message);
        next.push_back(st->st_ino);
      }
    level = std::move(next);
  }
  return level;
}

}  // namespace

uint64_t TreeShape::leaves() const {
  uint64_t n = 1;
  for (int d = 0; d < depth; ++d) n *= static_cast<uint64_t>(fanout);
  return n;
}

std::string TreeShape::leaf_path(uint64_t index) const {
  std::string path;
  uint64_t div = leaves();
  for (int d = 0; d < depth; ++d) {
    div /= static_cast<uint64_t>(fanout);
    path += fmt::format("{}d{}", path.empty() ? "" : "/", (index / div) % static_cast<uint64_t>(fanout));
  }
  return path;
}

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::kCreate: return "create";
    case OpKind::kWrite: return "write";
    case OpKind::kRename: return "rename";
    case OpKind::kUnlink: return "unlink";
    case OpKind::kSetxattr: return "setxattr";
  }
  return "?";
}

Result<int> fs_tree_level(fs::Filesystem& fs) {
  auto root = fs.info().fs_root(fs.numbers().mounted_subvol());
  if (!root) return fail(root.error());
  return (*root)->tree->node()->level();
}

Result<uint64_t> populate(fs::Filesystem& fs, const TreeShape& shape, uint64_t files, int threads) {
  auto leaves = make_dirs(fs, shape);
  if (!leaves) return fail(leaves.error());
  constexpr uint64_t kLevelCheckEvery = 256;
  constexpr uint64_t kAutoCap = 2'000'000;  // files == 0: never more than this many
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> target{files ? files : kAutoCap};
  std::mutex mu;
  std::optional<Error> error;  // GUARDED_BY(mu)
  auto worker = [&] {
    for (;;) {
      const uint64_t i = next.fetch_add(1);
      if (i >= target.load()) return;
      {
        std::lock_guard g(mu);
        if (error) return;
      }
      const uint64_t dir = (*leaves)[i % leaves->size()];
      auto st = fs.create(dir, fmt::format("p{}", i), kFileMode, fs::Caller{});
      if (!st) {
        std::lock_guard g(mu);
        if (!error) error = Error{st.error().err, fmt::format("create p{}: {}", i, st.error().message)};
        return;
      }
      fs.forget(st->st_ino, 1);
      if (files == 0 && i % kLevelCheckEvery == 0) {
        auto level = fs_tree_level(fs);
        if (level && *level >= 2) {
          uint64_t unset = kAutoCap;
          target.compare_exchange_strong(unset, i + i / 4 + 1);
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < std::max(1, threads); ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  if (error) return fail(*error);
  return target.load();
}

Result<std::vector<uint64_t>> resolve_leaves(fs::Filesystem& fs, const TreeShape& shape) {
  std::vector<uint64_t> out;
  out.reserve(shape.leaves());
  for (uint64_t i = 0; i < shape.leaves(); ++i) {
    uint64_t ino = kRootIno;
    const std::string path = shape.leaf_path(i);
    size_t start = 0;
    while (start <= path.size()) {
      const size_t slash = std::min(path.find('/', start), path.size());
      auto st = fs.lookup(ino, std::string_view(path).substr(start, slash - start));
      if (!st) return fail(st.error().err, "lookup {}: {}", path, st.error().message);
      ino = st->st_ino;
      start = slash + 1;
    }
    out.push_back(ino);
  }
  return out;
}

WorkloadResult run_workload(fs::Filesystem& fs, const std::vector<uint64_t>& leaves, const WorkloadOptions& opts,
                            WorkloadCounters& counters) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < opts.threads; ++t) workers.push_back(std::make_unique<Worker>(fs, leaves, opts, counters, t));
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
  for (auto& t : threads) t.join();
  WorkloadResult r;
  for (auto& w : workers)
    if (r.first_error.empty()) r.first_error = w->first_error;
  return r;
}

}  // namespace ubtrfs::cowbench
