// ShutdownGate and GatedDevice; the contract is in shutdown_gate.h.
#include "io/shutdown_gate.h"

namespace ubtrfs::io {

bool ShutdownGate::enter() {
  std::lock_guard lk(mu_);
  // Checked under mu_: shut_down() sets the flag under it too, so an enter() either counts before
  // the shutdown (and is waited for) or is refused; none slips past the wait.
  if (shut_.load(std::memory_order_relaxed)) {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  ++in_flight_;
  return true;
}

void ShutdownGate::leave() {
  std::lock_guard lk(mu_);
  if (--in_flight_ == 0) cv_.notify_all();
}

void ShutdownGate::shut_down() {
  std::unique_lock lk(mu_);
  shut_.store(true, std::memory_order_release);
  cv_.wait(lk, [&] { return in_flight_ == 0; });
}

Status GatedDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  if (!gate_.enter())
    return fail(EIO, "{}: filesystem shut down, write at offset {} length {} refused", name(), off, buf.size());
  auto st = inner_->write(off, buf);
  gate_.leave();
  return st;
}

std::vector<Status> GatedDevice::write_many(std::span<const DeviceWrite> writes) {
  std::vector<Status> results(writes.size());
  std::vector<DeviceWrite> admitted;
  std::vector<size_t> index;
  for (size_t i = 0; i < writes.size(); ++i) {
    if (!gate_.enter()) {
      results[i] = fail(EIO, "{}: filesystem shut down, write at offset {} length {} refused", name(),
                        writes[i].offset, writes[i].data.size());
      continue;
    }
    admitted.push_back(writes[i]);
    index.push_back(i);
  }
  if (!admitted.empty()) {
    std::vector<Status> done = inner_->write_many(admitted);
    for (size_t k = 0; k < admitted.size(); ++k) {
      results[index[k]] = std::move(done[k]);
      gate_.leave();
    }
  }
  return results;
}

Status GatedDevice::flush() {
  if (!gate_.enter()) return fail(EIO, "{}: filesystem shut down, flush refused", name());
  auto st = inner_->flush();
  gate_.leave();
  return st;
}

Status GatedDevice::discard(uint64_t off, uint64_t len) {
  if (!gate_.enter())
    return fail(EIO, "{}: filesystem shut down, discard at offset {} length {} refused", name(), off, len);
  auto st = inner_->discard(off, len);
  gate_.leave();
  return st;
}

}  // namespace ubtrfs::io
