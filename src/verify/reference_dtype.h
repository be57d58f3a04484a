// verify's own arithmetic for dtype changes, written from the formats and
// kept apart from the converter's kernels (plan/ops/numerics) so that a
// converted checkpoint is checked by a second implementation: plain scalar
// loops, e4m3 and e2m1 decoded from their bit fields, one fp32 multiply,
// rounding to nearest even by integer arithmetic.
#pragma once

#include <cstdint>

#include "moepack/dtype.h"

namespace moepack::internal {

// An F8_E4M3 [rows, cols] matrix and its [ceil(rows/br), ceil(cols/bc)] F32
// scales, as `out` (BF16, F16 or F32) row-major into dst.
void RefDequantFP8(const uint8_t* codes, const float* scales, uint64_t rows, uint64_t cols, uint64_t br, uint64_t bc,
                   DType out, uint8_t* dst);

// One expert of MXFP4: blocks [rows, groups, 16] and e8m0 scales [rows,
// groups], decoded to [rows, groups*32] and written transposed, [groups*32,
// rows], as `out`.
void RefDequantMXFP4(const uint8_t* blocks, const uint8_t* scales, uint64_t rows, uint64_t groups, DType out,
                     uint8_t* dst);

// A float [rows, cols] matrix (BF16, F16 or F32) quantized DeepSeek-style:
// per block s = amax/448 over its non-NaN elements (1 when that is 0), codes
// e4m3(x / s) rounded to nearest even and saturated at 448.
void RefQuantizeFP8(const uint8_t* src, DType in, uint64_t rows, uint64_t cols, uint64_t br, uint64_t bc,
                    uint8_t* codes, float* scales);

}  // namespace moepack::internal
