#include "format/decode.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <string>

namespace moepack::internal {
namespace {

float Half(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) v = man ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

// OCP FP8: E4M3 (bias 7, no infinities, S.1111.111 is NaN) and E5M2 (bias 15).
float Fp8(uint8_t b, int exp_bits, int bias) {
  const int man_bits = 7 - exp_bits;
  const uint32_t sign = b >> 7, exp = (b >> man_bits) & ((1u << exp_bits) - 1), man = b & ((1u << man_bits) - 1);
  float v;
  if (exp_bits == 4 && exp == 15 && man == 7) v = NAN;
  else if (exp_bits == 5 && exp == 31) v = man ? NAN : INFINITY;
  else if (exp == 0) v = std::ldexp(static_cast<float>(man), 1 - bias - man_bits);
  else v = std::ldexp(static_cast<float>(man | (1u << man_bits)), static_cast<int>(exp) - bias - man_bits);
  return sign ? -v : v;
}

template <typename T>
void Ints(const void* data, uint64_t n, std::vector<float>& out) {
  const auto* p = static_cast<const T*>(data);
  for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
}

}  // namespace

Result<std::vector<float>> DecodeToFloat(DType dtype, const void* data, uint64_t n) {
  std::vector<float> out(n);
  const auto* b = static_cast<const uint8_t*>(data);
  switch (dtype) {
    case DType::F32: std::memcpy(out.data(), data, n * 4); break;
    case DType::F64: for (uint64_t i = 0; i < n; ++i) { double d; std::memcpy(&d, b + 8 * i, 8); out[i] = static_cast<float>(d); } break;
    case DType::BF16: for (uint64_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, b + 2 * i, 2); out[i] = std::bit_cast<float>(static_cast<uint32_t>(h) << 16); } break;
    case DType::F16: for (uint64_t i = 0; i < n; ++i) { uint16_t h; std::memcpy(&h, b + 2 * i, 2); out[i] = Half(h); } break;
    case DType::F8_E4M3: for (uint64_t i = 0; i < n; ++i) out[i] = Fp8(b[i], 4, 7); break;
    case DType::F8_E5M2: for (uint64_t i = 0; i < n; ++i) out[i] = Fp8(b[i], 5, 15); break;
    case DType::U8: Ints<uint8_t>(data, n, out); break;
    case DType::I8: Ints<int8_t>(data, n, out); break;
    case DType::I16: Ints<int16_t>(data, n, out); break;
    case DType::I32: Ints<int32_t>(data, n, out); break;
    default:
      return Status::InvalidArgument("cannot decode " + std::string(DTypeName(dtype)) + " to float");
  }
  return out;
}

}  // namespace moepack::internal
