// The fusion op: E experts' K per-expert sources stacked on a new dim 0 and
// joined along `concat_dim` (for a transposing rule, each 2-D source is
// transposed first), one after the other or, interleaved, element by
// element (gpt-oss's gate_up_proj: gate, up, gate, up, ...). Its inverse
// cuts a fused tensor back into the E*K sources. This file is the one place
// that knows the fused shape, the source shape, which dim is which, and
// where each source's bytes lie in the fused tensor.
//
// Seen as bytes, expert j's slice of a non-transposed, non-interleaved fused
// tensor is `outer` runs of K chunks, source k owning the k-th chunk of each
// run; the other forms move elements (Blocks).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moepack/config.h"
#include "moepack/dtype.h"
#include "moepack/rules.h"
#include "moepack/status.h"
#include "plan/ops/pieces.h"

namespace moepack::ops {

// At most this many per-expert pieces are cut from one fused tensor (E * K).
// Real models have a few hundred experts; a zero-byte fused tensor could
// otherwise claim billions and make planning run for hours.
inline constexpr uint64_t kMaxSplitPieces = uint64_t{1} << 22;

// What the shape of a fusion depends on.
struct FusionForm {
  uint64_t sources = 1;  // K
  bool transpose = false;
  int concat_dim = 1;
  bool interleave = false;
  static FusionForm Of(const FusionRule& f) { return {f.sources.size(), f.transpose, f.concat_dim, f.interleave}; }
  // The dim of one source that fused dim `fused_dim` comes from; -1 for
  // dim 0, which stacks the experts.
  int SourceDim(int fused_dim) const;
};

class FusionOp {
 public:
  // The fusion of `experts` experts whose every source has `source_shape`.
  // Errors, naming the rule (callers add the layer or tensor), when the rule
  // cannot apply to such sources: a transposing rule with non-2-D or
  // sub-byte sources, a concat dim outside them, chunks that are not whole
  // bytes.
  static Result<FusionOp> FromSource(const FusionRule& rule, uint64_t experts, DType dtype,
                                     const std::vector<uint64_t>& source_shape);
  // The inverse: what the fused tensor `fused_shape` cuts into. When
  // `experts` is given, dim 0 must be that count.
  static Result<FusionOp> FromFused(const FusionRule& rule, DType dtype, const std::vector<uint64_t>& fused_shape,
                                    std::optional<uint64_t> experts = std::nullopt);

  uint64_t experts() const { return experts_; }
  uint64_t sources() const { return form_.sources; }
  DType dtype() const { return dtype_; }
  const std::vector<uint64_t>& source_shape() const { return source_shape_; }
  const std::vector<uint64_t>& fused_shape() const { return fused_shape_; }
  uint64_t source_bytes() const { return source_bytes_; }
  uint64_t fused_bytes() const { return experts_ * form_.sources * source_bytes(); }

  // Every source of a fusion has one dtype and shape, so that the inverse
  // cut is exact: checks one more source (`what`, e.g. "...: expert 3
  // up_proj.weight") against the one the op was made from (`first`).
  Status CheckSource(DType dtype, const std::vector<uint64_t>& shape, const std::string& what,
                     const std::string& first) const;

  // Where the bytes of expert j's source k lie in the fused tensor
  // (input: the source tensor, output: the fused tensor). Its Inverse() cuts
  // that source out of the fused tensor.
  Pieces SourceInFused(uint64_t j, uint64_t k) const;

 private:
  FusionOp(const FusionRule& rule, uint64_t experts, DType dtype, std::vector<uint64_t> source_shape);
  // Fills the geometry and the fused shape from the source shape.
  Status Layout(const std::string& rule_label);

  FusionForm form_;
  uint64_t experts_ = 0;
  DType dtype_ = DType::U8;
  std::vector<uint64_t> source_shape_;
  std::vector<uint64_t> fused_shape_;
  uint64_t source_bytes_ = 0;
  // One source seen as [outer, n, unit]: n along the concat dim, unit the
  // bytes of everything after it (interleaving), chunk the bytes of n units.
  uint64_t outer_ = 1, n_ = 1, unit_bytes_ = 0, chunk_bytes_ = 0;
};

// The fused shape of `f` over `experts` experts whose sources have shape
// `source`, in any dimension type: numbers for the engines, symbols (E, I,
// H) for messages. `times(k, d)` is k copies of d joined.
template <typename D, typename Times>
std::vector<D> FusedShapeOf(const FusionForm& f, D experts, const std::vector<D>& source, Times times) {
  std::vector<D> out = {experts};
  if (f.transpose) {
    out.push_back(source[1]);
    out.push_back(source[0]);
  } else {
    out.insert(out.end(), source.begin(), source.end());
  }
  out[f.concat_dim] = times(f.sources, out[f.concat_dim]);
  return out;
}

// The fused shape of fusion `f` in the symbols of its source_shape:
// "[E, 2*I, H]". REQUIRES: f.source_shape is not empty.
std::string FusedShapeExpr(const FusionRule& f);
// "[E, H, 2*I]" for any shape in symbols.
std::string ShapeExprString(const std::vector<std::string>& shape);

// Checks one expert's source (`source`, per-expert layout) or a whole fused
// tensor of fusion `fusion` against the rule's source_shape and config.json.
// OK when the rule has no source_shape or config.json lacks one of its
// dims. `what` leads the error.
Status CheckSourceShape(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                        const std::vector<uint64_t>& source, const std::string& what);
Status CheckFusedShape(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                       int64_t experts, const std::vector<uint64_t>& fused, const std::string& what);

// The fusion as a checkpoint binds it (`experts` from config.json), with
// every check that config.json makes possible, in the order the engines
// report them:
//   FuseOf: the source against source_shape, then whether the rule applies;
//   CutOf:  dim 0 against `experts`, the fused shape against source_shape,
//           then whether the rule can cut it.
// `what` names the tensor (or layer) and leads every error.
Result<FusionOp> FuseOf(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                        uint64_t experts, DType dtype, const std::vector<uint64_t>& source, const std::string& what);
Result<FusionOp> CutOf(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                       uint64_t experts, DType dtype, const std::vector<uint64_t>& fused, const std::string& what);

}  // namespace moepack::ops
