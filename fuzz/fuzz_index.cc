// Fuzzes model.safetensors.index.json: Checkpoint::Open on a directory of
// two fixed shards (and config.json) with the input as the index, then a
// plan to the fused layout when the checkpoint opens.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "fuzz_models.h"
#include "fuzz_util.h"
#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/plan.h"

using namespace moepack;

namespace {

const char* const kShards[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};

std::string MakeDir() {
  const auto& t = fuzz::kQwen3MoePerExpert.tensors;
  const size_t half = t.size() / 2;
  std::string dir = fuzz::Subdir("index");
  fuzz::WriteBytes(dir + "/config.json", fuzz::kQwen3MoePerExpert.config);
  fuzz::WriteShard(dir + "/" + kShards[0], {t.begin(), t.begin() + half});
  fuzz::WriteShard(dir + "/" + kShards[1], {t.begin() + half, t.end()});
  return dir;
}

std::string ValidIndex() {
  const auto& t = fuzz::kQwen3MoePerExpert.tensors;
  nlohmann::json j;
  j["metadata"]["total_size"] = 0;
  for (size_t i = 0; i < t.size(); ++i) j["weight_map"][t[i].name] = kShards[i < t.size() / 2 ? 0 : 1];
  return j.dump(2);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::SeedDir()) {
    fuzz::WriteSeed("valid_index", ValidIndex());
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = MakeDir();
  fuzz::WriteBytes(dir + "/" + kIndexFile, std::string_view(reinterpret_cast<const char*>(data), size));
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return 0;
  FUZZ_CHECK(ckpt->shards().size() == 2, "both shards are listed");
  for (const std::string& n : ckpt->names()) FUZZ_CHECK(ckpt->Find(n) != nullptr, n.c_str());
  auto rules = ChooseRules(*ckpt, "", "");
  FUZZ_CHECK(rules.ok(), "qwen3_moe");
  PlanOptions po;
  auto plan = MakePlan(*ckpt, *rules, po);
  FUZZ_CHECK(plan.ok(), plan.ok() ? "" : plan.status().message().c_str());
  fuzz::CheckPlan(*plan);
  return 0;
}
