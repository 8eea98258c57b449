#include "fuzz/fuzz_image.h"

#include <algorithm>
#include <cstring>

#include "io/checksum.h"
#include "tree/block_io.h"
#include "tree/format.h"
#include "tree/fs_params.h"
#include "tree/superblock.h"

namespace ubtrfs::fuzz {

namespace {

uint64_t get_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; i++) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

std::optional<FuzzImage> parse(std::span<const uint8_t> data) {
  if (data.size() < kHeaderSize || std::memcmp(data.data(), kMagic, 4) != 0) return std::nullopt;
  FuzzImage img;
  img.device_size = get_le(data.data() + 4, 8);
  size_t pos = kHeaderSize;
  while (pos + kRecordHeaderSize <= data.size() && img.records.size() < kMaxRecords) {
    Record r;
    r.offset = get_le(data.data() + pos, 8);
    const uint64_t len = get_le(data.data() + pos + 8, 4);
    pos += kRecordHeaderSize;
    const size_t take = static_cast<size_t>(std::min<uint64_t>(len, data.size() - pos));
    r.bytes.assign(data.begin() + pos, data.begin() + pos + take);
    pos += take;
    img.records.push_back(std::move(r));
  }
  return img;
}

std::vector<uint8_t> serialize(const FuzzImage& img) {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  put_le(out, img.device_size, 8);
  for (const auto& r : img.records) {
    put_le(out, r.offset, 8);
    put_le(out, r.bytes.size(), 4);
    out.insert(out.end(), r.bytes.begin(), r.bytes.end());
  }
  return out;
}

uint64_t clamp_device_size(uint64_t size) {
  size = std::clamp(size, kMinDeviceSize, kMaxDeviceSize);
  return size & ~(SparseDevice::kPage - 1);
}

Status SparseDevice::read(uint64_t off, std::span<uint8_t> buf) {
  if (off > size_ || buf.size() > size_ - off)
    return fail(EINVAL, "read beyond end of fuzz image: offset {} length {} size {}", off, buf.size(), size_);
  std::lock_guard lock(mu_);
  size_t done = 0;
  while (done < buf.size()) {
    const uint64_t pos = off + done;
    const uint64_t in_page = pos % kPage;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kPage - in_page, buf.size() - done));
    auto it = pages_.find(pos / kPage);
    if (it == pages_.end())
      std::memset(buf.data() + done, 0, n);
    else
      std::memcpy(buf.data() + done, it->second.data() + in_page, n);
    done += n;
  }
  return {};
}

Status SparseDevice::write(uint64_t off, std::span<const uint8_t> buf) {
  writes_++;
  if (read_only_) return fail(EROFS, "fuzz image is read-only: write at {}", off);
  if (off > size_ || buf.size() > size_ - off)
    return fail(EINVAL, "write beyond end of fuzz image: offset {} length {} size {}", off, buf.size(), size_);
  std::lock_guard lock(mu_);
  put(off, buf);
  return {};
}

void SparseDevice::load(uint64_t off, std::span<const uint8_t> bytes) {
  if (off >= size_) return;
  bytes = bytes.first(static_cast<size_t>(std::min<uint64_t>(bytes.size(), size_ - off)));
  std::lock_guard lock(mu_);
  put(off, bytes);
}

void SparseDevice::put(uint64_t off, std::span<const uint8_t> bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const uint64_t pos = off + done;
    const uint64_t in_page = pos % kPage;
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kPage - in_page, bytes.size() - done));
    auto& page = pages_[pos / kPage];
    if (page.empty()) page.resize(kPage);
    std::memcpy(page.data() + in_page, bytes.data() + done, n);
    done += n;
  }
}

FuzzImage SparseDevice::snapshot() const {
  std::lock_guard lock(mu_);
  FuzzImage img;
  img.device_size = size_;
  for (const auto& [index, page] : pages_) {
    if (std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0; })) continue;
    const uint64_t off = index * kPage;
    if (!img.records.empty() && img.records.back().offset + img.records.back().bytes.size() == off)
      img.records.back().bytes.insert(img.records.back().bytes.end(), page.begin(), page.end());
    else
      img.records.push_back(Record{off, page});
  }
  return img;
}

std::unique_ptr<SparseDevice> load_image(const FuzzImage& img, bool read_only) {
  auto dev = std::make_unique<SparseDevice>(clamp_device_size(img.device_size), read_only);
  for (const auto& r : img.records) dev->load(r.offset, r.bytes);
  return dev;
}

bool fix_checksum(const FuzzImage& img, Record& rec) {
  const Superblock* sb = nullptr;
  Superblock sb_copy;
  for (const auto& r : img.records) {
    if (r.offset == kSuperInfoOffset && r.bytes.size() >= sizeof(Superblock)) {
      std::memcpy(&sb_copy, r.bytes.data(), sizeof(Superblock));
      sb = &sb_copy;
      break;
    }
  }
  if (!sb || !io::csum_supported(sb->csum_type.get())) return false;
  if (rec.offset == kSuperInfoOffset && rec.bytes.size() >= sizeof(Superblock)) {
    Superblock s;
    std::memcpy(&s, rec.bytes.data(), sizeof(Superblock));
    if (!io::csum_supported(s.csum_type.get())) return false;
    csum_superblock(s);
    std::memcpy(rec.bytes.data(), &s, sizeof(Superblock));
    return true;
  }
  const FsParams params = FsParams::from_super(*sb);
  if (params.nodesize < 4096 || params.nodesize > 65536 || rec.bytes.size() % params.nodesize != 0) return false;
  // A record may hold several tree blocks back to back; only those carrying the filesystem's fsid
  // are tree blocks (the rest is file data, whose checksums live in the csum tree).
  bool fixed = false;
  for (size_t at = 0; at < rec.bytes.size(); at += params.nodesize) {
    std::span<uint8_t> block(rec.bytes.data() + at, params.nodesize);
    if (std::memcmp(block.data() + offsetof(Header, fsid), params.fsid.data(), 16) != 0) continue;
    csum_tree_block(params, block);
    fixed = true;
  }
  return fixed;
}

}  // namespace ubtrfs::fuzz
