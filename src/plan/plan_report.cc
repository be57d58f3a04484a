#include <nlohmann/json.hpp>

#include "moepack/parse.h"
#include "moepack/plan.h"

namespace moepack {
namespace {

const char* OpName(TensorOp op) {
  switch (op) {
    case TensorOp::kCopy: return "copy";
    case TensorOp::kFuse: return "fuse";
    case TensorOp::kSplit: return "split";
    case TensorOp::kTranspose: return "transpose";
  }
  return "?";
}

}  // namespace

std::string PlanToJson(const Plan& plan, bool with_tensors) {
  nlohmann::json j;
  j["family"] = plan.family;
  j["to"] = DirectionName(plan.direction);
  j["source"] = plan.src_dir;
  j["source_tensors"] = plan.source_tensors;
  j["num_tensors"] = plan.tensors.size();
  j["total_bytes"] = plan.total_bytes;
  j["unchanged"] = plan.unchanged;
  std::map<std::string, uint64_t> ops;
  for (const auto& t : plan.tensors) ops[OpName(t.op)]++;
  j["ops"] = ops;
  j["index"] = !plan.index_json.empty();
  nlohmann::json shards = nlohmann::json::array();
  for (const auto& s : plan.shards) {
    shards.push_back({{"file", s.filename}, {"tensors", s.tensors.size()}, {"bytes", s.layout.file_size()}});
  }
  j["shards"] = shards;
  j["aux_files"] = plan.aux_files;
  if (with_tensors) {
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& s : plan.shards) {
      for (size_t i = 0; i < s.tensors.size(); ++i) {
        const PlannedTensor& t = plan.tensors[s.tensors[i]];
        ts.push_back({{"name", t.name},
                      {"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"op", OpName(t.op)},
                      {"rule", t.rule},
                      {"file", s.filename},
                      {"ranges", t.copies.size() + t.gathers.size()}});
      }
    }
    j["tensors"] = ts;
  }
  return j.dump(2);
}

std::string PlanToText(const Plan& plan) {
  std::map<std::string, uint64_t> ops;
  for (const auto& t : plan.tensors) ops[OpName(t.op)]++;
  std::string out = "family:        " + plan.family + "\n";
  out += "to:            " + std::string(DirectionName(plan.direction)) + "\n";
  out += "source:        " + std::to_string(plan.source_tensors) + " tensors in " +
         std::to_string(plan.src_files.size()) + " file(s)\n";
  out += "output:        " + std::to_string(plan.tensors.size()) + " tensors, " + std::to_string(plan.total_bytes) +
         " bytes in " + std::to_string(plan.shards.size()) + " shard(s)\n";
  out += "operations:   ";
  for (const auto& [op, n] : ops) out += " " + op + "=" + std::to_string(n);
  out += "\n";
  // Hundreds of shards are common; the JSON form lists them all.
  constexpr size_t kShown = 8;
  for (size_t i = 0; i < plan.shards.size(); ++i) {
    const PlannedShard& s = plan.shards[i];
    if (i == kShown && plan.shards.size() > kShown + 1) {
      out += "  ... " + std::to_string(plan.shards.size() - kShown) + " more shards\n";
      break;
    }
    out += "  " + s.filename + ": " + std::to_string(s.tensors.size()) + " tensors, " +
           std::to_string(s.layout.file_size()) + " bytes\n";
  }
  if (!plan.aux_files.empty()) out += "other files:   " + std::to_string(plan.aux_files.size()) + " copied as is\n";
  if (plan.unchanged) {
    out += "nothing to convert: every tensor is already in the " + std::string(DirectionName(plan.direction)) +
           " layout of " + plan.family + " and is copied as it is\n";
  }
  return out;
}

}  // namespace moepack
