// Checksum and name-hash test vectors (FORMAT.md §1.1, §3.9, §4.1, §8).
#include <catch2/catch.hpp>

#include <cstring>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "io/checksum.h"

using namespace ubtrfs::io;

namespace {

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

uint64_t load_le(const CsumBytes& c, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(c[i]) << (8 * i);
  return v;
}

}  // namespace

TEST_CASE("crc32c block checksum of the standard check string", "[checksum]") {
  const CsumBytes c = compute_csum(CsumType::kCrc32c, bytes_of("123456789"));
  CHECK(load_le(c, 4) == 0xE3069283u);
  // Stored little-endian, left-aligned, the remaining 28 bytes zero.
  CHECK(c[0] == 0x83);
  CHECK(c[3] == 0xE3);
  for (size_t i = 4; i < kCsumFieldSize; ++i) CHECK(c[i] == 0);
}

TEST_CASE("crc32c block checksum is the inverted raw register from ~0", "[checksum]") {
  const auto data = bytes_of("the quick brown fox jumps over the lazy dog");
  const CsumBytes c = compute_csum(CsumType::kCrc32c, data);
  CHECK(load_le(c, 4) == static_cast<uint32_t>(~crc32c_raw(0xFFFFFFFFu, data)));
  // The raw register chains: hashing a then b equals hashing a+b.
  CHECK(crc32c_raw(crc32c_raw(0xFFFFFFFFu, data.first(10)), data.subspan(10)) == crc32c_raw(0xFFFFFFFFu, data));
  CHECK(crc32c_raw(1234, {}) == 1234u);
}

TEST_CASE("xxhash64 of empty input with seed 0", "[checksum]") {
  const CsumBytes c = compute_csum(CsumType::kXxhash64, {});
  CHECK(load_le(c, 8) == 0xEF46DB3751D8E999ull);
  for (size_t i = 8; i < kCsumFieldSize; ++i) CHECK(c[i] == 0);
}

TEST_CASE("name hash vectors from mkfs and kernel images", "[checksum]") {
  CHECK(name_hash("default") == 2378154706u);
  CHECK(name_hash("small.txt") == 474883676u);
  CHECK(name_hash("user.test") == 103394969u);
  // Raw register, seed ~1: the empty name hashes to the seed itself.
  CHECK(name_hash("") == 0xFFFFFFFEu);
}

TEST_CASE("extref hash is the raw crc32c seeded with the parent inode", "[checksum]") {
  CHECK(extref_hash(256, "name") == crc32c_raw(256, bytes_of("name")));
  CHECK(extref_hash(257, "name") != extref_hash(256, "name"));
  CHECK(extref_hash(256, "") == 256u);
}

TEST_CASE("extent data ref hash vectors and inline ref order", "[checksum]") {
  const uint64_t h258 = extent_data_ref_hash(5, 258, 0);
  const uint64_t h257 = extent_data_ref_hash(5, 257, 0);
  CHECK(h258 == 0x0dfb591fbbf5f519ull);
  CHECK(h257 == 0x0dfb591fa80d95eaull);
  // Inline EXTENT_DATA_REFs sort by hash descending: (5,258,0) before (5,257,0).
  CHECK(h258 > h257);
  // Shift by 31: the high crc's lowest bit overlaps the low crc's top bit.
  uint8_t le[8] = {5, 0, 0, 0, 0, 0, 0, 0};
  const uint64_t high = crc32c_raw(0xFFFFFFFFu, {le, 8});
  CHECK((h258 >> 32) == (high >> 1));
}

TEST_CASE("checksum type table", "[checksum]") {
  CHECK(csum_size(0) == 4);
  CHECK(csum_size(1) == 8);
  CHECK(csum_size(2) == 32);
  CHECK(csum_size(3) == 32);
  CHECK(csum_size(4) == 0);
  CHECK(csum_name(0) == "crc32c");
  CHECK(csum_name(1) == "xxhash64");
  CHECK(csum_name(3) == "blake2");
  CHECK(csum_name(99) == "unknown");
  CHECK(csum_supported(0));
  CHECK(csum_supported(1));
  CHECK(csum_supported(2));
  CHECK(csum_supported(3));
  CHECK_FALSE(csum_supported(4));
}

// Published test vectors: SHA-256("abc") (FIPS 180-2) and BLAKE2b-256("abc") (the BLAKE2 reference
// implementation's output for a 32-byte digest).
TEST_CASE("sha256 and blake2b-256 match their published vectors", "[checksum]") {
  const std::string abc = "abc";
  std::span<const uint8_t> in(reinterpret_cast<const uint8_t*>(abc.data()), abc.size());
  auto hex = [](const CsumBytes& b) {
    std::string s;
    for (uint8_t c : b) s += fmt::format("{:02x}", c);
    return s;
  };
  CHECK(hex(compute_csum(CsumType::kSha256, in)) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hex(compute_csum(CsumType::kBlake2, in)) ==
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
}
