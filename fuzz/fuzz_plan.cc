// Fuzzes the planner through real files. Input: one byte choosing a model
// (config.json and family, see fuzz_models.h), then the header text of its
// model.safetensors; the data section is sized to what the header asks.
// The checkpoint is opened and planned in both directions; every plan must
// pass CheckPlan, execute, and be accepted by Verify (with --forward).
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "fuzz_models.h"
#include "fuzz_util.h"
#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/executor.h"
#include "moepack/plan.h"
#include "moepack/verify.h"

using namespace moepack;

namespace {

void WriteSeeds() {
  for (size_t i = 0; i < fuzz::kNumModels; ++i) {
    uint64_t n = 0;
    std::string h = fuzz::HeaderOf(fuzz::kModels[i]->tensors, &n);
    fuzz::WriteSeed("model" + std::to_string(i), std::string(1, static_cast<char>(i)) + h);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::SeedDir()) {
    WriteSeeds();
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const std::string dir = fuzz::Subdir("plan/src");
  static const std::string out = fuzz::ScratchDir() + "/plan/out";
  const fuzz::ModelSpec& m = *fuzz::kModels[data[0] % fuzz::kNumModels];
  std::string_view header(reinterpret_cast<const char*>(data) + 1, size - 1);
  fuzz::WriteBytes(dir + "/config.json", m.config);
  fuzz::WriteBytes(dir + "/model.safetensors", fuzz::SafetensorsBytes(header, fuzz::DataSizeFor(header, 1u << 20)));

  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) return 0;
  auto rules = ChooseRules(*ckpt, "", "");
  FUZZ_CHECK(rules.ok(), "the fixed configs name known families");
  for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
    PlanOptions po;
    po.direction = d;
    po.max_shard_size = 1024;  // several output shards and an index
    auto plan = MakePlan(*ckpt, *rules, po);
    if (!plan.ok()) continue;
    fuzz::CheckPlan(*plan);
    std::error_code ec;
    std::filesystem::remove_all(out, ec);
    ExecuteOptions eo;
    eo.threads = 1;
    auto rep = Execute(*plan, out, eo);
    FUZZ_CHECK(rep.ok(), rep.ok() ? "" : rep.status().message().c_str());
    VerifyOptions vo;
    vo.threads = 1;
    vo.forward = true;  // the reference MoE layer over whatever experts there are
    auto v = Verify(dir, out, vo);
    FUZZ_CHECK(v.ok(), v.ok() ? "" : v.status().message().c_str());
    FUZZ_CHECK(v->ok, v->problem.c_str());
  }
  return 0;
}
