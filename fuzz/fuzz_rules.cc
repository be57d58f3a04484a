// Fuzzes rule files: RuleSet::Parse, then every query the engines make of a
// rule set, and plans of small per-expert and fused checkpoints in both
// directions under the fuzzed rules.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_models.h"
#include "fuzz_util.h"
#include "moepack/checkpoint.h"
#include "moepack/plan.h"
#include "moepack/rules.h"

using namespace moepack;

namespace {

struct Fixture {
  std::vector<Checkpoint> checkpoints;
  Fixture() {
    for (size_t i = 0; i < fuzz::kNumModels; ++i) {
      auto c = Checkpoint::Open(fuzz::MakeModelDir("rules" + std::to_string(i), *fuzz::kModels[i]));
      if (!c.ok()) std::abort();
      checkpoints.push_back(std::move(c).value());
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture* fx = new Fixture();
  auto rules = RuleSet::Parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.json");
  if (!rules.ok()) return 0;
  for (const Checkpoint& c : fx->checkpoints) {
    for (const std::string& name : c.names()) {
      const std::string fused = rules->Rename(name, Direction::kToFused);
      (void)rules->Rename(fused, Direction::kToPerExpert);
      if (auto m = rules->MatchSource(fused)) {
        FUZZ_CHECK(rules->SourceName(m->fusion, m->source, m->prefix, m->expert) == fused, fused.c_str());
        (void)rules->TargetName(m->fusion, m->prefix);
      }
      if (auto m = rules->MatchTarget(fused)) FUZZ_CHECK(rules->TargetName(m->fusion, m->prefix) == fused, fused.c_str());
      (void)rules->MatchTranspose(fused);
    }
    for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
      PlanOptions po;
      po.direction = d;
      auto plan = MakePlan(c, *rules, po);
      if (plan.ok()) fuzz::CheckPlan(*plan);
    }
  }
  return 0;
}
