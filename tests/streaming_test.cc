// The streaming converter's protocol: tensors arrive one at a time in any
// order; errors name layer, projection and expert; Finalize reports what is
// incomplete. FusedWeightMap. (Byte equality with the executor for every
// family is in families_test.cc.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ckpt_util.h"
#include "moepack/config.h"
#include "moepack/rules.h"
#include "moepack/streaming.h"
#include "moepack/weight_map.h"

namespace moepack {
namespace streaming_test {
namespace {

constexpr uint64_t kE = 4, kH = 8, kI = 6;

struct Buf {
  std::string bytes;
  TensorView view;
};

Buf Make(DType dt, std::vector<uint64_t> shape, uint64_t seed) {
  Buf b;
  b.bytes = testing::PatternBytes(testing::NumElementsOf(shape) * testing::ElementBytes(dt), seed);
  b.view.dtype = dt;
  b.view.shape = std::move(shape);
  b.view.data = b.bytes.data();
  b.view.nbytes = b.bytes.size();
  return b;
}

StreamingConverter Make(const std::string& family, const std::string& config_json,
                        Direction dir = Direction::kToFused) {
  auto rules = BuiltinRules(family);
  EXPECT_TRUE(rules.ok());
  auto cfg = ModelConfig::Parse(config_json, "config.json");
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
  auto c = StreamingConverter::Create(*rules, *cfg, dir);
  EXPECT_TRUE(c.ok());
  return std::move(c).value();
}

const char* kQwenConfig = R"({"model_type": "qwen3_moe", "num_experts": 4})";

std::string Name(int layer, int j, const std::string& leaf) {
  return "model.layers." + std::to_string(layer) + ".mlp.experts." + std::to_string(j) + "." + leaf;
}

// Feeds one per-expert tensor; returns what came out (or fails the test).
std::vector<OwnedTensor> Feed(StreamingConverter& c, const std::string& name, DType dt, std::vector<uint64_t> shape,
                              uint64_t seed) {
  Buf b = Make(dt, std::move(shape), seed);
  EXPECT_TRUE(c.CanHandle(name)) << name;
  auto r = c.Convert(name, b.view);
  EXPECT_TRUE(r.ok()) << name << ": " << r.status().message();
  return r.ok() ? std::move(r).value() : std::vector<OwnedTensor>{};
}

TEST(Streaming, FinalizeListsLayerProjectionAndArrivedExperts) {
  StreamingConverter c = Make("qwen3_moe", kQwenConfig);
  for (int j : {0, 2}) Feed(c, Name(0, j, "gate_proj.weight"), DType::BF16, {kI, kH}, j);
  for (int j : {0, 2, 3}) Feed(c, Name(0, j, "up_proj.weight"), DType::BF16, {kI, kH}, 10 + j);
  for (int j : {0, 1}) Feed(c, Name(3, j, "down_proj.weight"), DType::BF16, {kH, kI}, 20 + j);
  EXPECT_GT(c.pending_bytes(), 0u);
  auto f = c.Finalize();
  ASSERT_FALSE(f.ok());
  const std::string msg = f.status().message();
  for (const char* want : {"model.layers.0.mlp.experts.gate_up_proj", "gate_proj.weight arrived for experts 0,2;",
                           "up_proj.weight arrived for experts 0,2-3;", "model.layers.3.mlp.experts.down_proj",
                           "down_proj.weight arrived for experts 0-1;", "4 experts"}) {
    EXPECT_NE(msg.find(want), std::string::npos) << "'" << want << "' not in: " << msg;
  }
  // Nothing about layers that never started.
  EXPECT_EQ(msg.find("model.layers.1."), std::string::npos) << msg;
}

TEST(Streaming, CompleteGroupsComeOutOnceInNumericExpertOrder) {
  StreamingConverter c = Make("qwen3_moe", R"({"model_type": "qwen3_moe", "num_experts": 12})");
  // Arrival order: reversed, up before gate.
  std::vector<std::string> gate(12), up(12);
  std::vector<OwnedTensor> out;
  for (int j = 11; j >= 0; --j) {
    for (const char* leaf : {"up_proj.weight", "gate_proj.weight"}) {
      Buf b = Make(DType::F16, {kI, kH}, 100 * j + leaf[0]);
      (leaf[0] == 'u' ? up : gate)[j] = b.bytes;
      auto r = c.Convert(Name(1, j, leaf), b.view);
      ASSERT_TRUE(r.ok()) << r.status().message();
      for (auto& t : *r) out.push_back(std::move(t));
      if (j > 0 || leaf[0] == 'u') {
        EXPECT_TRUE(r->empty());
      }
    }
  }
  ASSERT_EQ(out.size(), 1u);
  const OwnedTensor& t = out[0];
  EXPECT_EQ(t.name, "model.layers.1.mlp.experts.gate_up_proj");
  EXPECT_EQ(t.dtype, DType::F16);
  EXPECT_EQ(t.shape, (std::vector<uint64_t>{12, 2 * kI, kH}));
  std::string want;
  for (int j = 0; j < 12; ++j) want += gate[j] + up[j];  // expert 10 after 9; gate rows then up rows
  ASSERT_EQ(t.nbytes, want.size());
  EXPECT_TRUE(std::string(reinterpret_cast<const char*>(t.data.get()), t.nbytes) == want);
  EXPECT_EQ(c.pending_bytes(), 0u);
  auto f = c.Finalize();
  EXPECT_TRUE(f.ok()) << f.status().message();
  // A late expert for a finished tensor is an error naming it.
  Buf late = Make(DType::F16, {kI, kH}, 1);
  auto r = c.Convert(Name(1, 3, "gate_proj.weight"), late.view);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("expert 3"), std::string::npos) << r.status().message();
}

TEST(Streaming, DuplicateOutOfRangeAndMismatchesAreErrorsNamingLayerAndExpert) {
  struct Case {
    const char* what;
    std::string name;
    DType dtype;
    std::vector<uint64_t> shape;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"duplicate", Name(2, 1, "gate_proj.weight"), DType::BF16, {kI, kH},
       {"model.layers.2.mlp.experts", "expert 1", "gate_proj.weight", "twice"}},
      {"id >= E", Name(2, 4, "up_proj.weight"), DType::BF16, {kI, kH},
       {"model.layers.2.mlp.experts", "expert 4", "out of range", "4 experts"}},
      {"shape mismatch", Name(2, 3, "up_proj.weight"), DType::BF16, {kI + 1, kH},
       {"model.layers.2.mlp.experts", "expert 3", "up_proj.weight", "[7, 8]", "[6, 8]"}},
      {"dtype mismatch", Name(2, 2, "gate_proj.weight"), DType::F16, {kI, kH},
       {"model.layers.2.mlp.experts", "expert 2", "F16", "BF16"}},
  };
  for (const Case& k : cases) {
    StreamingConverter c = Make("qwen3_moe", kQwenConfig);
    Feed(c, Name(2, 1, "gate_proj.weight"), DType::BF16, {kI, kH}, 1);
    Buf b = Make(k.dtype, k.shape, 2);
    auto r = c.Convert(k.name, b.view);
    ASSERT_FALSE(r.ok()) << k.what;
    for (const auto& e : k.expect) {
      EXPECT_NE(r.status().message().find(e), std::string::npos) << k.what << ": '" << e << "' not in "
                                                                 << r.status().message();
    }
    // The converter is still usable after a refused tensor.
    Feed(c, Name(2, 0, "gate_proj.weight"), DType::BF16, {kI, kH}, 3);
  }
  // A view whose byte count does not match its shape.
  StreamingConverter c = Make("qwen3_moe", kQwenConfig);
  Buf b = Make(DType::BF16, {kI, kH}, 1);
  b.view.nbytes -= 2;
  EXPECT_FALSE(c.Convert(Name(0, 0, "gate_proj.weight"), b.view).ok());
}

// With H and I in config.json, a transposed expert or fused tensor is refused
// in both directions; without them (kQwenConfig) shapes are only checked
// against each other.
TEST(Streaming, ShapesAreCheckedAgainstConfigDims) {
  const std::string cfg = R"({"model_type": "qwen3_moe", "num_experts": 4, "hidden_size": 8,
                              "moe_intermediate_size": 6})";
  StreamingConverter fwd = Make("qwen3_moe", cfg);
  Buf t = Make(DType::BF16, {kH, kI}, 1);
  auto r = fwd.Convert(Name(1, 0, "gate_proj.weight"), t.view);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("[8, 6] but config.json (hidden_size=8, moe_intermediate_size=6) gives [I, H] = [6, 8]"),
            std::string::npos)
      << r.status().message();
  Feed(fwd, Name(1, 0, "gate_proj.weight"), DType::BF16, {kI, kH}, 1);

  StreamingConverter rev = Make("qwen3_moe", cfg, Direction::kToPerExpert);
  Buf f = Make(DType::BF16, {kE, kH, 2 * kI}, 2);
  r = rev.Convert("model.layers.1.mlp.experts.gate_up_proj", f.view);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("gives the fused layout [E, 2*I, H] = [4, 12, 8]"), std::string::npos)
      << r.status().message();
  Buf ok = Make(DType::BF16, {kE, 2 * kI, kH}, 3);
  r = rev.Convert("model.layers.1.mlp.experts.gate_up_proj", ok.view);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->size(), 2 * kE);
}

TEST(Streaming, AnExpertTensorNoFusionTakesIsRefused) {
  StreamingConverter c = Make("qwen3_moe", kQwenConfig);
  const std::string bias = Name(0, 2, "down_proj.bias");
  EXPECT_TRUE(c.CanHandle(bias));
  Buf b = Make(DType::BF16, {kH}, 1);
  auto r = c.Convert(bias, b.view);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("'" + bias + "' belongs to expert 2"), std::string::npos) << r.status().message();
  // Going the other way nothing is fused, so per-expert tensors pass through.
  StreamingConverter rev = Make("qwen3_moe", kQwenConfig, Direction::kToPerExpert);
  EXPECT_FALSE(rev.CanHandle(bias));
}

TEST(Streaming, PassThroughNamesAndRenames) {
  StreamingConverter q = Make("qwen3_moe", kQwenConfig);
  EXPECT_FALSE(q.CanHandle("model.layers.0.mlp.gate.weight"));
  EXPECT_FALSE(q.CanHandle("model.layers.0.mlp.experts.07.gate_proj.weight"));
  EXPECT_FALSE(q.CanHandle("model.layers.0.mlp.experts.gate_up_proj"));  // already fused
  EXPECT_TRUE(q.CanHandle("model.layers.0.mlp.experts.0.down_proj.weight_scale_inv"));
  EXPECT_EQ(q.Rename("model.embed_tokens.weight"), "model.embed_tokens.weight");
  auto not_handled = q.Convert("model.norm.weight", Make(DType::BF16, {kH}, 1).view);
  EXPECT_FALSE(not_handled.ok());

  StreamingConverter m = Make("mixtral", R"({"model_type": "mixtral", "num_local_experts": 4})");
  EXPECT_TRUE(m.CanHandle("model.layers.0.block_sparse_moe.experts.3.w2.weight"));
  EXPECT_FALSE(m.CanHandle("model.layers.0.block_sparse_moe.gate.weight"));
  EXPECT_EQ(m.Rename("model.layers.0.block_sparse_moe.gate.weight"), "model.layers.0.mlp.gate.weight");
  std::vector<OwnedTensor> out;
  for (int j = 0; j < 4; ++j) {
    for (auto& t : Feed(m, "model.layers.5.block_sparse_moe.experts." + std::to_string(j) + ".w2.weight", DType::F32,
                        {kH, kI}, j)) {
      out.push_back(std::move(t));
    }
  }
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "model.layers.5.mlp.experts.down_proj");
  EXPECT_EQ(out[0].shape, (std::vector<uint64_t>{4, kH, kI}));

  StreamingConverter back = Make("mixtral", R"({"model_type": "mixtral", "num_local_experts": 4})",
                                 Direction::kToPerExpert);
  EXPECT_EQ(back.Rename("model.layers.0.mlp.gate.weight"), "model.layers.0.block_sparse_moe.gate.weight");
  Buf fused = Make(DType::F32, {4, kH, kI}, 9);
  ASSERT_TRUE(back.CanHandle("model.layers.5.mlp.experts.down_proj"));
  auto pieces = back.Convert("model.layers.5.mlp.experts.down_proj", fused.view);
  ASSERT_TRUE(pieces.ok()) << pieces.status().message();
  ASSERT_EQ(pieces->size(), 4u);
  for (int j = 0; j < 4; ++j) {
    const OwnedTensor& p = (*pieces)[j];
    EXPECT_EQ(p.name, "model.layers.5.block_sparse_moe.experts." + std::to_string(j) + ".w2.weight");
    EXPECT_EQ(p.shape, (std::vector<uint64_t>{kH, kI}));
    EXPECT_TRUE(std::string(reinterpret_cast<const char*>(p.data.get()), p.nbytes) ==
                fused.bytes.substr(j * kH * kI * 4, kH * kI * 4));
  }
  // A fused tensor whose first dim is not E is refused.
  Buf wrong = Make(DType::F32, {3, kH, kI}, 9);
  auto bad = back.Convert("model.layers.5.mlp.experts.down_proj", wrong.view);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.layers.5.mlp.experts.down_proj"), std::string::npos);
}

TEST(Streaming, Fp8WeightsNeedTheirScales) {
  StreamingConverter c = Make("deepseek_v3", R"({"model_type": "deepseek_v3", "n_routed_experts": 4})");
  for (int j = 0; j < 4; ++j) Feed(c, Name(1, j, "down_proj.weight"), DType::F8_E4M3, {kH, kI}, j);
  auto f = c.Finalize();
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("model.layers.1.mlp.experts.down_proj"), std::string::npos)
      << f.status().message();
  EXPECT_NE(f.status().message().find("scale"), std::string::npos) << f.status().message();

  StreamingConverter s = Make("deepseek_v3", R"({"model_type": "deepseek_v3", "n_routed_experts": 4})");
  for (int j = 0; j < 4; ++j) Feed(s, Name(1, j, "down_proj.weight_scale_inv"), DType::F32, {1, 1}, j);
  auto g = s.Finalize();
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("model.layers.1.mlp.experts.down_proj_scale_inv"), std::string::npos)
      << g.status().message();

  StreamingConverter ok = Make("deepseek_v3", R"({"model_type": "deepseek_v3", "n_routed_experts": 4})");
  for (int j = 0; j < 4; ++j) {
    Feed(ok, Name(1, j, "down_proj.weight"), DType::F8_E4M3, {kH, kI}, j);
    Feed(ok, Name(1, j, "down_proj.weight_scale_inv"), DType::F32, {1, 1}, j);
  }
  EXPECT_TRUE(ok.Finalize().ok());
}

TEST(FusedWeightMap, FusedNameGoesToTheShardOfItsLowestNumberedSource) {
  auto rules = BuiltinRules("mixtral");
  ASSERT_TRUE(rules.ok());
  std::map<std::string, std::string> wm;
  const std::string p = "model.layers.4.block_sparse_moe.";
  // Experts 2..11: lexically "10" < "2", numerically 2 is lowest.
  for (int j = 2; j < 12; ++j) {
    const std::string e = p + "experts." + std::to_string(j) + ".";
    wm[e + "w1.weight"] = j == 2 ? "s-two-w1" : (j == 10 ? "s-ten" : "s-other");
    wm[e + "w3.weight"] = j == 2 ? "s-two-w3" : "s-other";
    wm[e + "w2.weight"] = j == 2 ? "s-two-w2" : (j == 10 ? "s-ten" : "s-other");
  }
  wm[p + "gate.weight"] = "s-router";
  wm["model.embed_tokens.weight"] = "s-embed";
  auto out = FusedWeightMap(wm, *rules);
  ASSERT_TRUE(out.ok()) << out.status().message();
  const std::map<std::string, std::string> want = {
      {"model.layers.4.mlp.experts.gate_up_proj", "s-two-w1"},  // gate (w1) of expert 2 comes before its up
      {"model.layers.4.mlp.experts.down_proj", "s-two-w2"},
      {"model.layers.4.mlp.gate.weight", "s-router"},
      {"model.embed_tokens.weight", "s-embed"},
  };
  EXPECT_EQ(*out, want);

  // Two names that become one are refused.
  wm["model.layers.4.mlp.gate.weight"] = "s-x";
  auto dup = FusedWeightMap(wm, *rules);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("model.layers.4.mlp.gate.weight"), std::string::npos);
}

}  // namespace
}  // namespace streaming_test
}  // namespace moepack
