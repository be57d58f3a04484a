// Layout detection asks the family's rules (or, without a known family,
// every built-in family) which tensors are per-expert sources, fused
// targets or transposable, and counts MoE layers by their name prefix.
#include "moepack/inspect.h"

#include <nlohmann/json.hpp>
#include <re2/re2.h>

#include <set>

#include "moepack/rules.h"

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
  // MoE group (prefix of the experts module) -> layout found there.
  std::map<std::string, std::set<std::string>> groups;
  uint64_t experts = 0;
  static const RE2 kStacked(R"(^(.*)\.experts\.(gate_proj|up_proj|down_proj|w1|w2|w3)(\.weight)?$)");
  for (const std::string& name : c.names()) {
    const TensorInfo& t = *c.Find(name)->info;
    bool found = false;
    for (const RuleSet& rs : rules) {
      const std::string renamed = rs.Rename(name, Direction::kToFused);
      if (auto m = rs.MatchSource(renamed)) {
        if (rs.fusions()[m->fusion].scale_of.empty()) {
          groups[m->prefix].insert("per-expert");
          experts = std::max<uint64_t>(experts, m->expert + 1);
        }
        found = true;
      } else if (auto m = rs.MatchTarget(renamed); m && t.shape.size() == 3) {
        if (rs.fusions()[m->fusion].scale_of.empty()) {
          groups[m->prefix].insert("fused");
          experts = std::max<uint64_t>(experts, t.shape[0]);
        }
        found = true;
      } else if (auto m = rs.MatchTranspose(renamed); m && t.shape.size() == 3) {
        std::string layout = "fused";
        if (c.config()) {
          auto E = rs.NumExperts(*c.config(), m->prefix);
          auto hub = E.ok() ? rs.EvalShape(*c.config(), rs.transposes()[m->rule].hub_shape, *E, m->prefix) : E.status();
          auto v5 = E.ok() ? rs.EvalShape(*c.config(), rs.transposes()[m->rule].v5_shape, *E, m->prefix) : E.status();
          if (hub.ok() && v5.ok() && t.shape == *hub && t.shape != *v5) layout = "fused-transposed";
        }
        groups[m->prefix].insert(layout);
        experts = std::max<uint64_t>(experts, t.shape[0]);
        found = true;
      }
      if (found) {
        if (family.empty()) family = rs.family();
        break;
      }
    }
    std::string prefix;
    if (!found && t.shape.size() == 3 && RE2::FullMatch(name, kStacked, &prefix)) {
      groups[prefix + "."].insert("stacked");
      experts = std::max<uint64_t>(experts, t.shape[0]);
    }
  }
  r.family = family;
  for (const auto& [prefix, layouts] : groups) {
    const std::string l = layouts.size() == 1 ? *layouts.begin() : "mixed";
    r.layout_counts[l]++;
    r.layer_layouts[prefix] = l;
  }
  r.moe_layers = groups.size();
  if (r.layout_counts.empty()) r.layout = "dense";
  else if (r.layout_counts.size() == 1) r.layout = r.layout_counts.begin()->first;
  else r.layout = "mixed";
  if (c.config() && c.config()->num_experts()) experts = static_cast<uint64_t>(*c.config()->num_experts());
  r.num_experts = r.moe_layers ? experts : 0;
  return r;
}

std::string InspectToJson(const InspectReport& r) {
  nlohmann::json j;
  j["path"] = r.path;
  j["model_type"] = r.model_type;
  j["family"] = r.family;
  j["layout"] = r.layout;
  j["layouts"] = r.layout_counts;
  j["layers"] = r.layer_layouts;
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
  out += "\nlayout:      " + r.layout;
  if (r.layout == "mixed") {
    out += " (";
    bool first = true;
    for (const auto& [l, n] : r.layout_counts) {
      out += (first ? "" : ", ") + l + ": " + std::to_string(n);
      first = false;
    }
    out += ")";
  }
  out += "\nMoE layers:  " + std::to_string(r.moe_layers) + "\n";
  out += "experts:     " + std::to_string(r.num_experts) + "\n";
  return out;
}

}  // namespace moepack
