// Checkpoints whose MoE layers are not all in one layout, as they occur on
// the Hub: Qwen3.5's decoder layers ship fused while its MTP block keeps one
// tensor per expert, and a conversion stopped half-way (or a hand-edited
// checkpoint) leaves some layers fused and the rest per-expert. Inspect must
// name the layout of each layer, and convert must bring every layer to the
// asked layout in one run, with verify accepting the result both ways.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "moepack/inspect.h"
#include "moepack/verify.h"
#include "testutil.h"

namespace moepack {
namespace mixed_layout_test {
namespace {

using json = nlohmann::json;
using testing::RawTensor;
using testing::TempDir;
using testing::TensorMap;

void ExpectVerifies(const std::string& src, const std::string& dst) {
  auto r = Verify(src, dst, VerifyOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->ok) << src << " -> " << dst << ": " << r->problem;
  EXPECT_GT(r->pieces, 0u);
}

uint64_t CountSuffix(const TensorMap& m, const std::string& suffix) {
  uint64_t n = 0;
  for (const auto& [name, _] : m) {
    n += name.ends_with(suffix);
  }
  return n;
}

// Per-expert tensors ending in `leaf` (shared experts are not under ".experts.").
uint64_t CountExpertLeaves(const TensorMap& m, const std::string& leaf) {
  uint64_t n = 0;
  for (const auto& [name, _] : m) n += name.find(".experts.") != std::string::npos && name.ends_with(leaf);
  return n;
}

// Qwen3.5's MTP block as its Hub checkpoints carry it: a decoder layer under
// mtp.layers.0 whose experts are per-expert, beside fused decoder layers.
TEST(MixedLayout, Qwen35FusedLayersWithAPerExpertMtpBlockConvertBothWays) {
  TempDir d;
  testing::SynthOrDie(d / "hub", testing::TinyOptions("qwen3_5_moe"));
  const TensorMap hub = testing::ReadTensors(d / "hub");
  // The decoder's fused tensors give E, 2I and H; the MTP experts take them.
  const std::string layer0 = "model.language_model.layers.0.mlp.experts.";
  ASSERT_TRUE(hub.count(layer0 + "gate_up_proj"));
  const RawTensor& gate_up = hub.at(layer0 + "gate_up_proj");
  ASSERT_EQ(gate_up.shape.size(), 3u);
  const uint64_t experts = gate_up.shape[0], inter = gate_up.shape[1] / 2, hidden = gate_up.shape[2];
  const DType dtype = gate_up.dtype;
  const uint64_t elem = testing::ElementBytes(dtype);
  const std::string mtp = "mtp.layers.0.mlp.";
  uint64_t seed = 900;
  testing::RewriteCheckpoint(d / "hub", d / "src", [&](std::vector<RawTensor>& ts, json&) {
    for (uint64_t j = 0; j < experts; ++j) {
      const std::string e = mtp + "experts." + std::to_string(j) + ".";
      ts.push_back({e + "gate_proj.weight", dtype, {inter, hidden}, testing::PatternBytes(inter * hidden * elem, seed++)});
      ts.push_back({e + "up_proj.weight", dtype, {inter, hidden}, testing::PatternBytes(inter * hidden * elem, seed++)});
      ts.push_back({e + "down_proj.weight", dtype, {hidden, inter}, testing::PatternBytes(inter * hidden * elem, seed++)});
    }
    ts.push_back({mtp + "gate.weight", dtype, {experts, hidden}, testing::PatternBytes(experts * hidden * elem, seed++)});
  });

  auto report = Inspect(d / "src");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->layout, MoeLayout::kMixed);
  // Layers are named by their prefix, as the rules' {prefix} matches it.
  ASSERT_TRUE(report->layer_layouts.count("mtp.layers.0.")) << InspectToJson(*report);
  EXPECT_EQ(report->layer_layouts.at("mtp.layers.0."), MoeLayout::kPerExpert);
  EXPECT_EQ(report->layer_layouts.at("model.language_model.layers.0."), MoeLayout::kFused);
  const uint64_t decoder_layers = CountSuffix(hub, ".mlp.experts.gate_up_proj");
  ASSERT_GT(decoder_layers, 1u);
  EXPECT_EQ(report->layout_counts.at(MoeLayout::kPerExpert), 1u);
  EXPECT_EQ(report->layout_counts.at(MoeLayout::kFused), decoder_layers);
  EXPECT_NE(InspectToText(*report).find("mixed (per-expert: 1, fused: " + std::to_string(decoder_layers) + ")"),
            std::string::npos)
      << InspectToText(*report);

  // To fused: the MTP experts join v5's form; the decoder layers are copied.
  testing::ConvertOrDie(d / "src", d / "fused", Direction::kToFused);
  const TensorMap src = testing::ReadTensors(d / "src");
  const TensorMap fused = testing::ReadTensors(d / "fused");
  ASSERT_TRUE(fused.count(mtp + "experts.gate_up_proj"));
  ASSERT_TRUE(fused.count(mtp + "experts.down_proj"));
  EXPECT_EQ(fused.at(mtp + "experts.gate_up_proj").shape, (std::vector<uint64_t>{experts, 2 * inter, hidden}));
  EXPECT_EQ(fused.at(mtp + "experts.down_proj").shape, (std::vector<uint64_t>{experts, hidden, inter}));
  EXPECT_EQ(CountExpertLeaves(fused, ".gate_proj.weight"), 0u);
  // Expert j's gate rows then up rows, from the per-expert bytes.
  const std::string& fused_gate_up = fused.at(mtp + "experts.gate_up_proj").data;
  const uint64_t half = inter * hidden * elem;
  for (uint64_t j = 0; j < experts; ++j) {
    const std::string e = mtp + "experts." + std::to_string(j) + ".";
    EXPECT_TRUE(fused_gate_up.compare(2 * j * half, half, src.at(e + "gate_proj.weight").data) == 0) << j;
    EXPECT_TRUE(fused_gate_up.compare((2 * j + 1) * half, half, src.at(e + "up_proj.weight").data) == 0) << j;
  }
  for (const auto& [name, t] : hub) {
    ASSERT_TRUE(fused.count(name)) << name;
    EXPECT_TRUE(fused.at(name).data == t.data) << name << " was already fused";
  }
  ExpectVerifies(d / "src", d / "fused");
  auto fused_report = Inspect(d / "fused");
  ASSERT_TRUE(fused_report.ok());
  EXPECT_EQ(fused_report->layout, MoeLayout::kFused);

  // To per-expert: every layer, the MTP block's too, is cut per expert.
  testing::ConvertOrDie(d / "src", d / "per-expert", Direction::kToPerExpert);
  const TensorMap per_expert = testing::ReadTensors(d / "per-expert");
  EXPECT_EQ(CountSuffix(per_expert, ".gate_up_proj"), 0u);
  EXPECT_EQ(CountExpertLeaves(per_expert, ".gate_proj.weight"), (decoder_layers + 1) * experts);
  for (const auto& [name, t] : src) {
    if (name.rfind(mtp, 0) != 0) continue;
    ASSERT_TRUE(per_expert.count(name)) << name;
    EXPECT_TRUE(per_expert.at(name).data == t.data) << name;
  }
  ExpectVerifies(d / "src", d / "per-expert");
  auto per_expert_report = Inspect(d / "per-expert");
  ASSERT_TRUE(per_expert_report.ok());
  EXPECT_EQ(per_expert_report->layout, MoeLayout::kPerExpert);

  // The two results are one checkpoint in two layouts.
  testing::ConvertOrDie(d / "per-expert", d / "fused-again", Direction::kToFused);
  EXPECT_EQ(testing::DiffTensors(fused, testing::ReadTensors(d / "fused-again")), "");
}

// A qwen3_moe checkpoint with one layer fused and the others per-expert.
TEST(MixedLayout, HalfConvertedCheckpointConvertsEitherWay) {
  TempDir d;
  testing::SynthOrDie(d / "per-expert", testing::TinyOptions("qwen3_moe", "per-expert", "bf16"));
  testing::ConvertOrDie(d / "per-expert", d / "fused", Direction::kToFused);
  const TensorMap per_expert = testing::ReadTensors(d / "per-expert");
  const TensorMap fused = testing::ReadTensors(d / "fused");
  const uint64_t layers = CountSuffix(fused, ".mlp.experts.gate_up_proj");
  ASSERT_GE(layers, 3u);
  const std::string fused_layer = "model.layers.1.";
  testing::RewriteCheckpoint(d / "per-expert", d / "mixed", [&](std::vector<RawTensor>& ts, json&) {
    std::vector<RawTensor> kept;
    for (auto& t : ts) {
      if (t.name.rfind(fused_layer + "mlp.experts.", 0) != 0) kept.push_back(std::move(t));
    }
    kept.push_back(fused.at(fused_layer + "mlp.experts.gate_up_proj"));
    kept.push_back(fused.at(fused_layer + "mlp.experts.down_proj"));
    ts = std::move(kept);
  });

  auto report = Inspect(d / "mixed");
  ASSERT_TRUE(report.ok()) << report.status().message();
  EXPECT_EQ(report->layout, MoeLayout::kMixed);
  EXPECT_EQ(report->layer_layouts.at(fused_layer), MoeLayout::kFused);
  EXPECT_EQ(report->layer_layouts.at("model.layers.0."), MoeLayout::kPerExpert);
  EXPECT_EQ(report->layout_counts.at(MoeLayout::kPerExpert), layers - 1);
  EXPECT_EQ(report->layout_counts.at(MoeLayout::kFused), 1u);
  const json j = json::parse(InspectToJson(*report));
  EXPECT_EQ(j["layout"], "mixed");
  EXPECT_EQ(j["layers"][fused_layer], "fused");
  EXPECT_EQ(j["layers"]["model.layers.2."], "per-expert");

  testing::ConvertOrDie(d / "mixed", d / "to-fused", Direction::kToFused);
  EXPECT_EQ(testing::DiffTensors(fused, testing::ReadTensors(d / "to-fused")), "");
  ExpectVerifies(d / "mixed", d / "to-fused");
  testing::ConvertOrDie(d / "mixed", d / "to-per-expert", Direction::kToPerExpert);
  EXPECT_EQ(testing::DiffTensors(per_expert, testing::ReadTensors(d / "to-per-expert")), "");
  ExpectVerifies(d / "mixed", d / "to-per-expert");

  // The CLI agrees, and says the layout of each layer.
  auto cli = testing::RunMoepack("inspect --json " + d / "mixed");
  ASSERT_EQ(cli.exit_code, 0) << cli.out;
  EXPECT_EQ(json::parse(cli.out)["layers"][fused_layer], "fused");
}

}  // namespace
}  // namespace mixed_layout_test
}  // namespace moepack
