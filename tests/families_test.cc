// Every built-in family, end to end on synthetic checkpoints:
//  - the fused output has the names and shapes of transformers v5 modeling
//    (a table per family, shapes derived from the synth options), with the
//    bytes where v5 expects them (gate rows before up rows);
//  - per-expert -> fused -> per-expert is byte-identical, in every dtype;
//  - the streaming converter, fed in a shuffled order, gives the executor's
//    bytes in both directions;
//  - `synth --layout fused` is what `convert` makes of `synth --layout per-expert`;
//  - qwen3_vl_moe's transposed Hub layout, its ambiguous H == 2I case, the
//    qwen3_5_moe pass-through and a renamed prefix.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "family_names.h"
#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/rules.h"
#include "moepack/streaming.h"
#include "testutil.h"

namespace moepack {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::RawTensor;
using testing::TempDir;
using testing::TensorMap;

// Synth sizes for the table: I = 48 makes 2*ceil(I/128) (2) differ from
// ceil(2I/128) (1), H = 160 gives two scale blocks along H; H, I and 2I
// all differ so that shapes tell layouts apart.
constexpr int kLayers = 4, kExperts = 6, kHidden = 160, kInter = 48;

struct StackSpec {
  std::string prefix;      // before "layers." on the Hub
  std::string config;      // dotted path of its text config ("" = top level)
  int divisor = 1;         // synth scales the omni talker down by 2
};

// Names (blocks, leaves, routers, renames) come from family_names.h.
struct Family {
  std::string name;
  std::string dtype;        // the dtype the table test runs in
  std::string hub_layout;   // what the Hub ships: per-expert | fused-transposed | fused
  std::vector<StackSpec> stacks;
  const testing::FamilyNames& names() const { return testing::NamesOf(name); }
};

const std::vector<StackSpec> kModel = {{"model.", ""}};
const std::vector<StackSpec> kLanguageModel = {{"model.language_model.", "text_config"}};

const std::vector<Family>& Families() {
  static const std::vector<Family> f = {
      {"qwen2_moe", "bf16", "per-expert", kModel},
      {"qwen3_moe", "f16", "per-expert", kModel},
      {"qwen3_next", "f32", "per-expert", kModel},
      {"olmoe", "bf16", "per-expert", kModel},
      {"deepseek_v2", "fp8", "per-expert", kModel},
      {"deepseek_v3", "fp8", "per-expert", kModel},
      {"glm4_moe", "bf16", "per-expert", kModel},
      {"dots1", "f16", "per-expert", kModel},
      {"hunyuan_v1_moe", "f32", "per-expert", kModel},
      {"mixtral", "bf16", "per-expert", kModel},
      {"minimax", "fp8", "per-expert", kModel},
      {"phimoe", "f16", "per-expert", kModel},
      {"qwen3_omni_moe", "bf16", "per-expert",
       {{"thinker.model.", "thinker_config.text_config"}, {"talker.model.", "talker_config.text_config", 2}}},
      {"qwen3_vl_moe", "f32", "fused-transposed", kLanguageModel},
      {"qwen3_5_moe", "bf16", "fused", kLanguageModel},
      {"afmoe", "bf16", "per-expert", kModel},
      {"glm4_moe_lite", "fp8", "per-expert", kModel},
      {"glm_moe_dsa", "fp8", "per-expert", kModel},
      {"glm4v_moe", "bf16", "per-expert", kLanguageModel},
      {"longcat_flash", "fp8", "per-expert", kModel},
      {"solar_open", "f16", "per-expert", kModel},
      {"flex_olmo", "f32", "per-expert", kModel},
      {"qwen3_omni_moe_thinker", "bf16", "per-expert", {{"model.", "text_config"}}},
      {"ernie4_5_moe", "bf16", "per-expert", kModel},
      {"exaone_moe", "f16", "per-expert", kModel},
      {"hy_v3", "bf16", "per-expert", kModel},
      {"laguna", "f32", "per-expert", kModel},
      {"deepseek_v32", "fp8", "per-expert", kModel},
      {"mimo_v2_flash", "bf16", "per-expert", kModel},
      {"minimax_m2", "fp8", "per-expert", kModel},
      {"kimi_linear", "bf16", "per-expert", kModel},
      {"lfm2_moe", "f16", "per-expert", kModel},
      {"jamba", "bf16", "per-expert", kModel},
      {"nemotron_h", "fp8", "per-expert", {{"backbone.", ""}}},
      {"deepseek_v4", "fp8", "per-expert", {{"", ""}}},
  };
  return f;
}

const Family& Get(const std::string& name) {
  for (const auto& f : Families()) {
    if (f.name == name) return f;
  }
  ADD_FAILURE() << "no family " << name;
  return Families()[0];
}

SynthOptions Options(const Family& f, const std::string& layout, const std::string& dtype, uint64_t seed = 3) {
  SynthOptions o = testing::TinyOptions(f.name, layout, dtype);
  o.layers = kLayers;
  o.experts = kExperts;
  o.hidden = kHidden;
  o.intermediate = kInter;
  o.seed = seed;
  o.max_shard_size = 150'000;  // several shards; a layer's experts straddle them
  return o;
}

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

const json* At(const json& j, const std::string& path) {
  const json* p = &j;
  size_t start = 0;
  while (start < path.size()) {
    size_t dot = path.find('.', start);
    std::string key = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!p->contains(key)) return nullptr;
    p = &(*p)[key];
    start = dot == std::string::npos ? path.size() : dot + 1;
  }
  return p;
}

// One MoE stack's sizes as the test expects them from the synth options,
// cross-checked against the config.json that synth wrote.
struct StackDims {
  std::string prefix;
  uint64_t E, H, I;
  uint64_t scored;  // experts the router scores: E, plus LongCat's zero_expert_num identity experts
  std::vector<int> moe_layers;
};

std::vector<StackDims> ExpectedStacks(const Family& f, const std::string& dir) {
  const json cfg = testing::ReadJson(dir + "/config.json");
  std::vector<StackDims> out;
  for (const StackSpec& s : f.stacks) {
    StackDims d;
    d.prefix = s.prefix;
    d.E = kExperts / s.divisor;
    d.H = kHidden;
    d.I = kInter / s.divisor;
    const int layers = kLayers / s.divisor;
    const json* text = s.config.empty() ? &cfg : At(cfg, s.config);
    EXPECT_NE(text, nullptr) << f.name << ": no " << s.config;
    if (!text) return out;
    // Dense first layers (deepseek_v2/v3, glm4_moe, dots1, ...) and hybrid
    // layouts come from config.json.
    EXPECT_EQ(testing::NumLayers(*text), layers) << f.name;
    d.moe_layers = testing::MoeLayerIndices(*text);
    EXPECT_FALSE(d.moe_layers.empty()) << f.name;
    d.scored = d.E + (text->contains("zero_expert_num") ? (*text)["zero_expert_num"].get<uint64_t>() : 0);
    // The config must say what the options asked for.
    uint64_t e = 0;
    for (const char* k : {"num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"}) {
      if (text->contains(k)) e = (*text)[k].get<uint64_t>();
    }
    EXPECT_EQ(e, d.E) << f.name << " " << s.prefix;
    EXPECT_EQ((*text)["hidden_size"].get<uint64_t>(), d.H) << f.name;
    out.push_back(d);
  }
  return out;
}

DType WeightDType(const std::string& dtype) {
  if (dtype == "fp8") return DType::F8_E4M3;
  if (dtype == "f16") return DType::F16;
  if (dtype == "f32") return DType::F32;
  return DType::BF16;
}

std::string Layer(const StackDims& s, int L) { return s.prefix + "layers." + std::to_string(L) + "."; }

// [rows, cols] slice `j` of a [E, rows, cols] tensor.
std::string Slice(const RawTensor& t, uint64_t j) {
  const uint64_t n = t.data.size() / t.shape[0];
  return t.data.substr(j * n, n);
}

// Rows [r0, r0 + nr) of a row-major [rows, cols] block.
std::string Rows(const std::string& block, uint64_t cols, uint64_t r0, uint64_t nr, uint64_t es) {
  return block.substr(r0 * cols * es, nr * cols * es);
}

std::string Transposed(const std::string& block, uint64_t rows, uint64_t cols, uint64_t es) {
  std::string out;
  out.reserve(block.size());
  for (uint64_t c = 0; c < cols; ++c) {
    for (uint64_t r = 0; r < rows; ++r) out += testing::Element(block, cols, r, c, es);
  }
  return out;
}

bool IsPerExpertName(const std::string& name) {
  auto p = name.find(".experts.");
  return p != std::string::npos && p + 9 < name.size() && std::isdigit(static_cast<unsigned char>(name[p + 9]));
}

class FamilyTest : public ::testing::TestWithParam<std::string> {
 protected:
  const Family& family() const { return Get(GetParam()); }
  TempDir d_;
};

std::string ParamName(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

std::vector<std::string> AllFamilies() {
  std::vector<std::string> v;
  for (const auto& f : Families()) v.push_back(f.name);
  return v;
}

TEST(FamilyTable, CoversEveryBuiltinFamily) {
  auto builtin = BuiltinFamilies();
  std::sort(builtin.begin(), builtin.end());
  auto mine = AllFamilies();
  std::sort(mine.begin(), mine.end());
  EXPECT_EQ(mine, builtin);
  EXPECT_EQ(mine.size(), 35u);
  std::vector<std::string> named;
  for (const auto& n : testing::AllFamilyNames()) named.push_back(n.family);
  std::sort(named.begin(), named.end());
  EXPECT_EQ(named, builtin);
}

// ---- the v5 table -----------------------------------------------------------

TEST_P(FamilyTest, FusedOutputHasV5NamesShapesAndBytes) {
  const Family& f = family();
  const testing::FamilyNames& n = f.names();
  const std::string src = d_ / "src", out = d_ / "fused";
  testing::SynthOrDie(src, Options(f, f.hub_layout, f.dtype));
  auto r = testing::ConvertOrDie(src, out, Direction::kToFused);
  EXPECT_EQ(r.plan.family, f.name);
  const TensorMap a = testing::ReadTensors(src), b = testing::ReadTensors(out);
  const DType wdt = WeightDType(f.dtype);
  const bool fp8 = f.dtype == "fp8";
  const uint64_t es = testing::ElementBytes(wdt);
  // Non-gated experts (nemotron_h) have an up projection and no gate.
  const bool gated = n.gated();
  const int kGate = 0, kUp = gated ? 1 : 0, kDown = gated ? 2 : 1;

  std::set<std::string> expected;  // every name DST must have
  for (const StackDims& s : ExpectedStacks(f, src)) {
    const uint64_t E = s.E, H = s.H, I = s.I;
    for (int L : s.moe_layers) {
      SCOPED_TRACE(Layer(s, L));
      const std::string v5 = testing::V5Name(n, Layer(s, L)) + n.v5_block + ".";
      const std::string hub = Layer(s, L) + n.hub_block + ".";
      auto expect = [&](const std::string& name, DType dt, std::vector<uint64_t> shape) -> const RawTensor* {
        expected.insert(name);
        auto it = b.find(name);
        EXPECT_NE(it, b.end()) << "missing " << name;
        if (it == b.end()) return nullptr;
        EXPECT_EQ(it->second.dtype, dt) << name;
        EXPECT_EQ(it->second.shape, shape) << name;
        return it->second.shape == shape ? &it->second : nullptr;
      };
      const std::string up_name = gated ? "experts.gate_up_proj" : "experts.up_proj";
      const RawTensor* gu = expect(v5 + up_name, wdt, {E, (gated ? 2 : 1) * I, H});
      const RawTensor* dn = expect(v5 + "experts.down_proj", wdt, {E, H, I});
      const RawTensor* gus = nullptr;
      const RawTensor* dns = nullptr;
      if (fp8) {
        gus = expect(v5 + up_name + "_scale_inv", DType::F32, {E, (gated ? 2 : 1) * CeilDiv(I, 128), CeilDiv(H, 128)});
        dns = expect(v5 + "experts.down_proj_scale_inv", DType::F32, {E, CeilDiv(H, 128), CeilDiv(I, 128)});
      }
      // The router keeps its bytes under its v5 name.
      const RawTensor* router = nullptr;
      if (a.count(hub + n.router_hub)) router = &a.at(hub + n.router_hub);
      ASSERT_NE(router, nullptr) << "no router " << hub + n.router_hub << " in the source";
      const RawTensor* rv5 = expect(v5 + n.router_v5, router->dtype, {s.scored, H});
      if (rv5) {
        EXPECT_TRUE(rv5->data == router->data);
      }
      if (!gu || !dn) continue;

      if (f.hub_layout == "per-expert") {
        auto expert = [&](uint64_t j, int which, const std::string& suffix) -> const RawTensor& {
          const std::string name = hub + "experts." + std::to_string(j) + "." + n.leaves[which] + suffix;
          static const RawTensor none;
          auto it = a.find(name);
          EXPECT_NE(it, a.end()) << name;
          return it == a.end() ? none : it->second;
        };
        const std::string scale = n.scale_suffix;
        for (uint64_t j = 0; j < E; ++j) {
          const std::string g = Slice(*gu, j);
          if (gated) {
            EXPECT_TRUE(Rows(g, H, 0, I, es) == expert(j, kGate, ".weight").data) << "gate rows of expert " << j;
            EXPECT_TRUE(Rows(g, H, I, I, es) == expert(j, kUp, ".weight").data) << "up rows of expert " << j;
          } else {
            EXPECT_TRUE(g == expert(j, kUp, ".weight").data) << "up of expert " << j;
          }
          EXPECT_TRUE(Slice(*dn, j) == expert(j, kDown, ".weight").data) << "down of expert " << j;
          if (gus && dns) {
            const uint64_t si = CeilDiv(I, 128), sh = CeilDiv(H, 128);
            const std::string gs = Slice(*gus, j);
            if (gated) {
              EXPECT_TRUE(Rows(gs, sh, 0, si, 4) == expert(j, kGate, scale).data) << "gate scales " << j;
              EXPECT_TRUE(Rows(gs, sh, si, si, 4) == expert(j, kUp, scale).data) << "up scales " << j;
            } else {
              EXPECT_TRUE(gs == expert(j, kUp, scale).data) << "up scales " << j;
            }
            EXPECT_TRUE(Slice(*dns, j) == expert(j, kDown, scale).data) << "down scales " << j;
          }
        }
      } else if (f.hub_layout == "fused-transposed") {
        // Hub [E, H, 2I] / [E, I, H]: v5 slice j is the transpose of Hub slice j.
        const RawTensor& hgu = a.at(hub + "experts.gate_up_proj");
        const RawTensor& hdn = a.at(hub + "experts.down_proj");
        EXPECT_EQ(hgu.shape, (std::vector<uint64_t>{E, H, 2 * I}));
        EXPECT_EQ(hdn.shape, (std::vector<uint64_t>{E, I, H}));
        for (uint64_t j = 0; j < E; ++j) {
          EXPECT_TRUE(Slice(*gu, j) == Transposed(Slice(hgu, j), H, 2 * I, es)) << "gate_up of expert " << j;
          EXPECT_TRUE(Slice(*dn, j) == Transposed(Slice(hdn, j), I, H, es)) << "down of expert " << j;
        }
      } else {  // already v5
        EXPECT_TRUE(gu->data == a.at(v5 + "experts.gate_up_proj").data);
        EXPECT_TRUE(dn->data == a.at(v5 + "experts.down_proj").data);
      }
    }
  }
  // Everything else passes through, renamed as v5 renames it, with its bytes.
  for (const auto& [name, t] : a) {
    if (IsPerExpertName(name)) continue;
    const std::string v5 = testing::V5Name(n, name);
    if (expected.count(v5)) continue;
    expected.insert(v5);
    auto it = b.find(v5);
    ASSERT_NE(it, b.end()) << name << " -> " << v5 << " missing";
    EXPECT_EQ(it->second.dtype, t.dtype) << v5;
    EXPECT_EQ(it->second.shape, t.shape) << v5;
    EXPECT_TRUE(it->second.data == t.data) << v5;
  }
  for (const auto& [name, _] : b) {
    EXPECT_TRUE(expected.count(name)) << "unexpected output tensor " << name;
    EXPECT_FALSE(IsPerExpertName(name)) << name;
    EXPECT_EQ(name.find("block_sparse_moe"), std::string::npos) << name;
    if (n.hub_block != n.v5_block) {
      EXPECT_EQ(name.find("." + n.hub_block + "."), std::string::npos) << name;
    }
  }
  EXPECT_EQ(b.size(), expected.size());
}

// ---- round trips ------------------------------------------------------------

class FamilyDTypeTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  TempDir d_;
};

TEST_P(FamilyDTypeTest, RoundTripIsByteIdentical) {
  const Family& f = Get(std::get<0>(GetParam()));
  const std::string dtype = std::get<1>(GetParam());
  // qwen3_vl_moe has no per-expert form: its Hub layout is the fused transposed one.
  const std::string layout = f.name == "qwen3_vl_moe" ? "fused-transposed" : "per-expert";
  testing::SynthOrDie(d_ / "src", Options(f, layout, dtype, 17));
  ConvertOptions o;
  auto fwd = testing::ConvertOrDie(d_ / "src", d_ / "fused", Direction::kToFused, o);
  size_t changed = 0;
  for (const auto& t : fwd.plan.tensors) changed += t.op != TensorOp::kCopy;
  EXPECT_GT(changed, 0u) << "nothing was converted";
  testing::ConvertOrDie(d_ / "fused", d_ / "back", Direction::kToPerExpert, o);
  const TensorMap src = testing::ReadTensors(d_ / "src");
  EXPECT_EQ(testing::DiffTensors(src, testing::ReadTensors(d_ / "back")), "");
  EXPECT_LT(testing::ReadTensors(d_ / "fused").size(), src.size() + (layout == "per-expert" ? 0 : 1));
}

// ---- streaming == executor ----------------------------------------------------

// Feeds every tensor of `dir` to a StreamingConverter in a shuffled order and
// returns what comes out (converted tensors and renamed pass-throughs).
TensorMap Stream(const std::string& dir, Direction direction, uint64_t seed,
                 SourceLayout layout = SourceLayout::kUnspecified) {
  TensorMap out;
  auto ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().message();
  if (!ckpt.ok()) return out;
  auto rules = RulesForConfig(*ckpt->config());
  EXPECT_TRUE(rules.ok());
  auto conv = StreamingConverter::Create(*rules, *ckpt->config(), direction, layout);
  EXPECT_TRUE(conv.ok());
  if (!rules.ok() || !conv.ok()) return out;
  TensorMap in = testing::ReadTensors(dir);
  std::vector<const RawTensor*> order;
  for (const auto& [_, t] : in) order.push_back(&t);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (const RawTensor* t : order) {
    if (!conv->CanHandle(t->name)) {
      RawTensor r = *t;
      r.name = conv->Rename(t->name);
      EXPECT_FALSE(out.count(r.name)) << r.name;
      out[r.name] = std::move(r);
      continue;
    }
    TensorView v{t->dtype, t->shape, t->data.data(), t->data.size()};
    auto res = conv->Convert(t->name, v);
    EXPECT_TRUE(res.ok()) << t->name << ": " << res.status().message();
    if (!res.ok()) continue;
    for (const OwnedTensor& o : *res) {
      EXPECT_FALSE(out.count(o.name)) << o.name << " came out twice";
      out[o.name] = RawTensor{o.name, o.dtype, o.shape,
                              std::string(reinterpret_cast<const char*>(o.data.get()), o.nbytes)};
    }
  }
  auto fin = conv->Finalize();
  EXPECT_TRUE(fin.ok()) << fin.status().message();
  EXPECT_EQ(conv->pending_bytes(), 0u);
  return out;
}

TEST_P(FamilyTest, StreamingGivesTheExecutorsBytesBothWays) {
  const Family& f = family();
  testing::SynthOrDie(d_ / "src", Options(f, f.hub_layout, f.dtype, 23));
  testing::ConvertOrDie(d_ / "src", d_ / "fused", Direction::kToFused);
  testing::ConvertOrDie(d_ / "fused", d_ / "back", Direction::kToPerExpert);
  for (uint64_t seed : {1, 2}) {
    EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "fused"), Stream(d_ / "src", Direction::kToFused, seed)),
              "")
        << "to fused, shuffle " << seed;
    EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "back"),
                                   Stream(d_ / "fused", Direction::kToPerExpert, seed)),
              "")
        << "to per-expert, shuffle " << seed;
  }
}

// ---- synth --layout fused == convert(synth per-expert) --------------------------

TEST_P(FamilyTest, SynthFusedEqualsConvertedPerExpert) {
  const Family& f = family();
  // qwen3_vl_moe: the Hub layout is fused-transposed, and v5 fused converts
  // back to it; every other family starts per-expert.
  const std::string from = f.name == "qwen3_vl_moe" ? "fused-transposed" : "per-expert";
  testing::SynthOrDie(d_ / "hub", Options(f, from, f.dtype, 31));
  testing::SynthOrDie(d_ / "v5", Options(f, "fused", f.dtype, 31));
  testing::ConvertOrDie(d_ / "hub", d_ / "converted", Direction::kToFused);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "v5"), testing::ReadTensors(d_ / "converted")), "");
  testing::ConvertOrDie(d_ / "v5", d_ / "exported", Direction::kToPerExpert);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "hub"), testing::ReadTensors(d_ / "exported")), "");
}

INSTANTIATE_TEST_SUITE_P(All, FamilyTest, ::testing::ValuesIn(AllFamilies()), ParamName);
INSTANTIATE_TEST_SUITE_P(All, FamilyDTypeTest,
                         ::testing::Combine(::testing::ValuesIn(AllFamilies()),
                                            ::testing::Values("bf16", "f16", "f32", "fp8")),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

// ---- qwen3_vl_moe: H == 2I cannot be told apart -------------------------------

class VlAmbiguous : public ::testing::Test {
 protected:
  SynthOptions Opts(const std::string& layout) {
    SynthOptions o = testing::TinyOptions("qwen3_vl_moe", layout, "bf16");
    o.layers = 2;
    o.experts = 4;
    o.hidden = 64;
    o.intermediate = 32;  // H == 2I: gate_up_proj is [E, 64, 64] either way
    return o;
  }
  TempDir d_;
};

TEST_F(VlAmbiguous, HubLayoutIsRefusedUnlessSourceLayoutSaysHf) {
  testing::SynthOrDie(d_ / "src", Opts("fused-transposed"));
  auto r = testing::RunMoepack("convert " + d_ / "src" + " " + d_ / "out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("moepack: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("'model.language_model.layers."), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(".mlp.experts.gate_up_proj'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--source-layout"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d_ / "out"));
  // Saying v5 is a lie that down_proj ([E, I, H], Hub only) exposes.
  auto lie = testing::RunMoepack("convert --source-layout v5 " + d_ / "src" + " " + d_ / "out");
  EXPECT_EQ(lie.exit_code, 1);
  EXPECT_NE(lie.err.find("down_proj"), std::string::npos) << lie.err;
  EXPECT_FALSE(fs::exists(d_ / "out"));

  auto ok = testing::RunMoepack("convert --source-layout hf " + d_ / "src" + " " + d_ / "out");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const TensorMap a = testing::ReadTensors(d_ / "src"), b = testing::ReadTensors(d_ / "out");
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.language_model.layers." + std::to_string(L) + ".mlp.experts.";
    const RawTensor& hub = a.at(p + "gate_up_proj");
    const RawTensor& v5 = b.at(p + "gate_up_proj");
    ASSERT_EQ(v5.shape, (std::vector<uint64_t>{4, 64, 64}));
    for (uint64_t j = 0; j < 4; ++j) EXPECT_TRUE(Slice(v5, j) == Transposed(Slice(hub, j), 64, 64, 2)) << j;
    EXPECT_EQ(b.at(p + "down_proj").shape, (std::vector<uint64_t>{4, 64, 32}));
  }
  // The streaming converter refuses and accepts the same way.
  auto ckpt = Checkpoint::Open(d_ / "src");
  ASSERT_TRUE(ckpt.ok());
  auto rules = BuiltinRules("qwen3_vl_moe");
  ASSERT_TRUE(rules.ok());
  const RawTensor& t = a.at("model.language_model.layers.1.mlp.experts.gate_up_proj");
  TensorView v{t.dtype, t.shape, t.data.data(), t.data.size()};
  auto unsure = StreamingConverter::Create(*rules, *ckpt->config());
  ASSERT_TRUE(unsure.ok());
  EXPECT_FALSE(unsure->Convert(t.name, v).ok());
  EXPECT_EQ(testing::DiffTensors(b, Stream(d_ / "src", Direction::kToFused, 5, SourceLayout::kHub)), "");
  // And back to the Hub layout.
  ConvertOptions v5;
  v5.source_layout = SourceLayout::kV5;
  testing::ConvertOrDie(d_ / "out", d_ / "back", Direction::kToPerExpert, v5);
  EXPECT_EQ(testing::DiffTensors(a, testing::ReadTensors(d_ / "back")), "");
}

TEST_F(VlAmbiguous, V5LayoutIsRefusedUnlessSourceLayoutSaysV5) {
  testing::SynthOrDie(d_ / "src", Opts("fused"));
  ConvertOptions none;
  auto r = Convert(d_ / "src", d_ / "out", none);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("gate_up_proj"), std::string::npos) << r.status().message();
  EXPECT_FALSE(fs::exists(d_ / "out"));
  ConvertOptions v5;
  v5.source_layout = SourceLayout::kV5;
  auto ok = testing::ConvertOrDie(d_ / "src", d_ / "out", Direction::kToFused, v5);
  for (const auto& t : ok.plan.tensors) EXPECT_EQ(t.op, TensorOp::kCopy) << t.name;
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "src"), testing::ReadTensors(d_ / "out")), "");
  auto cli = testing::RunMoepack("convert --source-layout hf " + d_ / "src" + " " + d_ / "out2");
  EXPECT_EQ(cli.exit_code, 1) << "down_proj [E, H, I] is not the Hub layout";
  EXPECT_FALSE(fs::exists(d_ / "out2"));
}

// ---- qwen3_5_moe: the Hub is already v5 -----------------------------------------

TEST(Qwen35, HubCheckpointPassesThrough) {
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions("qwen3_5_moe"));  // the Hub layout: fused
  auto r = testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused);
  for (const auto& t : r.plan.tensors) EXPECT_EQ(t.op, TensorOp::kCopy) << t.name;
  const TensorMap a = testing::ReadTensors(d / "src");
  EXPECT_TRUE(a.count("model.language_model.layers.0.mlp.experts.gate_up_proj"));
  EXPECT_EQ(testing::DiffTensors(a, testing::ReadTensors(d / "out")), "");
}

// ---- a renamed prefix -----------------------------------------------------------

TEST(RenamedPrefix, QwenUnderLanguageModelStillConvertsPlannerAndStreaming) {
  TempDir d;
  testing::SynthOrDie(d / "orig", testing::TinyOptions("qwen3_moe", "per-expert", "bf16"));
  testing::RewriteCheckpoint(d / "orig", d / "src", [](std::vector<RawTensor>& ts, json&) {
    for (auto& t : ts) {
      if (t.name.rfind("model.layers.", 0) == 0) t.name = "model.language_model." + t.name.substr(6);
    }
  });
  auto r = testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused);
  const TensorMap b = testing::ReadTensors(d / "out");
  testing::ConvertOrDie(d / "orig", d / "orig-fused", Direction::kToFused);
  const TensorMap plain = testing::ReadTensors(d / "orig-fused");
  size_t fused = 0;
  for (const auto& [name, t] : plain) {
    std::string renamed = name.rfind("model.layers.", 0) == 0 ? "model.language_model." + name.substr(6) : name;
    auto it = b.find(renamed);
    ASSERT_NE(it, b.end()) << renamed;
    EXPECT_EQ(it->second.shape, t.shape) << renamed;
    EXPECT_TRUE(it->second.data == t.data) << renamed;
    fused += renamed.find(".mlp.experts.gate_up_proj") != std::string::npos;
  }
  EXPECT_EQ(fused, 4u);
  EXPECT_EQ(b.size(), plain.size());
  EXPECT_EQ(testing::DiffTensors(b, Stream(d / "src", Direction::kToFused, 9)), "");
  testing::ConvertOrDie(d / "out", d / "back", Direction::kToPerExpert);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d / "src"), testing::ReadTensors(d / "back")), "");
}

}  // namespace
}  // namespace moepack
