// The index of a checkpoint exported fused: a weight_map (tensor -> shard
// file) of per-expert names rewritten to the fused names, for loaders that
// write their own shards.
#pragma once

#include <map>
#include <string>

#include "moepack/config.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack {

// Each fused tensor maps to the shard of its lowest-numbered source; other
// tensors keep their shard under their renamed name. `config` (the
// checkpoint's config.json, when there is one) places experts in fusions
// that share one expert list.
Result<std::map<std::string, std::string>> FusedWeightMap(const std::map<std::string, std::string>& weight_map,
                                                          const RuleSet& rules, const ModelConfig* config = nullptr);

}  // namespace moepack
