// One ubtrfs-stress worker: draws random operations, runs them against the real directory and
// against its Model, and demands identical results.
//
// Owns: a worker's directory (DIR/pN), its Prng (seeded with seed + N) and its Model. Each step
// draws an operation from the weight table, chooses arguments from the model's current state,
// issues the system call, applies the same operation to the model and compares: the errno, then
// what can be observed (sizes after data operations, bytes of every read, stat and xattrs of a
// stat-verify, names of a readdir). At the end verify_tree() walks the whole directory and checks
// every name, type, mode, size, link count, xattr, symlink target and byte against the model.
//
// Determinism: every choice comes from the Prng and the model, and the model only changes
// through results that must equal the real ones, so the same seed and weights replay the same
// operation sequence until the first mismatch (after which the worker stops).
//
// Bounds: the tree is kept near max_entries names (namespace-growing ops turn into unlinks
// above it) and the model's allocated bytes under data_budget (writes and fallocates turn into
// shrinking truncates above it); files never grow past kMaxFileSize.
//
// Lifecycle: Worker(opts, stats) -> setup() -> run() (or step() repeatedly, then verify_tree()).
// A worker is single-threaded; the stats block may live in shared memory read by the parent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/stress/model.h"
#include "tools/stress/ops.h"
#include "tools/stress/prng.h"

namespace ubtrfs::stress {

inline constexpr uint64_t kMaxFileSize = 64ULL << 20;

struct WorkerOptions {
  std::string root;  // the worker's directory; setup() creates it, so it must not exist
  int id = 0;
  uint64_t seed = 1;  // already seed + id
  uint64_t nops = 1000;
  double fsync_prob = 0.02;  // chance of an fsync/fdatasync after each data-changing op
  OpWeights weights = default_op_weights();
  uint64_t data_budget = 96ULL << 20;
  size_t max_entries = 400;
  // Most bytes of user xattr values one inode carries. 0: chosen by setup() from the filesystem
  // type (btrfs and FUSE keep each xattr in its own item: large; ext4 and others fit all of an
  // inode's xattrs in one block: small).
  uint64_t xattr_bytes_per_inode = 0;
  // The worker's directory is a btrfs subvolume (BTRFS_IOC_SUBVOL_CREATE), so snapshot/snapdelete
  // can snapshot it into ROOT.snaps/ (BTRFS_IOC_SNAP_CREATE_V2 / SNAP_DESTROY).
  bool subvolume = false;
};

// Counters a worker publishes; plain integers so the block can sit in MAP_SHARED memory.
// ops_done is written with atomic stores (the parent reads it for progress).
struct WorkerStats {
  uint64_t ops_done;
  uint64_t counts[kNumOps];
  uint64_t expected_errors;  // calls that failed with the errno the model predicted
  uint64_t bytes_written;
  uint64_t bytes_read;
  uint64_t failures;
};

class Worker {
 public:
  Worker(WorkerOptions opts, WorkerStats* stats);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Sets the process umask to 0, creates and opens the worker directory. Returns false (with *error) on a setup failure.
  bool setup(std::string* error);
  // Runs opts.nops steps (stopping at the first failure), then verify_tree(). True if all verified.
  bool run();
  // One random operation. False once a verification has failed.
  bool step();
  // Walks the real tree and compares everything with the model. False on any difference.
  bool verify_tree();

  const Model& model() const { return model_; }
  bool failed() const { return failed_; }
  uint64_t ops_done() const { return op_no_; }

 private:
  // Argument choice.
  OpKind draw_op();
  std::optional<Entry> pick(bool (*want)(const Entry&));
  std::optional<Entry> pick_file();
  std::string pick_dir();
  std::string fresh_name(char prefix);
  uint64_t choose_len(uint64_t max_len);
  uint32_t choose_mode(bool dir);

  // Operations; each counts itself (a fallback counts as the op it became).
  void do_creat();
  void do_write();
  void do_read();
  void do_truncate(bool force_shrink);
  void do_punch();
  void do_fallocate();
  void do_copy_range();
  void do_rename();
  void do_link();
  void do_unlink();
  void do_mkdir();
  void do_rmdir();
  void do_symlink();
  void do_setxattr();
  void do_removexattr();
  void do_sync(bool data_only);
  void do_stat();
  void do_readdir();
  void do_chmod();
  // Snapshots: each keeps a frozen copy of the model taken with it; a snapshot is verified in full
  // against that copy before it is deleted and at the end (nothing done to the source after the
  // snapshot may show in it, nothing may be lost from it).
  void do_snapshot();
  void do_snapdelete();
  bool verify_snapshot(size_t i);

  // After a data op on an open fd: maybe fsync it, then check st_size against the model.
  void after_data_op(int fd, const Entry& e);

  // Verification helpers; each reports through fail() and returns false on a difference.
  bool verify_entry(const std::string& rel, InodeId id, bool full);
  bool verify_xattrs(const std::string& rel, InodeId id);
  bool verify_range(const std::string& rel, InodeId id, int fd, uint64_t off, uint64_t len);
  bool verify_dir_names(const std::string& rel, InodeId id);
  bool check_errno(std::string_view what, const std::string& rel, int expected, int actual);

  void count(OpKind op);
  void fail(const std::string& message);
  std::string abs_path(const std::string& rel) const;
  static const char* at_path(const std::string& rel) { return rel.empty() ? "." : rel.c_str(); }

  WorkerOptions opts_;
  WorkerStats* stats_;
  Prng prng_;
  Model model_;
  int root_fd_ = -1;
  uint64_t op_no_ = 0;
  const char* op_label_ = "setup";
  uint64_t name_counter_ = 0;
  bool failed_ = false;
  std::vector<uint8_t> buf_;       // what the filesystem returned / what we write
  std::vector<uint8_t> expected_;  // what the model says
  struct Snapshot {
    std::string name;
    bool readonly = false;
    Model model;
  };
  std::vector<Snapshot> snapshots_;
  int snaps_fd_ = -1;  // ROOT.snaps
  std::string verify_root_;  // while a snapshot is verified: its path (abs_path uses it)
  uint64_t snap_counter_ = 0;
};

}  // namespace ubtrfs::stress
