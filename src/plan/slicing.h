// Where one source's part of one expert lies inside a fused tensor. A fused
// tensor is [E, ...per-expert...]; its K sources join along per-expert dim
// `axis` (fused dim axis + 1). Seen as bytes, expert j's slice is
// `outer` runs of K chunks, source k owning the k-th chunk of each run.
#pragma once

#include <cstdint>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/status.h"

namespace moepack::internal {

// At most this many per-expert pieces are cut from one fused tensor (E * K).
// Real models have a few hundred experts; a zero-byte fused tensor could
// otherwise claim billions and make planning run for hours.
inline constexpr uint64_t kMaxSplitPieces = uint64_t{1} << 22;

struct ConcatGeometry {
  uint64_t outer = 1;        // runs per expert slice
  uint64_t chunk_bytes = 0;  // one source's bytes in one run
  uint64_t sources = 1;      // K
  uint64_t slice_bytes() const { return outer * chunk_bytes * sources; }
  // Offset in the fused tensor of run `o` of source `k` in expert `j`.
  uint64_t Offset(uint64_t j, uint64_t k, uint64_t o) const {
    return j * slice_bytes() + o * chunk_bytes * sources + k * chunk_bytes;
  }
};

// `source_shape` is one source's per-expert shape, `axis` the per-expert dim
// along which the K sources join. Fails when chunks are not whole bytes.
Result<ConcatGeometry> Geometry(const std::vector<uint64_t>& source_shape, DType dtype, uint64_t sources, int axis);

}  // namespace moepack::internal
