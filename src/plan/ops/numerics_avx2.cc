// The AVX2 + F16C kernels: eight elements at a time, the scalar kernels for
// the few columns at the end of a block that do not fill eight. Only the
// functions below are compiled for AVX2 (target attributes), so the binary
// still runs on a baseline x86-64; numerics.cc calls them only where the CPU
// has AVX2 and F16C.
#include <immintrin.h>

#include <cstdint>

#include "plan/ops/numerics.h"
#include "plan/ops/numerics_kernels.h"

#define MOEPACK_AVX2 __attribute__((target("avx2,f16c")))

namespace moepack::ops::numerics {
namespace {

MOEPACK_AVX2 inline __m256i Set1(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }

// ---- fp32 -> output ----

// RNE by integer arithmetic, as FloatToBF16 (vcvtneps2bf16 would be quicker
// but treats subnormal inputs as zero). kNan: whether y may hold NaNs other
// than the decoded FP8 NaN 0x7FF00000 | sign, which the rounding alone
// already turns into its BF16 NaN 0x7FF0 | sign.
template <bool kNan>
MOEPACK_AVX2 inline __m128i ToBF16(__m256 y) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), Set1(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, Set1(0x7FFF))), 16);
  if constexpr (kNan) {
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), Set1(0x40));
    r = _mm256_blendv_epi8(r, quiet, _mm256_castps_si256(_mm256_cmp_ps(y, y, _CMP_UNORD_Q)));
  }
  // Every lane is <= 0xFFFF, so the unsigned-saturating pack is exact; it
  // packs within 128-bit lanes, hence the permute.
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
}

template <FloatType O, bool kNan = true>
MOEPACK_AVX2 inline void Store8(void* dst, uint64_t i, __m256 y) {
  if constexpr (O == FloatType::kF32) {
    _mm256_storeu_ps(static_cast<float*>(dst) + i, y);
  } else {
    const __m128i h = O == FloatType::kBF16 ? ToBF16<kNan>(y) : _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i), h);
  }
}

template <FloatType T>
MOEPACK_AVX2 inline __m256 Load8(const void* src, uint64_t i) {
  if constexpr (T == FloatType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(src) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + i));
    if constexpr (T == FloatType::kF16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

// ---- FP8 dequantization ----

// e4m3 code -> fp32 without a table: the code's magnitude bits shifted up by
// 7, with its sign on top, are an f16 worth the code's value * 2^-8 (the
// e4m3 exponent fills the low four bits of f16's five; its subnormals are
// f16 subnormals), which F16C widens exactly and * 256 restores exactly.
// NaN codes come out as 1.875 and are replaced by the caller.
struct E4M3x8 {
  __m256 value;
  __m256 nan;  // all ones in the lanes of NaN codes
};
MOEPACK_AVX2 inline E4M3x8 DecodeE4M3(const uint8_t* p) {
  const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m128i x = _mm_slli_epi16(b, 7);                                          // sign lands on bit 14
  const __m128i h = _mm_add_epi16(x, _mm_and_si128(x, _mm_set1_epi16(0x4000)));  // ... and carries to 15
  const __m128i nan = _mm_cmpeq_epi16(_mm_and_si128(b, _mm_set1_epi16(0x7F)), _mm_set1_epi16(0x7F));
  return {_mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f)),
          _mm256_castsi256_ps(_mm256_cvtepi16_epi32(nan))};
}

// ---- MXFP4 dequantization ----

// Eight nibbles (one per byte of the low half of `n`) -> e2m1 values: the
// magnitude from the low three bits by a permute, the sign from bit 3.
MOEPACK_AVX2 inline __m256 DecodeE2M1(__m128i n) {
  const __m256i i = _mm256_cvtepu8_epi32(n);
  const __m256 mag = _mm256_permutevar8x32_ps(_mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f), i);
  return _mm256_or_ps(mag, _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(i, 28), Set1(0x80000000u))));
}

// ---- FP8 quantization ----

MOEPACK_AVX2 inline uint32_t MaxLane(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

// FloatToE4M3 on eight lanes, as 32-bit codes. Codes below the smallest normal come from
// adding 2^14, where an fp32 ulp is 2^-9: the addition rounds |y| / 2^-9 to
// nearest even (numerics.cc keeps MXCSR at its default meanwhile).
MOEPACK_AVX2 inline __m256i EncodeE4M3(__m256 y) {
  const __m256i u = _mm256_castps_si256(y);
  const __m256i a = _mm256_and_si256(u, Set1(0x7FFFFFFFu));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(a, 20), Set1(1));
  const __m256i normal =
      _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(a, _mm256_add_epi32(lsb, Set1(0x7FFFF))), 20), Set1(0x3C0));
  const __m256 mag = _mm256_add_ps(_mm256_castsi256_ps(a), _mm256_set1_ps(16384.0f));
  const __m256i sub = _mm256_sub_epi32(_mm256_castps_si256(mag), Set1(0x46800000u));
  __m256i r = _mm256_blendv_epi8(normal, sub, _mm256_cmpgt_epi32(Set1(0x3C800000u), a));
  r = _mm256_blendv_epi8(r, Set1(0x7E), _mm256_cmpgt_epi32(a, Set1(0x43DFFFFFu)));
  r = _mm256_blendv_epi8(r, Set1(0x7F), _mm256_cmpgt_epi32(a, Set1(0x7F800000u)));
  return _mm256_or_si256(r, _mm256_and_si256(_mm256_srli_epi32(u, 24), Set1(0x80)));
}

MOEPACK_AVX2 inline void StoreCodes8(uint8_t* q, __m256i r) {
  const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(r, r), _mm256_setzero_si256());
  // Codes 0..3 sit in bytes 0..3 of the low 128-bit lane, 4..7 of the high.
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q),
                   _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
}

// The spans numerics_kernels.h builds the kernels from.
struct Avx2Spans {
  // Columns [c, end) of one block, eight at a time; returns the first column
  // it left. kNan: whether a product can be NaN (an infinite or NaN scale);
  // with a finite scale only NaN codes are, which Store8 needs not look for.
  template <FloatType O, bool kNan>
  MOEPACK_AVX2 static uint64_t DequantFp8(const uint8_t* w, float scale, uint64_t c, uint64_t end, void* dst) {
    const __m256i sign = Set1(0x80000000u), nan_bits = Set1(kE4M3NanBits);
    const __m256 s = _mm256_set1_ps(scale);
    for (; c + 8 <= end; c += 8) {
      const E4M3x8 d = DecodeE4M3(w + c);
      const __m256i nan = _mm256_or_si256(_mm256_and_si256(_mm256_castps_si256(d.value), sign), nan_bits);
      Store8<O, kNan>(dst, c, _mm256_blendv_ps(_mm256_mul_ps(d.value, s), _mm256_castsi256_ps(nan), d.nan));
    }
    return c;
  }

  template <FloatType O>
  MOEPACK_AVX2 static void Mxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, void* dst) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (uint64_t g = 0; g < groups; ++g) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + 16 * g));
      const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
      const __m128i n0 = _mm_unpacklo_epi8(lo, hi), n1 = _mm_unpackhi_epi8(lo, hi);  // elements 0..15, 16..31
      const __m256 s = _mm256_castsi256_ps(Set1(E8M0Bits(scales[g])));
      const __m256 y[4] = {_mm256_mul_ps(DecodeE2M1(n0), s), _mm256_mul_ps(DecodeE2M1(_mm_srli_si128(n0, 8)), s),
                           _mm256_mul_ps(DecodeE2M1(n1), s), _mm256_mul_ps(DecodeE2M1(_mm_srli_si128(n1, 8)), s)};
      for (int i = 0; i < 4; ++i) {
        if (scales[g] == 255) {  // 2^128 = inf: 0 * inf is NaN
          Store8<O, true>(dst, 32 * g + 8 * i, y[i]);
        } else {
          Store8<O, false>(dst, 32 * g + 8 * i, y[i]);
        }
      }
    }
  }

  template <FloatType T>
  MOEPACK_AVX2 static uint64_t AbsMax(const void* src, uint64_t c, uint64_t end, uint32_t& amax_bits) {
    const __m256i abs = Set1(0x7FFFFFFFu), above_inf = Set1(0x7F800001u);
    __m256i m = _mm256_setzero_si256();
    for (; c + 8 <= end; c += 8) {
      const __m256i a = _mm256_and_si256(_mm256_castps_si256(Load8<T>(src, c)), abs);
      // Signed compare is right: a >= 0. NaN lanes (a > inf) count as 0.
      m = _mm256_max_epu32(m, _mm256_and_si256(a, _mm256_cmpgt_epi32(above_inf, a)));
    }
    amax_bits = std::max(amax_bits, MaxLane(m));
    return c;
  }

  template <FloatType T>
  MOEPACK_AVX2 static uint64_t Quantize(const void* src, float scale, uint64_t c, uint64_t end, uint8_t* q) {
    const __m256 s = _mm256_set1_ps(scale);
    for (; c + 8 <= end; c += 8) StoreCodes8(q + c, EncodeE4M3(_mm256_div_ps(Load8<T>(src, c), s)));
    return c;
  }
};

}  // namespace

const Kernels kAvx2Kernels = MakeKernels<Avx2Spans>();

}  // namespace moepack::ops::numerics
