// Every built-in family, end to end on synthetic checkpoints:
//  - the fused output has the names and shapes of transformers v5 modeling
//    (a table per family, shapes derived from the synth options), with the
//    bytes where v5 expects them (gate rows before up rows);
//  - per-expert -> fused -> per-expert is byte-identical, in every dtype;
//  - the streaming converter, fed in a shuffled order, gives the executor's
//    bytes in both directions;
//  - `synth --layout fused` is what `convert` makes of `synth --layout per-expert`;
//  - families whose Hub is not per-expert (gpt_oss and llama4 ship v5's own
//    fused forms, granitemoe v5's standard one under names of its own) from
//    both their Hub layout and the per-expert export, with the interleaved
//    and transposed-halves bytes checked element by element;
//  - ernie4_5_vl_moe's one expert list in two shares, its transposed
//    routers and its correction bias cut in two;
//  - qwen3_vl_moe's transposed Hub layout, its ambiguous H == 2I case, the
//    qwen3_5_moe pass-through and a renamed prefix.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
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
#include "moepack/verify.h"
#include "testutil.h"

namespace moepack {
namespace families_test {
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
  std::string name;         // the model_type synth writes
  std::string dtype;        // the dtype the table test runs in
  // What the Hub ships, as synth's layout: per-expert | fused-transposed
  // (qwen3_vl_moe) | fused (v5's form: qwen3_5_moe, gpt_oss, llama4) |
  // fused-hub-names (granitemoe: v5's form under the Hub's names).
  std::string hub_layout;
  std::vector<StackSpec> stacks;
  std::string rules = "";  // the family its rules are (granitemoe for granitemoeshared); "": name
  const testing::FamilyNames& names() const { return testing::NamesOf(name); }
  std::string family() const { return rules.empty() ? name : rules; }
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
      {"gpt_oss", "bf16", "fused", kModel},
      {"llama4", "f16", "fused", {{"language_model.model.", "text_config"}}},
      {"granitemoe", "f32", "fused-hub-names", kModel},
      {"granitemoeshared", "bf16", "fused-hub-names", kModel, "granitemoe"},
      {"granitemoehybrid", "bf16", "fused-hub-names", kModel, "granitemoe"},
      {"ernie4_5_vl_moe", "bf16", "per-expert", kModel},
  };
  return f;
}

// Where the table tests start: the Hub's layout, and the per-expert export
// too where the Hub is fused and the rules fuse (qwen3_vl_moe's only
// transpose).
std::vector<std::string> Sources(const Family& f) {
  if (f.hub_layout == "per-expert" || f.name == "qwen3_vl_moe") return {f.hub_layout};
  return {f.hub_layout, "per-expert"};
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
  // The expert width of each share of the expert list (ernie4_5_vl_moe's
  // text and vision experts, E each, from config.json's list); one entry
  // when the list is not shared.
  std::vector<uint64_t> widths;
};

// A config value that is an integer, or a list of one per share (its first).
uint64_t FirstOf(const json& v) { return (v.is_array() ? v[0] : v).get<uint64_t>(); }

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
      if (text->contains(k)) e = FirstOf((*text)[k]);
    }
    EXPECT_EQ(e, d.E) << f.name << " " << s.prefix;
    EXPECT_EQ((*text)["hidden_size"].get<uint64_t>(), d.H) << f.name;
    d.widths = {d.I};
    const size_t shares = f.names().shares.size();
    if (shares > 0) {  // moe_num_experts and moe_intermediate_size list each share's
      const json& widths = (*text)["moe_intermediate_size"];
      EXPECT_TRUE(widths.is_array() && widths.size() == shares) << widths.dump();
      if (!widths.is_array() || widths.size() != shares) return out;
      EXPECT_EQ(widths[0].get<uint64_t>(), d.I);
      d.widths = widths.get<std::vector<uint64_t>>();
      for (size_t k = 0; k < shares; ++k) {
        const json& count = (*text)["moe_num_experts"];
        EXPECT_EQ(count.is_array() ? count[k].get<uint64_t>() : count.get<uint64_t>(), d.E);
      }
    }
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
  std::set<std::string> families;  // granitemoe's three model types are one family
  for (const auto& f : Families()) families.insert(f.family());
  std::vector<std::string> mine(families.begin(), families.end());
  EXPECT_EQ(mine, builtin);
  EXPECT_EQ(mine.size(), 39u);
  EXPECT_EQ(Families().size(), 41u);
  std::vector<std::string> named;
  for (const auto& n : testing::AllFamilyNames()) named.push_back(n.family);
  std::sort(named.begin(), named.end());
  EXPECT_EQ(named, builtin);
}

// ---- the v5 table -----------------------------------------------------------

// Synthesizes `f` in layout `from` under `dir`, converts it to fused and
// checks the output against v5's names, shapes and bytes.
void ExpectV5Table(const Family& f, const std::string& from, const std::string& dir) {
  const testing::FamilyNames& n = f.names();
  const std::string src = dir + "/src", out = dir + "/fused";
  testing::SynthOrDie(src, Options(f, from, f.dtype));
  auto r = testing::ConvertOrDie(src, out, Direction::kToFused);
  EXPECT_EQ(r.plan.family, f.family());
  const TensorMap a = testing::ReadTensors(src), b = testing::ReadTensors(out);
  const DType wdt = WeightDType(f.dtype);
  const bool fp8 = f.dtype == "fp8";
  const uint64_t es = testing::ElementBytes(wdt);
  // Non-gated experts (nemotron_h) have an up projection and no gate.
  const bool gated = n.gated();
  const int kGate = 0, kUp = gated ? 1 : 0, kDown = gated ? 2 : 1;
  const std::string& form = n.v5_layout;  // how v5 holds the fused experts

  std::set<std::string> expected;  // every name DST must have
  std::set<std::string> reshaped;  // source tensors v5 holds reshaped (checked here, not passed through)
  auto source = [&](const std::string& name) -> const RawTensor* {
    auto it = a.find(name);
    EXPECT_NE(it, a.end()) << "no " << name << " in the source";
    return it == a.end() ? nullptr : &it->second;
  };
  for (const StackDims& s : ExpectedStacks(f, src)) {
    const uint64_t E = s.E, H = s.H;
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
      if (n.shares.empty()) {
        // The router keeps its bytes under its v5 name.
        const RawTensor* router = nullptr;
        if (a.count(hub + n.router_hub)) router = &a.at(hub + n.router_hub);
        ASSERT_NE(router, nullptr) << "no router " << hub + n.router_hub << " in the source";
        const RawTensor* rv5 = expect(v5 + n.router_v5, router->dtype, {s.scored, H});
        if (rv5) {
          EXPECT_TRUE(rv5->data == router->data);
        }
      } else {
        // One router per share, [H, E] on the Hub, transposed in v5; the
        // [shares, E] correction bias cut into a [1, E] row per share.
        const RawTensor* bias = source(hub + n.share_bias_hub);
        ASSERT_NE(bias, nullptr);
        reshaped.insert(bias->name);
        EXPECT_EQ(bias->dtype, DType::F32);
        EXPECT_EQ(bias->shape, (std::vector<uint64_t>{n.shares.size(), E}));
        for (size_t k = 0; k < n.shares.size(); ++k) {
          const std::string module = v5 + n.shares[k].module + ".";
          const RawTensor* router = source(hub + n.shares[k].router_hub);
          ASSERT_NE(router, nullptr);
          reshaped.insert(router->name);
          EXPECT_EQ(router->shape, (std::vector<uint64_t>{H, E})) << router->name;
          if (const RawTensor* rv5 = expect(module + "gate.weight", router->dtype, {E, H})) {
            EXPECT_TRUE(rv5->data ==
                        testing::TransposeMatrix(router->data, H, E, testing::ElementBytes(router->dtype)));
          }
          if (const RawTensor* part = expect(module + n.share_bias_v5, DType::F32, {1, E})) {
            EXPECT_TRUE(part->data == bias->data.substr(k * E * 4, E * 4)) << module << n.share_bias_v5;
          }
        }
      }
      for (size_t k = 0; k < s.widths.size(); ++k) {
        const uint64_t I = s.widths[k], first = k * E;  // a share's experts, renumbered from 0 in v5
        const std::string ep = v5 + (n.shares.empty() ? "" : n.shares[k].module + ".") + "experts.";
        const std::string up_name = ep + (gated ? "gate_up_proj" : "up_proj");
        const RawTensor* gu = expect(up_name, wdt, testing::FusedGateUpShape(form, E, (gated ? 2 : 1) * I, H));
        const RawTensor* dn = expect(ep + "down_proj", wdt, testing::FusedDownShape(form, E, H, I));
        const RawTensor* gus = nullptr;
        const RawTensor* dns = nullptr;
        if (fp8) {
          gus = expect(up_name + "_scale_inv", DType::F32, {E, (gated ? 2 : 1) * CeilDiv(I, 128), CeilDiv(H, 128)});
          dns = expect(ep + "down_proj_scale_inv", DType::F32, {E, CeilDiv(H, 128), CeilDiv(I, 128)});
        }
        const RawTensor* gub = nullptr;
        const RawTensor* dnb = nullptr;
        if (n.expert_bias) {  // gpt_oss: [E, 2I] gate and up interleaved as their weights, [E, H]
          gub = expect(up_name + "_bias", wdt, {E, 2 * I});
          dnb = expect(ep + "down_proj_bias", wdt, {E, H});
        }
        if (!gu || !dn) continue;

        if (from == "per-expert") {
          auto expert = [&](uint64_t j, int which, const std::string& suffix) -> const RawTensor& {
            const std::string name = hub + "experts." + std::to_string(first + j) + "." + n.leaves[which] + suffix;
            static const RawTensor none;
            auto it = a.find(name);
            EXPECT_NE(it, a.end()) << name;
            return it == a.end() ? none : it->second;
          };
          const std::string scale = n.scale_suffix;
          for (uint64_t j = 0; j < E; ++j) {
            const std::string g = Slice(*gu, j);
            if (form != "fused") {  // [H, 2I]: gate and up columns, as halves or interleaved
              EXPECT_TRUE(g == testing::FusedGateUp(form, expert(j, kGate, ".weight").data,
                                                    expert(j, kUp, ".weight").data, I, H, es))
                  << form << " gate_up of expert " << j;
            } else if (gated) {
              EXPECT_TRUE(Rows(g, H, 0, I, es) == expert(j, kGate, ".weight").data) << "gate rows of expert " << j;
              EXPECT_TRUE(Rows(g, H, I, I, es) == expert(j, kUp, ".weight").data) << "up rows of expert " << j;
            } else {
              EXPECT_TRUE(g == expert(j, kUp, ".weight").data) << "up of expert " << j;
            }
            EXPECT_TRUE(Slice(*dn, j) == testing::FusedDown(form, expert(j, kDown, ".weight").data, H, I, es))
                << "down of expert " << j;
            if (gub && dnb) {
              EXPECT_TRUE(Slice(*gub, j) == testing::FusedGateUp(form, expert(j, kGate, ".bias").data,
                                                                 expert(j, kUp, ".bias").data, I, 1, es))
                  << "gate_up bias of expert " << j;
              EXPECT_TRUE(Slice(*dnb, j) == expert(j, kDown, ".bias").data) << "down bias of expert " << j;
            }
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
        } else if (from == "fused-transposed") {
          // Hub [E, H, 2I] / [E, I, H]: v5 slice j is the transpose of Hub slice j.
          const RawTensor& hgu = a.at(hub + "experts.gate_up_proj");
          const RawTensor& hdn = a.at(hub + "experts.down_proj");
          EXPECT_EQ(hgu.shape, (std::vector<uint64_t>{E, H, 2 * I}));
          EXPECT_EQ(hdn.shape, (std::vector<uint64_t>{E, I, H}));
          for (uint64_t j = 0; j < E; ++j) {
            EXPECT_TRUE(Slice(*gu, j) == testing::TransposeMatrix(Slice(hgu, j), H, 2 * I, es)) << "gate_up of expert " << j;
            EXPECT_TRUE(Slice(*dn, j) == testing::TransposeMatrix(Slice(hdn, j), I, H, es)) << "down of expert " << j;
          }
        } else {  // already v5's layout, under v5's names or (granitemoe) names of the Hub's own
          const RawTensor* hgu = source(n.hub_fused.empty() ? up_name : hub + n.hub_fused[0]);
          const RawTensor* hdn = source(n.hub_fused.empty() ? ep + "down_proj" : hub + n.hub_fused[1]);
          EXPECT_TRUE(hgu && gu->data == hgu->data);
          EXPECT_TRUE(hdn && dn->data == hdn->data);
          if (gub && dnb) {
            EXPECT_TRUE(gub->data == a.at(up_name + "_bias").data);
            EXPECT_TRUE(dnb->data == a.at(ep + "down_proj_bias").data);
          }
        }
      }
    }
  }
  // Everything else passes through, renamed as v5 renames it, with its bytes.
  for (const auto& [name, t] : a) {
    if (IsPerExpertName(name) || reshaped.count(name)) continue;
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
    if (n.v5_block != "block_sparse_moe") {  // granitemoe's v5 keeps its block's name
      EXPECT_EQ(name.find("block_sparse_moe"), std::string::npos) << name;
    }
    if (n.hub_block != n.v5_block) {
      EXPECT_EQ(name.find("." + n.hub_block + "."), std::string::npos) << name;
    }
  }
  EXPECT_EQ(b.size(), expected.size());
}

TEST_P(FamilyTest, FusedOutputHasV5NamesShapesAndBytes) {
  const Family& f = family();
  for (const std::string& from : Sources(f)) {
    SCOPED_TRACE("from " + from);
    ExpectV5Table(f, from, d_ / from);
  }
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
  for (const std::string& from : Sources(f)) {
    SCOPED_TRACE("from " + from);
    const std::string d = d_ / from;
    testing::SynthOrDie(d + "/src", Options(f, from, f.dtype, 23));
    testing::ConvertOrDie(d + "/src", d + "/fused", Direction::kToFused);
    testing::ConvertOrDie(d + "/fused", d + "/back", Direction::kToPerExpert);
    for (uint64_t seed : {1, 2}) {
      EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d + "/fused"), Stream(d + "/src", Direction::kToFused, seed)),
                "")
          << "to fused, shuffle " << seed;
      EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d + "/back"),
                                     Stream(d + "/fused", Direction::kToPerExpert, seed)),
                "")
          << "to per-expert, shuffle " << seed;
    }
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
  // A Hub layout of the family's own (granitemoe's names) converts to the
  // same v5 checkpoint, and exports to the same per-expert one.
  if (f.hub_layout == "per-expert" || f.hub_layout == from || f.hub_layout == "fused") return;
  testing::SynthOrDie(d_ / "own", Options(f, f.hub_layout, f.dtype, 31));
  testing::ConvertOrDie(d_ / "own", d_ / "own-v5", Direction::kToFused);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "v5"), testing::ReadTensors(d_ / "own-v5")), "");
  testing::ConvertOrDie(d_ / "own", d_ / "own-exported", Direction::kToPerExpert);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d_ / "hub"), testing::ReadTensors(d_ / "own-exported")), "");
}

INSTANTIATE_TEST_SUITE_P(All, FamilyTest, ::testing::ValuesIn(AllFamilies()), ParamName);
// Every family in every weight type synth writes for it (family_names.h).
std::vector<std::tuple<std::string, std::string>> FamilyDTypes() {
  std::vector<std::tuple<std::string, std::string>> v;
  for (const std::string& f : AllFamilies()) {
    for (const std::string& dtype : testing::NamesOf(f).dtypes) v.emplace_back(f, dtype);
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, FamilyDTypeTest, ::testing::ValuesIn(FamilyDTypes()),
                         [](const auto& info) { return std::get<0>(info.param) + "_" + std::get<1>(info.param); });

// ---- gpt_oss and llama4: v5's own fused forms, element by element --------------

// The fact sheet's definitions (v5_families.md 5.1, 5.2), element by
// element: gpt_oss's gate_up_proj [E, H, 2I] holds gate[i][h] at [h][2i]
// and up[i][h] at [h][2i + 1] (gate = gate_up[..., ::2]), its
// gate_up_proj_bias [E, 2I] gate[i] at 2i and up[i] at 2i + 1; llama4's
// gate_up_proj holds gate[i][h] at [h][i] and up[i][h] at [h][I + i]
// (chunk(2, -1)); both hold down[h][i] at down_proj [E, I, H]'s [i][h].
TEST(OwnFusedForms, GptOssInterleavesAndLlama4JoinsHalvesElementByElement) {
  for (const std::string family : {"gpt_oss", "llama4"}) {
    SCOPED_TRACE(family);
    const bool gpt_oss = family == "gpt_oss";
    const uint64_t E = 3, H = 40, I = 24, es = 2;
    SynthOptions o = testing::TinyOptions(family, "per-expert", "bf16");
    o.layers = 2;  // llama4: moe_layers [1]
    o.experts = static_cast<int>(E);
    o.hidden = static_cast<int>(H);
    o.intermediate = static_cast<int>(I);
    TempDir d;
    testing::SynthOrDie(d / "src", o);
    testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused);
    const TensorMap a = testing::ReadTensors(d / "src"), b = testing::ReadTensors(d / "out");
    const std::string block = gpt_oss ? "model.layers.1.mlp." : "language_model.model.layers.1.feed_forward.";
    ASSERT_TRUE(b.count(block + "experts.gate_up_proj") && b.count(block + "experts.down_proj"));
    const RawTensor& gu = b.at(block + "experts.gate_up_proj");
    const RawTensor& dn = b.at(block + "experts.down_proj");
    ASSERT_EQ(gu.shape, (std::vector<uint64_t>{E, H, 2 * I}));
    ASSERT_EQ(dn.shape, (std::vector<uint64_t>{E, I, H}));
    EXPECT_EQ(b.count(block + "experts.gate_up_proj_bias"), gpt_oss ? 1u : 0u);
    uint64_t wrong = 0, checked = 0;
    auto same = [&](std::string_view x, std::string_view y) {
      ++checked;
      wrong += x != y;
    };
    for (uint64_t j = 0; j < E; ++j) {
      const std::string ep = block + "experts." + std::to_string(j) + ".";
      const std::string& gate = a.at(ep + "gate_proj.weight").data;
      const std::string& up = a.at(ep + "up_proj.weight").data;
      const std::string& down = a.at(ep + "down_proj.weight").data;
      const std::string g = Slice(gu, j), dj = Slice(dn, j);
      for (uint64_t i = 0; i < I; ++i) {
        const uint64_t gate_col = gpt_oss ? 2 * i : i, up_col = gpt_oss ? 2 * i + 1 : I + i;
        for (uint64_t h = 0; h < H; ++h) {
          same(testing::Element(g, 2 * I, h, gate_col, es), testing::Element(gate, H, i, h, es));
          same(testing::Element(g, 2 * I, h, up_col, es), testing::Element(up, H, i, h, es));
          same(testing::Element(dj, H, i, h, es), testing::Element(down, I, h, i, es));
        }
      }
      if (!gpt_oss) continue;
      const std::string gb = Slice(b.at(block + "experts.gate_up_proj_bias"), j);
      for (uint64_t i = 0; i < I; ++i) {
        same(testing::Element(gb, 2 * I, 0, 2 * i, es), testing::Element(a.at(ep + "gate_proj.bias").data, 1, i, 0, es));
        same(testing::Element(gb, 2 * I, 0, 2 * i + 1, es), testing::Element(a.at(ep + "up_proj.bias").data, 1, i, 0, es));
      }
      same(Slice(b.at(block + "experts.down_proj_bias"), j), a.at(ep + "down_proj.bias").data);
    }
    EXPECT_EQ(wrong, 0u) << "of " << checked << " elements";
    EXPECT_EQ(checked, E * I * H * 3 + (gpt_oss ? E * (2 * I + 1) : 0));
  }
}

// ---- gpt_oss's MXFP4 Hub form, dequantized --------------------------------------

// quant_facts.md 5: `_blocks` [E, rows, cols / 32, 16] hold each row's
// input dim in blocks of 32 e2m1 codes, two a byte, low nibble first;
// `_scales` [E, rows, cols / 32] an e8m0 exponent per block; value =
// FP4_VALUES[code] * 2^(e8m0 - 127); v5 holds the result transposed,
// [E, cols, rows] ([E, H, 2I] and [E, I, H]). Checked here on every element
// of synth's MXFP4 checkpoint converted with --dtype bf16, which must then
// export per-expert like any BF16 gpt_oss checkpoint.
TEST(GptOssMxfp4, DequantizesIntoV5sLayout) {
  const uint64_t E = 4, H = 64, I = 96;
  SynthOptions o = testing::TinyOptions("gpt_oss", "fused", "mxfp4");
  o.layers = 2;
  o.experts = static_cast<int>(E);
  o.intermediate = static_cast<int>(I);
  TempDir d;
  testing::SynthOrDie(d / "hub", o);
  ConvertOptions bf16;
  bf16.dtype = DTypeChange::kToBF16;
  testing::ConvertOrDie(d / "hub", d / "v5", Direction::kToFused, bf16);
  const TensorMap a = testing::ReadTensors(d / "hub"), b = testing::ReadTensors(d / "v5");
  EXPECT_FALSE(testing::ReadJson(d / "v5/config.json").contains("quantization_config"));
  const float kFp4[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
  for (int L = 0; L < 2; ++L) {
    const std::string ep = "model.layers." + std::to_string(L) + ".mlp.experts.";
    for (const auto& [name, rows, cols] : {std::tuple{std::string("gate_up_proj"), 2 * I, H},
                                           std::tuple{std::string("down_proj"), H, I}}) {
      SCOPED_TRACE(ep + name);
      ASSERT_TRUE(b.count(ep + name));
      const RawTensor& v5 = b.at(ep + name);
      EXPECT_EQ(v5.dtype, DType::BF16);
      ASSERT_EQ(v5.shape, (std::vector<uint64_t>{E, cols, rows}));
      EXPECT_FALSE(b.count(ep + name + "_blocks") || b.count(ep + name + "_scales"));
      const std::string& blocks = a.at(ep + name + "_blocks").data;
      const std::string& scales = a.at(ep + name + "_scales").data;
      uint64_t wrong = 0;
      for (uint64_t e = 0; e < E; ++e) {
        for (uint64_t r = 0; r < rows; ++r) {
          for (uint64_t c = 0; c < cols; ++c) {
            const uint64_t block = (e * rows + r) * (cols / 32) + c / 32;
            const auto byte = static_cast<uint8_t>(blocks[block * 16 + (c % 32) / 2]);
            const int code = c % 2 ? byte >> 4 : byte & 0x0F;
            const float want = std::ldexp(kFp4[code], static_cast<uint8_t>(scales[block]) - 127);
            uint16_t got;
            std::memcpy(&got, &v5.data[((e * cols + c) * rows + r) * 2], 2);
            wrong += std::bit_cast<float>(uint32_t(got) << 16) != want ||
                     std::signbit(std::bit_cast<float>(uint32_t(got) << 16)) != std::signbit(want);
          }
        }
      }
      EXPECT_EQ(wrong, 0u) << "of " << E * rows * cols;
    }
    // The biases pass through.
    for (const char* bias : {"gate_up_proj_bias", "down_proj_bias"}) {
      EXPECT_TRUE(b.count(ep + bias) && b.at(ep + bias).data == a.at(ep + bias).data) << ep << bias;
    }
  }
  // BF16 now, it splits per expert and fuses back.
  testing::ConvertOrDie(d / "v5", d / "per-expert", Direction::kToPerExpert);
  testing::ConvertOrDie(d / "per-expert", d / "again", Direction::kToFused);
  EXPECT_EQ(testing::DiffTensors(b, testing::ReadTensors(d / "again")), "");
}

// synth shuffles tensors into shards as real checkpoints may be split:
// verify must pair each _blocks with its _scales wherever they are, as convert
// does.
TEST(GptOssMxfp4, VerifyPairsBlocksAndScalesAcrossShards) {
  SynthOptions o = testing::TinyOptions("gpt_oss", "fused", "mxfp4");
  o.layers = 2;
  o.intermediate = 64;
  TempDir d;
  testing::SynthOrDie(d / "hub", o);
  ConvertOptions bf16;
  bf16.dtype = DTypeChange::kToBF16;
  testing::ConvertOrDie(d / "hub", d / "v5", Direction::kToFused, bf16);
  auto r = Verify(d / "hub", d / "v5", VerifyOptions{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->ok) << r->problem;
}

// MXFP4 cannot be cut into experts as stored: per-expert without --dtype is
// refused before anything exists, naming the tensor and the way out.
TEST(GptOssMxfp4, PerExpertWithoutDtypeIsRefusedWithTheRemedy) {
  SynthOptions o = testing::TinyOptions("gpt_oss", "fused", "mxfp4");
  o.intermediate = 64;
  TempDir d;
  testing::SynthOrDie(d / "hub", o);
  auto r = testing::RunMoepack("convert " + d / "hub" + " " + d / "out --to per-expert");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("_blocks'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--dtype bf16 dequantizes it first"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d / "out"));
  r = testing::RunMoepack("convert " + d / "hub" + " " + d / "out --to per-expert --dtype bf16");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

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
    for (uint64_t j = 0; j < 4; ++j) EXPECT_TRUE(Slice(v5, j) == testing::TransposeMatrix(Slice(hub, j), 64, 64, 2)) << j;
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
}  // namespace families_test
}  // namespace moepack
