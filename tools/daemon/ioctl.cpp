// The daemon's ioctl table; see ioctl.h.
#include "tools/daemon/ioctl.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include "tools/common/control_protocol.h"
#include "tools/daemon/logging.h"

namespace ubtrfs::daemon {

namespace {

using Handler = Result<IoctlReply> (*)(DaemonContext& ctx, const IoctlRequest& req);

struct IoctlCommand {
  uint32_t cmd;
  const char* name;
  Handler handler;
};

// UBTRFS_IOC_CONTROL_READ: one chunk of a payload snapshot (tools/common/control_protocol.h).
Result<IoctlReply> control_read(DaemonContext& ctx, const IoctlRequest& req) {
  if (req.in.size() < sizeof(control::Message) || req.out_size < control::kHeaderSize)
    return fail(EINVAL, "control ioctl with {} bytes in, {} out", req.in.size(), req.out_size);
  // Copied out of the request buffer: it need not be aligned for Message.
  auto msg = std::make_unique<control::Message>();
  std::memcpy(msg.get(), req.in.data(), sizeof(control::Message));
  auto reply = std::make_unique<control::Message>();
  auto produce = [&](control::Payload p) -> std::string {
    return p == control::Payload::kStats ? ctx.fs->stats_json() : recent_log_json();
  };
  const size_t n = UBTRFS_TRY(ctx.control.serve(*msg, *reply, produce));
  IoctlReply out;
  const auto* bytes = reinterpret_cast<const uint8_t*>(reply.get());
  out.out.assign(bytes, bytes + std::min(n, req.out_size));
  return out;
}

constexpr IoctlCommand kCommands[] = {
    {control::kIocControlRead, "UBTRFS_IOC_CONTROL_READ", control_read},
};

}  // namespace

Result<IoctlReply> dispatch_ioctl(DaemonContext& ctx, const IoctlRequest& req) {
  for (const auto& c : kCommands)
    if (c.cmd == req.cmd) return c.handler(ctx, req);
  return fail(ENOTTY, "ioctl 0x{:08x} is not supported", req.cmd);
}

const char* ioctl_name(uint32_t cmd) {
  for (const auto& c : kCommands)
    if (c.cmd == cmd) return c.name;
  return nullptr;
}

}  // namespace ubtrfs::daemon
