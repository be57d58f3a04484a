#include "synth/values.h"

#include <xxhash.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace moepack::synth {
namespace {

// Approximately standard normal: the sum of four uniforms (Irwin-Hall),
// rescaled. Plain arithmetic rather than libm so the pool, and therefore
// every synthetic checkpoint, is bit-identical on every platform; the
// bounded tails (|x| < 3.5) keep every value finite and tame.
float Normal(uint64_t bits) {
  float sum = 0;
  for (int i = 0; i < 4; ++i) sum += (static_cast<float>((bits >> (16 * i)) & 0xFFFF) + 0.5f) / 65536.0f;
  return (sum - 2.0f) * 1.7320508f;
}

float Uniform(uint64_t bits) { return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f); }

float Value(Fill fill, DType dtype, uint64_t bits) {
  switch (fill) {
    case Fill::kWeight:
      // FP8 weights are stored divided by their block scale, so their codes
      // use much of the e4m3 range rather than sitting near zero.
      return dtype == DType::F8_E4M3 ? Normal(bits) * 48.0f : Normal(bits) * 0.02f;
    case Fill::kNorm:
      return 1.0f + Normal(bits) * 0.05f;
    case Fill::kScale:
      return 1e-3f + Uniform(bits) * 9e-3f;
    case Fill::kBytes:
      return static_cast<float>(bits >> 56);
    case Fill::kE8m0:
      return static_cast<float>(118 + (bits >> 32) % 13);
  }
  return 0;
}

std::unique_ptr<uint8_t[]> BuildPool(Fill fill, DType dtype, int elem_size) {
  auto data = std::make_unique<uint8_t[]>(2 * kPoolElements * elem_size);
  // One stream per fill, shared by the dtypes: a BF16 and an F32 checkpoint
  // of the same seed hold the same numbers at different precisions.
  uint64_t state = 0x6D6F657061636B00ull + static_cast<uint64_t>(fill);
  uint8_t* p = data.get();
  for (uint64_t i = 0; i < kPoolElements; ++i, p += elem_size) {
    float v = Value(fill, dtype, SplitMix64(state));
    switch (dtype) {
      case DType::BF16: {
        uint16_t u = EncodeBF16(v);
        std::memcpy(p, &u, 2);
        break;
      }
      case DType::F16: {
        uint16_t u = EncodeF16(v);
        std::memcpy(p, &u, 2);
        break;
      }
      case DType::F32:
        std::memcpy(p, &v, 4);
        break;
      case DType::U8:  // kBytes and kE8m0 values are whole numbers 0 .. 255
        *p = static_cast<uint8_t>(v);
        break;
      default:
        *p = EncodeE4M3(v);
        break;
    }
  }
  std::memcpy(data.get() + kPoolElements * elem_size, data.get(), kPoolElements * elem_size);
  return data;
}

}  // namespace

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint16_t EncodeBF16(float f) {
  uint32_t b = std::bit_cast<uint32_t>(f);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}

uint16_t EncodeF16(float f) {
  uint32_t b = std::bit_cast<uint32_t>(f);
  auto sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  float a = std::fabs(f);
  if (a >= 65520.0f) return sign | 0x7C00u;
  if (a < 6.103515625e-05f) {  // subnormal: multiples of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t m = b & 0x7FFFFFFFu;
  m += 0xFFFu + ((m >> 13) & 1u);
  m = (m >> 13) - ((127u - 15u) << 10);
  return static_cast<uint16_t>(sign | m);
}

uint8_t EncodeE4M3(float f) {
  uint8_t sign = std::signbit(f) ? 0x80 : 0;
  float a = std::fmin(std::fabs(f), 448.0f);
  if (a < 0.015625f) {  // subnormal: multiples of 2^-9; 8 rounds up into the first normal
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  uint32_t b = std::bit_cast<uint32_t>(a);
  b += 0x7FFFFu + ((b >> 20) & 1u);
  uint32_t code = (b >> 20) - ((127u - 7u) << 3);
  if (code > 0x7E) code = 0x7E;  // 0x7F is NaN in e4m3fn
  return static_cast<uint8_t>(sign | code);
}

uint64_t SourceKey(uint64_t seed, std::string_view hub_name) {
  return XXH3_64bits_withSeed(hub_name.data(), hub_name.size(), seed);
}

uint64_t PartKey(uint64_t key, uint64_t first) { return (key % kPoolElements + first % kPoolElements) % kPoolElements; }

const Pool& GetPool(Fill fill, DType dtype) {
  static std::mutex mu;
  static std::map<std::pair<Fill, DType>, std::pair<std::unique_ptr<uint8_t[]>, Pool>> pools;
  std::lock_guard<std::mutex> lock(mu);
  auto& entry = pools[{fill, dtype}];
  if (!entry.first) {
    int size = DTypeBits(dtype) / 8;
    entry.first = BuildPool(fill, dtype, size);
    entry.second = Pool{entry.first.get(), size};
  }
  return entry.second;
}

}  // namespace moepack::synth
