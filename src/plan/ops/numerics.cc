// The entry points of numerics.h: the choice of kernels for this CPU, and
// the blocking of quantization, which no instruction set changes.
#include "plan/ops/numerics.h"

#include <cpuid.h>
#include <xmmintrin.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "plan/ops/numerics_kernels.h"

namespace moepack::ops {
namespace numerics {
namespace {

// clang-14's __builtin_cpu_supports knows no "f16c"; CPUID.1:ECX bit 29 is
// the flag (AVX2's own check below already covers the OS saving ymm state).
bool HasF16C() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & (1u << 29)) != 0;
}

}  // namespace

bool IsaSupported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kScalar: return true;
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && HasF16C();
    case Isa::kAvx512:
      return IsaSupported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  }
  return false;
}

const Kernels& KernelsFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return kScalarKernels;
    case Isa::kAvx2: return kAvx2Kernels;
    case Isa::kAvx512: return kAvx512Kernels;
  }
  return kScalarKernels;
}

Isa ActiveIsa() {
  static const Isa isa = IsaSupported(Isa::kAvx512) ? Isa::kAvx512
                         : IsaSupported(Isa::kAvx2) ? Isa::kAvx2
                                                    : Isa::kScalar;
  return isa;
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

void DequantFp8With(const Kernels& k, const uint8_t* w, const float* scales, uint64_t rows, uint64_t cols,
                    uint64_t block_rows, uint64_t block_cols, FloatType out, void* dst) {
  const uint64_t grid_cols = (cols + block_cols - 1) / block_cols;
  for (uint64_t r = 0; r < rows; ++r) {
    k.dequant_fp8_row(w + r * cols, scales + (r / block_rows) * grid_cols, cols, block_cols, out,
                      At(dst, r * cols, FloatTypeBytes(out)), 0);
  }
}

void QuantizeFp8With(const Kernels& k, const void* src, FloatType src_type, uint64_t rows, uint64_t cols,
                     uint64_t row_stride, uint64_t block_rows, uint64_t block_cols, uint8_t* q, float* scale_inv) {
  const uint64_t grid_cols = (cols + block_cols - 1) / block_cols;
  const uint32_t elem = FloatTypeBytes(src_type);
  // Each tile (one band of block rows by a few column blocks) is read twice,
  // for its maxima and then for its codes; at about 256 KB the second read
  // comes from L2. (Sizes from the real band and width cannot overflow.)
  constexpr uint64_t kTileBytes = 256 << 10;
  const uint64_t block_bytes = std::min(rows, block_rows) * std::min(cols, block_cols) * elem;
  const uint64_t tile_blocks = std::max<uint64_t>(1, kTileBytes / std::max<uint64_t>(1, block_bytes));
  std::vector<uint32_t> amax(grid_cols);
  for (uint64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const uint64_t r1 = std::min(rows, r0 + block_rows);
    float* s = scale_inv + (r0 / block_rows) * grid_cols;
    for (uint64_t b0 = 0; b0 < grid_cols; b0 += tile_blocks) {
      const uint64_t b1 = std::min(grid_cols, b0 + tile_blocks);
      const uint64_t c0 = b0 * block_cols, width = std::min(cols, b1 * block_cols) - c0;
      std::fill(amax.begin() + b0, amax.begin() + b1, 0u);
      for (uint64_t r = r0; r < r1; ++r) {
        k.abs_max_row(At(src, r * row_stride + c0, elem), src_type, width, block_cols, amax.data() + b0);
      }
      for (uint64_t b = b0; b < b1; ++b) s[b] = Fp8BlockScale(std::bit_cast<float>(amax[b]));
      for (uint64_t r = r0; r < r1; ++r) {
        k.quantize_row(At(src, r * row_stride + c0, elem), src_type, width, block_cols, s + b0, q + r * cols + c0);
      }
    }
  }
}

}  // namespace numerics

namespace {

// The kernels' results are defined under the default floating-point
// environment: round to nearest even, no flush-to-zero or
// denormals-are-zero (which would lose subnormal products and MXFP4's
// 2^-127), every exception masked (0 * inf must give NaN, not SIGFPE). A
// caller may have changed MXCSR (torch.set_flush_denormal, -ffast-math
// libraries), so each entry point sets it for its duration and restores it,
// exception flags included.
class DefaultFpEnv {
 public:
  DefaultFpEnv() : saved_(_mm_getcsr()) {
    if (saved_ != Wanted()) _mm_setcsr(Wanted());
  }
  ~DefaultFpEnv() {
    if (saved_ != Wanted()) _mm_setcsr(saved_);
  }
  DefaultFpEnv(const DefaultFpEnv&) = delete;
  DefaultFpEnv& operator=(const DefaultFpEnv&) = delete;

 private:
  static constexpr unsigned kFlushToZero = 1u << 15, kRounding = 3u << 13, kExceptionMasks = 0x3Fu << 7,
                            kDenormalsAreZero = 1u << 6;
  unsigned Wanted() const { return (saved_ & ~(kFlushToZero | kRounding | kDenormalsAreZero)) | kExceptionMasks; }
  const unsigned saved_;
};

const numerics::Kernels& Active() {
  static const numerics::Kernels& k = numerics::KernelsFor(numerics::ActiveIsa());
  return k;
}
}  // namespace

std::optional<FloatType> FloatTypeOf(DType t) {
  switch (t) {
    case DType::BF16: return FloatType::kBF16;
    case DType::F16: return FloatType::kF16;
    case DType::F32: return FloatType::kF32;
    default: return std::nullopt;
  }
}

DType ToDType(FloatType t) {
  switch (t) {
    case FloatType::kBF16: return DType::BF16;
    case FloatType::kF16: return DType::F16;
    case FloatType::kF32: return DType::F32;
  }
  return DType::F32;
}

uint32_t FloatTypeBytes(FloatType t) { return t == FloatType::kF32 ? 4 : 2; }

void DequantFp8Row(const uint8_t* w, const float* scales, uint64_t cols, uint64_t block_cols, FloatType out,
                   void* dst, uint64_t col_offset) {
  const DefaultFpEnv env;
  Active().dequant_fp8_row(w, scales, cols, block_cols, out, dst, col_offset);
}

void DequantFp8(const uint8_t* w, const float* scales, uint64_t rows, uint64_t cols, uint64_t block_rows,
                uint64_t block_cols, FloatType out, void* dst) {
  const DefaultFpEnv env;
  numerics::DequantFp8With(Active(), w, scales, rows, cols, block_rows, block_cols, out, dst);
}

void DequantMxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, FloatType out, void* dst) {
  const DefaultFpEnv env;
  Active().dequant_mxfp4_row(blocks, scales, groups, out, dst);
}

float Fp8BlockScale(float amax) {
  if (amax == 0.0f) return 1.0f;
  const float s = amax / 448.0f;
  return s == 0.0f ? 0x1p-149f : s;
}

void QuantizeFp8(const void* src, FloatType src_type, uint64_t rows, uint64_t cols, uint64_t row_stride,
                 uint64_t block_rows, uint64_t block_cols, uint8_t* q, float* scale_inv) {
  const DefaultFpEnv env;
  numerics::QuantizeFp8With(Active(), src, src_type, rows, cols, row_stride, block_rows, block_cols, q, scale_inv);
}

}  // namespace moepack::ops
