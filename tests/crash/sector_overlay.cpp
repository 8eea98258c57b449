// SectorMap and OverlayDevice (sector_overlay.h): copy-on-write crash images in 512-byte sectors.
#include "tests/crash/sector_overlay.h"

#include <xxhash.h>

#include <cstring>

namespace ubtrfs::crash {
namespace {

uint64_t sector_hash(uint64_t sector, const uint8_t* data) { return XXH64(data, kSector, sector * 0x9e3779b97f4a7c15ull); }

}  // namespace

const uint8_t* SectorStack::sector(uint64_t s) const {
  for (const SectorMap* m : layers)
    if (const uint8_t* p = m->find(s)) return p;
  return base.data() + s * kSector;
}

void SectorMap::put(uint64_t s, const uint8_t* data, const SectorStack& below) {
  auto it = sectors_.find(s);
  const uint8_t* old = it != sectors_.end() ? it->second.data() : below.sector(s);
  hash_ += sector_hash(s, data) - sector_hash(s, old);
  if (it == sectors_.end()) it = sectors_.emplace(s, Sector{}).first;
  std::memcpy(it->second.data(), data, kSector);
}

void SectorMap::write(uint64_t off, std::span<const uint8_t> bytes, const SectorStack& below) {
  Sector tmp;
  uint64_t pos = off;
  size_t done = 0;
  while (done < bytes.size()) {
    const uint64_t s = pos / kSector, in = pos % kSector;
    const size_t n = std::min<size_t>(kSector - in, bytes.size() - done);
    if (in == 0 && n == kSector) {
      put(s, bytes.data() + done, below);
    } else {
      const uint8_t* cur = find(s);
      std::memcpy(tmp.data(), cur ? cur : below.sector(s), kSector);
      std::memcpy(tmp.data() + in, bytes.data() + done, n);
      put(s, tmp.data(), below);
    }
    pos += n;
    done += n;
  }
}

void SectorMap::write_sectors(uint64_t off, std::span<const uint8_t> bytes, const std::vector<uint64_t>& keep,
                              const SectorStack& below) {
  // Torn writes are only generated for sector-aligned writes (every tree block, data and superblock
  // write of ubtrfs is); index i covers bytes [i*512, (i+1)*512) of the write.
  for (uint64_t i : keep) {
    const uint64_t from = i * kSector;
    if (from >= bytes.size()) continue;
    write(off + from, bytes.subspan(from, std::min<uint64_t>(kSector, bytes.size() - from)), below);
  }
}

Status OverlayDevice::read(uint64_t off, std::span<uint8_t> buf) {
  if (off > size() || buf.size() > size() - off)
    return fail(EINVAL, "read beyond end of device {}: offset {} length {}", name_, off, buf.size());
  std::lock_guard lk(mu_);
  uint64_t pos = off;
  size_t done = 0;
  while (done < buf.size()) {
    const uint64_t s = pos / kSector, in = pos % kSector;
    const size_t n = std::min<size_t>(kSector - in, buf.size() - done);
    const uint8_t* src = scratch_.find(s);
    if (!src) src = stack_.sector(s);
    std::memcpy(buf.data() + done, src + in, n);
    pos += n;
    done += n;
  }
  return {};
}

Status OverlayDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  if (off > size() || buf.size() > size() - off)
    return fail(EINVAL, "write beyond end of device {}: offset {} length {}", name_, off, buf.size());
  std::lock_guard lk(mu_);
  scratch_.write(off, buf, stack_);
  return {};
}

}  // namespace ubtrfs::crash
