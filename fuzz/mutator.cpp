// The structure-aware mutator of the image targets (fuzz_image.h: mutate_image).
#include <algorithm>
#include <cstring>
#include <random>

#include "fuzz/fuzz_image.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace ubtrfs::fuzz {

size_t mutate_image(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  std::minstd_rand rng(seed);
  auto img = parse({data, size});
  if (!img || img->records.empty() || rng() % 16 == 0) return LLVMFuzzerMutate(data, size, max_size);
  Record& rec = img->records[rng() % img->records.size()];
  if (rec.bytes.empty()) return LLVMFuzzerMutate(data, size, max_size);
  // Mutate a window of the record (at most 4 KiB, so that libFuzzer's byte-level strategies do not
  // spread thin over a whole tree block), in place and with its length kept.
  const size_t window = std::min<size_t>(rec.bytes.size(), 4096);
  const size_t start = rec.bytes.size() == window ? 0 : rng() % (rec.bytes.size() - window + 1);
  std::vector<uint8_t> part(rec.bytes.begin() + start, rec.bytes.begin() + start + window);
  const size_t n = LLVMFuzzerMutate(part.data(), part.size(), part.size());
  std::copy(part.begin(), part.begin() + std::min(n, part.size()), rec.bytes.begin() + start);
  if (rng() % 8 != 0) fix_checksum(*img, rec);
  const auto out = serialize(*img);
  if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

}  // namespace ubtrfs::fuzz
