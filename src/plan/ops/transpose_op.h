// The transpose op: an already-fused tensor [E, a, b] whose last two dims are
// swapped between the Hub's layout and v5's (qwen3_vl_moe ships
// gate_up_proj [E, H, 2I] where v5 holds [E, 2I, H]), or a 2-D tensor [a, b]
// (ernie4_5_vl_moe's routers, [H, E] on the Hub). Its inverse is itself.
// This file is the one place that decides, from a tensor's shape and
// config.json, which of the two layouts a tensor is in; when the shape fits
// both (H == 2I) it never guesses.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moepack/config.h"
#include "moepack/dtype.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"
#include "plan/ops/pieces.h"

namespace moepack::ops {

enum class Orientation { kHub, kV5 };

// The orientation a conversion writes: v5's when fusing, the Hub's when
// going back to per-expert.
inline Orientation TargetOrientation(Direction d) {
  return d == Direction::kToFused ? Orientation::kV5 : Orientation::kHub;
}

// What config.json says the two layouts of a tensor of transpose rule
// `rule` under `prefix` are, and which of them `shape` is.
struct OrientationFit {
  std::vector<uint64_t> hub_shape, v5_shape;
  bool hub = false, v5 = false;
};
Result<OrientationFit> FitOrientation(const RuleSet& rules, int rule, const ModelConfig& config,
                                      std::string_view prefix, const std::vector<uint64_t>& shape);

class TransposeOp {
 public:
  // Decides the layout of tensor `name` and binds the op to writing it in
  // layout `to`. Refused: a shape that is neither layout, one that is both
  // unless `hint` says which, a hint that the shape contradicts, and (when
  // the layout changes) elements that are not whole bytes.
  static Result<TransposeOp> Make(const RuleSet& rules, int rule, const ModelConfig& config, std::string_view prefix,
                                  const std::string& name, DType dtype, const std::vector<uint64_t>& shape,
                                  SourceLayout hint, Orientation to);

  Orientation from() const { return from_; }
  bool changes() const { return from_ != to_; }
  // Slices along dim 0 of a 3-D tensor; a 2-D tensor is one slice.
  uint64_t experts() const { return shape_.size() == 3 ? shape_[0] : 1; }
  const std::vector<uint64_t>& output_shape() const { return out_shape_; }
  // Where slice j goes (input and output offsets relative to the whole
  // tensor): one Block when the layout changes, one Run when not.
  Pieces Expert(uint64_t j) const;

 private:
  TransposeOp(std::vector<uint64_t> shape, uint32_t elem_bytes, Orientation from, Orientation to);
  std::vector<uint64_t> shape_;  // as found
  std::vector<uint64_t> out_shape_;
  uint32_t elem_bytes_;
  Orientation from_, to_;
};

}  // namespace moepack::ops
