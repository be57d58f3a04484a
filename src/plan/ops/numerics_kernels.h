// The per-instruction-set implementations behind numerics.h, one table per
// instruction set, so that the tests and the benchmark can run each of them
// on the same inputs (the dispatcher only ever runs the widest one).
#pragma once

#include <algorithm>
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

}  // namespace moepack::ops::numerics
