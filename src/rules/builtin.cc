#include <algorithm>

#include "moepack/rules.h"
#include "rules/builtin_rules.h"
#include "util/file.h"

namespace moepack {
namespace {

// The embedded files cannot change while the process runs, and parsing all
// of them was most of what choosing rules cost (every convert, load, verify
// and inspect chooses), so each process parses them once.
const Result<std::vector<RuleSet>>& EmbeddedRuleSets() {
  static const Result<std::vector<RuleSet>> sets = []() -> Result<std::vector<RuleSet>> {
    std::vector<RuleSet> all;
    for (const auto& f : internal::EmbeddedRuleFiles()) {
      MOEPACK_ASSIGN_OR_RETURN(RuleSet rs, RuleSet::Parse(f.text, "built-in rules/" + f.name + ".json"));
      all.push_back(std::move(rs));
    }
    return all;
  }();
  return sets;
}

// For the errors that name an unknown model type.
std::string KnownFamilies() {
  std::string known;
  for (const auto& f : internal::EmbeddedRuleFiles()) known += (known.empty() ? "" : ", ") + f.name;
  return known;
}

}  // namespace

Result<RuleSet> LoadRuleFile(const std::string& path) {
  MOEPACK_ASSIGN_OR_RETURN(std::string text, internal::ReadSmallFile(path, 16u << 20));
  return RuleSet::Parse(text, path);
}

std::vector<std::string> BuiltinFamilies() {
  std::vector<std::string> out;
  for (const auto& f : internal::EmbeddedRuleFiles()) out.push_back(f.name);
  return out;
}

Result<RuleSet> BuiltinRules(const std::string& family) {
  const auto& sets = EmbeddedRuleSets();
  if (!sets.ok()) return sets.status();
  for (const auto& rs : *sets) {
    if (rs.family() == family) return rs;
  }
  // A model_type that a family lists (e.g. qwen3_vl_moe_text) also selects it.
  for (const auto& rs : *sets) {
    const auto& mt = rs.model_types();
    if (std::find(mt.begin(), mt.end(), family) != mt.end()) return rs;
  }
  return Status::InvalidArgument("unknown model type '" + family + "' (known: " + KnownFamilies() +
                                 "; or pass --rules FILE)");
}

Result<RuleSet> RulesForConfig(const ModelConfig& config) {
  const auto& sets = EmbeddedRuleSets();
  if (!sets.ok()) return sets.status();
  const std::vector<RuleSet>& all = *sets;
  auto has = [](const std::vector<std::string>& v, const std::string& s) {
    return !s.empty() && std::find(v.begin(), v.end(), s) != v.end();
  };
  // model_type is the most specific signal, then architectures, then the
  // model_type of nested configs.
  const std::string top = config.String("model_type").value_or("");
  for (const auto& rs : all) {
    if (rs.family() == top || has(rs.model_types(), top)) return rs;
  }
  for (const auto& arch : config.architectures()) {
    for (const auto& rs : all) {
      if (has(rs.architectures(), arch)) return rs;
    }
  }
  for (const char* nested : {"text_config.model_type", "thinker_config.model_type", "thinker_config.text_config.model_type"}) {
    const std::string mt = config.String(nested).value_or("");
    for (const auto& rs : all) {
      if (rs.family() == mt || has(rs.model_types(), mt)) return rs;
    }
  }
  std::string what = top.empty() ? "config.json has no model_type" : "unknown model type '" + top + "'";
  return Status::InvalidArgument(what + " (known: " + KnownFamilies() + "; pass --model-type or --rules FILE)");
}

Result<RuleSet> ChooseRules(const ModelConfig* config, const std::string& where, const std::string& model_type,
                            const std::string& rules_file) {
  if (!rules_file.empty()) return LoadRuleFile(rules_file);
  if (!model_type.empty()) return BuiltinRules(model_type);
  if (!config) {
    return Status::InvalidArgument(where + ": no config.json to tell the model type (pass --model-type or --rules)");
  }
  return RulesForConfig(*config);
}

}  // namespace moepack
