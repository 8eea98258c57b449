// Fuzz inputs that stand for a whole disk image, and the in-memory device they become.
//
// A btrfs image is 100 MiB and more, almost all of it zeros or file data; a fuzzer wants inputs of a
// few hundred KiB. A fuzz image is therefore a sparse list of the byte ranges that matter (the
// primary superblock, one copy of every tree block, a little file data), everything else zero:
//
//   "UBFZ"                      4 bytes
//   device size                 le64 (clamped to [kMinDeviceSize, kMaxDeviceSize] when loaded)
//   records, until the end:     le64 physical offset, le32 length, `length` bytes
//
// Parsing never fails on garbage: a truncated last record is cut to what is there, records past the
// device end are clipped, and anything after kMaxRecords is ignored, so every input the fuzzer makes
// still loads as some image. Only a wrong magic makes parse() return nullopt.
//
// SparseDevice is the BlockDevice those records are loaded into: 4 KiB pages allocated on first
// write, zeros elsewhere, so a 1 GiB device costs what was written. It counts every write it is
// asked for, refused ones included, which is what the "never writes a corrupt image" rule checks.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/block_device.h"
#include "io/status.h"

namespace ubtrfs::fuzz {

inline constexpr char kMagic[4] = {'U', 'B', 'F', 'Z'};
inline constexpr uint64_t kMinDeviceSize = 2ull << 20;
inline constexpr uint64_t kMaxDeviceSize = 1ull << 30;
inline constexpr size_t kMaxRecords = 4096;
inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kRecordHeaderSize = 12;

struct Record {
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};

struct FuzzImage {
  uint64_t device_size = 0;  // as stored (not clamped)
  std::vector<Record> records;
};

// nullopt only for a wrong or missing magic; otherwise as much as the bytes hold.
std::optional<FuzzImage> parse(std::span<const uint8_t> data);
std::vector<uint8_t> serialize(const FuzzImage& img);
// The device size a loaded image gets.
uint64_t clamp_device_size(uint64_t size);

class SparseDevice final : public io::BlockDevice {
 public:
  static constexpr uint64_t kPage = 4096;
  SparseDevice(uint64_t size, bool read_only) : size_(size), read_only_(read_only) {}
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  std::string name() const override { return "fuzz-image"; }
  Status read(uint64_t off, std::span<uint8_t> buf) override;
  Status write(uint64_t off, std::span<const uint8_t> buf) override;
  Status flush() override { return {}; }

  // Loads bytes without counting a write (building the image, not using it).
  void load(uint64_t off, std::span<const uint8_t> bytes);
  // Write calls made so far (refused ones included).
  uint64_t writes() const { return writes_.load(); }
  // Every page that holds a non-zero byte, as records of one page each, merged when adjacent.
  FuzzImage snapshot() const;

 private:
  void put(uint64_t off, std::span<const uint8_t> bytes);  // REQUIRES: mu_ held
  const uint64_t size_;
  const bool read_only_;
  std::atomic<uint64_t> writes_{0};
  mutable std::mutex mu_;
  std::map<uint64_t, std::vector<uint8_t>> pages_;  // page index -> kPage bytes
};

// `dev` as OpenOptions::device takes it, not owned (the caller keeps it alive past the unmount).
inline std::shared_ptr<io::BlockDevice> borrow(io::BlockDevice& dev) {
  return std::shared_ptr<io::BlockDevice>(std::shared_ptr<void>(), &dev);
}

// A device holding `img` (size clamped).
std::unique_ptr<SparseDevice> load_image(const FuzzImage& img, bool read_only);

// Recomputes the checksum of a superblock record (offset 65536) or of a tree block (a record of
// the superblock's nodesize whose header bytenr is plausible), with the csum type of the image's
// superblock. Returns false when nothing could be recomputed (no superblock, unknown csum type).
bool fix_checksum(const FuzzImage& img, Record& rec);

// The structure-aware mutation shared by the image targets: mutates the bytes inside one record
// (its length kept) with libFuzzer's own mutator, then usually fixes its checksum so the mutation
// reaches the tree checker and the code behind it; sometimes mutates the raw input instead (the
// container itself, lengths and offsets). Same contract as LLVMFuzzerCustomMutator.
size_t mutate_image(uint8_t* data, size_t size, size_t max_size, unsigned seed);

}  // namespace ubtrfs::fuzz
