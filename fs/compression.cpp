// Compressed extent codecs over Debian's zlib, liblzo2 and libzstd; see compression.h.
#include "fs/compression.h"

#include <algorithm>
#include <cstring>
#include <memory>

#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>

#include "fs/compress_policy.h"
#include "tree/format.h"

namespace ubtrfs::fs {

namespace {

constexpr size_t kLzoLen = 4;  // size of the total-length header and of each segment header

// Largest LZO1X output for `size` input bytes (liblzo's documented bound).
constexpr size_t lzo_worst_compress(size_t size) { return size + size / 16 + 64 + 3; }

uint32_t read_le32(const uint8_t* p) { return load<le32>(p).get(); }
void write_le32(uint8_t* p, uint32_t v) {
  le32 x;
  x = v;
  store(p, x);
}

Result<std::vector<uint8_t>> zlib_decompress(std::span<const uint8_t> in, size_t ram_bytes) {
  std::vector<uint8_t> out(ram_bytes, 0);
  z_stream zs{};
  if (inflateInit(&zs) != Z_OK) return fail(ENOMEM, "zlib decompression failed: cannot initialise inflate");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = Z_OK;
  while (zs.avail_out > 0 && rc == Z_OK) rc = inflate(&zs, Z_NO_FLUSH);
  std::string reason = zs.msg ? zs.msg : "";
  inflateEnd(&zs);
  // Z_BUF_ERROR with output full is fine (trailing bytes of a sector); so is output full with more
  // stream left (the extent's ram_bytes is the authority).
  if (rc != Z_OK && rc != Z_STREAM_END && !(rc == Z_BUF_ERROR && zs.avail_in == 0))
    return fail(EIO, "zlib decompression failed: {} (code {})", reason.empty() ? "corrupt stream" : reason, rc);
  return out;
}

Result<std::vector<uint8_t>> zstd_decompress(std::span<const uint8_t> in, size_t ram_bytes) {
  std::vector<uint8_t> out(ram_bytes, 0);
  std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> ds(ZSTD_createDStream(), ZSTD_freeDStream);
  if (!ds) return fail(ENOMEM, "zstd decompression failed: cannot create a stream");
  ZSTD_initDStream(ds.get());
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  while (ob.pos < ob.size) {
    size_t rc = ZSTD_decompressStream(ds.get(), &ob, &ib);
    if (ZSTD_isError(rc)) return fail(EIO, "zstd decompression failed: {}", ZSTD_getErrorName(rc));
    if (rc == 0) break;  // frame complete
    if (ib.pos == ib.size && ob.pos < ob.size) {
      // Input exhausted mid-frame: the extent is truncated.
      return fail(EIO, "zstd decompression failed: frame truncated after {} of {} bytes", ob.pos, ram_bytes);
    }
  }
  // zstd may use the unfilled tail of the output as scratch space (its literal buffer), so the
  // zero fill of a short frame must happen after decoding.
  std::fill(out.begin() + static_cast<ptrdiff_t>(ob.pos), out.end(), 0);
  return out;
}

Result<std::vector<uint8_t>> lzo_decompress(std::span<const uint8_t> in, size_t ram_bytes, uint32_t sectorsize) {
  if (in.size() < kLzoLen) return fail(EIO, "lzo decompression failed: {} bytes is too short for the header", in.size());
  uint32_t total = read_le32(in.data());
  if (total < kLzoLen || total > in.size())
    return fail(EIO, "lzo decompression failed: total length {} outside [4, {}]", total, in.size());
  std::vector<uint8_t> out(ram_bytes, 0);
  std::vector<uint8_t> sector(sectorsize);
  size_t pos = kLzoLen;
  size_t out_pos = 0;
  while (pos < total && out_pos < ram_bytes) {
    size_t left_in_sector = sectorsize - pos % sectorsize;
    if (left_in_sector < kLzoLen) {
      pos += left_in_sector;  // padding zeros: the next segment header starts a sector
      if (pos >= total) break;
    }
    if (total - pos < kLzoLen)
      return fail(EIO, "lzo decompression failed: segment header at byte {} runs past total length {}", pos, total);
    uint32_t seg_len = read_le32(in.data() + pos);
    pos += kLzoLen;
    if (seg_len == 0 || seg_len > lzo_worst_compress(sectorsize) || seg_len > total - pos)
      return fail(EIO, "lzo decompression failed: bad segment length {} at byte {} (total {})", seg_len, pos - kLzoLen,
                  total);
    lzo_uint dst_len = sectorsize;
    int rc = lzo1x_decompress_safe(in.data() + pos, seg_len, sector.data(), &dst_len, nullptr);
    if (rc != LZO_E_OK && rc != LZO_E_INPUT_NOT_CONSUMED)
      return fail(EIO, "lzo decompression failed: segment at byte {} is corrupt (lzo error {})", pos - kLzoLen, rc);
    size_t n = std::min<size_t>(dst_len, ram_bytes - out_pos);
    std::memcpy(out.data() + out_pos, sector.data(), n);
    out_pos += n;
    pos += seg_len;
  }
  return out;
}

Result<std::vector<uint8_t>> lzo_compress(std::span<const uint8_t> in, uint32_t sectorsize) {
  static const bool lzo_ready = (lzo_init() == LZO_E_OK);
  if (!lzo_ready) return fail(EIO, "lzo compression failed: lzo_init");
  std::vector<uint8_t> wrk(LZO1X_1_MEM_COMPRESS);
  std::vector<uint8_t> out(kLzoLen);
  std::vector<uint8_t> seg(lzo_worst_compress(sectorsize));
  for (size_t off = 0; off < in.size(); off += sectorsize) {
    size_t len = std::min<size_t>(sectorsize, in.size() - off);
    lzo_uint seg_len = 0;
    if (lzo1x_1_compress(in.data() + off, len, seg.data(), &seg_len, wrk.data()) != LZO_E_OK)
      return fail(EIO, "lzo compression failed at input offset {}", off);
    size_t left_in_sector = sectorsize - out.size() % sectorsize;
    if (left_in_sector < kLzoLen) out.resize(out.size() + left_in_sector, 0);
    size_t at = out.size();
    out.resize(at + kLzoLen + seg_len);
    write_le32(out.data() + at, static_cast<uint32_t>(seg_len));
    std::memcpy(out.data() + at + kLzoLen, seg.data(), seg_len);
  }
  write_le32(out.data(), static_cast<uint32_t>(out.size()));
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> decompress_extent(uint8_t compression, std::span<const uint8_t> in, size_t ram_bytes,
                                               uint32_t sectorsize) {
  if (ram_bytes > (128u << 20))
    return fail(EIO, "compressed extent claims {} uncompressed bytes (limit 128 MiB)", ram_bytes);
  switch (compression) {
    case kCompressZlib: return zlib_decompress(in, ram_bytes);
    case kCompressLzo: return lzo_decompress(in, ram_bytes, sectorsize);
    case kCompressZstd: return zstd_decompress(in, ram_bytes);
    default: return fail(EOPNOTSUPP, "unknown compression type {}", compression);
  }
}

Result<std::vector<uint8_t>> compress_extent(uint8_t compression, std::span<const uint8_t> in, uint32_t sectorsize,
                                             int level) {
  level = compress_level_for(compression, level);
  switch (compression) {
    case kCompressZlib: {
      uLongf cap = compressBound(in.size());
      std::vector<uint8_t> out(cap);
      if (compress2(out.data(), &cap, in.data(), in.size(), level) != Z_OK) return fail(EIO, "zlib compression failed");
      out.resize(cap);
      return out;
    }
    case kCompressZstd: {
      std::vector<uint8_t> out(ZSTD_compressBound(in.size()));
      size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), level);
      if (ZSTD_isError(n)) return fail(EIO, "zstd compression failed: {}", ZSTD_getErrorName(n));
      out.resize(n);
      return out;
    }
    case kCompressLzo: return lzo_compress(in, sectorsize);
    default: return fail(EOPNOTSUPP, "unknown compression type {}", compression);
  }
}

}  // namespace ubtrfs::fs
