// What a checkpoint holds and which MoE layout it is in. Reads headers only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moepack/checkpoint.h"
#include "moepack/layout.h"
#include "moepack/status.h"

namespace moepack {

struct InspectReport {
  std::string path;
  std::string model_type;  // from config.json, empty without one
  std::string family;      // the rule family that describes it, if any
  MoeLayout layout = MoeLayout::kDense;
  std::map<MoeLayout, uint64_t> layout_counts;       // MoE layers per layout
  std::map<std::string, MoeLayout> layer_layouts;    // experts' name prefix -> layout
  uint64_t num_tensors = 0;
  uint64_t total_bytes = 0;
  uint64_t moe_layers = 0;
  uint64_t num_experts = 0;
  std::map<std::string, uint64_t> dtypes;  // dtype -> tensor count
  struct ShardInfo {
    std::string file;
    uint64_t tensors = 0;
    uint64_t bytes = 0;
  };
  std::vector<ShardInfo> shards;
  struct Tensor {
    std::string name;
    std::string dtype;
    std::vector<uint64_t> shape;
    std::string file;
    uint64_t offset = 0;  // absolute in the file
    uint64_t length = 0;
  };
  std::vector<Tensor> tensors;
};

Result<InspectReport> Inspect(const std::string& path);
std::string InspectToJson(const InspectReport& report);
std::string InspectToText(const InspectReport& report);

}  // namespace moepack
