// The index of a checkpoint exported fused: a weight_map (tensor -> shard
// file) of per-expert names rewritten to the fused names, for loaders that
// write their own shards.
#pragma once

#include <map>
#include <string>

#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack {

// Each fused tensor maps to the shard of its lowest-numbered source; other
// tensors keep their shard under their renamed name.
Result<std::map<std::string, std::string>> FusedWeightMap(const std::map<std::string, std::string>& weight_map,
                                                          const RuleSet& rules);

}  // namespace moepack
