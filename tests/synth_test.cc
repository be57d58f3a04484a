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
namespace synth_test {
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
  // The expert widths of the shares of an expert list (family_names.h's
  // shares; each share has `experts` experts); empty: one list.
  std::vector<uint64_t> share_widths = {};
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
  std::vector<std::string> layouts = {"per-expert", "fused", "fused-transposed"};  // what synth writes
  std::string router_bias = "";    // the router's own bias [E] under the block (gpt_oss)
  std::string sinks = "";          // attention sinks [heads] under self_attn
  bool shared_under_layer = false;  // Granite's shared_mlp hangs off the layer, input_linear [2 * width, H]
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
  // gpt_oss and llama4 ship v5's fused form, which has no transposed twin.
  const std::vector<std::string> kOwnForm = {"per-expert", "fused"};
  const std::vector<std::string> kGraniteLayouts = {"per-expert", "fused", "fused-transposed", "fused-hub-names"};
  const FamilyExpect granite_shared = {.model_type = "granitemoeshared",
                                       .stacks = {Model("num_local_experts", "intermediate_size", kQwenSharedI)},
                                       .shared = "shared_mlp",
                                       .shared_leaves = {"input_linear", "output_linear"},
                                       .default_layout = "fused-hub-names",
                                       .layouts = kGraniteLayouts,
                                       .shared_under_layer = true};
  FamilyExpect granite_hybrid = granite_shared;
  granite_hybrid.model_type = "granitemoehybrid";
  // ERNIE-4.5-VL: 8 text experts of width I, then 8 vision experts a third
  // as wide (the real model's 1536 and 512).
  StackExpect ernie = Model("moe_num_experts.0", "moe_intermediate_size.0", kI);
  ernie.share_widths = {kI, kI / 3};
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
      {.model_type = "gpt_oss",
       .stacks = {Model("num_local_experts", "intermediate_size")},
       .default_layout = "fused",
       .layouts = kOwnForm,
       .router_bias = "router.bias",
       .sinks = "sinks"},
      {.model_type = "llama4",
       .stacks = {{"language_model.model.", kE, kI, kLayers, kI, "text_config.num_local_experts",
                   "text_config.intermediate_size", "language_model.model.embed_tokens.weight",
                   "language_model.lm_head.weight"}},
       .shared = "shared_expert",
       .dense = {0, 2},
       .dense_block = "feed_forward",
       .default_layout = "fused",
       .layouts = kOwnForm},
      {.model_type = "granitemoe",
       .stacks = {Model("num_local_experts", "intermediate_size")},
       .default_layout = "fused-hub-names",
       .layouts = kGraniteLayouts},
      granite_shared,
      granite_hybrid,
      {.model_type = "ernie4_5_vl_moe",
       .stacks = {ernie},
       .router_f32 = true,
       .bias = "moe_statics.e_score_correction_bias",
       .shared = "shared_experts",
       .dense = {0}},
  };
  return kAll;
}

void PrintTo(const FamilyExpect& f, std::ostream* os) { *os << f.model_type; }

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
// mlp.experts.e_score_correction_bias is neither), also under the Hub's own
// fused names (granitemoe's input_linear / output_linear).
bool IsExpertTensor(const FamilyExpect& f, const std::string& name) {
  for (const std::string& leaf : Names(f).hub_fused) {
    if (testing::EndsWith(name, "." + Names(f).hub_block + "." + leaf)) return true;
  }
  const size_t p = name.find(".experts.");
  if (p == std::string::npos) return false;
  const std::string rest = name.substr(p + 9);
  return std::isdigit(static_cast<unsigned char>(rest[0])) || rest.rfind("gate_up_proj", 0) == 0 ||
         rest.rfind("up_proj", 0) == 0 || rest.rfind("down_proj", 0) == 0;
}

// Whether `layout` names tensors as the Hub does (else as v5 does).
bool HubNames(const std::string& layout) { return layout == "per-expert" || layout == "fused-hub-names"; }

// How `layout` arranges the fused experts, by inspect's name for it:
// `fused` is v5's own form (family_names.h), fused-hub-names v5's standard one.
std::string FusedForm(const FamilyExpect& f, const std::string& layout) {
  if (layout == "fused") return Names(f).v5_layout;
  return layout == "fused-hub-names" ? "fused" : layout;
}

// A share of a layer's expert list: its v5 module ("" for the one list),
// its first expert and its expert width.
struct ShareExpect {
  std::string module;
  uint64_t first, width;
};

std::vector<ShareExpect> Shares(const FamilyExpect& f, const StackExpect& s) {
  if (s.share_widths.empty()) return {{"", 0, s.intermediate}};
  std::vector<ShareExpect> out;
  for (size_t k = 0; k < s.share_widths.size(); ++k) {
    out.push_back({Names(f).shares[k].module + ".", k * s.experts, s.share_widths[k]});
  }
  return out;
}

// The fused gate_up (or non-gated up) and down of share `sh` of layer L in
// a fused `layout`.
std::pair<std::string, std::string> FusedNames(const FamilyExpect& f, const StackExpect& s, uint64_t L,
                                               const ShareExpect& sh, const std::string& layout) {
  const testing::FamilyNames& n = Names(f);
  if (layout == "fused-hub-names") {
    const std::string block = LayerPrefix(s, L) + n.hub_block + ".";
    return {block + n.hub_fused[0], block + n.hub_fused[1]};
  }
  const std::string ep = testing::V5Name(n, LayerPrefix(s, L)) + n.v5_block + "." + sh.module + "experts.";
  return {ep + (n.gated() ? "gate_up_proj" : "up_proj"), ep + "down_proj"};
}

// ---- structure: every family x every layout ------------------------------

void ExpectStructure(const Checkpoint& c, const FamilyExpect& f, const std::string& layout) {
  const testing::FamilyNames& n = Names(f);
  const bool per_expert = layout == "per-expert", hub_names = HubNames(layout);
  const std::string form = FusedForm(f, layout);
  // A tensor that is not an expert, by its name in this layout.
  auto named = [&](const std::string& hub) { return hub_names ? hub : testing::V5Name(n, hub); };
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
    const std::vector<ShareExpect> shares = Shares(f, s);
    for (uint64_t L = 0; L < s.layers; ++L) {
      const std::string lp = LayerPrefix(s, L);
      for (const std::string& norm : f.norms) ExpectTensor(c, named(lp + norm + ".weight"), {kH}, DType::BF16);
      if (!f.sinks.empty()) ExpectTensor(c, named(lp + "self_attn." + f.sinks), {4}, DType::BF16);  // tiny: 4 heads
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
      const DType router_dt = f.router_f32 ? DType::F32 : DType::BF16;
      if (n.shares.empty()) {
        ExpectTensor(c, named(block + n.router_hub), {scored, kH}, router_dt);
      } else {  // one router per share: [H, E] on the Hub, [E, H] in v5
        for (const testing::ShareNames& sh : n.shares) {
          ExpectTensor(c, named(block + sh.router_hub), hub_names ? Shape{kH, E} : Shape{E, kH}, router_dt);
        }
      }
      if (!f.router_bias.empty()) ExpectTensor(c, named(block + f.router_bias), {scored}, DType::BF16);
      if (!f.bias.empty() && n.share_bias_hub.empty()) {
        ExpectTensor(c, named(block + f.bias), f.bias_row ? Shape{1, scored} : Shape{scored}, DType::F32);
      } else if (!f.bias.empty()) {  // [shares, E] on the Hub, a [1, E] row per share in v5
        EXPECT_EQ(f.bias, n.share_bias_hub);
        if (hub_names) {
          ExpectTensor(c, block + f.bias, {n.shares.size(), E}, DType::F32);
        } else {
          ExpectAbsent(c, named(block + f.bias));
          for (const testing::ShareNames& sh : n.shares) {
            ExpectTensor(c, testing::V5Name(n, lp) + n.v5_block + "." + sh.module + "." + n.share_bias_v5, {1, E},
                         DType::F32);
          }
        }
      }
      const uint64_t parts = n.gated() ? 2 : 1;
      for (const ShareExpect& sh : shares) {
        const uint64_t W = sh.width;
        for (uint64_t j = sh.first; j < sh.first + E; ++j) {
          for (int w = 0; w < NumLeaves(f); ++w) {
            const std::string name = ExpertName(f, s, L, j, w);
            if (per_expert) {
              ExpectTensor(c, name, IsDown(f, w) ? Shape{kH, W} : Shape{W, kH}, DType::BF16);
            } else {
              ExpectAbsent(c, name);
            }
            const std::string bias = ExpertName(f, s, L, j, w, ".bias");
            if (per_expert && n.expert_bias) {
              ExpectTensor(c, bias, {IsDown(f, w) ? kH : W}, DType::BF16);
            } else {
              ExpectAbsent(c, bias);
            }
          }
        }
        const auto [up, down] = FusedNames(f, s, L, sh, per_expert ? "fused" : layout);
        if (per_expert) {
          ExpectAbsent(c, up);
          if (!n.hub_fused.empty()) ExpectAbsent(c, FusedNames(f, s, L, sh, "fused-hub-names").first);
        } else {
          ExpectTensor(c, up, testing::FusedGateUpShape(form, E, parts * W, kH), DType::BF16);
          ExpectTensor(c, down, testing::FusedDownShape(form, E, kH, W), DType::BF16);
          if (n.expert_bias) {
            ExpectTensor(c, up + "_bias", {E, parts * W}, DType::BF16);
            ExpectTensor(c, down + "_bias", {E, kH}, DType::BF16);
          }
        }
      }
      ExpectAbsent(c, ExpertName(f, s, L, shares.back().first + E, 0));
      if (s.shared_width > 0) {  // the omni thinker has none, its talker has one
        const std::string sp = (f.shared_under_layer ? lp : block) + f.shared + ".";
        for (size_t w = 0; w < f.shared_leaves.size(); ++w) {
          const bool down = w + 1 == f.shared_leaves.size();
          const uint64_t rows = f.shared_leaves[w] == "input_linear" ? 2 * s.shared_width : s.shared_width;
          ExpectTensor(c, named(sp + f.shared_leaves[w] + ".weight"), down ? Shape{kH, s.shared_width} : Shape{rows, kH},
                       DType::BF16);
        }
        if (f.shared_gate) ExpectTensor(c, named(block + "shared_expert_gate.weight"), {1, kH}, DType::BF16);
      }
    }
  }
  for (const std::string& name : c.names()) {
    if (!per_expert && n.v5_block != "block_sparse_moe") {
      EXPECT_EQ(name.find("block_sparse_moe"), std::string::npos) << name;
    }
    EXPECT_EQ(name.find("_scale_inv"), std::string::npos) << name;
  }
}

class SynthFamilyTest : public ::testing::TestWithParam<FamilyExpect> {};

TEST_P(SynthFamilyTest, KeyNamesShapesAndDtypesInEveryLayout) {
  const FamilyExpect& f = GetParam();
  TempDir tmp;
  for (const std::string& layout : f.layouts) {
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
// that is not an expert is byte-identical (under the v5 renames), but what
// v5 holds reshaped: ERNIE-4.5-VL's routers transposed, its correction bias
// cut into rows.
TEST_P(SynthFamilyTest, FusedContentIsThePerExpertContentRearranged) {
  const FamilyExpect& f = GetParam();
  const testing::FamilyNames& n = Names(f);
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "per-expert", f.model_type, "per-expert", 7).ok());
  Checkpoint hub = MustOpen(tmp / "per-expert");
  for (const std::string& layout : f.layouts) {
    if (layout == "per-expert") continue;
    SCOPED_TRACE(layout);
    const std::string form = FusedForm(f, layout);
    ASSERT_TRUE(Synth(tmp / layout, f.model_type, layout, 7).ok());
    Checkpoint fused = MustOpen(tmp / layout);
    size_t hub_others = 0, fused_others = 0;
    for (const std::string& name : fused.names()) fused_others += !IsExpertTensor(f, name);
    for (const std::string& name : hub.names()) {
      if (IsExpertTensor(f, name)) continue;
      ++hub_others;
      if (!HubNames(layout) && testing::ReshapedInV5(n, name)) continue;  // below
      const std::string v5 = HubNames(layout) ? name : testing::V5Name(n, name);
      EXPECT_EQ(ReadTensor(fused, v5), ReadTensor(hub, name)) << v5 << " vs " << name;
    }
    // ERNIE's bias is one tensor on the Hub, one per share in v5.
    const size_t extra_parts = HubNames(layout) || n.share_bias_hub.empty() ? 0 : n.shares.size() - 1;
    size_t moe_layers = 0;
    const bool gated = n.gated();
    const uint64_t parts = gated ? 2 : 1;
    const size_t es = 2;
    for (const StackExpect& s : f.stacks) {
      for (uint64_t L = 0; L < s.layers; ++L) {
        if (!IsMoeLayer(f, L)) continue;
        ++moe_layers;
        const std::string block = LayerPrefix(s, L) + n.hub_block + ".";
        const std::string v5_block = testing::V5Name(n, LayerPrefix(s, L)) + n.v5_block + ".";
        if (!HubNames(layout) && !n.shares.empty()) {
          const uint64_t E = s.experts;
          const std::string bias = ReadTensor(hub, block + n.share_bias_hub);
          for (size_t k = 0; k < n.shares.size(); ++k) {
            const std::string v5 = v5_block + n.shares[k].module + ".";
            EXPECT_EQ(ReadTensor(fused, v5 + "gate.weight"),
                      testing::TransposeMatrix(ReadTensor(hub, block + n.shares[k].router_hub), kH, E, 4))
                << v5 << "gate.weight";
            EXPECT_EQ(ReadTensor(fused, v5 + n.share_bias_v5), bias.substr(k * E * 4, E * 4)) << v5 << "bias";
          }
        }
        for (const ShareExpect& sh : Shares(f, s)) {
          const auto [up_name, down_name] = FusedNames(f, s, L, sh, layout);
          const std::string gate_up = ReadTensor(fused, up_name);
          const std::string down = ReadTensor(fused, down_name);
          const uint64_t I = sh.width, block_gu = parts * I * kH * es, block_d = kH * I * es;
          ASSERT_EQ(gate_up.size(), s.experts * block_gu);
          ASSERT_EQ(down.size(), s.experts * block_d);
          for (uint64_t j = 0; j < s.experts; ++j) {
            auto source = [&](int w, const std::string& suffix = ".weight") {
              return ReadTensor(hub, ExpertName(f, s, L, sh.first + j, w, suffix));
            };
            const std::string want_gu = testing::FusedGateUp(form, gated ? source(0) : "", source(NumLeaves(f) - 2),
                                                             I, kH, es);
            const std::string want_d = testing::FusedDown(form, source(NumLeaves(f) - 1), kH, I, es);
            EXPECT_TRUE(gate_up.compare(j * block_gu, block_gu, want_gu) == 0) << up_name << " expert " << j;
            EXPECT_TRUE(down.compare(j * block_d, block_d, want_d) == 0) << down_name << " expert " << j;
            if (!n.expert_bias) continue;
            // gpt_oss's biases: gate and up interleaved as their weights are.
            const std::string want_gub = testing::FusedGateUp(form, source(0, ".bias"), source(1, ".bias"), I, 1, es);
            EXPECT_EQ(ReadTensor(fused, up_name + "_bias").substr(j * 2 * I * es, 2 * I * es), want_gub) << j;
            EXPECT_EQ(ReadTensor(fused, down_name + "_bias").substr(j * kH * es, kH * es), source(2, ".bias")) << j;
          }
        }
      }
    }
    EXPECT_EQ(hub_others + extra_parts * moe_layers, fused_others);
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
    EXPECT_EQ(gu_s_t.substr(j * blk, blk), testing::TransposeMatrix(want, 2 * ib, hb, 4)) << j;
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

// ---- MXFP4 (gpt_oss as the Hub ships it) ------------------------------------

// quant_facts.md 5: the experts as uint8 blocks of 32 e2m1 codes (16 bytes)
// along each row's input dim and one e8m0 scale per block; biases, router,
// attention and embeddings stay BF16, and config.json says which modules
// are not quantized.
TEST(SynthTest, GptOssMxfp4IsTheHubsForm) {
  TempDir tmp;
  const uint64_t E = 4, H = 64, I = 96;
  auto synth = [&](const std::string& dir, uint64_t seed) {
    SynthOptions o;
    o.model_type = "gpt_oss";
    o.dtype = "mxfp4";
    o.experts = static_cast<int>(E);
    o.intermediate = static_cast<int>(I);
    o.layers = 2;
    o.seed = seed;
    auto r = Synthesize(tmp / dir, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    if (r.ok()) {
      EXPECT_EQ(r->dtype, "mxfp4");
      EXPECT_EQ(r->layout, "fused");
    }
  };
  synth("a", 5);
  synth("b", 5);
  synth("c", 6);
  EXPECT_EQ(testing::HashTree(tmp / "a"), testing::HashTree(tmp / "b"));
  EXPECT_NE(testing::HashTree(tmp / "a"), testing::HashTree(tmp / "c"));
  Checkpoint c = MustOpen(tmp / "a");
  const auto cfg = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "a/config.json"));
  EXPECT_EQ(cfg["quantization_config"]["quant_method"], "mxfp4");
  EXPECT_EQ(cfg["quantization_config"]["modules_to_not_convert"],
            nlohmann::json({"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
  std::set<unsigned> scales, codes;
  for (uint64_t L = 0; L < 2; ++L) {
    const std::string ep = "model.layers." + std::to_string(L) + ".mlp.experts.";
    ExpectTensor(c, ep + "gate_up_proj_blocks", {E, 2 * I, H / 32, 16}, DType::U8);
    ExpectTensor(c, ep + "gate_up_proj_scales", {E, 2 * I, H / 32}, DType::U8);
    ExpectTensor(c, ep + "down_proj_blocks", {E, H, I / 32, 16}, DType::U8);
    ExpectTensor(c, ep + "down_proj_scales", {E, H, I / 32}, DType::U8);
    ExpectTensor(c, ep + "gate_up_proj_bias", {E, 2 * I}, DType::BF16);
    ExpectTensor(c, ep + "down_proj_bias", {E, H}, DType::BF16);
    ExpectAbsent(c, ep + "gate_up_proj");
    ExpectAbsent(c, ep + "down_proj");
    ExpectAbsent(c, ep + "0.gate_proj.weight");
    const std::string lp = "model.layers." + std::to_string(L) + ".";
    ExpectTensor(c, lp + "mlp.router.weight", {E, H}, DType::BF16);
    ExpectTensor(c, lp + "mlp.router.bias", {E}, DType::BF16);
    ExpectTensor(c, lp + "self_attn.q_proj.weight", {64, H}, DType::BF16);
    ExpectTensor(c, lp + "self_attn.sinks", {4}, DType::BF16);
    for (const char* w : {"gate_up_proj", "down_proj"}) {
      for (char b : ReadTensor(c, ep + w + "_scales")) scales.insert(static_cast<unsigned char>(b));
      for (char b : ReadTensor(c, ep + w + "_blocks")) codes.insert(static_cast<unsigned char>(b));
    }
  }
  // e8m0 exponents 118 .. 130 (2^-9 .. 2^3: weights of sensible magnitude),
  // every one of them used; the packed codes take every byte value.
  EXPECT_EQ(*scales.begin(), 118u);
  EXPECT_EQ(*scales.rbegin(), 130u);
  EXPECT_EQ(scales.size(), 13u);
  EXPECT_EQ(codes.size(), 256u);
  for (const std::string& name : c.names()) {
    const DType dt = Info(c, name)->dtype;
    EXPECT_TRUE(dt == DType::BF16 || (dt == DType::U8 && (name.ends_with("_blocks") || name.ends_with("_scales"))))
        << name;
  }
}

// ---- the native families' configs and their other tensors ------------------

TEST(SynthTest, GptOssAndLlama4ConfigsAndTowers) {
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "gpt", "gpt_oss", "").ok());
  const auto gpt = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "gpt/config.json"));
  EXPECT_EQ(gpt["architectures"], nlohmann::json({"GptOssForCausalLM"}));
  EXPECT_EQ(gpt["num_local_experts"], kE);
  EXPECT_EQ(gpt["intermediate_size"], kI);
  EXPECT_EQ(gpt["num_experts_per_tok"], 2);
  EXPECT_EQ(gpt["sliding_window"], 128);
  EXPECT_EQ(gpt["attention_bias"], true);
  EXPECT_EQ(gpt["layer_types"],
            nlohmann::json({"sliding_attention", "full_attention", "sliding_attention", "full_attention"}));
  Checkpoint g = MustOpen(tmp / "gpt");
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    EXPECT_NE(g.Find(std::string("model.layers.2.self_attn.") + p + ".bias"), nullptr) << p;
  }

  ASSERT_TRUE(Synth(tmp / "llama", "llama4", "").ok());
  const auto llama = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "llama/config.json"));
  EXPECT_EQ(llama["model_type"], "llama4");
  EXPECT_EQ(llama["architectures"], nlohmann::json({"Llama4ForConditionalGeneration"}));
  const auto& text = llama["text_config"];
  EXPECT_EQ(text["model_type"], "llama4_text");
  EXPECT_EQ(text["num_local_experts"], kE);
  EXPECT_EQ(text["intermediate_size"], kI);
  EXPECT_EQ(text["intermediate_size_mlp"], kDenseI);
  EXPECT_EQ(text["interleave_moe_layer_step"], 2);
  EXPECT_EQ(text["moe_layers"], nlohmann::json({1, 3}));
  EXPECT_TRUE(llama.contains("vision_config"));
  Checkpoint l = MustOpen(tmp / "llama");
  ExpectTensor(l, "vision_model.patch_embed.proj.bias", {16}, DType::BF16);
  ExpectTensor(l, "multi_modal_projector.linear_1.weight", {kH, 16}, DType::BF16);
  ExpectTensor(l, "language_model.model.layers.1.feed_forward.shared_expert.down_proj.weight", {kH, kI},
               DType::BF16);
  ExpectAbsent(l, "lm_head.weight");
}

TEST(SynthTest, GraniteHybridLayersAndSharedMlp) {
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "d", "granitemoehybrid", "").ok());
  const auto cfg = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "d/config.json"));
  EXPECT_EQ(cfg["architectures"], nlohmann::json({"GraniteMoeHybridForCausalLM"}));
  EXPECT_EQ(cfg["layer_types"], nlohmann::json({"mamba", "mamba", "mamba", "attention"}));
  EXPECT_EQ(cfg["shared_intermediate_size"], kQwenSharedI);
  EXPECT_EQ(cfg["num_local_experts"], kE);
  for (const char* k : {"mamba_n_heads", "mamba_d_head", "mamba_d_state", "mamba_n_groups", "mamba_d_conv"}) {
    EXPECT_TRUE(cfg[k].is_number_integer()) << k;
  }
  Checkpoint c = MustOpen(tmp / "d");
  for (uint64_t L = 0; L < kLayers; ++L) {
    const std::string lp = "model.layers." + std::to_string(L) + ".";
    const bool attention = L == 3;
    EXPECT_EQ(c.Find(lp + "self_attn.q_proj.weight") != nullptr, attention) << L;
    EXPECT_EQ(c.Find(lp + "mamba.in_proj.weight") != nullptr, !attention) << L;
    EXPECT_EQ(c.Find(lp + "mamba.A_log") != nullptr, !attention) << L;
    // Every layer has its MoE block, in the Hub's fused form.
    ExpectTensor(c, lp + "block_sparse_moe.input_linear.weight", {kE, 2 * kI, kH}, DType::BF16);
    ExpectTensor(c, lp + "block_sparse_moe.router.layer.weight", {kE, kH}, DType::BF16);
  }
}

TEST(SynthTest, ErnieVlConfigListsAndTowers) {
  TempDir tmp;
  ASSERT_TRUE(Synth(tmp / "hub", "ernie4_5_vl_moe", "").ok());
  ASSERT_TRUE(Synth(tmp / "v5", "ernie4_5_vl_moe", "fused").ok());
  const auto cfg = nlohmann::json::parse(testing::ReadFileOrDie(tmp / "hub/config.json"));
  EXPECT_EQ(cfg["architectures"], nlohmann::json({"Ernie4_5_VLMoeForConditionalGeneration"}));
  EXPECT_EQ(cfg["moe_num_experts"], nlohmann::json({kE, kE}));
  EXPECT_EQ(cfg["moe_intermediate_size"], nlohmann::json({kI, kI / 3}));
  EXPECT_EQ(cfg["moe_layer_start_index"], 1);
  EXPECT_EQ(cfg["moe_num_shared_experts"], 1);
  EXPECT_EQ(cfg["intermediate_size"], kDenseI);
  EXPECT_TRUE(cfg.contains("vision_config"));
  Checkpoint hub = MustOpen(tmp / "hub"), v5 = MustOpen(tmp / "v5");
  // The resampler's Sequential entries 0, 2, 3 (Linear, Linear, LayerNorm)
  // on the Hub are fc1, fc2, ln in v5; vision_model is vision_tower.
  const uint64_t t4 = 4 * 16;
  for (const char* part : {"spatial_linear", "temporal_linear"}) {
    const std::string p = std::string("model.resampler_model.") + part + ".";
    const uint64_t in = std::string(part) == "spatial_linear" ? t4 : 2 * t4;
    ExpectTensor(hub, p + "0.weight", {t4, in}, DType::BF16);
    ExpectTensor(hub, p + "2.bias", {t4}, DType::BF16);
    ExpectTensor(hub, p + "3.weight", {t4}, DType::BF16);
    ExpectTensor(v5, p + "fc1.weight", {t4, in}, DType::BF16);
    ExpectTensor(v5, p + "fc2.bias", {t4}, DType::BF16);
    ExpectTensor(v5, p + "ln.bias", {t4}, DType::BF16);
    ExpectAbsent(v5, p + "0.weight");
  }
  ExpectTensor(hub, "model.resampler_model.mlp.weight", {kH, t4}, DType::BF16);
  ExpectTensor(v5, "model.resampler_model.after_norm.weight", {kH}, DType::BF16);
  ExpectTensor(hub, "vision_model.blocks.0.attn.qkv.weight", {48, 16}, DType::BF16);
  ExpectTensor(v5, "vision_tower.blocks.0.attn.qkv.weight", {48, 16}, DType::BF16);
  // The vision experts follow the text experts in the Hub's one list.
  ExpectTensor(hub, "model.layers.1.mlp.experts.7.up_proj.weight", {kI, kH}, DType::BF16);
  ExpectTensor(hub, "model.layers.1.mlp.experts.8.up_proj.weight", {kI / 3, kH}, DType::BF16);
  ExpectTensor(hub, "model.layers.1.mlp.experts.15.down_proj.weight", {kH, kI / 3}, DType::BF16);
  ExpectTensor(v5, "model.language_model.layers.1.mlp.vision_moe.experts.gate_up_proj", {kE, 2 * kI / 3, kH},
               DType::BF16);
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
  // Only the forms a family has: FP8 where its rules fuse the block scales,
  // MXFP4 for gpt_oss (fused, as shipped), fused-transposed where v5's form
  // is the standard one, the Hub's own fused names where the Hub has them.
  auto lacks = [&](const char* family, const char* dtype, const char* layout, int intermediate, const char* message) {
    Case c;
    c.o.model_type = family, c.o.dtype = dtype, c.o.layout = layout, c.o.intermediate = intermediate;
    c.message = message;
    cases.push_back(c);
  };
  lacks("gpt_oss", "fp8", "", 48, "gpt_oss has no FP8 block-scaled form");
  lacks("llama4", "fp8", "per-expert", 48, "llama4 has no FP8 block-scaled form");
  lacks("granitemoehybrid", "fp8", "", 48, "granitemoehybrid has no FP8");
  lacks("ernie4_5_vl_moe", "fp8", "", 48, "ernie4_5_vl_moe has no FP8");
  lacks("gpt_oss", "", "fused-transposed", 48, "gpt_oss has no fused-transposed layout");
  lacks("llama4", "", "fused-transposed", 48, "llama4 has no fused-transposed layout");
  lacks("qwen3_moe", "", "fused-hub-names", 48, "qwen3_moe has none");
  lacks("qwen3_moe", "mxfp4", "fused", 64, "dtype mxfp4 is gpt_oss's Hub form; qwen3_moe has none");
  lacks("gpt_oss", "mxfp4", "per-expert", 64, "mxfp4 experts exist only fused");
  lacks("gpt_oss", "mxfp4", "", 48, "intermediate size 48 must be multiples of 32");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.o.model_type + " " + c.o.dtype + " " + c.o.layout);
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
}  // namespace synth_test
}  // namespace moepack
