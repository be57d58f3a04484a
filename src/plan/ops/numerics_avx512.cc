// The AVX-512 (F, BW, VL) kernels: sixteen elements at a time, the scalar
// kernels for the few columns at the end of a block that do not fill
// sixteen. The same arithmetic as numerics_avx2.cc, with masks where AVX2
// blends; only these functions are compiled for AVX-512 (target
// attributes), and numerics.cc calls them only where the CPU has it.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 intrinsics, which start from
// _mm512_undefined_* (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "plan/ops/numerics.h"
#include "plan/ops/numerics_kernels.h"

#define MOEPACK_AVX512 __attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl")))

namespace moepack::ops::numerics {
namespace {

MOEPACK_AVX512 inline __m512i Set1(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }

// ---- fp32 -> output ----

// RNE by integer arithmetic, as FloatToBF16: AVX512-BF16's vcvtneps2bf16
// would be quicker but treats subnormal inputs as zero. kNan: whether y may
// hold NaNs other than the decoded FP8 NaN 0x7FF00000 | sign, which the
// rounding alone already turns into its BF16 NaN 0x7FF0 | sign.
template <bool kNan>
MOEPACK_AVX512 inline __m256i ToBF16(__m512 y) {
  const __m512i u = _mm512_castps_si512(y);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), Set1(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, Set1(0x7FFF))), 16);
  if constexpr (kNan) {
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), Set1(0x40));
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q), quiet);
  }
  return _mm512_cvtepi32_epi16(r);
}

template <FloatType O, bool kNan = true>
MOEPACK_AVX512 inline void Store16(void* dst, uint64_t i, __m512 y) {
  if constexpr (O == FloatType::kF32) {
    _mm512_storeu_ps(static_cast<float*>(dst) + i, y);
  } else {
    const __m256i h = O == FloatType::kBF16 ? ToBF16<kNan>(y)
                                            : _mm512_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + i), h);
  }
}

template <FloatType T>
MOEPACK_AVX512 inline __m512 Load16(const void* src, uint64_t i) {
  if constexpr (T == FloatType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(src) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i));
    if constexpr (T == FloatType::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// ---- FP8 dequantization ----

// e4m3 -> fp32 through f16, as in numerics_avx2.cc: sign | magnitude << 7 is
// the f16 of the code's value * 2^-8, widened exactly and scaled back
// exactly; NaN codes are flagged in `nan` and replaced by the caller.
struct E4M3x16 {
  __m512 value;
  __mmask16 nan;
};
MOEPACK_AVX512 inline E4M3x16 DecodeE4M3(const uint8_t* p) {
  const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i x = _mm256_slli_epi16(b, 7);                                             // sign lands on bit 14
  const __m256i h = _mm256_add_epi16(x, _mm256_and_si256(x, _mm256_set1_epi16(0x4000)));  // ... and carries to 15
  const __m256i seven = _mm256_set1_epi16(0x7F);
  return {_mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f)),
          _mm256_cmpeq_epi16_mask(_mm256_and_si256(b, seven), seven)};
}

// ---- MXFP4 dequantization ----

// Sixteen nibbles (one per byte of `n`) -> e2m1 values: the whole table
// fits one register, so one permute decodes them.
MOEPACK_AVX512 inline __m512 DecodeE2M1(__m128i n) {
  const __m512 table = _mm512_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f, -0.0f, -0.5f, -1.0f, -1.5f,
                                      -2.0f, -3.0f, -4.0f, -6.0f);
  return _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(n), table);
}

// ---- FP8 quantization ----

// FloatToE4M3 on sixteen lanes, as 32-bit codes. Codes below the smallest normal come from
// adding 2^14, where an fp32 ulp is 2^-9: the addition rounds |y| / 2^-9 to
// nearest even (numerics.cc keeps MXCSR at its default meanwhile).
MOEPACK_AVX512 inline __m512i EncodeE4M3(__m512 y) {
  const __m512i u = _mm512_castps_si512(y);
  const __m512i a = _mm512_and_si512(u, Set1(0x7FFFFFFFu));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(a, 20), Set1(1));
  const __m512i normal =
      _mm512_sub_epi32(_mm512_srli_epi32(_mm512_add_epi32(a, _mm512_add_epi32(lsb, Set1(0x7FFFF))), 20), Set1(0x3C0));
  const __m512 mag = _mm512_add_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(16384.0f));
  const __m512i sub = _mm512_sub_epi32(_mm512_castps_si512(mag), Set1(0x46800000u));
  __m512i r = _mm512_mask_mov_epi32(normal, _mm512_cmplt_epu32_mask(a, Set1(0x3C800000u)), sub);
  r = _mm512_mask_mov_epi32(r, _mm512_cmpge_epu32_mask(a, Set1(0x43E00000u)), Set1(0x7E));
  r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(a, Set1(0x7F800000u)), Set1(0x7F));
  return _mm512_or_si512(r, _mm512_and_si512(_mm512_srli_epi32(u, 24), Set1(0x80)));
}

// The spans numerics_kernels.h builds the kernels from.
struct Avx512Spans {
  // Columns [c, end) of one block, sixteen at a time; returns the first
  // column it left. kNan: whether a product can be NaN (an infinite or NaN
  // scale); with a finite scale only NaN codes are, which Store16 needs not
  // look for.
  template <FloatType O, bool kNan>
  MOEPACK_AVX512 static uint64_t DequantFp8(const uint8_t* w, float scale, uint64_t c, uint64_t end, void* dst) {
    const __m512i sign = Set1(0x80000000u), nan_bits = Set1(kE4M3NanBits);
    const __m512 s = _mm512_set1_ps(scale);
    for (; c + 16 <= end; c += 16) {
      const E4M3x16 d = DecodeE4M3(w + c);
      const __m512i nan = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(d.value), sign), nan_bits);
      Store16<O, kNan>(dst, c, _mm512_mask_mov_ps(_mm512_mul_ps(d.value, s), d.nan, _mm512_castsi512_ps(nan)));
    }
    return c;
  }

  template <FloatType O>
  MOEPACK_AVX512 static void Mxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, void* dst) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (uint64_t g = 0; g < groups; ++g) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blocks + 16 * g));
      const __m128i lo = _mm_and_si128(b, low4), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low4);
      const __m512 s = _mm512_castsi512_ps(Set1(E8M0Bits(scales[g])));
      const __m512 y0 = _mm512_mul_ps(DecodeE2M1(_mm_unpacklo_epi8(lo, hi)), s);  // elements 0..15
      const __m512 y1 = _mm512_mul_ps(DecodeE2M1(_mm_unpackhi_epi8(lo, hi)), s);  // 16..31
      if (scales[g] == 255) {  // 2^128 = inf: 0 * inf is NaN
        Store16<O, true>(dst, 32 * g, y0);
        Store16<O, true>(dst, 32 * g + 16, y1);
      } else {
        Store16<O, false>(dst, 32 * g, y0);
        Store16<O, false>(dst, 32 * g + 16, y1);
      }
    }
  }

  template <FloatType T>
  MOEPACK_AVX512 static uint64_t AbsMax(const void* src, uint64_t c, uint64_t end, uint32_t& amax_bits) {
    const __m512i abs = Set1(0x7FFFFFFFu), inf = Set1(0x7F800000u);
    __m512i m = _mm512_setzero_si512();
    for (; c + 16 <= end; c += 16) {
      const __m512i a = _mm512_and_si512(_mm512_castps_si512(Load16<T>(src, c)), abs);
      m = _mm512_mask_max_epu32(m, _mm512_cmple_epu32_mask(a, inf), m, a);  // NaN lanes left out
    }
    amax_bits = std::max(amax_bits, static_cast<uint32_t>(_mm512_reduce_max_epu32(m)));
    return c;
  }

  template <FloatType T>
  MOEPACK_AVX512 static uint64_t Quantize(const void* src, float scale, uint64_t c, uint64_t end, uint8_t* q) {
    const __m512 s = _mm512_set1_ps(scale);
    for (; c + 16 <= end; c += 16) {
      const __m512i codes = EncodeE4M3(_mm512_div_ps(Load16<T>(src, c), s));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + c), _mm512_cvtepi32_epi8(codes));
    }
    return c;
  }
};

}  // namespace

const Kernels kAvx512Kernels = MakeKernels<Avx512Spans>();

}  // namespace moepack::ops::numerics
