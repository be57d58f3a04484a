// Fuzzes config.json: ModelConfig::Parse and everything that reads a parsed
// config (family detection, expert counts, shape symbols), then plans a
// small per-expert and a small fused checkpoint under that config.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "moepack/checkpoint.h"
#include "moepack/config.h"
#include "moepack/convert.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "fuzz_models.h"

using namespace moepack;

namespace {

void PlanUnder(const std::string& dir, const std::string& config_text) {
  fuzz::WriteBytes(dir + "/config.json", config_text);
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return;
  auto rules = ChooseRules(*ckpt, "", "");
  if (!rules.ok()) return;
  for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
    PlanOptions po;
    po.direction = d;
    po.max_shard_size = 4096;
    auto plan = MakePlan(*ckpt, *rules, po);
    if (plan.ok()) fuzz::CheckPlan(*plan);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::SeedDir()) {
    for (size_t i = 0; i < fuzz::kNumModels; ++i) fuzz::WriteSeed("model" + std::to_string(i), fuzz::kModels[i]->config);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string per_expert = fuzz::MakeModelDir("config-per-expert", fuzz::kQwen3MoePerExpert);
  static const std::string fused = fuzz::MakeModelDir("config-fused", fuzz::kQwen3MoeFused);
  static const std::string transposed = fuzz::MakeModelDir("config-vl", fuzz::kQwen3VlHub);
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto cfg = ModelConfig::Parse(text, "config.json");
  if (!cfg.ok()) return 0;
  (void)cfg->model_type();
  (void)cfg->num_experts();
  (void)cfg->hidden_size();
  (void)cfg->moe_intermediate_size();
  (void)cfg->first_k_dense_replace();
  if (auto rules = RulesForConfig(*cfg); rules.ok()) {
    (void)rules->NumExperts(*cfg, "model.layers.0.");
    for (const auto& t : rules->transposes()) {
      if (auto e = rules->NumExperts(*cfg, ""); e.ok()) {
        (void)rules->EvalShape(*cfg, t.hub_shape, *e);
        (void)rules->EvalShape(*cfg, t.v5_shape, *e);
      }
    }
  }
  PlanUnder(per_expert, text);
  PlanUnder(fused, text);
  PlanUnder(transposed, text);
  return 0;
}
