// The scalar definitions of numerics.h and the plain x86-64 kernels built on
// them: the kernels any CPU runs, and the meaning the SIMD kernels must
// reproduce bit for bit.
#include <array>
#include <bit>
#include <cstdint>

#include "plan/ops/numerics.h"
#include "plan/ops/numerics_kernels.h"

namespace moepack::ops {
namespace {

using numerics::kE4M3NanBits;

// fp32 bits of every e4m3 code, computed from the format rather than
// written out, so the table cannot hold a typo.
constexpr std::array<uint32_t, 256> MakeE4M3Table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t c = 0; c < 256; ++c) {
    const uint32_t sign = (c & 0x80u) << 24, e = (c >> 3) & 0xFu, m = c & 7u;
    uint32_t mag = 0;
    if ((c & 0x7Fu) == 0x7Fu) {
      mag = kE4M3NanBits;
    } else if (e != 0) {
      mag = ((e + 127 - 7) << 23) | (m << 20);
    } else if (m != 0) {  // m * 2^-9 = 1.f * 2^(p - 9), p the top set bit of m
      const uint32_t p = m >= 4 ? 2 : m >= 2 ? 1 : 0;
      mag = ((p - 9 + 127) << 23) | ((m - (1u << p)) << (23 - p));
    }
    t[c] = sign | mag;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kE4M3 = MakeE4M3Table();

constexpr float kE2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Rounds the positive integer m * 2^-shift to nearest, ties to even.
inline uint32_t ShiftRoundEven(uint32_t m, uint32_t shift) {
  const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  return q + (rem > half || (rem == half && (q & 1u)) ? 1u : 0u);
}

template <FloatType O>
inline void Store(void* dst, uint64_t i, float y) {
  if constexpr (O == FloatType::kBF16) {
    static_cast<uint16_t*>(dst)[i] = FloatToBF16(y);
  } else if constexpr (O == FloatType::kF16) {
    static_cast<uint16_t*>(dst)[i] = FloatToF16(y);
  } else {
    static_cast<float*>(dst)[i] = y;
  }
}

template <FloatType T>
inline float Load(const void* src, uint64_t i) {
  if constexpr (T == FloatType::kBF16) {
    return BF16ToFloat(static_cast<const uint16_t*>(src)[i]);
  } else if constexpr (T == FloatType::kF16) {
    return F16ToFloat(static_cast<const uint16_t*>(src)[i]);
  } else {
    return static_cast<const float*>(src)[i];
  }
}

// Spans that do every column: the scalar kernels have no tails.
struct ScalarSpans {
  template <FloatType O, bool kNan>
  static uint64_t DequantFp8(const uint8_t* w, float scale, uint64_t c, uint64_t end, void* dst) {
    for (; c < end; ++c) {
      const float v = std::bit_cast<float>(kE4M3[w[c]]);
      // The NaN code wins over a NaN scale: which NaN a multiply returns is
      // the CPU's choice, this is ours.
      Store<O>(dst, c, (w[c] & 0x7F) == 0x7F ? v : v * scale);
    }
    return c;
  }

  template <FloatType O>
  static void Mxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, void* dst) {
    for (uint64_t g = 0; g < groups; ++g) {
      const float s = std::bit_cast<float>(numerics::E8M0Bits(scales[g]));
      for (uint64_t b = 0; b < 16; ++b) {
        const uint8_t byte = blocks[16 * g + b];
        Store<O>(dst, 32 * g + 2 * b, kE2M1[byte & 0xF] * s);
        Store<O>(dst, 32 * g + 2 * b + 1, kE2M1[byte >> 4] * s);
      }
    }
  }

  template <FloatType T>
  static uint64_t AbsMax(const void* src, uint64_t c, uint64_t end, uint32_t& amax_bits) {
    for (; c < end; ++c) {
      const uint32_t a = std::bit_cast<uint32_t>(Load<T>(src, c)) & 0x7FFFFFFFu;
      if (a <= 0x7F800000u && a > amax_bits) amax_bits = a;  // NaNs left out
    }
    return c;
  }

  template <FloatType T>
  static uint64_t Quantize(const void* src, float scale, uint64_t c, uint64_t end, uint8_t* q) {
    for (; c < end; ++c) q[c] = FloatToE4M3(Load<T>(src, c) / scale);
    return c;
  }
};

}  // namespace

float E4M3ToFloat(uint8_t code) { return std::bit_cast<float>(kE4M3[code]); }

float E2M1ToFloat(uint8_t nibble) { return kE2M1[nibble & 0xF]; }

float BF16ToFloat(uint16_t bits) { return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16); }

float F16ToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t e = (bits >> 10) & 0x1Fu, m = bits & 0x3FFu;
  uint32_t mag;
  if (e == 0x1F) {
    // inf, or a NaN with its sign and payload, made quiet as F16C does
    mag = 0x7F800000u | (m << 13) | (m != 0 ? 0x00400000u : 0u);
  } else if (e != 0) {
    mag = ((e + 127 - 15) << 23) | (m << 13);
  } else if (m != 0) {  // m * 2^-24: shift m up to its implicit bit
    const uint32_t p = 31 - static_cast<uint32_t>(__builtin_clz(m));  // top set bit, 0..9
    mag = ((p + 127 - 24) << 23) | ((m << (23 - p)) & 0x7FFFFFu);
  } else {
    mag = 0;
  }
  return std::bit_cast<float>(sign | mag);
}

uint16_t FloatToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Adding just under half an ulp, plus the kept lsb, carries exactly when
  // RNE rounds up; a carry out of the mantissa bumps the exponent, to
  // infinity past the largest finite value.
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

uint16_t FloatToF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 (max + half an ulp), inf
  if (a >= 0x38800000u) {                                               // >= 2^-14: a normal half
    return static_cast<uint16_t>(sign | ((a - ((127u - 15u) << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13));
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25, half the smallest subnormal: ties to 0
  // A subnormal half k * 2^-24: k = (1.m * 2^(e-127)) / 2^-24, rounded.
  const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
  return static_cast<uint16_t>(sign | ShiftRoundEven(m, 126 - e));
}

uint8_t FloatToE4M3(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return sign | 0x7Fu;
  if (a >= 0x43E00000u) return sign | 0x7Eu;  // >= 448, saturate
  if (a >= 0x3C800000u) {                     // >= 2^-6: a normal code; 448 is not reached from below 448
    return static_cast<uint8_t>(sign | (((a + 0x7FFFFu + ((a >> 20) & 1u)) >> 20) - ((127u - 7u) << 3)));
  }
  // |f| < 2^-6: the code is k = |f| / 2^-9 rounded (8, the smallest normal,
  // when it rounds up to 2^-6). In integers, so that no floating-point mode
  // of the caller's can change it.
  if (a <= 0x3A800000u) return sign;  // <= 2^-10, half the smallest subnormal: ties to 0
  const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;  // |f| = m * 2^(e-150)
  return static_cast<uint8_t>(sign | ShiftRoundEven(m, 141 - e));
}

namespace numerics {
const Kernels kScalarKernels = MakeKernels<ScalarSpans>();
}  // namespace numerics

}  // namespace moepack::ops
