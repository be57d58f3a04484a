#include "plan/ops/layout_of.h"

#include <re2/re2.h>

#include "plan/ops/dtype_op.h"
#include "plan/ops/transpose_op.h"

namespace moepack::ops {

std::optional<TensorLayout> LayoutOf(const std::vector<RuleSet>& candidates, const ModelConfig* config,
                                     const std::string& name, const std::vector<uint64_t>& shape) {
  for (size_t i = 0; i < candidates.size(); ++i) {
    const RuleSet& rs = candidates[i];
    std::string renamed = rs.Rename(name, Direction::kToFused);
    // MXFP4 blocks are the fused tensor they decode to; their scales follow.
    std::vector<uint64_t> decoded;
    bool mx_scales = false;
    if (const QuantPart part = QuantPartOf(renamed, DType::U8);
        (part == QuantPart::kMXFP4Blocks || part == QuantPart::kMXFP4Scales) && shape.size() >= 3 &&
        rs.MatchTarget(DequantizedName(renamed, part))) {
      mx_scales = part == QuantPart::kMXFP4Scales;
      renamed = DequantizedName(renamed, part);
      decoded = {shape[0], shape[2] * 32, shape[1]};
    }
    const std::vector<uint64_t>& shape_as = decoded.empty() ? shape : decoded;
    TensorLayout l;
    l.rules = static_cast<int>(i);
    if (auto m = rs.MatchSource(renamed)) {
      l.layout = MoeLayout::kPerExpert;
      l.group = m->prefix;
      l.experts = static_cast<uint64_t>(m->expert) + 1;
      l.counts = rs.WeightOf(m->fusion) < 0;
      return l;
    }
    if (auto m = rs.MatchTarget(renamed); m && shape_as.size() == 3) {
      // A family whose fused tensors have a form of their own (gpt_oss
      // interleaved, llama4 transposed) names all of them by it, biases and
      // down_proj included; every other fused tensor is in v5's layout.
      const MoeLayout own = rs.hub_layout();
      l.layout = own == MoeLayout::kFusedInterleaved || own == MoeLayout::kFusedTransposed ? own : MoeLayout::kFused;
      l.group = m->prefix;
      l.experts = shape_as[0];
      l.counts = rs.WeightOf(m->fusion) < 0 && !mx_scales;
      return l;
    }
    if (auto m = rs.MatchTranspose(renamed); m && shape.size() == 3) {
      l.layout = MoeLayout::kFused;
      if (config) {
        auto fit = FitOrientation(rs, m->rule, *config, m->prefix, shape);
        if (fit.ok() && fit->hub && !fit->v5) l.layout = MoeLayout::kFusedTransposed;
      }
      l.group = m->prefix;
      l.experts = shape[0];
      return l;
    }
  }
  static const RE2 kStacked(R"(^(.*)\.experts\.(gate_proj|up_proj|down_proj|w1|w2|w3)(\.weight)?$)");
  std::string prefix;
  if (shape.size() == 3 && RE2::FullMatch(name, kStacked, &prefix)) {
    TensorLayout l;
    l.layout = MoeLayout::kStacked;
    l.group = prefix + ".";
    l.experts = shape[0];
    return l;
  }
  return std::nullopt;
}

}  // namespace moepack::ops
