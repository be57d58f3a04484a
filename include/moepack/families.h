// What the built-in families are: for each, the model types and
// architectures that select it, the layout the Hub ships it in, and the
// fused tensors v5 holds (name and shape in config.json's symbols), as
// `moepack families` prints them.
#pragma once

#include <string>
#include <vector>

#include "moepack/layout.h"
#include "moepack/status.h"

namespace moepack {

struct FamilyInfo {
  std::string family;
  std::string description;
  std::vector<std::string> model_types;
  std::vector<std::string> architectures;
  MoeLayout hub_layout = MoeLayout::kPerExpert;
  struct Tensor {
    std::string name;   // v5's name, "{prefix}mlp.experts.gate_up_proj"
    std::string shape;  // "[E, 2*I, H]"; empty when the rule gives no source_shape
    std::string role;   // "gate_up", "up", "down", "" (e.g. scales: "scales of gate_up_proj")
    std::vector<std::string> from;  // the per-expert names it is made of
  };
  std::vector<Tensor> fused;
};

Result<std::vector<FamilyInfo>> DescribeFamilies();
std::string FamiliesToJson(const std::vector<FamilyInfo>& families);
std::string FamiliesToText(const std::vector<FamilyInfo>& families);

}  // namespace moepack
