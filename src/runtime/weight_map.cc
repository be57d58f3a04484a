#include "moepack/weight_map.h"

namespace moepack {

Result<std::map<std::string, std::string>> FusedWeightMap(const std::map<std::string, std::string>& weight_map,
                                                          const RuleSet& unbound, const ModelConfig* config) {
  RuleSet rules = unbound;
  if (config) {
    MOEPACK_ASSIGN_OR_RETURN(rules, unbound.Bind(*config));
  }
  std::map<std::string, std::string> out;
  std::map<std::string, std::pair<std::pair<int64_t, int>, std::string>> lowest;  // fused -> ((expert, source), file)
  for (const auto& [name, file] : weight_map) {
    const std::string n = rules.Rename(name, Direction::kToFused);
    if (auto m = rules.MatchSource(n)) {
      const std::string target = rules.TargetName(m->fusion, m->prefix);
      auto key = std::make_pair(m->expert, m->source);
      auto it = lowest.find(target);
      if (it == lowest.end() || key < it->second.first) lowest[target] = {key, file};
      continue;
    }
    if (!out.emplace(n, file).second) return Status::Corrupt("weight_map: two tensors become '" + n + "'");
  }
  for (const auto& [target, v] : lowest) {
    if (!out.emplace(target, v.second).second) {
      return Status::Corrupt("weight_map: '" + target + "' is both fused from experts and listed itself");
    }
  }
  return out;
}

}  // namespace moepack
