// Crash images without copying the disk: a read-only base image plus layers of 512-byte sectors.
//
// Owns: SectorMap (sectors that differ from what lies below them, with an order-independent hash of
// the difference) and OverlayDevice (a BlockDevice reading top layer first: its own scratch writes,
// then the given layers top-down, then the base).
// Invariants: SectorMap::hash() is sum over its sectors of H(sector, new) - H(sector, below) mod
// 2^64, so two stacks over the same base with equal total hash hold (with overwhelming probability)
// the same image, however the writes that built them were ordered or split. A SectorMap never
// changes the layers below it; OverlayDevice writes go only to its scratch map.
// Thread safety: OverlayDevice serializes its own calls; layers must not change while it is used.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "io/block_device.h"

namespace ubtrfs::crash {

inline constexpr uint64_t kSector = 512;

class SectorMap;

// What lies below a layer: the base image and the layers between (top first).
struct SectorStack {
  std::span<const uint8_t> base;
  std::vector<const SectorMap*> layers;  // top first
  // The 512 bytes of `sector` as this stack holds them.
  const uint8_t* sector(uint64_t sector) const;
};

class SectorMap {
 public:
  using Sector = std::array<uint8_t, kSector>;

  // Writes `bytes` at byte offset `off` over `below` (partial sectors are merged with what lies
  // below); the hash is updated sector by sector.
  void write(uint64_t off, std::span<const uint8_t> bytes, const SectorStack& below);
  // Only the sectors of the write whose index within it is in `keep` (a torn write).
  void write_sectors(uint64_t off, std::span<const uint8_t> bytes, const std::vector<uint64_t>& keep,
                     const SectorStack& below);
  const uint8_t* find(uint64_t sector) const {
    auto it = sectors_.find(sector);
    return it == sectors_.end() ? nullptr : it->second.data();
  }
  uint64_t hash() const { return hash_; }
  size_t size() const { return sectors_.size(); }
  void clear() {
    sectors_.clear();
    hash_ = 0;
  }
  const std::unordered_map<uint64_t, Sector>& sectors() const { return sectors_; }

 private:
  void put(uint64_t sector, const uint8_t* data, const SectorStack& below);
  std::unordered_map<uint64_t, Sector> sectors_;
  uint64_t hash_ = 0;
};

class OverlayDevice final : public io::BlockDevice {
 public:
  OverlayDevice(SectorStack stack, std::string name) : stack_(std::move(stack)), name_(std::move(name)) {}
  uint64_t size() const override { return stack_.base.size(); }
  bool read_only() const override { return false; }
  std::string name() const override { return name_; }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  Status flush() override { return {}; }
  // Writes nobody asked for after a crash image was judged read-only show up here.
  const SectorMap& scratch() const { return scratch_; }

 private:
  std::mutex mu_;
  SectorStack stack_;  // scratch_ goes on top of it
  SectorMap scratch_;
  std::string name_;
};

}  // namespace ubtrfs::crash
