// FuseUring: FUSE over io_uring beneath libfuse's low-level API; the rules are in fuse_uring.h.
#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 312  // as fuse_ops.h
#endif
#include "tools/daemon/fuse_uring.h"

#include "tools/daemon/fuse_init_ext.h"

#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <sys/eventfd.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace ubtrfs::daemon {

// Named (not anonymous): FuseUring::Impl, which has external linkage, holds these types.
namespace fuse_uring_internal {

// ---- The ring's ABI (include/uapi/linux/fuse.h, protocol 7.42) ---------------------------------
// Debian 12's kernel headers stop at 7.37, so the ring's part is spelled out here.
constexpr uint64_t kFuseOverIoUring = 1ull << 41;  // INIT flags2 bit 9: the server accepts the ring
constexpr uint32_t kFuseInitExt = 1u << 30;        // INIT: flags2 is meaningful
constexpr uint32_t kFuseMaxPages = 1u << 22;       // INIT: max_pages is meaningful
constexpr uint32_t kCmdRegister = 1;               // FUSE_IO_URING_CMD_REGISTER
constexpr uint32_t kCmdCommitAndFetch = 2;         // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
constexpr size_t kOpInSize = 128;                  // FUSE_URING_OP_IN_OUT_SZ

struct RingEntInOut {  // struct fuse_uring_ent_in_out
  uint64_t flags;
  uint64_t commit_id;  // the request's unique, echoed in the commit
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};
struct RingReqHeader {  // struct fuse_uring_req_header: the entry's header buffer
  uint8_t in_out[128];  // fuse_in_header on delivery, fuse_out_header on commit
  uint8_t op_in[kOpInSize];
  RingEntInOut ent;
};
struct RingCmdReq {  // struct fuse_uring_cmd_req, in the SQE's command area
  uint64_t flags;
  uint64_t commit_id;
  uint16_t qid;
  uint8_t padding[6];
};
static_assert(sizeof(RingEntInOut) == 32);
static_assert(sizeof(RingReqHeader) == 288);
static_assert(offsetof(RingReqHeader, op_in) == 128);
static_assert(offsetof(RingReqHeader, ent) == 256);
static_assert(sizeof(RingCmdReq) == 24);
static_assert(sizeof(fuse_in_header) == 40);
static_assert(sizeof(fuse_out_header) == 16);
static_assert(offsetof(fuse_init_in, flags2) == 16);
static_assert(offsetof(fuse_init_out, flags2) == 32);
constexpr size_t kSqeCmdArea = 80;  // bytes of an SQE128's command area (from offset 48)

constexpr size_t kPage = 4096;
// The payload buffer starts one page into the entry's request buffer: the page before it takes
// the rebuilt fuse_in_header and first argument (at most 40 + 128 bytes).
constexpr size_t kPrefix = kPage;
static_assert(kPrefix >= sizeof(fuse_in_header) + kOpInSize);

struct Worker;

struct Entry {
  Worker* worker = nullptr;
  uint16_t qid = 0;
  RingReqHeader* header = nullptr;  // page-aligned, one page
  uint8_t* buf = nullptr;           // page-aligned: kPrefix, then the payload
  size_t payload_size = 0;
  iovec iov[2]{};
  uint64_t unique = 0;              // the request this entry carries (the commit's id)
  std::atomic<uint64_t> owned{0};   // = unique from delivery until its reply is taken, else 0
  ~Entry() {
    std::free(header);
    std::free(buf);
  }
};

}  // namespace fuse_uring_internal

struct FuseUring::Impl {
  using Entry = fuse_uring_internal::Entry;
  using Worker = fuse_uring_internal::Worker;

  fuse_session* se = nullptr;
  int fd = -1;
  FuseUringOptions opts;
  std::atomic<bool> offered{false};
  std::atomic<bool> running{false};
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> init_unique{0};
  std::atomic<bool> init_answered{false};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> foreign_replies{0};
  std::atomic<unsigned> queues{0}, threads{0};  // as launched (kept after stop, for the stats)
  std::mutex workers_mu;
  std::vector<std::unique_ptr<Worker>> workers;  // GUARDED_BY(workers_mu)

  // Creates the workers and their rings for the sizes INIT settles; false (nothing kept) if any
  // fails: the INIT reply must then not accept the ring, since the kernel holds every request
  // back until the ring is ready.
  bool prepare(const fuse_init_out& init);
  // Starts the prepared workers (after the INIT reply is written).
  void launch();
  // The entry whose request `unique` is, taken from userspace's hands (null: not a ring request).
  Entry* take_owned(uint64_t unique);
  ssize_t commit(Entry* e, const iovec* iov, int count);
};

namespace fuse_uring_internal {

std::atomic<FuseUring::Impl*> g_impl{nullptr};
// The worker running on this thread (null elsewhere): only it may touch its ring's SQ.
thread_local Worker* tl_worker = nullptr;
// The entry whose request this thread is running through libfuse now (current_ring_reply_area).
thread_local Entry* tl_current = nullptr;

void* page_alloc(size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, kPage, bytes) != 0) return nullptr;
  std::memset(p, 0, std::min(bytes, kPrefix + kPage));
  return p;
}

struct Worker {
  FuseUring::Impl* impl = nullptr;
  uint16_t qid = 0;
  size_t payload_size = 0;
  io_uring ring{};
  bool ring_ok = false;
  int efd = -1;
  uint64_t efd_value = 0;
  Entry entry;
  bool entry_live = false;  // registered and not retired
  std::mutex foreign_mu;
  std::vector<Entry*> foreign;  // GUARDED_BY(foreign_mu): commits written by other threads
  std::thread thread;

  io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (!s) {
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  }
  void prep_cmd(Entry* e, uint32_t cmd) {
    io_uring_sqe* s = sqe();
    if (!s) {
      spdlog::error("fuse io_uring: queue {}: no submission slot for a ring command", qid);
      return;
    }
    if (cmd == kCmdRegister) io_uring_prep_rw(IORING_OP_URING_CMD, s, impl->fd, e->iov, 2, 0);
    else io_uring_prep_rw(IORING_OP_URING_CMD, s, impl->fd, nullptr, 0, 0);
    s->cmd_op = cmd;
    std::memset(s->cmd, 0, kSqeCmdArea);
    auto* req = reinterpret_cast<RingCmdReq*>(s->cmd);
    req->qid = e->qid;
    req->commit_id = cmd == kCmdCommitAndFetch ? e->unique : 0;
    io_uring_sqe_set_data(s, e);
  }
  void arm_wakeup() {
    io_uring_sqe* s = sqe();
    if (!s) return;
    io_uring_prep_read(s, efd, &efd_value, sizeof efd_value, 0);
    io_uring_sqe_set_data(s, nullptr);
  }
  // A reply for `e` is in its buffers: commit it (and fetch the next request).
  void submit_commit(Entry* e) {
    if (tl_worker == this) {
      prep_cmd(e, kCmdCommitAndFetch);  // submitted by the loop's next submit_and_wait
      return;
    }
    {
      std::lock_guard lk(foreign_mu);
      foreign.push_back(e);
    }
    impl->foreign_replies.fetch_add(1, std::memory_order_relaxed);
    const uint64_t one = 1;
    if (::write(efd, &one, sizeof one) < 0)
      spdlog::error("fuse io_uring: queue {}: cannot wake the worker: {}", qid, std::strerror(errno));
  }
  void wake() {
    const uint64_t one = 1;
    (void)!::write(efd, &one, sizeof one);
  }

  bool setup() {
    efd = eventfd(0, EFD_CLOEXEC);
    if (efd < 0) return false;
    // One entry, the wakeup read and room for a commit being re-armed: 8 slots are plenty.
    if (int r = io_uring_queue_init(8, &ring, IORING_SETUP_SQE128); r < 0) {
      spdlog::warn("fuse io_uring: cannot create a ring with 128-byte entries: {}", std::strerror(-r));
      return false;
    }
    ring_ok = true;
    entry.worker = this;
    entry.qid = qid;
    entry.payload_size = payload_size;
    entry.header = static_cast<RingReqHeader*>(page_alloc(kPage));
    entry.buf = static_cast<uint8_t*>(page_alloc(kPrefix + payload_size));
    if (!entry.header || !entry.buf) return false;
    entry.iov[0] = {entry.header, sizeof(RingReqHeader)};
    entry.iov[1] = {entry.buf + kPrefix, payload_size};
    return true;
  }

  // A request arrived in `e`: rebuild the /dev/fuse layout in place and run it through libfuse.
  void handle(Entry* e) {
    const auto* in = reinterpret_cast<const fuse_in_header*>(e->header->in_out);
    const uint32_t payload = e->header->ent.payload_sz;
    const uint64_t len = in->len;
    if (payload > e->payload_size || len < sizeof(fuse_in_header) + payload ||
        len - sizeof(fuse_in_header) - payload > kOpInSize) {
      spdlog::error("fuse io_uring: queue {}: malformed request {} (opcode {}, length {}, payload {}): EIO", qid,
                    in->unique, in->opcode, len, payload);
      e->unique = in->unique;
      fuse_out_header out{sizeof(fuse_out_header), -EIO, in->unique};
      std::memcpy(e->header->in_out, &out, sizeof out);
      e->header->ent.payload_sz = 0;
      prep_cmd(e, kCmdCommitAndFetch);
      return;
    }
    const size_t arg0 = len - sizeof(fuse_in_header) - payload;
    uint8_t* start = e->buf + kPrefix - arg0 - sizeof(fuse_in_header);
    std::memcpy(start, in, sizeof(fuse_in_header));
    std::memcpy(start + sizeof(fuse_in_header), e->header->op_in, arg0);
    e->unique = in->unique;
    e->owned.store(in->unique, std::memory_order_release);
    impl->requests.fetch_add(1, std::memory_order_relaxed);
    fuse_buf fb;
    std::memset(&fb, 0, sizeof fb);
    fb.mem = start;
    fb.size = len;
    tl_current = e;
    fuse_session_process_buf(impl->se, &fb);
    tl_current = nullptr;
  }

  void drain_foreign() {
    std::vector<Entry*> batch;
    {
      std::lock_guard lk(foreign_mu);
      batch.swap(foreign);
    }
    for (Entry* e : batch) prep_cmd(e, kCmdCommitAndFetch);
  }

  void run() {
    tl_worker = this;
    pthread_setname_np(pthread_self(), "ubtrfs-uring");
    // The kernel hands a request to the queue of the CPU its caller runs on: a worker on that
    // CPU serves it without a cross-CPU wakeup (measured with one worker per queue: creates
    // +30 %, unlinks +66 % over an unpinned one). Not allowed there (a cpuset, an offline CPU):
    // the scheduler places it.
    if (impl->opts.pin) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(qid, &set);
      if (sched_setaffinity(0, sizeof set, &set) != 0)
        spdlog::debug("fuse io_uring: queue {}: worker not pinned to its CPU: {}", qid, std::strerror(errno));
    }
    arm_wakeup();
    prep_cmd(&entry, kCmdRegister);
    entry_live = true;
    while (entry_live) {
      int r = io_uring_submit_and_wait(&ring, 1);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        spdlog::error("fuse io_uring: queue {}: waiting for requests failed: {}", qid, std::strerror(-r));
        break;
      }
      io_uring_cqe* cqe = nullptr;
      while (io_uring_peek_cqe(&ring, &cqe) == 0) {
        auto* e = static_cast<Entry*>(io_uring_cqe_get_data(cqe));
        const int res = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        if (!e) {  // the wakeup eventfd
          drain_foreign();
          if (impl->stopping.load()) goto out;
          arm_wakeup();
          continue;
        }
        if (res == 0) {
          handle(e);
        } else if (res == -EAGAIN || res == -EINTR) {
          prep_cmd(e, e->unique ? kCmdCommitAndFetch : kCmdRegister);
        } else {
          // -ENOTCONN / -ECANCELED / -ECONNABORTED: the connection is going away; anything else
          // (a commit the kernel no longer knows) retires the entry.
          if (res != -ENOTCONN && res != -ECANCELED && res != -ECONNABORTED && res != -ENODEV)
            spdlog::warn("fuse io_uring: queue {}: ring command failed: {}; entry retired", qid, std::strerror(-res));
          entry_live = false;
        }
      }
    }
  out:
    tl_worker = nullptr;
  }

  ~Worker() {
    if (ring_ok) io_uring_queue_exit(&ring);
    if (efd >= 0) ::close(efd);
  }
};

// ---- libfuse's custom-I/O hooks --------------------------------------------------------------------

ssize_t hook_read(int fd, void* buf, size_t len, void*) {
  const ssize_t n = ::read(fd, buf, len);
  FuseUring::Impl* impl = g_impl.load(std::memory_order_acquire);
  if (impl && n >= static_cast<ssize_t>(sizeof(fuse_in_header))) {
    const auto* in = static_cast<const fuse_in_header*>(buf);
    if (in->opcode == FUSE_INIT) {
      // The INIT flags libfuse cannot negotiate (fuse_init_ext.h), ring or not.
      impl->init_unique.store(in->unique);
      init_ext::on_init_request(in + 1, static_cast<size_t>(n) - sizeof(fuse_in_header));
      bool offered = false;
      if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + offsetof(fuse_init_in, flags2) + sizeof(uint32_t))) {
        const auto* init = reinterpret_cast<const fuse_init_in*>(in + 1);
        offered = impl->opts.ring && (init->flags & kFuseInitExt) &&
                  ((uint64_t{init->flags2} << 32) & kFuseOverIoUring);
      }
      impl->offered.store(offered);
      if (!offered && impl->opts.ring && impl->opts.required)
        spdlog::info("fuse_uring=on, but the kernel does not offer FUSE over io_uring (it needs Linux 6.14 and "
                     "the fuse module parameter enable_uring: echo Y > /sys/module/fuse/parameters/enable_uring); "
                     "serving through /dev/fuse");
    }
  }
  return n;
}

ssize_t hook_writev(int fd, struct iovec* iov, int count, void*) {
  FuseUring::Impl* impl = g_impl.load(std::memory_order_acquire);
  if (impl && !impl->init_answered.load(std::memory_order_relaxed) && count >= 2 &&
      iov[0].iov_len >= sizeof(fuse_out_header)) {
    // The INIT reply, ring or not: the flags of fuse_init_ext.h (before the ring's, which may
    // write it itself below).
    const auto* out = static_cast<const fuse_out_header*>(iov[0].iov_base);
    if (out->unique != 0 && out->unique == impl->init_unique.load() && out->error == 0) {
      init_ext::on_init_reply(iov[1].iov_base, iov[1].iov_len);
      impl->init_answered.store(true);
    }
  }
  // Until the kernel offers the ring at INIT nothing more here is ours: plain /dev/fuse.
  if (impl && impl->offered.load(std::memory_order_relaxed) && count >= 1 &&
      iov[0].iov_len >= sizeof(fuse_out_header)) {
    auto* out = static_cast<fuse_out_header*>(iov[0].iov_base);
    if (out->unique != 0) {
      if (Entry* e = impl->take_owned(out->unique)) return impl->commit(e, iov, count);
      if (out->unique == impl->init_unique.load() && out->error == 0 && count >= 2 &&
          iov[1].iov_len >= offsetof(fuse_init_out, flags2) + sizeof(uint32_t)) {
        auto* init = static_cast<fuse_init_out*>(iov[1].iov_base);
        if (!impl->prepare(*init)) return ::writev(fd, iov, count);
        init->flags |= kFuseInitExt;
        init->flags2 |= static_cast<uint32_t>(kFuseOverIoUring >> 32);
        const ssize_t n = ::writev(fd, iov, count);
        // The kernel takes registrations only once INIT is answered: start after the write.
        impl->launch();
        return n;
      }
    }
  }
  return ::writev(fd, iov, count);
}

}  // namespace fuse_uring_internal

using fuse_uring_internal::g_impl;

FuseUring::Impl::Entry* FuseUring::Impl::take_owned(uint64_t unique) {
  // A reply is nearly always written by the worker running its request: no lookup, no lock.
  Entry* cur = fuse_uring_internal::tl_current;
  uint64_t expect = unique;
  if (cur && cur->unique == unique) return cur->owned.compare_exchange_strong(expect, 0) ? cur : nullptr;
  // From another thread: the workers are fixed between launch() and stop().
  std::lock_guard lk(workers_mu);
  for (auto& w : workers) {
    expect = unique;
    if (w->entry.owned.compare_exchange_strong(expect, 0)) return &w->entry;
  }
  return nullptr;
}

ssize_t FuseUring::Impl::commit(Entry* e, const iovec* iov, int count) {
  using fuse_uring_internal::kPrefix;
  // The out header is the first 16 bytes of the reply; everything after it is the payload.
  uint8_t* hdr = e->header->in_out;
  uint8_t* payload = e->buf + kPrefix;
  size_t hdr_have = 0, total = 0;
  bool too_big = false;
  for (int i = 0; i < count; ++i) {
    const auto* p = static_cast<const uint8_t*>(iov[i].iov_base);
    size_t n = iov[i].iov_len;
    if (hdr_have < sizeof(fuse_out_header)) {
      const size_t h = std::min(n, sizeof(fuse_out_header) - hdr_have);
      std::memcpy(hdr + hdr_have, p, h);
      hdr_have += h;
      p += h;
      n -= h;
    }
    if (n == 0) continue;
    if (total + n > e->payload_size) {
      too_big = true;
      break;
    }
    if (p != payload + total) std::memcpy(payload + total, p, n);  // else built in place
    total += n;
  }
  auto* out = reinterpret_cast<fuse_out_header*>(hdr);
  const size_t written = sizeof(fuse_out_header) + total;
  if (too_big) {
    spdlog::error("fuse io_uring: reply to request {} is larger than the ring's {} byte payload: EIO", e->unique,
                  e->payload_size);
    out->error = -EIO;
    total = 0;
  }
  out->len = static_cast<uint32_t>(sizeof(fuse_out_header) + total);
  e->header->ent.payload_sz = static_cast<uint32_t>(total);
  e->worker->submit_commit(e);
  return static_cast<ssize_t>(written);
}

bool FuseUring::Impl::prepare(const fuse_init_out& init) {
  std::lock_guard lk(workers_mu);
  if (!workers.empty() || stopping.load()) return false;
  using fuse_uring_internal::kFuseMaxPages;
  using fuse_uring_internal::kPage;
  // The kernel sizes every payload buffer check by max(8 KiB, max_write, max_pages pages); the
  // default of 32 pages applies when INIT did not set max_pages.
  const size_t pages = (init.flags & kFuseMaxPages) ? std::max<size_t>(init.max_pages, 32) : 32;
  const size_t payload = std::max<size_t>({size_t{8192}, size_t{init.max_write}, pages * kPage});
  const unsigned queues = possible_cpu_count();
  for (unsigned q = 0; q < queues; ++q) {
    for (unsigned t = 0; t < std::max(1u, opts.threads_per_queue); ++t) {
      auto w = std::make_unique<Worker>();
      w->impl = this;
      w->qid = static_cast<uint16_t>(q);
      w->payload_size = payload;
      if (!w->setup()) {
        spdlog::error("fuse io_uring: cannot set up queue {}: serving through /dev/fuse", q);
        workers.clear();
        return false;
      }
      workers.push_back(std::move(w));
    }
  }
  spdlog::info("FUSE over io_uring: {} queue{} x {} thread{}, {} KiB payload buffers", queues, queues == 1 ? "" : "s",
               opts.threads_per_queue, opts.threads_per_queue == 1 ? "" : "s", payload >> 10);
  return true;
}

void FuseUring::Impl::launch() {
  std::lock_guard lk(workers_mu);
  for (auto& w : workers) w->thread = std::thread([wp = w.get()] { wp->run(); });
  running.store(!workers.empty());
  threads.store(static_cast<unsigned>(workers.size()));
  queues.store(workers.empty() ? 0u : workers.back()->qid + 1u);
}

FuseUring::FuseUring(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FuseUring::~FuseUring() {
  stop();
  FuseUring::Impl* expected = impl_.get();
  g_impl.compare_exchange_strong(expected, nullptr);
}

std::unique_ptr<FuseUring> FuseUring::install(fuse_session* se, int fuse_fd, FuseUringOptions o) {
  auto impl = std::make_unique<Impl>();
  impl->se = se;
  impl->fd = fuse_fd;
  impl->opts = o;
  FuseUring::Impl* expected = nullptr;
  if (!g_impl.compare_exchange_strong(expected, impl.get())) return nullptr;  // one per process
  fuse_custom_io io;
  std::memset(&io, 0, sizeof io);
  io.read = fuse_uring_internal::hook_read;
  io.writev = fuse_uring_internal::hook_writev;
  if (fuse_session_custom_io(se, &io, fuse_fd) != 0) {
    g_impl.store(nullptr);
    return nullptr;
  }
  return std::unique_ptr<FuseUring>(new FuseUring(std::move(impl)));
}

void FuseUring::stop() {
  std::lock_guard lk(impl_->workers_mu);
  impl_->stopping.store(true);
  for (auto& w : impl_->workers) w->wake();
  for (auto& w : impl_->workers)
    if (w->thread.joinable()) w->thread.join();
  if (impl_->running.exchange(false))
    spdlog::info("FUSE over io_uring: {} requests served from the ring ({} replies from other threads)",
                 impl_->requests.load(), impl_->foreign_replies.load());
  impl_->workers.clear();
}


std::span<uint8_t> current_ring_reply_area() {
  using fuse_uring_internal::kPrefix;
  fuse_uring_internal::Entry* e = fuse_uring_internal::tl_current;
  if (!e) return {};
  return {e->buf + kPrefix, e->payload_size};
}

bool on_ring_worker() { return fuse_uring_internal::tl_worker != nullptr; }

std::string with_transport_stats(const std::string& fs_stats, const FuseUring* uring) {
  nlohmann::json j = nlohmann::json::parse(fs_stats, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fs_stats;
  // INIT's extra flags (fuse_init_ext.h), whatever the transport.
  const nlohmann::json kill_priv = {{"on", init_ext::kill_priv_v2()},
                                    {"unreadable_write_flags", init_ext::unreadable_write_flags()}};
  if (!uring) {
    j["fuse"] = {{"transport", "/dev/fuse"}, {"kill_priv_v2", kill_priv}};
    return j.dump();
  }
  const FuseUring::Impl& u = *uring->impl_;
  j["fuse"] = {{"transport", u.threads.load() ? "io_uring" : "/dev/fuse"},
               {"offered", u.offered.load()},
               {"queues", u.queues.load()},
               {"threads", u.threads.load()},
               {"ring_requests", u.requests.load()},
               {"replies_from_other_threads", u.foreign_replies.load()},
               {"kill_priv_v2", kill_priv}};
  return j.dump();
}

unsigned possible_cpu_count() {
  // /sys/devices/system/cpu/possible: "0-3" or "0,2-5"; the queue count is the highest + 1.
  std::ifstream f("/sys/devices/system/cpu/possible");
  std::string s;
  if (f && std::getline(f, s) && !s.empty()) {
    unsigned highest = 0;
    size_t i = 0;
    bool any = false;
    while (i < s.size()) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      if (j > i) {
        highest = std::max(highest, static_cast<unsigned>(std::stoul(s.substr(i, j - i))));
        any = true;
      }
      i = j + 1;
    }
    if (any) return highest + 1;
  }
  return static_cast<unsigned>(std::max(1, get_nprocs_conf()));
}

}  // namespace ubtrfs::daemon
