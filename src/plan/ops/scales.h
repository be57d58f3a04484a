// Weights and their block scales travel in pairs: a fusion with `scale_of`
// holds the scales of another. After a conversion has seen every tensor,
// the pairs must be whole: no scales without their weights, no 8-bit float
// weights without their scales.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/rules.h"

namespace moepack::ops {

// (fusion, prefix) -> dtype, for every fused tensor a conversion made or cut.
using FusedTensors = std::map<std::pair<int, std::string>, DType>;

// One message per broken pair, naming the fused tensor at fault; empty when
// every pair is whole.
std::vector<std::string> ScaleProblems(const RuleSet& rules, const FusedTensors& fused);

}  // namespace moepack::ops
