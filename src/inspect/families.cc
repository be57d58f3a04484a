// The family listing reads the rule files and asks the op model for each
// fused tensor's shape in symbols, so that what it prints is what the
// engines do.
#include "moepack/families.h"

#include <nlohmann/json.hpp>

#include "moepack/rules.h"
#include "plan/ops/fusion_op.h"

namespace moepack {

Result<std::vector<FamilyInfo>> DescribeFamilies() {
  std::vector<FamilyInfo> out;
  for (const std::string& name : BuiltinFamilies()) {
    MOEPACK_ASSIGN_OR_RETURN(RuleSet rs, BuiltinRules(name));
    FamilyInfo f;
    f.family = rs.family();
    f.description = rs.description();
    f.model_types = rs.model_types();
    f.architectures = rs.architectures();
    f.hub_layout = rs.hub_layout();
    for (size_t i = 0; i < rs.fusions().size(); ++i) {
      const FusionRule& r = rs.fusions()[i];
      FamilyInfo::Tensor t;
      t.name = r.target;
      if (!r.source_shape.empty()) t.shape = ops::FusedShapeExpr(r);
      const int w = rs.WeightOf(static_cast<int>(i));
      t.role = w >= 0 ? "scales of " + rs.fusions()[w].name : std::string(RoleName(r.role));
      t.from = r.sources;
      f.fused.push_back(std::move(t));
    }
    for (const TransposeRule& r : rs.transposes()) {
      if (!r.experts()) continue;
      FamilyInfo::Tensor t;
      t.name = r.pattern;
      t.shape = ops::ShapeExprString(r.v5_shape);
      t.role = std::string(RoleName(r.role));
      t.from = {r.pattern + " " + ops::ShapeExprString(r.hub_shape)};
      f.fused.push_back(std::move(t));
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::string FamiliesToJson(const std::vector<FamilyInfo>& families) {
  nlohmann::json j = nlohmann::json::array();
  for (const FamilyInfo& f : families) {
    nlohmann::json fused = nlohmann::json::array();
    for (const auto& t : f.fused) {
      fused.push_back({{"name", t.name}, {"shape", t.shape}, {"role", t.role}, {"from", t.from}});
    }
    j.push_back({{"family", f.family},
                 {"description", f.description},
                 {"model_types", f.model_types},
                 {"architectures", f.architectures},
                 {"hub_layout", LayoutName(f.hub_layout)},
                 {"fused", fused}});
  }
  return j.dump(2);
}

std::string FamiliesToText(const std::vector<FamilyInfo>& families) {
  std::string out;
  for (const FamilyInfo& f : families) {
    out += f.family + "  (Hub: " + std::string(LayoutName(f.hub_layout)) + "; model_type";
    for (size_t i = 0; i < f.model_types.size(); ++i) out += (i ? ", " : " ") + f.model_types[i];
    out += ")\n";
    for (const auto& t : f.fused) {
      if (t.role.rfind("scales", 0) == 0) continue;  // FP8 scales follow their weights
      out += "    " + t.name + (t.shape.empty() ? "" : " " + t.shape) + "\n";
    }
  }
  return out;
}

}  // namespace moepack
