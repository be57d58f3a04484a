// verify: passes on good conversions in both directions; catches one
// flipped byte (naming tensor and expert), a missing and an extra tensor,
// wrong dtypes; exit codes and --json.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "moepack/convert.h"
#include "moepack/verify.h"
#include "testutil.h"

namespace moepack {
namespace verify_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::RawTensor;
using testing::TempDir;

VerifyReport VerifyOrDie(const std::string& src, const std::string& dst, const VerifyOptions& o = {}) {
  auto r = Verify(src, dst, o);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? *r : VerifyReport{};
}

// Flips one byte at `offset_in_tensor` of tensor `name` in whichever shard of
// `dir` holds it (located with the test's own header parser).
void FlipByte(const std::string& dir, const std::string& name, uint64_t offset_in_tensor) {
  for (const auto& f : testing::ListDir(dir)) {
    if (f.size() < 12 || f.substr(f.size() - 12) != ".safetensors") continue;
    const std::string path = dir + "/" + f;
    for (const auto& t : testing::ParseSafetensors(path).tensors) {
      if (t.name != name) continue;
      ASSERT_LT(offset_in_tensor, t.length);
      std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
      io.seekg(static_cast<std::streamoff>(t.offset + offset_in_tensor));
      char c = 0;
      io.read(&c, 1);
      c = static_cast<char>(c ^ 0x01);
      io.seekp(static_cast<std::streamoff>(t.offset + offset_in_tensor));
      io.write(&c, 1);
      ASSERT_TRUE(io.good());
      return;
    }
  }
  FAIL() << "no tensor " << name << " in " << dir;
}

struct Case {
  std::string family;
  std::string layout;
  std::string dtype;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.family << "/" << c.layout << "/" << c.dtype; }

class VerifyGood : public ::testing::TestWithParam<Case> {};

TEST_P(VerifyGood, PassesBothDirections) {
  const Case& c = GetParam();
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions(c.family, c.layout, c.dtype));
  testing::ConvertOrDie(d / "src", d / "fused", Direction::kToFused);
  testing::ConvertOrDie(d / "fused", d / "back", Direction::kToPerExpert);
  const auto src = testing::ReadTensors(d / "src");
  const auto fused = testing::ReadTensors(d / "fused");

  VerifyReport a = VerifyOrDie(d / "src", d / "fused");
  EXPECT_TRUE(a.ok) << a.problem;
  EXPECT_EQ(a.to, "fused");
  EXPECT_EQ(a.tensors, fused.size());
  EXPECT_GE(a.pieces, fused.size());
  uint64_t bytes = 0;
  for (const auto& [_, t] : src) bytes += t.data.size();
  EXPECT_EQ(a.bytes_hashed, 2 * bytes);  // every byte of both sides

  VerifyReport b = VerifyOrDie(d / "fused", d / "back");
  EXPECT_TRUE(b.ok) << b.problem;
  EXPECT_EQ(b.to, "per-expert");

  auto cli = testing::RunMoepack("verify " + d / "src" + " " + d / "fused");
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("verified"), std::string::npos) << cli.out;
  auto js = testing::RunMoepack("verify --json --threads 2 " + d / "fused" + " " + d / "back");
  ASSERT_EQ(js.exit_code, 0) << js.err;
  json j = json::parse(js.out);
  EXPECT_EQ(j["ok"], true);
  EXPECT_EQ(j["to"], "per-expert");
  EXPECT_EQ(j["problem"], "");
  EXPECT_EQ(j["tensors"].get<uint64_t>(), testing::ReadTensors(d / "back").size());
}

INSTANTIATE_TEST_SUITE_P(Families, VerifyGood,
                         ::testing::Values(Case{"qwen3_moe", "per-expert", "bf16"},
                                           Case{"deepseek_v3", "per-expert", "fp8"},
                                           Case{"mixtral", "per-expert", "f16"},
                                           Case{"phimoe", "per-expert", "f32"},
                                           Case{"qwen3_omni_moe", "per-expert", "bf16"},
                                           Case{"qwen3_vl_moe", "fused-transposed", "bf16"},
                                           // Fusions that transpose, interleave, carry biases (gpt_oss), join
                                           // transposed halves (llama4), rename a fused Hub layout
                                           // (granitemoe) or split one expert list, transpose routers and
                                           // cut a bias (ernie4_5_vl_moe).
                                           Case{"gpt_oss", "per-expert", "bf16"},
                                           Case{"llama4", "per-expert", "f16"},
                                           Case{"granitemoehybrid", "fused-hub-names", "bf16"},
                                           Case{"ernie4_5_vl_moe", "per-expert", "f32"}),
                         [](const auto& info) { return info.param.family + "_" + info.param.dtype; });

class VerifyBad : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::SynthOrDie(d_ / "src", testing::TinyOptions("qwen3_moe", "per-expert", "bf16"));
    testing::ConvertOrDie(d_ / "src", d_ / "fused", Direction::kToFused);
    testing::ConvertOrDie(d_ / "fused", d_ / "back", Direction::kToPerExpert);
  }
  // tiny: H = 64, I = 48, BF16 (E = 8)
  static constexpr uint64_t kH = 64, kI = 48, kEs = 2;
  TempDir d_;
};

TEST_F(VerifyBad, OneFlippedByteInAFusedExpertIsCaughtNamingTensorAndExpert) {
  // Expert 5's up rows of layer 2: past its gate rows, inside its slice.
  const uint64_t slice = 2 * kI * kH * kEs;
  FlipByte(d_ / "fused", "model.layers.2.mlp.experts.gate_up_proj", 5 * slice + kI * kH * kEs + 77);
  VerifyReport r = VerifyOrDie(d_ / "src", d_ / "fused");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.problem.find("model.layers.2.mlp.experts.gate_up_proj"), std::string::npos) << r.problem;
  EXPECT_NE(r.problem.find("expert 5"), std::string::npos) << r.problem;
  EXPECT_NE(r.problem.find("up_proj"), std::string::npos) << r.problem;

  auto cli = testing::RunMoepack("verify " + d_ / "src" + " " + d_ / "fused");
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_EQ(cli.err.rfind("moepack: error: ", 0), 0u) << cli.err;
  EXPECT_EQ(std::count(cli.err.begin(), cli.err.end(), '\n'), 1) << cli.err;
  EXPECT_NE(cli.err.find("model.layers.2.mlp.experts.gate_up_proj"), std::string::npos) << cli.err;
  EXPECT_NE(cli.err.find("expert 5"), std::string::npos) << cli.err;

  auto js = testing::RunMoepack("verify --json " + d_ / "src" + " " + d_ / "fused");
  EXPECT_EQ(js.exit_code, 1);
  json j = json::parse(js.out);
  EXPECT_EQ(j["ok"], false);
  EXPECT_NE(j["problem"].get<std::string>().find("expert 5"), std::string::npos) << js.out;
}

TEST_F(VerifyBad, FlippedByteInDownProjAndInAPerExpertTensor) {
  FlipByte(d_ / "fused", "model.layers.0.mlp.experts.down_proj", 7 * kH * kI * kEs + 1);  // expert 7, first bytes
  VerifyReport r = VerifyOrDie(d_ / "src", d_ / "fused");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.problem.find("model.layers.0.mlp.experts.down_proj"), std::string::npos) << r.problem;
  EXPECT_NE(r.problem.find("expert 7"), std::string::npos) << r.problem;

  const std::string victim = "model.layers.3.mlp.experts.6.gate_proj.weight";
  FlipByte(d_ / "back", victim, kI * kH * kEs - 1);  // the very last byte
  VerifyReport p = VerifyOrDie(d_ / "src", d_ / "back");
  EXPECT_FALSE(p.ok);
  EXPECT_NE(p.problem.find(victim), std::string::npos) << p.problem;
}

TEST_F(VerifyBad, FlippedByteInAPassThroughTensor) {
  FlipByte(d_ / "fused", "model.layers.1.self_attn.o_proj.weight", 0);
  VerifyReport r = VerifyOrDie(d_ / "src", d_ / "fused");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.problem.find("model.layers.1.self_attn.o_proj.weight"), std::string::npos) << r.problem;
}

TEST_F(VerifyBad, MissingAndExtraTensorsInEitherDirection) {
  struct M {
    std::string dst;
    std::string what;
    std::function<void(std::vector<RawTensor>&, json&)> mutate;
    std::string expect;
  };
  const std::vector<M> cases = {
      {"fused", "missing fused tensor",
       [](auto& ts, auto&) {
         std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.layers.1.mlp.experts.down_proj"; });
       },
       "model.layers.1.mlp.experts.down_proj"},
      {"fused", "missing plain tensor",
       [](auto& ts, auto&) { std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.norm.weight"; }); },
       "model.norm.weight"},
      {"fused", "extra tensor",
       [](auto& ts, auto&) { ts.push_back({"model.extra.weight", DType::BF16, {2}, "abcd"}); }, "model.extra.weight"},
      {"back", "missing per-expert tensor",
       [](auto& ts, auto&) {
         std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.layers.1.mlp.experts.3.up_proj.weight"; });
       },
       "model.layers.1.mlp.experts.3.up_proj.weight"},
      {"back", "extra per-expert tensor",
       [](auto& ts, auto&) {
         RawTensor t = ts.front();
         t.name = "model.layers.1.mlp.experts.8.up_proj.weight";
         t.dtype = DType::U8;
         t.shape = {t.data.size()};
         ts.push_back(t);
       },
       "model.layers.1.mlp.experts.8.up_proj.weight"},
      {"fused", "wrong dtype",
       [](auto& ts, auto&) {
         for (auto& t : ts) {
           if (t.name == "model.layers.3.mlp.experts.gate_up_proj") t.dtype = DType::F16;
         }
       },
       "model.layers.3.mlp.experts.gate_up_proj"},
  };
  for (const M& m : cases) {
    SCOPED_TRACE(m.what);
    const std::string bad = d_ / ("bad-" + m.dst + "-" + std::to_string(&m - cases.data()));
    testing::RewriteCheckpoint(d_ / m.dst, bad, m.mutate, 2);
    const std::string src = m.dst == "fused" ? d_ / "src" : d_ / "fused";
    VerifyReport r = VerifyOrDie(src, bad);
    EXPECT_FALSE(r.ok);
    EXPECT_NE(r.problem.find(m.expect), std::string::npos) << r.problem;
    auto cli = testing::RunMoepack("verify " + src + " " + bad);
    EXPECT_EQ(cli.exit_code, 1);
    EXPECT_NE(cli.err.find(m.expect), std::string::npos) << cli.err;
  }
  // The untouched rewrite of a good DST still verifies: the rewriting is
  // not what the cases above detect.
  testing::RewriteCheckpoint(d_ / "fused", d_ / "same", [](auto&, auto&) {}, 3);
  EXPECT_TRUE(VerifyOrDie(d_ / "src", d_ / "same").ok);
}

TEST_F(VerifyBad, UnreadableInputIsAnErrorNotAMismatch) {
  auto r = Verify(d_ / "src", d_ / "absent", VerifyOptions{});
  EXPECT_FALSE(r.ok());
  auto cli = testing::RunMoepack("verify " + d_ / "src" + " " + d_ / "absent");
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find("absent"), std::string::npos) << cli.err;
  auto usage = testing::RunMoepack("verify " + d_ / "src");
  EXPECT_EQ(usage.exit_code, 2);
}

}  // namespace
}  // namespace verify_test
}  // namespace moepack
