// The numerics of dtype ops: FP8 (F8_E4M3) block-scaled and MXFP4 weights
// dequantized to BF16/F16/F32, and BF16/F16/F32 quantized to block-scaled
// FP8. Every result is defined bit for bit, so that the executor, the
// streaming converter, the loader and verify agree byte for byte, and so that
// the results are those of the reference implementations (DeepSeek-V3's
// weight_dequant, transformers' FP8 and MXFP4 dequantization; see
// /work/ref/quant_facts.md, cited below as "facts §n").
//
// The kernels run on every byte of a checkpoint, so they pick at first use
// the widest of AVX-512 (F, BW, VL), AVX2 + F16C or plain x86-64 code that
// the CPU runs; all three give identical bytes. The results do not depend
// on the caller's floating-point environment: the scalar conversions use
// integer arithmetic, and the kernels run under the default MXCSR (round to
// nearest even, no flush-to-zero or denormals-are-zero, exceptions masked),
// which they set for the call and restore after.
//
// Thread safety: every function is pure (writes only its outputs) and may be
// called from any number of threads at once.
//
// NaN bit patterns: IEEE leaves a NaN's sign and payload to the hardware;
// these are the ones x86 gives, and the tests hold the kernels to them.
// An FP8 NaN code decodes to 0x7FF00000 | sign (what torch's fp8 -> fp32
// cast gives, facts §1). Multiplying a NaN by a number keeps the NaN;
// 0 * inf and inf / inf give the x86 "indefinite" NaN 0xFFC00000.
#pragma once

#include <cstdint>
#include <optional>

#include "moepack/dtype.h"

namespace moepack::ops {

// ---- Scalar conversions (exact definitions the kernels follow) ----------

// The value of an F8_E4M3 (e4m3fn: bias 7, no infinities) code, exactly.
// Subnormals are m * 2^-9; 0x80 is -0; the NaN codes 0x7F and 0xFF give the
// quiet NaN 0x7FF00000 with the code's sign.
float E4M3ToFloat(uint8_t code);

// The e2m1 value of the low 4 bits of `nibble` (the high bits are ignored):
// [0, .5, 1, 1.5, 2, 3, 4, 6, -0, -.5, -1, -1.5, -2, -3, -4, -6].
float E2M1ToFloat(uint8_t nibble);

// Exact widenings: BF16 is its bits shifted up by 16; F16 keeps its value,
// and a NaN its sign and payload, made quiet (as F16C's vcvtph2ps does).
float BF16ToFloat(uint16_t bits);
float F16ToFloat(uint16_t bits);

// Round to nearest, ties to even. Values past the largest finite value round
// to infinity as IEEE's overflow rule says (for BF16 from 0x7F7F8000 up, for
// F16 from 65520 up). A NaN stays a quiet NaN with its sign and the top of
// its payload: BF16 (bits >> 16) | 0x0040; F16 sign | 0x7E00 | ((bits >> 13)
// & 0x3FF), what F16C's vcvtps2ph gives.
uint16_t FloatToBF16(float f);
uint16_t FloatToF16(float f);

// Round to nearest, ties to even, saturating: finite values and infinities
// beyond +-448 give +-448 (0x7E / 0xFE), like a clamp to [-448, 448] before
// the cast; subnormal results m * 2^-9 are rounded the same way; NaN gives
// 0x7F | sign. (torch's CPU cast does not saturate, facts §1; every
// quantizer clamps first, which makes the two agree.)
uint8_t FloatToE4M3(float f);

// ---- Element types of the float side ------------------------------------

// The element type dequantization writes and quantization reads.
enum class FloatType : uint8_t { kBF16, kF16, kF32 };

// BF16, F16 and F32 map to their FloatType; every other dtype to nullopt.
std::optional<FloatType> FloatTypeOf(DType t);
DType ToDType(FloatType t);
uint32_t FloatTypeBytes(FloatType t);

// ---- Dequantization ------------------------------------------------------

// One row (or a contiguous part of one row) of a block-scaled F8_E4M3 weight:
//   dst[c] = round_out(E4M3ToFloat(w[c]) * scales[(col_offset + c) / block_cols])
// with a single fp32 multiply, rounded to `out` by FloatToBF16/FloatToF16
// (or kept, for kF32). This is DeepSeek's weight_dequant and transformers'
// FP8 dequantization bit for bit (facts §2.2, §2.3), NaN patterns aside
// (torch's own vary by backend, facts §6). The product is exactly what IEEE
// multiplication gives: negative scales flip signs, subnormal scales and
// products are kept, overflow gives infinity, 0 * inf gives NaN. A NaN code
// gives its decoded NaN (0x7FF00000 | sign, then rounded to `out`) whatever
// the scale, so the result never depends on which NaN the CPU prefers.
//
// `scales` is the weight row's row of the scale grid (scale grid row
// r / block_rows); the grid is ceil-sized, so the last block of a row may be
// partial. `col_offset` is the column of w[0] in the full row, for a slice
// that starts inside a block (a rank's slice); 0 for a whole row.
// REQUIRES: block_cols >= 1; scales holds every block the columns
// [col_offset, col_offset + cols) touch; dst holds cols elements of `out`.
void DequantFp8Row(const uint8_t* w, const float* scales, uint64_t cols, uint64_t block_cols, FloatType out,
                   void* dst, uint64_t col_offset = 0);

// A whole [rows, cols] row-major F8_E4M3 matrix with its row-major scale grid
// [ceil(rows / block_rows), ceil(cols / block_cols)], into row-major dst:
// DequantFp8Row on each row.
void DequantFp8(const uint8_t* w, const float* scales, uint64_t rows, uint64_t cols, uint64_t block_rows,
                uint64_t block_cols, FloatType out, void* dst);

// One row of an MXFP4 tensor (gpt-oss `*_blocks` / `*_scales`): `groups`
// groups of 32 values; group g's 16 bytes are blocks[16g .. 16g + 15], the
// low nibble of byte b being element 2b and the high nibble element 2b + 1.
//   dst[32g + i] = round_out(E2M1ToFloat(nibble i) * 2^(scales[g] - 127))
// with the power of two and the product in fp32, which is what torch.ldexp
// computes in transformers' and gpt-oss's dequantization (facts §5): e8m0 0
// gives 2^-127 (an fp32 subnormal), e8m0 255 gives 2^128 = inf, so its
// nonzero values are +-inf and its zeros 0xFFC00000 NaN. Every other product
// is exact in BF16 (facts §5); F16 rounds small and large ones.
// REQUIRES: blocks holds 16 * groups bytes, scales `groups` bytes, dst
// 32 * groups elements of `out`.
void DequantMxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, FloatType out, void* dst);

// ---- Quantization --------------------------------------------------------

// The block scale of a block whose largest |x| over non-NaN elements is
// `amax` (>= 0): amax / 448 (one IEEE fp32 division), except 1 when amax is
// 0 (all zeros or only NaN), so zeros stay zeros and nothing becomes NaN,
// and the smallest subnormal 2^-149 when the division underflows to 0 (only
// F32 input below 3.2e-43 can). inf gives inf.
float Fp8BlockScale(float amax);

// DeepSeek-style block quantization of a [rows, cols] matrix whose rows are
// row_stride elements apart: for each block_rows x block_cols block (the
// grid is ceil-sized: edge blocks use only their real elements),
//   s = Fp8BlockScale(max |x| over the block's non-NaN elements)
//   q = FloatToE4M3(x / s)        (IEEE fp32 division; saturates at +-448)
// s goes to scale_inv, q to q; dequantizing gives q * s ~ x. A NaN element
// becomes 0x7F | its sign. An infinite element makes its block's s infinite,
// so its finite elements become +-0 and the infinities a NaN code (BF16
// weights hold no infinities).
//
// This is what the issue asks (scale = amax / 448) and what DeepSeek's
// quantization kernels compute, with IEEE division where their Triton code
// uses the GPU's approximate one (facts §3.2). It is not transformers'
// quantizer, which multiplies by fl(448 / amax) and stores fl(1 / fl(448 /
// amax)), a different last bit for about a quarter of all amax values
// (facts §3.1), and which leaves shapes the blocks do not tile unquantized.
//
// Rows are independent in bands of block_rows, so callers parallelize by
// calling this on bands whose first row is a multiple of block_rows, with
// src, q and scale_inv advanced to the band: the bytes are the same.
// REQUIRES: block_rows, block_cols >= 1; row_stride >= cols; q holds
// rows * cols bytes (row-major, no stride); scale_inv holds
// ceil(rows / block_rows) * ceil(cols / block_cols) floats (row-major).
void QuantizeFp8(const void* src, FloatType src_type, uint64_t rows, uint64_t cols, uint64_t row_stride,
                 uint64_t block_rows, uint64_t block_cols, uint8_t* q, float* scale_inv);

}  // namespace moepack::ops
