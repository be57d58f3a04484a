// Layout detection asks the op model (ops::LayoutOf) with the family's rules
// first and every other built-in family after, and counts MoE layers by
// their name prefix.
#include "moepack/inspect.h"

#include <nlohmann/json.hpp>

#include <set>

#include "moepack/rules.h"
#include "plan/ops/layout_of.h"

namespace moepack {
namespace {

// The family's own rules first; then every other built-in family, so that a
// layout the family's rules do not describe (qwen3_vl_moe re-saved per
// expert) is still recognised.
std::vector<RuleSet> CandidateRules(const Checkpoint& c, std::string* family) {
  std::vector<RuleSet> all;
  if (c.config()) {
    if (auto rs = RulesForConfig(*c.config()); rs.ok()) {
      *family = rs->family();
      all.push_back(std::move(rs).value());
    }
  }
  for (const auto& f : BuiltinFamilies()) {
    if (f == *family) continue;
    if (auto rs = BuiltinRules(f); rs.ok()) all.push_back(std::move(rs).value());
  }
  // Bound where config.json allows, so that shares of one expert list count
  // as the experts they are.
  if (c.config()) {
    for (RuleSet& rs : all) {
      if (auto bound = rs.Bind(*c.config()); bound.ok()) rs = std::move(bound).value();
    }
  }
  return all;
}

}  // namespace

Result<InspectReport> Inspect(const std::string& path) {
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint c, Checkpoint::Open(path));
  InspectReport r;
  r.path = path;
  if (c.config()) r.model_type = c.config()->model_type();
  r.total_bytes = c.total_bytes();
  r.num_tensors = c.names().size();
  for (const Shard& s : c.shards()) {
    r.shards.push_back({s.filename, s.header.tensors().size(), s.header.data_size()});
    for (const TensorInfo& t : s.header.tensors()) {
      r.dtypes[std::string(DTypeName(t.dtype))]++;
      r.tensors.push_back({t.name, std::string(DTypeName(t.dtype)), t.shape, s.filename,
                           s.header.data_start() + t.begin, t.nbytes()});
    }
  }

  std::string family;
  std::vector<RuleSet> rules = CandidateRules(c, &family);
  const ModelConfig* config = c.config() ? &*c.config() : nullptr;
  // MoE group (prefix of the experts module) -> layouts found there.
  std::map<std::string, std::set<MoeLayout>> groups;
  uint64_t experts = 0;
  for (const std::string& name : c.names()) {
    auto l = ops::LayoutOf(rules, config, name, c.Find(name)->info->shape);
    if (!l) continue;
    if (family.empty() && l->rules >= 0) family = rules[l->rules].family();
    if (!l->counts) continue;
    groups[l->group].insert(l->layout);
    experts = std::max(experts, l->experts);
  }
  r.family = family;
  for (const auto& [prefix, layouts] : groups) {
    const MoeLayout l = layouts.size() == 1 ? *layouts.begin() : MoeLayout::kMixed;
    r.layout_counts[l]++;
    r.layer_layouts[prefix] = l;
  }
  r.moe_layers = groups.size();
  if (r.layout_counts.empty()) r.layout = MoeLayout::kDense;
  else if (r.layout_counts.size() == 1) r.layout = r.layout_counts.begin()->first;
  else r.layout = MoeLayout::kMixed;
  if (c.config() && c.config()->num_experts()) experts = static_cast<uint64_t>(*c.config()->num_experts());
  r.num_experts = r.moe_layers ? experts : 0;
  return r;
}

std::string InspectToJson(const InspectReport& r) {
  nlohmann::json j;
  j["path"] = r.path;
  j["model_type"] = r.model_type;
  j["family"] = r.family;
  j["layout"] = LayoutName(r.layout);
  j["layouts"] = nlohmann::json::object();
  for (const auto& [l, n] : r.layout_counts) j["layouts"][std::string(LayoutName(l))] = n;
  j["layers"] = nlohmann::json::object();
  for (const auto& [prefix, l] : r.layer_layouts) j["layers"][prefix] = LayoutName(l);
  j["num_tensors"] = r.num_tensors;
  j["total_bytes"] = r.total_bytes;
  j["moe_layers"] = r.moe_layers;
  j["num_experts"] = r.num_experts;
  j["dtypes"] = r.dtypes;
  nlohmann::json shards = nlohmann::json::array();
  for (const auto& s : r.shards) shards.push_back({{"file", s.file}, {"tensors", s.tensors}, {"bytes", s.bytes}});
  j["shards"] = shards;
  nlohmann::json ts = nlohmann::json::array();
  for (const auto& t : r.tensors) {
    ts.push_back({{"name", t.name}, {"dtype", t.dtype}, {"shape", t.shape}, {"file", t.file}, {"offset", t.offset},
                  {"length", t.length}});
  }
  j["tensors"] = ts;
  return j.dump(2);
}

std::string InspectToText(const InspectReport& r) {
  std::string out;
  out += "path:        " + r.path + "\n";
  out += "model type:  " + (r.model_type.empty() ? std::string("(no config.json)") : r.model_type) + "\n";
  out += "family:      " + (r.family.empty() ? std::string("(none recognised)") : r.family) + "\n";
  out += "shards:      " + std::to_string(r.shards.size()) + "\n";
  out += "tensors:     " + std::to_string(r.num_tensors) + "\n";
  out += "total bytes: " + std::to_string(r.total_bytes) + "\n";
  out += "dtypes:     ";
  for (const auto& [d, n] : r.dtypes) out += " " + d + "=" + std::to_string(n);
  out += "\nlayout:      " + std::string(LayoutName(r.layout));
  if (r.layout == MoeLayout::kMixed) {
    out += " (";
    bool first = true;
    for (const auto& [l, n] : r.layout_counts) {
      out += (first ? "" : ", ") + std::string(LayoutName(l)) + ": " + std::to_string(n);
      first = false;
    }
    out += ")";
  }
  out += "\nMoE layers:  " + std::to_string(r.moe_layers) + "\n";
  out += "experts:     " + std::to_string(r.num_experts) + "\n";
  return out;
}

}  // namespace moepack
