#include "verify/reference_dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace moepack::internal {
namespace {

// e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities;
// S.1111.111 is NaN (given the quiet pattern torch's cast gives).
float E4M3(uint8_t code) {
  const bool neg = code & 0x80;
  const int e = (code >> 3) & 0xF, m = code & 7;
  if (e == 15 && m == 7) return std::bit_cast<float>(0x7FF00000u | (neg ? 0x80000000u : 0));
  const float v = e == 0 ? std::ldexp(static_cast<float>(m), -9) : std::ldexp(1.0f + m / 8.0f, e - 7);
  return neg ? -v : v;
}

uint16_t BF16(float f) {
  const uint32_t b = std::bit_cast<uint32_t>(f);
  if (std::isnan(f)) return static_cast<uint16_t>((b >> 16) | 0x40);
  return static_cast<uint16_t>((static_cast<uint64_t>(b) + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

uint16_t F16(float f) {
  const uint32_t b = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7E00 | ((b >> 13) & 0x3FF));
  const float a = std::fabs(f);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7C00);
  // The half value nearest a, ties to even: scale to the half's quantum
  // and let the float's own rounding (to nearest even) do the rest.
  const int e = a == 0 ? -25 : std::ilogb(a);
  const int q = e < -14 ? -24 : e - 10;  // exponent of the half's last bit
  const float units = std::nearbyint(std::ldexp(a, -q));  // exact: a * 2^-q has few bits
  const uint32_t n = static_cast<uint32_t>(units);
  if (q == -24) return static_cast<uint16_t>(sign | n);  // subnormal (n may reach 1024: the smallest normal)
  // n in [1024, 2048]: 2048 carries into the next exponent.
  const uint32_t exp = static_cast<uint32_t>(q + 10 + 15) + (n >> 11);
  const uint32_t mant = (n >> (n >> 11)) & 0x3FF;
  return static_cast<uint16_t>(sign | (exp << 10) | mant);
}

void Store(float f, DType out, uint8_t* dst) {
  if (out == DType::F32) {
    std::memcpy(dst, &f, 4);
    return;
  }
  const uint16_t h = out == DType::F16 ? F16(f) : BF16(f);
  std::memcpy(dst, &h, 2);
}

float Load(const uint8_t* src, DType in) {
  if (in == DType::F32) {
    float f;
    std::memcpy(&f, src, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, src, 2);
  if (in == DType::BF16) return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  const float s = h & 0x8000 ? -1.0f : 1.0f;
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() * s : s * std::numeric_limits<float>::infinity();
  return s * (e == 0 ? std::ldexp(static_cast<float>(m), -24) : std::ldexp(1.0f + m / 1024.0f, e - 15));
}

uint8_t E4M3Code(float x) {
  const bool neg = std::signbit(x);
  if (std::isnan(x)) return static_cast<uint8_t>(0x7F | (neg ? 0x80 : 0));
  const float a = std::fabs(x);
  // The two neighbouring codes among 0x00..0x7E (448): codes of one sign
  // increase with their value. Nearest wins, a tie goes to the even code.
  static const std::vector<float> kValues = [] {
    std::vector<float> v(0x7F);
    for (int c = 0; c < 0x7F; ++c) v[c] = E4M3(static_cast<uint8_t>(c));
    return v;
  }();
  uint8_t best = static_cast<uint8_t>(std::lower_bound(kValues.begin(), kValues.end(), a) - kValues.begin());
  if (best > 0x7E) best = 0x7E;
  if (a < 448.0f && best > 0) {
    const float hi = E4M3(best), lo = E4M3(static_cast<uint8_t>(best - 1));
    if (a - lo < hi - a || (a - lo == hi - a && (best - 1) % 2 == 0)) best = static_cast<uint8_t>(best - 1);
  }
  return static_cast<uint8_t>(best | (neg ? 0x80 : 0));
}

uint64_t Bytes(DType d) { return static_cast<uint64_t>(DTypeBits(d) / 8); }

}  // namespace

void RefDequantFP8(const uint8_t* codes, const float* scales, uint64_t rows, uint64_t cols, uint64_t br, uint64_t bc,
                   DType out, uint8_t* dst) {
  const uint64_t sc = (cols + bc - 1) / bc, eo = Bytes(out);
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      Store(E4M3(codes[r * cols + c]) * scales[(r / br) * sc + c / bc], out, dst + (r * cols + c) * eo);
    }
  }
}

void RefDequantMXFP4(const uint8_t* blocks, const uint8_t* scales, uint64_t rows, uint64_t groups, DType out,
                     uint8_t* dst) {
  static const float kE2M1[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
  const uint64_t cols = groups * 32, eo = Bytes(out);
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) {
      const uint64_t g = c / 32, i = c % 32;
      const uint8_t byte = blocks[(r * groups + g) * 16 + i / 2];
      const float v = kE2M1[i % 2 ? byte >> 4 : byte & 0xF];
      // 2^(e - 127) in fp32, as torch.ldexp's pow(2, e) makes it (255: inf).
      const int e = scales[r * groups + g];
      const float p = e == 255 ? std::numeric_limits<float>::infinity() : std::ldexp(1.0f, e - 127);
      Store(v * p, out, dst + (c * rows + r) * eo);
    }
  }
}

void RefQuantizeFP8(const uint8_t* src, DType in, uint64_t rows, uint64_t cols, uint64_t br, uint64_t bc,
                    uint8_t* codes, float* scales) {
  const uint64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc, es = Bytes(in);
  for (uint64_t i = 0; i < sr; ++i) {
    for (uint64_t j = 0; j < sc; ++j) {
      float amax = 0;
      for (uint64_t r = i * br; r < std::min(rows, (i + 1) * br); ++r) {
        for (uint64_t c = j * bc; c < std::min(cols, (j + 1) * bc); ++c) {
          const float x = Load(src + (r * cols + c) * es, in);
          if (!std::isnan(x)) amax = std::max(amax, std::fabs(x));
        }
      }
      float s = amax == 0 ? 1.0f : amax / 448.0f;
      if (s == 0) s = std::numeric_limits<float>::denorm_min();
      scales[i * sc + j] = s;
      for (uint64_t r = i * br; r < std::min(rows, (i + 1) * br); ++r) {
        for (uint64_t c = j * bc; c < std::min(cols, (j + 1) * bc); ++c) {
          codes[r * cols + c] = E4M3Code(Load(src + (r * cols + c) * es, in) / s);
        }
      }
    }
  }
}

}  // namespace moepack::internal
