// Tensor values for synthetic checkpoints.
//
// Calling a random generator per element would make a 5 GB checkpoint
// CPU-bound, so values come from a fixed pool of pre-encoded random numbers:
// element k of a tensor whose key is h is pool[(h + k) mod kPoolElements].
// The key is a hash of (seed, the tensor's per-expert Hub name), so the same
// per-expert tensor has the same bytes whichever layout it is written in, and
// a run of elements is a contiguous window of the pool (stored twice over so
// that no window of up to kPoolElements elements wraps).
//
// Thread safety: GetPool may be called from any thread; pools are immutable.
#pragma once

#include <cstdint>
#include <string_view>

#include "moepack/dtype.h"

namespace moepack::synth {

// Odd and not a power of two, so rows of common widths do not line up with
// the period.
inline constexpr uint64_t kPoolElements = (1u << 21) - 19;

// What a tensor holds, which decides the distribution of its values.
enum class Fill : uint8_t {
  kWeight,  // ~N(0, 0.02); FP8 codes spread as block-quantized weights are
  kNorm,    // ~1.0
  kScale,   // FP8 block scales: positive, 1e-3 .. 1e-2 (F32 only)
  kBytes,   // packed codes (MXFP4 blocks): every byte value equally likely (U8 only)
  kE8m0,    // MXFP4 scales: e8m0 exponents 118 .. 130, 2^-9 .. 2^3 (U8 only)
};

struct Pool {
  const uint8_t* data = nullptr;  // 2 * kPoolElements elements
  int elem_size = 0;
};

// REQUIRES: dtype is BF16, F16, F32 or F8_E4M3; kScale only with F32;
// kBytes and kE8m0 only with U8, and U8 only with them.
const Pool& GetPool(Fill fill, DType dtype);

// One step of SplitMix64: a small, fast, platform-independent generator.
uint64_t SplitMix64(uint64_t& state);

// The key of a source tensor.
uint64_t SourceKey(uint64_t seed, std::string_view hub_name);

// The key whose values are those of `key` from element `first` on: a part
// of a source tensor (one row of ERNIE-4.5-VL's [2, E] correction bias).
uint64_t PartKey(uint64_t key, uint64_t first);

// Encoders (round to nearest even; inputs are finite).
uint16_t EncodeBF16(float f);
uint16_t EncodeF16(float f);
// Saturates at +-448 and never produces the NaN codes 0x7F / 0xFF.
uint8_t EncodeE4M3(float f);

}  // namespace moepack::synth
