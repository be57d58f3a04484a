// moepack synth: key names and shapes per family and layout (checked against
// a table written from docs/models.md, independently of src/synth), content
// identity between layouts, determinism, value ranges, sparse files, CLI.
#include "moepack/synth.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "moepack/checkpoint.h"
#include "family_names.h"
#include "testutil.h"
#include "util/file.h"

namespace moepack {
namespace {

namespace fs = std::filesystem;
using testing::RunMoepack;
using testing::TempDir;
using Shape = std::vector<uint64_t>;

// ---- expectations -------------------------------------------------------

constexpr uint64_t kH = 64, kE = 8, kI = 48, kLayers = 4, kDenseI = 96, kQwenSharedI = 80;

struct StackExpect {
  std::string prefix;  // before "layers." on the Hub
  uint64_t experts, intermediate, layers, shared_width;
  std::string count_key;  // config path of the expert count
  std::string width_key;  // config path of the expert width
  std::string embed, head;
  std::string final_norm = "norm";  // leaf under prefix, without ".weight"
};

// Blocks, expert leaves and routers are named as family_names.h says, and
// every tensor that is not an expert as testing::V5Name renames it.
struct FamilyExpect {
  std::string model_type = "";
  std::vector<StackExpect> stacks = {};
  bool router_f32 = false;
  uint64_t zero_experts = 0;  // LongCat's router also scores identity experts
  std::string bias = "";      // the routing correction bias under the block, Hub name
  bool bias_row = false;      // stored [1, E]
  std::string shared = "";    // shared experts under the block: "shared_expert", "shared_experts", "shared_mlp"
  bool shared_gate = false;   // Qwen's shared_expert_gate [1, H]
  std::vector<std::string> shared_leaves = {"gate_proj", "up_proj", "down_proj"};
  std::vector<std::string> norms = {"input_layernorm", "post_attention_layernorm"};  // per layer
  std::vector<uint64_t> dense = {};   // layers with a dense MLP instead of experts
  std::string dense_block = "mlp";    // where it lives
  std::vector<std::string> dense_leaves = {"gate_proj", "up_proj", "down_proj"};
  std::vector<uint64_t> no_mlp = {};  // layers with neither (Nemotron-H's Mamba and attention layers)
  std::string default_layout = "per-expert";
};

StackExpect Model(const std::string& count_key, const std::string& width_key, uint64_t shared_width = 0) {
  return {"model.", kE, kI, kLayers, shared_width, count_key, width_key, "model.embed_tokens.weight", "lm_head.weight"};
}

StackExpect LanguageModel(uint64_t shared_width = 0, const std::string& count_field = "num_experts") {
  return {"model.language_model.",
          kE,
          kI,
          kLayers,
          shared_width,
          "text_config." + count_field,
          "text_config.moe_intermediate_size",
          "model.language_model.embed_tokens.weight",
          "lm_head.weight"};
}

const std::vector<FamilyExpect>& Expectations() {
  const StackExpect thinker = {"thinker.model.",
                               kE,
                               kI,
                               kLayers,
                               0,
                               "thinker_config.text_config.num_experts",
                               "thinker_config.text_config.moe_intermediate_size",
                               "thinker.model.embed_tokens.weight",
                               "thinker.lm_head.weight"};
  const StackExpect talker = {"talker.model.",
                              kE / 2,
                              kI / 2,
                              kLayers / 2,
                              kQwenSharedI / 2,
                              "talker_config.text_config.num_experts",
                              "talker_config.text_config.moe_intermediate_size",
                              "talker.model.codec_embedding.weight",
                              "talker.codec_head.weight"};
  const std::string kBias = "gate.e_score_correction_bias";
  const std::vector<std::string> kW = {"w1", "w3", "w2"};
  static const std::vector<FamilyExpect> kAll = {
      {.model_type = "qwen2_moe",
       .stacks = {Model("num_experts", "moe_intermediate_size", kQwenSharedI)},
       .shared = "shared_expert",
       .shared_gate = true},
      {.model_type = "qwen3_moe", .stacks = {Model("num_experts", "moe_intermediate_size")}},
      {.model_type = "qwen3_next",
       .stacks = {Model("num_experts", "moe_intermediate_size", kQwenSharedI)},
       .shared = "shared_expert",
       .shared_gate = true},
      {.model_type = "olmoe", .stacks = {Model("num_experts", "intermediate_size")}},
      {.model_type = "deepseek_v2",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "deepseek_v3",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "glm4_moe",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "dots1",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "hunyuan_v1_moe",
       .stacks = {Model("num_experts", "intermediate_size", kI)},
       .router_f32 = true,
       .shared = "shared_mlp"},
      {.model_type = "mixtral", .stacks = {Model("num_local_experts", "intermediate_size")}},
      {.model_type = "minimax", .stacks = {Model("num_local_experts", "intermediate_size")}},
      {.model_type = "phimoe", .stacks = {Model("num_local_experts", "intermediate_size")}},
      {.model_type = "qwen3_omni_moe", .stacks = {thinker, talker}, .shared = "shared_expert", .shared_gate = true},
      {.model_type = "qwen3_vl_moe", .stacks = {LanguageModel()}, .default_layout = "fused-transposed"},
      {.model_type = "qwen3_5_moe",
       .stacks = {LanguageModel(kQwenSharedI)},
       .shared = "shared_expert",
       .shared_gate = true,
       .default_layout = "fused"},
      {.model_type = "afmoe",
       .stacks = {Model("num_experts", "moe_intermediate_size", kI)},
       .bias = "expert_bias",
       .shared = "shared_experts",
       .norms = {"input_layernorm", "post_attention_layernorm", "pre_mlp_layernorm", "post_mlp_layernorm"},
       .dense = {0}},
      {.model_type = "glm4_moe_lite",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "glm_moe_dsa",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "glm4v_moe",
       .stacks = {LanguageModel(kI, "n_routed_experts")},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "longcat_flash",
       .stacks = {Model("n_routed_experts", "expert_ffn_hidden_size")},
       .router_f32 = true,
       .zero_experts = kE / 2,
       .bias = "router.e_score_correction_bias",
       .norms = {"input_layernorm.0", "input_layernorm.1", "post_attention_layernorm.0", "post_attention_layernorm.1"}},
      {.model_type = "solar_open",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts"},
      {.model_type = "flex_olmo",
       .stacks = {Model("num_experts", "intermediate_size")},
       .norms = {"post_attention_layernorm", "post_feedforward_layernorm"}},
      {.model_type = "qwen3_omni_moe_thinker",
       .stacks = {{"model.", kE, kI, kLayers, 0, "text_config.num_experts", "text_config.moe_intermediate_size",
                   "model.embed_tokens.weight", "lm_head.weight"}}},
      {.model_type = "ernie4_5_moe",
       .stacks = {Model("moe_num_experts", "moe_intermediate_size", kI)},
       .router_f32 = true,
       .bias = "moe_statics.e_score_correction_bias",
       .bias_row = true,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "exaone_moe",
       .stacks = {Model("num_experts", "moe_intermediate_size", kI)},
       .bias = "e_score_correction_bias",
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "hy_v3",
       .stacks = {Model("num_experts", "moe_intermediate_size", kI)},
       .bias = "expert_bias",
       .shared = "shared_mlp",
       .dense = {0}},
      {.model_type = "laguna",
       .stacks = {Model("num_experts", "moe_intermediate_size", kQwenSharedI)},
       .bias = "experts.e_score_correction_bias",
       .shared = "shared_expert",
       .dense = {0}},
      {.model_type = "deepseek_v32",
       .stacks = {Model("n_routed_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "mimo_v2_flash", .stacks = {Model("n_routed_experts", "moe_intermediate_size")}, .bias = kBias,
       .dense = {0}},
      {.model_type = "minimax_m2", .stacks = {Model("num_local_experts", "intermediate_size")},
       .bias = "e_score_correction_bias"},
      {.model_type = "kimi_linear",
       .stacks = {Model("num_experts", "moe_intermediate_size", kI)},
       .bias = kBias,
       .shared = "shared_experts",
       .dense = {0}},
      {.model_type = "lfm2_moe",
       .stacks = {{"model.", kE, kI, kLayers, 0, "num_experts", "moe_intermediate_size", "model.embed_tokens.weight",
                   "lm_head.weight", "embedding_norm"}},
       .bias = "expert_bias",
       .norms = {"operator_norm", "ffn_norm"},
       .dense = {0},
       .dense_block = "feed_forward",
       .dense_leaves = kW},
      {.model_type = "jamba",
       .stacks = {{"model.", kE, kI, kLayers, 0, "num_experts", "intermediate_size", "model.embed_tokens.weight",
                   "lm_head.weight", "final_layernorm"}},
       .norms = {"input_layernorm", "pre_ff_layernorm"},
       .dense = {0, 2},
       .dense_block = "feed_forward"},
      {.model_type = "nemotron_h",
       .stacks = {{"backbone.", kE, kI, kLayers, kQwenSharedI, "n_routed_experts", "moe_intermediate_size",
                   "backbone.embeddings.weight", "lm_head.weight", "norm_f"}},
       .router_f32 = true,
       .bias = kBias,
       .shared = "shared_experts",
       .shared_leaves = {"up_proj", "down_proj"},
       .norms = {"norm"},
       .no_mlp = {0, 2}},
      {.model_type = "deepseek_v4",
       .stacks = {{"", kE, kI, kLayers, kI, "n_routed_experts", "moe_intermediate_size", "embed.weight",
                   "head.weight"}},
       .bias = "gate.bias",
       .shared = "shared_experts",
       .shared_leaves = kW,
       .norms = {"attn_norm", "ffn_norm"}},
  };
  return kAll;
}

void PrintTo(const FamilyExpect& f, std::ostream* os) { *os << f.model_type; }

const char* const kLayouts[] = {"per-expert", "fused", "fused-transposed"};

const testing::FamilyNames& Names(const FamilyExpect& f) { return testing::NamesOf(f.model_type); }

// gate, up, down (0, 1, 2); non-gated experts have no gate.
int NumLeaves(const FamilyExpect& f) { return static_cast<int>(Names(f).leaves.size()); }
std::string Leaf(const FamilyExpect& f, int which) { return Names(f).leaves[which]; }
bool IsDown(const FamilyExpect& f, int which) { return which == NumLeaves(f) - 1; }

bool IsMoeLayer(const FamilyExpect& f, uint64_t L) {
  auto has = [L](const std::vector<uint64_t>& v) { return std::find(v.begin(), v.end(), L) != v.end(); };
  return !has(f.dense) && !has(f.no_mlp);
}

std::string LayerPrefix(const StackExpect& s, uint64_t layer) {
  return s.prefix + "layers." + std::to_string(layer) + ".";
}

// Per-expert (Hub) name of expert j's projection.
std::string ExpertName(const FamilyExpect& f, const StackExpect& s, uint64_t layer, uint64_t j, int which,
                       const std::string& suffix = ".weight") {
  return LayerPrefix(s, layer) + Names(f).hub_block + ".experts." + std::to_string(j) + "." + Leaf(f, which) + suffix;
}

// ---- helpers -------------------------------------------------------------

Result<SynthReport> Synth(const std::string& dst, const std::string& family, const std::string& layout,
                          uint64_t seed = 0) {
  SynthOptions o;
  o.model_type = family;
  o.layout = layout;
  o.seed = seed;
  return Synthesize(dst, o);
}

Checkpoint MustOpen(const std::string& path) {
  auto c = Checkpoint::Open(path);
  if (!c.ok()) {
    ADD_FAILURE() << c.status().message();
    std::abort();
  }
  return std::move(c).value();
}

const TensorInfo* Info(const Checkpoint& c, const std::string& name) {
  const TensorLocation* loc = c.Find(name);
  return loc ? loc->info : nullptr;
}

void ExpectTensor(const Checkpoint& c, const std::string& name, const Shape& shape, DType dtype) {
  const TensorInfo* t = Info(c, name);
  if (!t) {
    ADD_FAILURE() << "missing tensor " << name;
    return;
  }
  EXPECT_EQ(t->shape, shape) << name;
  EXPECT_EQ(t->dtype, dtype) << name << " is " << DTypeName(t->dtype);
}

void ExpectAbsent(const Checkpoint& c, const std::string& name) { EXPECT_EQ(c.Find(name), nullptr) << name; }

std::string ReadTensor(const Checkpoint& c, const std::string& name) {
  const TensorLocation* loc = c.Find(name);
  if (!loc) {
    ADD_FAILURE() << "missing tensor " << name;
    return "";
  }
  const Shard& shard = c.shards()[loc->shard];
  auto f = internal::File::OpenRead(shard.path);
  EXPECT_TRUE(f.ok());
  std::string bytes(loc->info->nbytes(), '\0');
  EXPECT_TRUE(f->ReadAt(shard.header.data_start() + loc->info->begin, bytes.data(), bytes.size()).ok());
  return bytes;
}

// Expert block e of a [E, R, C] tensor, transposed to [C, R] (element size es).
std::string TransposeBlock(const std::string& block, uint64_t rows, uint64_t cols, size_t es) {
  std::string out(block.size(), '\0');
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) std::memcpy(&out[(c * rows + r) * es], &block[(r * cols + c) * es], es);
  }
  return out;
}

float Decode(DType dt, const char* p) {
  switch (dt) {
    case DType::F32: {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    case DType::BF16: {
      uint16_t u;
      std::memcpy(&u, p, 2);
      return std::bit_cast<float>(uint32_t(u) << 16);
    }
    case DType::F16: {
      uint16_t u;
      std::memcpy(&u, p, 2);
      int e = (u >> 10) & 31, m = u & 1023;
      float v = e == 0 ? std::ldexp(float(m), -24) : e == 31 ? INFINITY : std::ldexp(float(1024 + m), e - 25);
      return (u & 0x8000) ? -v : v;
    }
    default:
      return NAN;
  }
}

// One expert's tensor, or the experts of a layer fused (laguna's
// mlp.experts.e_score_correction_bias is neither).
bool IsExpertTensor(const std::string& name) {
  const size_t p = name.find(".experts.");
  if (p == std::string::npos) return false;
  const std::string rest = name.substr(p + 9);
  return std::isdigit(static_cast<unsigned char>(rest[0])) || rest.rfind("gate_up_proj", 0) == 0 ||
         rest.rfind("up_proj", 0) == 0 || rest.rfind("down_proj", 0) == 0;
}

// ---- structure: every family x every layout ------------------------------

void ExpectStructure(const Checkpoint& c, const FamilyExpect& f, const std::string& layout) {
  const testing::FamilyNames& n = Names(f);
  const bool per_expert = layout == "per-expert", transposed = layout == "fused-transposed";
  // A tensor that is not an expert, by its name in this layout.
  auto named = [&](const std::string& hub) { return per_expert ? hub : testing::V5Name(n, hub); };
  ASSERT_TRUE(c.config().has_value());
  const ModelConfig& cfg = *c.config();
  EXPECT_EQ(cfg.model_type(), f.model_type);
  for (const StackExpect& s : f.stacks) {
    const uint64_t E = s.experts, I = s.intermediate, scored = E + f.zero_experts;
    EXPECT_EQ(cfg.Int(s.count_key), std::optional<int64_t>(E)) << s.count_key;
    EXPECT_EQ(cfg.Int(s.width_key), std::optional<int64_t>(I)) << s.width_key;
    const std::string embed = named(s.embed), head = named(s.head);
    ExpectTensor(c, embed, {Info(c, embed) ? Info(c, embed)->shape[0] : 0, kH}, DType::BF16);
    ExpectTensor(c, head, {Info(c, head) ? Info(c, head)->shape[0] : 0, kH}, DType::BF16);
    ExpectTensor(c, named(s.prefix + s.final_norm + ".weight"), {kH}, DType::BF16);
    ExpectAbsent(c, named(LayerPrefix(s, s.layers) + f.norms[0] + ".weight"));
    for (uint64_t L = 0; L < s.layers; ++L) {
      const std::string lp = LayerPrefix(s, L);
      for (const std::string& norm : f.norms) ExpectTensor(c, named(lp + norm + ".weight"), {kH}, DType::BF16);
      const std::string block = lp + n.hub_block + ".";  // Hub names; named() gives this layout's
      if (!IsMoeLayer(f, L)) {
        const bool dense = std::find(f.dense.begin(), f.dense.end(), L) != f.dense.end();
        for (size_t w = 0; dense && w < f.dense_leaves.size(); ++w) {
          const std::string name = named(lp + f.dense_block + "." + f.dense_leaves[w] + ".weight");
          ExpectTensor(c, name, w == 2 ? Shape{kH, kDenseI} : Shape{kDenseI, kH}, DType::BF16);
        }
        ExpectAbsent(c, named(block + n.router_hub));
        ExpectAbsent(c, ExpertName(f, s, L, 0, 0));
        continue;
      }
      ExpectTensor(c, named(block + n.router_hub), {scored, kH}, f.router_f32 ? DType::F32 : DType::BF16);
      if (!f.bias.empty()) {
        ExpectTensor(c, named(block + f.bias), f.bias_row ? Shape{1, scored} : Shape{scored}, DType::F32);
      }
      for (uint64_t j = 0; j < E; ++j) {
        for (int w = 0; w < NumLeaves(f); ++w) {
          const std::string name = ExpertName(f, s, L, j, w);
          if (per_expert) {
            ExpectTensor(c, name, IsDown(f, w) ? Shape{kH, I} : Shape{I, kH}, DType::BF16);
          } else {
            ExpectAbsent(c, name);
          }
        }
      }
      ExpectAbsent(c, ExpertName(f, s, L, E, 0));
      const uint64_t parts = n.gated() ? 2 : 1;
      const std::string up = n.gated() ? "experts.gate_up_proj" : "experts.up_proj";
      if (per_expert) {
        ExpectAbsent(c, block + up);
      } else {
        const std::string fused = testing::V5Name(n, lp) + n.v5_block + ".";
        ExpectTensor(c, fused + up, transposed ? Shape{E, kH, parts * I} : Shape{E, parts * I, kH}, DType::BF16);
        ExpectTensor(c, fused + "experts.down_proj", transposed ? Shape{E, I, kH} : Shape{E, kH, I}, DType::BF16);
      }
      if (s.shared_width > 0) {  // the omni thinker has none, its talker has one
        const std::string sp = block + f.shared + ".";
        for (size_t w = 0; w < f.shared_leaves.size(); ++w) {
          const bool down = w + 1 == f.shared_leaves.size();
          ExpectTensor(c, named(sp + f.shared_leaves[w] + ".weight"),
                       down ? Shape{kH, s.shared_width} : Shape{s.shared_width, kH}, DType::BF16);
        }
        if (f.shared_gate) ExpectTensor(c, named(block + "shared_expert_gate.weight"), {1, kH}, DType::BF16);
      }
    }
  }
  for (const std::string& name : c.names()) {
    if (!per_expert) {
      EXPECT_EQ(name.find("block_sparse_moe"), std::string::npos) << name;
    }
    EXPECT_EQ(name.find("_scale_inv"), std::string::npos) << name;
  }
}

class SynthFamilyTest : public ::testing::TestWithParam<FamilyExpect> {};

TEST_P(SynthFamilyTest, KeyNamesShapesAndDtypesInEveryLayout) {
  const FamilyExpect& f = GetParam();
  TempDir tmp;
  for (const char* layout : kLayouts) {
    SCOPED_TRACE(layout);
    const std::string dir = tmp / layout;
    auto r = Synth(dir, f.model_type, layout);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_EQ(r->layout, layout);
    Checkpoint c = MustOpen(dir);
    EXPECT_EQ(r->num_tensors, static_cast<int>(c.names().size()));
    EXPECT_EQ(r->total_bytes, c.total_bytes());
    EXPECT_GT(c.shards().size(), 1u);
    EXPECT_TRUE(c.has_index());
    ExpectStructure(c, f, layout);
    std::set<std::string> aux(c.aux_files().begin(), c.aux_files().end());
    EXPECT_EQ(aux, (std::set<std::string>{"config.json", "generation_config.json", "tokenizer_config.json"}));
  }
}

TEST_P(SynthFamilyTest, DefaultLayoutIsTheHubOne) {
  const FamilyExpect& f = GetParam();
  TempDir tmp;
  auto r = Synth(tmp / "d", f.model_type, "");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->layout, f.default_layout);
}

TEST_P(SynthFamilyTest, ExpertsOfOneLayerStraddleShards) {
  const FamilyExpect& f = GetParam();
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "d", f.model_type, "per-expert").ok());
  Checkpoint c = MustOpen(tmp / "d");
  const StackExpect& s = f.stacks[0];
  const uint64_t layer = s.layers - 1;
  std::set<uint32_t> shards;
  ASSERT_TRUE(IsMoeLayer(f, layer));
  for (uint64_t j = 0; j < s.experts; ++j) {
    for (int w = 0; w < NumLeaves(f); ++w) {
      const TensorLocation* loc = c.Find(ExpertName(f, s, layer, j, w));
      ASSERT_NE(loc, nullptr);
      shards.insert(loc->shard);
    }
  }
  EXPECT_GT(shards.size(), 1u);
}

// The fused layouts hold the per-expert bytes rearranged, and everything
// that is not an expert is byte-identical (under the v5 renames).
TEST_P(SynthFamilyTest, FusedContentIsThePerExpertContentRearranged) {
  const FamilyExpect& f = GetParam();
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "per-expert", f.model_type, "per-expert", 7).ok());
  Checkpoint hub = MustOpen(tmp / "per-expert");
  for (const char* layout : {"fused", "fused-transposed"}) {
    SCOPED_TRACE(layout);
    const bool transposed = std::string(layout) == "fused-transposed";
    ASSERT_TRUE(Synth(tmp / layout, f.model_type, layout, 7).ok());
    Checkpoint fused = MustOpen(tmp / layout);
    size_t hub_others = 0, fused_others = 0;
    for (const std::string& name : fused.names()) fused_others += !IsExpertTensor(name);
    for (const std::string& name : hub.names()) {
      if (IsExpertTensor(name)) continue;
      ++hub_others;
      const std::string v5 = testing::V5Name(Names(f), name);
      EXPECT_EQ(ReadTensor(fused, v5), ReadTensor(hub, name)) << v5 << " vs " << name;
    }
    EXPECT_EQ(hub_others, fused_others);
    const bool gated = Names(f).gated();
    const uint64_t parts = gated ? 2 : 1;
    for (const StackExpect& s : f.stacks) {
      for (uint64_t L = 0; L < s.layers; ++L) {
        if (!IsMoeLayer(f, L)) continue;
        const std::string ep = testing::V5Name(Names(f), LayerPrefix(s, L)) + Names(f).v5_block + ".experts.";
        const std::string gate_up = ReadTensor(fused, ep + (gated ? "gate_up_proj" : "up_proj"));
        const std::string down = ReadTensor(fused, ep + "down_proj");
        const size_t es = 2;
        const uint64_t I = s.intermediate, block_gu = parts * I * kH * es, block_d = kH * I * es;
        ASSERT_EQ(gate_up.size(), s.experts * block_gu);
        ASSERT_EQ(down.size(), s.experts * block_d);
        for (uint64_t j = 0; j < s.experts; ++j) {
          std::string want_gu;
          for (int w = 0; w + 1 < NumLeaves(f); ++w) want_gu += ReadTensor(hub, ExpertName(f, s, L, j, w));
          std::string want_d = ReadTensor(hub, ExpertName(f, s, L, j, NumLeaves(f) - 1));
          if (transposed) {
            want_gu = TransposeBlock(want_gu, parts * I, kH, es);
            want_d = TransposeBlock(want_d, kH, I, es);
          }
          EXPECT_TRUE(gate_up.compare(j * block_gu, block_gu, want_gu) == 0) << ep << "gate_up_proj expert " << j;
          EXPECT_TRUE(down.compare(j * block_d, block_d, want_d) == 0) << ep << "down_proj expert " << j;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, SynthFamilyTest, ::testing::ValuesIn(Expectations()),
                         [](const auto& info) { return info.param.model_type; });

TEST(SynthTest, EveryFamilyIsCovered) {
  std::vector<std::string> expected;
  for (const auto& f : Expectations()) expected.push_back(f.model_type);
  EXPECT_EQ(SynthFamilies(), expected);
}

// ---- FP8 -----------------------------------------------------------------

TEST(SynthTest, Fp8WeightsCarryBlockScalesInEveryLayout) {
  TempDir tmp;
  // Sizes that are not multiples of 128 give scale grids of 2x2 blocks.
  const uint64_t H = 200, I = 136, E = 4, hb = 2, ib = 2;
  auto synth = [&](const std::string& layout) {
    SynthOptions o;
    o.model_type = "deepseek_v3";
    o.dtype = "fp8";
    o.hidden = static_cast<int>(H);
    o.intermediate = static_cast<int>(I);
    o.experts = static_cast<int>(E);
    o.layers = 2;
    o.layout = layout;
    auto r = Synthesize(tmp / layout, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return MustOpen(tmp / layout);
  };
  Checkpoint hub = synth("per-expert");
  Checkpoint fused = synth("fused");
  Checkpoint transposed = synth("fused-transposed");

  auto q = hub.config()->String("quantization_config.quant_method");
  EXPECT_EQ(q, std::optional<std::string>("fp8"));
  EXPECT_EQ(hub.config()->String("quantization_config.fmt"), std::optional<std::string>("e4m3"));
  EXPECT_EQ(hub.config()->String("torch_dtype"), std::optional<std::string>("bfloat16"));

  // Attention, dense and shared linears are FP8 with scales; the rest BF16.
  ExpectTensor(hub, "model.layers.0.self_attn.q_a_proj.weight", {32, H}, DType::F8_E4M3);
  ExpectTensor(hub, "model.layers.0.self_attn.q_a_proj.weight_scale_inv", {1, hb}, DType::F32);
  ExpectTensor(hub, "model.layers.0.mlp.gate_proj.weight", {96, H}, DType::F8_E4M3);
  ExpectTensor(hub, "model.layers.0.mlp.gate_proj.weight_scale_inv", {1, hb}, DType::F32);
  ExpectTensor(hub, "model.layers.1.mlp.shared_experts.down_proj.weight", {H, I}, DType::F8_E4M3);
  ExpectTensor(hub, "model.layers.1.mlp.shared_experts.down_proj.weight_scale_inv", {hb, ib}, DType::F32);
  ExpectTensor(hub, "model.layers.1.self_attn.q_a_layernorm.weight", {32}, DType::BF16);
  ExpectTensor(hub, "model.layers.1.input_layernorm.weight", {H}, DType::BF16);
  ExpectTensor(hub, "model.layers.1.mlp.gate.weight", {E, H}, DType::BF16);
  ExpectTensor(hub, "model.layers.1.mlp.gate.e_score_correction_bias", {E}, DType::F32);
  ExpectTensor(hub, "model.embed_tokens.weight", {256, H}, DType::BF16);
  ExpectTensor(hub, "lm_head.weight", {256, H}, DType::BF16);
  for (uint64_t j = 0; j < E; ++j) {
    const std::string p = "model.layers.1.mlp.experts." + std::to_string(j) + ".";
    ExpectTensor(hub, p + "gate_proj.weight", {I, H}, DType::F8_E4M3);
    ExpectTensor(hub, p + "gate_proj.weight_scale_inv", {ib, hb}, DType::F32);
    ExpectTensor(hub, p + "up_proj.weight_scale_inv", {ib, hb}, DType::F32);
    ExpectTensor(hub, p + "down_proj.weight", {H, I}, DType::F8_E4M3);
    ExpectTensor(hub, p + "down_proj.weight_scale_inv", {hb, ib}, DType::F32);
  }
  const std::string ep = "model.layers.1.mlp.experts.";
  ExpectTensor(fused, ep + "gate_up_proj", {E, 2 * I, H}, DType::F8_E4M3);
  ExpectTensor(fused, ep + "gate_up_proj_scale_inv", {E, 2 * ib, hb}, DType::F32);
  ExpectTensor(fused, ep + "down_proj", {E, H, I}, DType::F8_E4M3);
  ExpectTensor(fused, ep + "down_proj_scale_inv", {E, hb, ib}, DType::F32);
  ExpectTensor(transposed, ep + "gate_up_proj", {E, H, 2 * I}, DType::F8_E4M3);
  ExpectTensor(transposed, ep + "gate_up_proj_scale_inv", {E, hb, 2 * ib}, DType::F32);
  ExpectTensor(transposed, ep + "down_proj", {E, I, H}, DType::F8_E4M3);
  ExpectTensor(transposed, ep + "down_proj_scale_inv", {E, ib, hb}, DType::F32);
  ExpectAbsent(fused, ep + "0.gate_proj.weight_scale_inv");

  // Scales are fused like their weights: gate scale rows first.
  const std::string gu_s = ReadTensor(fused, ep + "gate_up_proj_scale_inv");
  const std::string gu_s_t = ReadTensor(transposed, ep + "gate_up_proj_scale_inv");
  const std::string d_s = ReadTensor(fused, ep + "down_proj_scale_inv");
  const std::string gu = ReadTensor(fused, ep + "gate_up_proj");
  const uint64_t blk = 2 * ib * hb * 4, dblk = hb * ib * 4, wblk = 2 * I * H;
  for (uint64_t j = 0; j < E; ++j) {
    const std::string p = ep + std::to_string(j) + ".";
    const std::string want =
        ReadTensor(hub, p + "gate_proj.weight_scale_inv") + ReadTensor(hub, p + "up_proj.weight_scale_inv");
    EXPECT_EQ(gu_s.substr(j * blk, blk), want) << j;
    EXPECT_EQ(gu_s_t.substr(j * blk, blk), TransposeBlock(want, 2 * ib, hb, 4)) << j;
    EXPECT_EQ(d_s.substr(j * dblk, dblk), ReadTensor(hub, p + "down_proj.weight_scale_inv")) << j;
    EXPECT_EQ(gu.substr(j * wblk, wblk),
              ReadTensor(hub, p + "gate_proj.weight") + ReadTensor(hub, p + "up_proj.weight"));
  }

  // No NaN codes; scales positive, finite, around 1e-3 .. 1e-2.
  for (const std::string& name : hub.names()) {
    const TensorInfo* t = Info(hub, name);
    const std::string bytes = ReadTensor(hub, name);
    if (t->dtype == DType::F8_E4M3) {
      for (char b : bytes) ASSERT_NE(static_cast<unsigned char>(b) & 0x7F, 0x7F) << name;
    } else if (name.ends_with("_scale_inv")) {
      for (size_t i = 0; i < bytes.size(); i += 4) {
        float v = Decode(DType::F32, &bytes[i]);
        ASSERT_TRUE(v >= 1e-3f && v <= 1e-2f) << name << " " << v;
      }
    }
  }
}

// ---- values ----------------------------------------------------------------

TEST(SynthTest, ValuesAreFiniteAndOfSensibleMagnitude) {
  for (const char* dtype : {"bf16", "f16", "f32"}) {
    SCOPED_TRACE(dtype);
    TempDir tmp;
    SynthOptions o;
    o.model_type = "qwen3_next";  // the most kinds of tensors: norms, linear attention, shared experts
    o.dtype = dtype;
    ASSERT_TRUE(Synthesize(tmp / "d", o).ok());
    Checkpoint c = MustOpen(tmp / "d");
    const DType want = std::string(dtype) == "bf16"  ? DType::BF16
                       : std::string(dtype) == "f16" ? DType::F16
                                                     : DType::F32;
    double sum_sq = 0;
    uint64_t n = 0;
    for (const std::string& name : c.names()) {
      const TensorInfo* t = Info(c, name);
      ASSERT_EQ(t->dtype, want) << name;
      const std::string bytes = ReadTensor(c, name);
      const size_t es = DTypeBits(t->dtype) / 8;
      const bool norm = name.ends_with("norm.weight");
      for (size_t i = 0; i < bytes.size(); i += es) {
        float v = Decode(t->dtype, &bytes[i]);
        ASSERT_TRUE(std::isfinite(v)) << name;
        if (norm) {
          ASSERT_GT(v, 0.5f) << name;
          ASSERT_LT(v, 1.5f) << name;
        } else if (name.ends_with("_proj.weight")) {
          ASSERT_LT(std::fabs(v), 0.1f) << name;
          sum_sq += double(v) * v;
          ++n;
        }
      }
    }
    ASSERT_GT(n, 0u);
    const double sd = std::sqrt(sum_sq / double(n));
    EXPECT_GT(sd, 0.015);
    EXPECT_LT(sd, 0.025);
  }
}

TEST(SynthTest, SameSeedSameBytesOtherSeedOtherBytes) {
  TempDir tmp;
  SynthOptions o;
  o.model_type = "mixtral";
  ASSERT_TRUE(Synthesize(tmp / "a", o).ok());
  ASSERT_TRUE(Synthesize(tmp / "b", o).ok());
  o.seed = 1;
  ASSERT_TRUE(Synthesize(tmp / "c", o).ok());
  EXPECT_EQ(testing::HashTree(tmp / "a"), testing::HashTree(tmp / "b"));
  EXPECT_NE(testing::HashTree(tmp / "a"), testing::HashTree(tmp / "c"));
  Checkpoint a = MustOpen(tmp / "a"), c = MustOpen(tmp / "c");
  const std::string name = "model.layers.0.block_sparse_moe.experts.0.w1.weight";
  EXPECT_NE(ReadTensor(a, name), ReadTensor(c, name));
  // Experts differ from each other.
  EXPECT_NE(ReadTensor(a, name), ReadTensor(a, "model.layers.0.block_sparse_moe.experts.1.w1.weight"));
}

// ---- files ---------------------------------------------------------------

TEST(SynthTest, IndexIsSortedIndentedAndCountsTheData) {
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "d", "qwen3_moe", "per-expert").ok());
  Checkpoint c = MustOpen(tmp / "d");
  const std::string text = testing::ReadFileOrDie(tmp / "d/model.safetensors.index.json");
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(text, j.dump(2) + "\n");
  EXPECT_EQ(j["metadata"]["total_size"].get<uint64_t>(), c.total_bytes());
  EXPECT_EQ(j["weight_map"].size(), c.names().size());
  const size_t n = c.shards().size();
  for (size_t i = 0; i < n; ++i) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", i + 1, n);
    EXPECT_EQ(c.shards()[i].filename, want);
    EXPECT_EQ(c.shards()[i].header.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
    EXPECT_LE(c.shards()[i].header.data_size(), 64'000u);
  }
}

TEST(SynthTest, OneShardWritesASingleFileWithoutIndex) {
  TempDir tmp;
  SynthOptions o;
  o.model_type = "olmoe";
  o.max_shard_size = 1'000'000'000;
  auto r = Synthesize(tmp / "d", o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->num_shards, 1);
  EXPECT_TRUE(fs::exists(tmp / "d/model.safetensors"));
  EXPECT_FALSE(fs::exists(tmp / "d/model.safetensors.index.json"));
  Checkpoint c = MustOpen(tmp / "d");
  EXPECT_EQ(c.shards().size(), 1u);
}

TEST(SynthTest, SparseFilesHaveFullLengthButNoData) {
  TempDir tmp;
  SynthOptions o;
  o.preset = "qwen3-30b-a3b";
  o.layers = 2;
  o.sparse = true;
  o.layout = "fused";
  auto r = Synthesize(tmp / "d", o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  Checkpoint c = MustOpen(tmp / "d");
  ExpectTensor(c, "model.layers.1.mlp.experts.gate_up_proj", {128, 1536, 2048}, DType::BF16);
  ExpectTensor(c, "model.layers.1.mlp.experts.down_proj", {128, 2048, 768}, DType::BF16);
  ExpectTensor(c, "model.layers.1.mlp.gate.weight", {128, 2048}, DType::BF16);
  ExpectTensor(c, "model.layers.1.self_attn.q_proj.weight", {4096, 2048}, DType::BF16);
  ExpectTensor(c, "model.layers.1.self_attn.k_norm.weight", {128}, DType::BF16);
  ExpectTensor(c, "model.embed_tokens.weight", {151936, 2048}, DType::BF16);
  EXPECT_EQ(c.config()->Int("num_hidden_layers"), 2);
  EXPECT_EQ(c.config()->Int("num_experts"), 128);
  EXPECT_EQ(c.config()->Int("num_key_value_heads"), 4);
  uint64_t logical = 0, allocated = 0;
  for (const Shard& s : c.shards()) {
    struct stat st;
    ASSERT_EQ(::stat(s.path.c_str(), &st), 0);
    EXPECT_EQ(uint64_t(st.st_size), s.header.data_start() + s.header.data_size());
    logical += st.st_size;
    allocated += uint64_t(st.st_blocks) * 512;
  }
  EXPECT_GT(logical, 3'000'000'000u);
  EXPECT_LT(allocated, 10'000'000u);
  // Holes read as zeros.
  EXPECT_EQ(ReadTensor(c, "model.layers.1.mlp.gate.weight"), std::string(128 * 2048 * 2, '\0'));
}

TEST(SynthTest, DeepseekV3PresetAtFullSizeIsInstantWhenSparse) {
  TempDir tmp;
  SynthOptions o;
  o.preset = "deepseek-v3";
  o.sparse = true;
  auto r = Synthesize(tmp / "full", o);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_GT(r->total_bytes, 600'000'000'000u);
  EXPECT_EQ(r->dtype, "fp8");
  uint64_t allocated = 0;
  for (const auto& e : fs::directory_iterator(tmp / "full")) {
    struct stat st;
    ASSERT_EQ(::stat(e.path().c_str(), &st), 0);
    allocated += uint64_t(st.st_blocks) * 512;
  }
  EXPECT_LT(allocated, 100'000'000u);

  // Shapes, on a slice: opening all 90k headers is the slow part.
  o.layers = 4;
  ASSERT_TRUE(Synthesize(tmp / "d", o).ok());
  Checkpoint c = MustOpen(tmp / "d");
  EXPECT_EQ(c.config()->Int("first_k_dense_replace"), 3);
  EXPECT_EQ(c.config()->Int("n_routed_experts"), 256);
  EXPECT_EQ(c.config()->Int("q_lora_rank"), 1536);
  ExpectTensor(c, "model.layers.2.mlp.gate_proj.weight", {18432, 7168}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.2.mlp.gate_proj.weight_scale_inv", {144, 56}, DType::F32);
  ExpectAbsent(c, "model.layers.2.mlp.gate.weight");
  ExpectTensor(c, "model.layers.3.mlp.experts.255.gate_proj.weight", {2048, 7168}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.mlp.experts.255.gate_proj.weight_scale_inv", {16, 56}, DType::F32);
  ExpectTensor(c, "model.layers.3.mlp.experts.0.down_proj.weight_scale_inv", {56, 16}, DType::F32);
  ExpectTensor(c, "model.layers.3.mlp.shared_experts.up_proj.weight", {2048, 7168}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.self_attn.kv_a_proj_with_mqa.weight", {576, 7168}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.self_attn.kv_b_proj.weight", {128 * 256, 512}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.self_attn.q_b_proj.weight", {128 * 192, 1536}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.self_attn.o_proj.weight", {7168, 128 * 128}, DType::F8_E4M3);
  ExpectTensor(c, "model.layers.3.mlp.gate.e_score_correction_bias", {256}, DType::F32);
  ExpectAbsent(c, "model.layers.4.input_layernorm.weight");
}

TEST(SynthTest, MixtralPresetUsesV5NamesWhenFused) {
  TempDir tmp;
  SynthOptions o;
  o.preset = "mixtral-8x7b";
  o.layers = 1;
  o.sparse = true;
  ASSERT_TRUE(Synthesize(tmp / "hub", o).ok());
  o.layout = "fused";
  ASSERT_TRUE(Synthesize(tmp / "v5", o).ok());
  Checkpoint hub = MustOpen(tmp / "hub"), v5 = MustOpen(tmp / "v5");
  ExpectTensor(hub, "model.layers.0.block_sparse_moe.experts.7.w1.weight", {14336, 4096}, DType::BF16);
  ExpectTensor(hub, "model.layers.0.block_sparse_moe.experts.7.w2.weight", {4096, 14336}, DType::BF16);
  ExpectTensor(hub, "model.layers.0.block_sparse_moe.gate.weight", {8, 4096}, DType::BF16);
  ExpectTensor(v5, "model.layers.0.mlp.experts.gate_up_proj", {8, 28672, 4096}, DType::BF16);
  ExpectTensor(v5, "model.layers.0.mlp.experts.down_proj", {8, 4096, 14336}, DType::BF16);
  ExpectTensor(v5, "model.layers.0.mlp.gate.weight", {8, 4096}, DType::BF16);
  EXPECT_EQ(hub.config()->Int("num_local_experts"), 8);
  EXPECT_EQ(hub.config()->Int("intermediate_size"), 14336);
  EXPECT_EQ(hub.config()->Int("vocab_size"), 32000);
}

TEST(SynthTest, FlagsOverrideThePreset) {
  TempDir tmp;
  SynthOptions o;
  o.model_type = "qwen2_moe";
  o.layers = 2;
  o.experts = 5;
  o.hidden = 40;
  o.intermediate = 24;
  o.dtype = "f32";
  o.layout = "fused";
  ASSERT_TRUE(Synthesize(tmp / "d", o).ok());
  Checkpoint c = MustOpen(tmp / "d");
  ExpectTensor(c, "model.layers.1.mlp.experts.gate_up_proj", {5, 48, 40}, DType::F32);
  ExpectAbsent(c, "model.layers.2.mlp.experts.gate_up_proj");
  EXPECT_EQ(c.config()->Int("num_experts"), 5);
  EXPECT_EQ(c.config()->Int("num_experts_per_tok"), 2);
  EXPECT_EQ(c.config()->String("torch_dtype"), std::optional<std::string>("float32"));
}

TEST(SynthTest, NestedConfigsCarryEachStacksFields) {
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "omni", "qwen3_omni_moe", "").ok());
  ASSERT_TRUE(Synth(tmp / "vl", "qwen3_vl_moe", "").ok());
  auto omni = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "omni/config.json"));
  EXPECT_EQ(omni["thinker_config"]["text_config"]["num_experts"], kE);
  EXPECT_EQ(omni["talker_config"]["text_config"]["num_experts"], kE / 2);
  EXPECT_EQ(omni["talker_config"]["text_config"]["shared_expert_intermediate_size"], kQwenSharedI / 2);
  EXPECT_EQ(omni["thinker_config"]["model_type"], "qwen3_omni_moe_thinker");
  EXPECT_FALSE(omni.contains("num_experts"));
  auto vl = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "vl/config.json"));
  EXPECT_EQ(vl["model_type"], "qwen3_vl_moe");
  EXPECT_EQ(vl["text_config"]["model_type"], "qwen3_vl_moe_text");
  EXPECT_EQ(vl["text_config"]["hidden_size"], kH);
  EXPECT_EQ(vl["vision_config"]["out_hidden_size"], kH);
  Checkpoint c = MustOpen(tmp / "vl");
  EXPECT_NE(c.Find("model.visual.blocks.0.attn.qkv.weight"), nullptr);
}

// ---- errors ----------------------------------------------------------------

TEST(SynthTest, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  TempDir tmp;
  struct Case {
    SynthOptions o;
    std::string message;
  };
  std::vector<Case> cases(7);
  cases[0].o.model_type = "llama";
  cases[0].message = "unknown model type 'llama' (known: qwen2_moe, qwen3_moe,";
  cases[1].message = "a model type is required";
  cases[2].o.model_type = "olmoe", cases[2].o.preset = "qwen3-30b-a3b";
  cases[2].message = "preset 'qwen3-30b-a3b' is a qwen3_moe model, not olmoe";
  cases[3].o.model_type = "olmoe", cases[3].o.preset = "huge";
  cases[3].message = "unknown preset 'huge'";
  cases[4].o.model_type = "olmoe", cases[4].o.layout = "stacked";
  cases[4].message = "unknown layout 'stacked'";
  cases[5].o.model_type = "olmoe", cases[5].o.dtype = "int4";
  cases[5].message = "unknown dtype 'int4'";
  cases[6].o.model_type = "olmoe", cases[6].o.experts = 0;
  cases[6].message = "experts must be between 1 and";
  for (const Case& c : cases) {
    auto r = Synthesize(tmp / "d", c.o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.message), std::string::npos) << r.status().message();
    EXPECT_FALSE(fs::exists(tmp / "d"));
  }
}

TEST(SynthTest, ExistingDestinationIsRefusedAndKept) {
  TempDir tmp;
  fs::create_directories(tmp / "d");
  testing::WriteFileOrDie(tmp / "d/keep", "x");
  auto r = Synth(tmp / "d", "olmoe", "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("already exists"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "d/keep"));
}

// Runs in a child process: a file size limit makes the write fail with
// EFBIG partway through.
void SynthesizeOverFileSizeLimit(const std::string& dst) {
  std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = {200'000, 200'000};
  ::setrlimit(RLIMIT_FSIZE, &lim);
  SynthOptions o;
  o.model_type = "qwen3_moe";
  o.max_shard_size = 1'000'000'000;
  auto r = Synthesize(dst, o);
  std::exit(!r.ok() && r.status().code() == Status::Code::kIOError && !fs::exists(dst) ? 0 : 1);
}

TEST(SynthTest, FailureMidWriteLeavesNothingBehind) {
  TempDir tmp;
  EXPECT_EXIT(SynthesizeOverFileSizeLimit(tmp / "d"), ::testing::ExitedWithCode(0), "");
  EXPECT_FALSE(fs::exists(tmp / "d"));
}

// ---- CLI -------------------------------------------------------------------

TEST(SynthCliTest, WritesACheckpointAndReportsJson) {
  TempDir tmp;
  auto r = RunMoepack("synth " + tmp / "d" + " --model-type phimoe --layout fused --seed 3 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model_type"], "phimoe");
  EXPECT_EQ(j["layout"], "fused");
  EXPECT_GT(j["num_shards"].get<int>(), 1);
  Checkpoint c = MustOpen(tmp / "d");
  EXPECT_EQ(j["num_tensors"].get<size_t>(), c.names().size());
  EXPECT_NE(c.Find("model.layers.0.mlp.router.weight"), nullptr);
  // Same as the library with the same options.
  SynthOptions o;
  o.model_type = "phimoe";
  o.layout = "fused";
  o.seed = 3;
  ASSERT_TRUE(Synthesize(tmp / "lib", o).ok());
  EXPECT_EQ(testing::HashTree(tmp / "d"), testing::HashTree(tmp / "lib"));
}

TEST(SynthCliTest, PresetAloneIsEnough) {
  TempDir tmp;
  auto r = RunMoepack("synth " + tmp / "d" + " --preset qwen3-30b-a3b --layers 1 --sparse --max-shard-size 1GB");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("qwen3_moe"), std::string::npos);
  Checkpoint c = MustOpen(tmp / "d");
  for (const Shard& s : c.shards()) EXPECT_LE(s.header.data_size(), 1'000'000'000u);
  EXPECT_GT(c.shards().size(), 1u);
}

TEST(SynthCliTest, ExitCodes) {
  TempDir tmp;
  auto bad_family = RunMoepack("synth " + tmp / "a" + " --model-type llama");
  EXPECT_EQ(bad_family.exit_code, 1);
  EXPECT_EQ(bad_family.err.rfind("moepack: error: ", 0), 0u) << bad_family.err;
  EXPECT_NE(bad_family.err.find("qwen3_vl_moe"), std::string::npos) << bad_family.err;
  EXPECT_FALSE(fs::exists(tmp / "a"));

  auto bad_flag = RunMoepack("synth " + tmp / "a" + " --model-type olmoe --frobnicate");
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_EQ(bad_flag.err.rfind("moepack: error: ", 0), 0u) << bad_flag.err;

  EXPECT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe --dtype int4").exit_code, 2);
  EXPECT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe --layout stacked").exit_code, 2);
  EXPECT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe --max-shard-size 5XB").exit_code, 2);
  EXPECT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe --layers many").exit_code, 2);
  EXPECT_EQ(RunMoepack("synth --model-type olmoe").exit_code, 2);
  auto conflict = RunMoepack("synth " + tmp / "a" + " --preset deepseek-v3 --model-type mixtral");
  EXPECT_EQ(conflict.exit_code, 2);
  EXPECT_NE(conflict.err.find("deepseek_v3"), std::string::npos) << conflict.err;
  EXPECT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe --preset nope").exit_code, 1);
  EXPECT_FALSE(fs::exists(tmp / "a"));

  ASSERT_EQ(RunMoepack("synth " + tmp / "a" + " --model-type olmoe").exit_code, 0);
  auto exists = RunMoepack("synth " + tmp / "a" + " --model-type olmoe");
  EXPECT_EQ(exists.exit_code, 1);
  EXPECT_NE(exists.err.find("already exists"), std::string::npos) << exists.err;
}

}  // namespace
}  // namespace moepack
