#include "plan/ops/scales.h"

namespace moepack::ops {

std::vector<std::string> ScaleProblems(const RuleSet& rules, const FusedTensors& fused) {
  std::vector<std::string> out;
  for (const auto& [key, dtype] : fused) {
    const auto& [fusion, prefix] = key;
    if (const int weight = rules.WeightOf(fusion); weight >= 0) {
      if (!fused.count({weight, prefix})) {
        out.push_back(rules.TargetName(fusion, prefix) + " scales have no " + rules.fusions()[weight].name +
                      " weights");
      }
    } else if (const int scales = rules.ScalesOf(fusion); scales >= 0 && IsFloat8(dtype) &&
                                                           !fused.count({scales, prefix})) {
      out.push_back(rules.TargetName(fusion, prefix) + ": " + std::string(DTypeName(dtype)) + " " +
                    rules.fusions()[fusion].name + " weights have no weight_scale_inv scales");
    }
  }
  return out;
}

}  // namespace moepack::ops
