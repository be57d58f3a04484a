#include "plan/ops/transpose_op.h"

#include "util/strings.h"

namespace moepack::ops {

Result<OrientationFit> FitOrientation(const RuleSet& rules, int rule, const ModelConfig& config,
                                      std::string_view prefix, const std::vector<uint64_t>& shape) {
  const TransposeRule& r = rules.transposes()[rule];
  int64_t E = 0;  // only a shape that names E needs the expert count
  if (RuleSet::NamesExperts(r.hub_shape)) {
    MOEPACK_ASSIGN_OR_RETURN(E, rules.NumExperts(config, prefix));
  }
  OrientationFit fit;
  MOEPACK_ASSIGN_OR_RETURN(fit.hub_shape, rules.EvalShape(config, r.hub_shape, E, prefix));
  MOEPACK_ASSIGN_OR_RETURN(fit.v5_shape, rules.EvalShape(config, r.v5_shape, E, prefix));
  fit.hub = shape == fit.hub_shape;
  fit.v5 = shape == fit.v5_shape;
  return fit;
}

Result<TransposeOp> TransposeOp::Make(const RuleSet& rules, int rule, const ModelConfig& config,
                                      std::string_view prefix, const std::string& name, DType dtype,
                                      const std::vector<uint64_t>& shape, SourceLayout hint, Orientation to) {
  MOEPACK_ASSIGN_OR_RETURN(OrientationFit fit, FitOrientation(rules, rule, config, prefix, shape));
  const std::string what = "'" + name + "': shape " + internal::ShapeString(shape);
  if (!fit.hub && !fit.v5) {
    return Status::Corrupt(what + " is neither the Hub layout " + internal::ShapeString(fit.hub_shape) +
                           " nor the v5 layout " + internal::ShapeString(fit.v5_shape) + " (transpose \"" +
                           rules.transposes()[rule].name + "\")");
  }
  Orientation from = fit.hub ? Orientation::kHub : Orientation::kV5;
  if (hint != SourceLayout::kUnspecified) {
    const bool hub = hint == SourceLayout::kHub;
    if ((hub && !fit.hub) || (!hub && !fit.v5)) {
      return Status::InvalidArgument(what + " is not the " + (hub ? "Hub" : "v5") +
                                     " layout that --source-layout names");
    }
    from = hub ? Orientation::kHub : Orientation::kV5;
  } else if (fit.hub && fit.v5) {
    return Status::InvalidArgument(what +
                                   " fits both the Hub and the v5 layout (its last two dims are equal); "
                                   "pass --source-layout hf or --source-layout v5");
  }
  const int bits = DTypeBits(dtype);
  if (from != to && bits % 8) return Status::Corrupt("'" + name + "': cannot transpose " + std::string(DTypeName(dtype)));
  return TransposeOp(shape, static_cast<uint32_t>(bits / 8), from, to);
}

TransposeOp::TransposeOp(std::vector<uint64_t> shape, uint32_t elem_bytes, Orientation from, Orientation to)
    : shape_(std::move(shape)), elem_bytes_(elem_bytes), from_(from), to_(to) {
  out_shape_ = shape_;
  if (changes()) std::swap(out_shape_[out_shape_.size() - 1], out_shape_[out_shape_.size() - 2]);
}

Pieces TransposeOp::Expert(uint64_t j) const {
  const uint64_t rows = shape_[shape_.size() - 2], cols = shape_.back();
  const uint64_t slice = rows * cols * elem_bytes_;
  Pieces p;
  if (slice == 0) return p;
  if (changes()) {
    p.blocks.push_back(Block::Transposing(j * slice, j * slice, rows, cols, elem_bytes_));
  } else {
    p.runs.push_back(Run{j * slice, j * slice, slice});
  }
  return p;
}

}  // namespace moepack::ops
