// The chunk op: one tensor on the Hub that v5 holds as K equal parts along
// one dim (ernie4_5_vl_moe's e_score_correction_bias [2, E]: text [1, E],
// then vision [1, E]). Its inverse concatenates the parts. Seen as bytes it
// is a fusion of one "expert" whose K sources are the parts, so it shares
// the fusion op's geometry.
#pragma once

#include <cstdint>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/rules.h"
#include "moepack/status.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/pieces.h"

namespace moepack::ops {

class ChunkOp {
 public:
  // From the Hub tensor; errors (naming the rule) when `dim` is outside it
  // or does not divide into the rule's parts.
  static Result<ChunkOp> FromWhole(const ChunkRule& rule, DType dtype, const std::vector<uint64_t>& whole);
  // From one of v5's parts (all parts have this shape).
  static Result<ChunkOp> FromPart(const ChunkRule& rule, DType dtype, const std::vector<uint64_t>& part);

  uint64_t parts() const { return op_.sources(); }
  const std::vector<uint64_t>& whole_shape() const { return whole_; }
  const std::vector<uint64_t>& part_shape() const { return op_.source_shape(); }
  uint64_t part_bytes() const { return op_.source_bytes(); }
  uint64_t whole_bytes() const { return op_.fused_bytes(); }
  // Where part k lies in the whole tensor (input: the part).
  Pieces PartInWhole(uint64_t k) const { return op_.SourceInFused(0, k); }
  Status CheckPart(DType dtype, const std::vector<uint64_t>& shape, const std::string& what,
                   const std::string& first) const {
    return op_.CheckSource(dtype, shape, what, first);
  }

 private:
  explicit ChunkOp(FusionOp op);
  FusionOp op_;  // one expert, the parts as its sources
  std::vector<uint64_t> whole_;
};

}  // namespace moepack::ops
