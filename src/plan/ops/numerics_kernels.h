// The per-instruction-set implementations behind numerics.h, one table per
// instruction set, so that the tests and the benchmark can run each of them
// on the same inputs (the dispatcher only ever runs the widest one).
//
// An instruction set supplies only "spans" (MakeKernels below): the vector
// loops over part of one block. The walk over a row's blocks, the hand-off
// of each block's last few columns to the scalar kernels and the dispatch
// on the float type are written once, here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "plan/ops/numerics.h"

namespace moepack::ops::numerics {

enum class Isa : uint8_t { kScalar, kAvx2, kAvx512 };

// Row kernels. The quantization is split in two so that numerics.cc owns the
// blocking once: AbsMaxRow folds a row into per-block maxima of |x| over
// non-NaN elements, kept as fp32 bit patterns (for non-negative floats the
// integer order is the float order), and QuantizeRow writes a row's codes
// given each block's scale.
struct Kernels {
  void (*dequant_fp8_row)(const uint8_t* w, const float* scales, uint64_t cols, uint64_t block_cols,
                          FloatType out, void* dst, uint64_t col_offset);
  void (*dequant_mxfp4_row)(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, FloatType out,
                            void* dst);
  void (*abs_max_row)(const void* src, FloatType type, uint64_t cols, uint64_t block_cols, uint32_t* amax_bits);
  void (*quantize_row)(const void* src, FloatType type, uint64_t cols, uint64_t block_cols, const float* scales,
                       uint8_t* q);
};

// Whether this CPU (and OS) runs `isa`. kScalar always.
bool IsaSupported(Isa isa);
// The kernels of `isa`. REQUIRES: IsaSupported(isa).
const Kernels& KernelsFor(Isa isa);
// The widest supported instruction set, chosen once.
Isa ActiveIsa();
const char* IsaName(Isa isa);

// DequantFp8 and QuantizeFp8 of numerics.h on the kernels `k`.
void DequantFp8With(const Kernels& k, const uint8_t* w, const float* scales, uint64_t rows, uint64_t cols,
                    uint64_t block_rows, uint64_t block_cols, FloatType out, void* dst);
void QuantizeFp8With(const Kernels& k, const void* src, FloatType src_type, uint64_t rows, uint64_t cols,
                     uint64_t row_stride, uint64_t block_rows, uint64_t block_cols, uint8_t* q, float* scale_inv);

extern const Kernels kScalarKernels;
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;

// The column block holding column c of a (part of a) row that starts at
// column col_offset: its index, and the end of its columns in the part.
struct ColBlock {
  uint64_t index;
  uint64_t end;
};
inline ColBlock BlockOf(uint64_t c, uint64_t cols, uint64_t block_cols, uint64_t col_offset) {
  const uint64_t index = (col_offset + c) / block_cols;
  return {index, std::min(cols, (index + 1) * block_cols - col_offset)};
}

// Calls f(std::integral_constant<FloatType, t>{}), turning the runtime type
// into the template argument the kernels are compiled for.
template <typename F>
inline void WithFloatType(FloatType t, F&& f) {
  switch (t) {
    case FloatType::kBF16: return f(std::integral_constant<FloatType, FloatType::kBF16>{});
    case FloatType::kF16: return f(std::integral_constant<FloatType, FloatType::kF16>{});
    case FloatType::kF32: return f(std::integral_constant<FloatType, FloatType::kF32>{});
  }
}

// Element i of an array of elem_bytes elements.
inline void* At(void* p, uint64_t i, uint32_t elem_bytes) { return static_cast<uint8_t*>(p) + i * elem_bytes; }
inline const void* At(const void* p, uint64_t i, uint32_t elem_bytes) {
  return static_cast<const uint8_t*>(p) + i * elem_bytes;
}

// The fp32 bits of an e8m0 scale 2^(e - 127): the exponent field, except 0,
// whose 2^-127 is the subnormal 0x00400000 (255 gives inf's bits).
inline uint32_t E8M0Bits(uint8_t e) { return e == 0 ? 0x00400000u : static_cast<uint32_t>(e) << 23; }

// The decoded NaN of an FP8 NaN code, without its sign.
inline constexpr uint32_t kE4M3NanBits = 0x7FF00000u;

// ---- Row kernels from spans ----
//
// S provides, for each float type X (the output or source type), functions
// that do whole vectors of the columns [c, end) of one block and return the
// first column they left (the scalar spans do them all):
//   static uint64_t DequantFp8<X, kNan>(const uint8_t* w, float scale, uint64_t c, uint64_t end, void* dst);
//   static uint64_t AbsMax<X>(const void* src, uint64_t c, uint64_t end, uint32_t& amax_bits);
//   static uint64_t Quantize<X>(const void* src, float scale, uint64_t c, uint64_t end, uint8_t* q);
// and a whole MXFP4 row (groups have no tails):
//   static void Mxfp4Row<X>(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, void* dst);
// DequantFp8<X, false> is only called with a finite scale, whose products
// cannot be NaN (NaN codes aside), which lets a span skip looking for NaNs.
// Spans may be compiled for an instruction set (target attributes); the
// drivers are plain code and call them once per block.

template <FloatType O, class S>
void DequantFp8RowBySpans(const uint8_t* w, const float* scales, uint64_t cols, uint64_t block_cols, void* dst,
                          uint64_t col_offset) {
  for (uint64_t c = 0; c < cols;) {
    const auto [index, end] = BlockOf(c, cols, block_cols, col_offset);
    const float s = scales[index];
    c = std::isfinite(s) ? S::template DequantFp8<O, false>(w, s, c, end, dst)
                         : S::template DequantFp8<O, true>(w, s, c, end, dst);
    if (c < end) {
      kScalarKernels.dequant_fp8_row(w + c, scales, end - c, block_cols, O, At(dst, c, FloatTypeBytes(O)),
                                     col_offset + c);
      c = end;
    }
  }
}

template <FloatType T, class S>
void AbsMaxRowBySpans(const void* src, uint64_t cols, uint64_t block_cols, uint32_t* amax_bits) {
  for (uint64_t c = 0; c < cols;) {
    const auto [index, end] = BlockOf(c, cols, block_cols, 0);
    c = S::template AbsMax<T>(src, c, end, amax_bits[index]);
    if (c < end) {  // the rest of this block, as one block of its own
      kScalarKernels.abs_max_row(At(src, c, FloatTypeBytes(T)), T, end - c, end - c, amax_bits + index);
      c = end;
    }
  }
}

template <FloatType T, class S>
void QuantizeRowBySpans(const void* src, uint64_t cols, uint64_t block_cols, const float* scales, uint8_t* q) {
  for (uint64_t c = 0; c < cols;) {
    const auto [index, end] = BlockOf(c, cols, block_cols, 0);
    c = S::template Quantize<T>(src, scales[index], c, end, q);
    if (c < end) {  // the rest of this block, as one block of its own
      kScalarKernels.quantize_row(At(src, c, FloatTypeBytes(T)), T, end - c, end - c, scales + index, q + c);
      c = end;
    }
  }
}

template <class S>
constexpr Kernels MakeKernels() {
  return {
      [](const uint8_t* w, const float* scales, uint64_t cols, uint64_t block_cols, FloatType out, void* dst,
         uint64_t col_offset) {
        WithFloatType(out, [&](auto t) {
          constexpr FloatType O = decltype(t)::value;
          DequantFp8RowBySpans<O, S>(w, scales, cols, block_cols, dst, col_offset);
        });
      },
      [](const uint8_t* blocks, const uint8_t* scales, uint64_t groups, FloatType out, void* dst) {
        WithFloatType(out, [&](auto t) { S::template Mxfp4Row<decltype(t)::value>(blocks, scales, groups, dst); });
      },
      [](const void* src, FloatType type, uint64_t cols, uint64_t block_cols, uint32_t* amax_bits) {
        WithFloatType(type, [&](auto t) {
          constexpr FloatType T = decltype(t)::value;
          AbsMaxRowBySpans<T, S>(src, cols, block_cols, amax_bits);
        });
      },
      [](const void* src, FloatType type, uint64_t cols, uint64_t block_cols, const float* scales, uint8_t* q) {
        WithFloatType(type, [&](auto t) {
          constexpr FloatType T = decltype(t)::value;
          QuantizeRowBySpans<T, S>(src, cols, block_cols, scales, q);
        });
      },
  };
}

}  // namespace moepack::ops::numerics
