// Which MoE layout one tensor is in, as the rules' ops see it: a source of a
// fusion is per-expert, a fusion target fused (or, for a family that ships
// fused tensors of its own form, that form: fused-transposed,
// fused-interleaved), a transposable tensor fused or
// fused-transposed by its shape (FitOrientation), and a 3-D tensor under a
// per-projection expert name that no rule describes "stacked".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moepack/config.h"
#include "moepack/layout.h"
#include "moepack/rules.h"

namespace moepack::ops {

struct TensorLayout {
  MoeLayout layout = MoeLayout::kDense;
  std::string group;     // the experts' name prefix: one MoE layer
  uint64_t experts = 0;  // experts this tensor shows (at least)
  bool counts = true;    // false for scales: they follow their weights' layout
  int rules = -1;        // index of the candidate rule set that matched
};

// `candidates` are tried in order; the first that matches decides. nullopt
// for a tensor that is not an expert tensor at all.
std::optional<TensorLayout> LayoutOf(const std::vector<RuleSet>& candidates, const ModelConfig* config,
                                     const std::string& name, const std::vector<uint64_t>& shape);

}  // namespace moepack::ops
