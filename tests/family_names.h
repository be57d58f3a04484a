// How each family names its tensors on the Hub and in transformers v5, how
// v5 lays out its fused experts, and which of its layers are MoE, written
// from docs/models.md (and /work/ref/v5_families.md) independently of
// src/synth and rules/: the tests' own knowledge, shared by families_test,
// synth_test, rules_test and cli_test so that each fact is written once.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace moepack::testing {

// One rename v5 applies to a tensor that is not an expert, as its effect on
// the names the family really has.
struct Rewrite {
  enum Where { kAnywhere, kSuffix, kWhole, kPrefix };
  std::string from, to;
  Where where = kAnywhere;
};

// One share of a layer's expert list that v5 fuses on its own
// (ernie4_5_vl_moe: the text experts, then the vision experts), with its
// router, [H, E] on the Hub and [E, H] under <module>.gate.weight in v5.
struct ShareNames {
  std::string module;      // v5: under the block, e.g. text_moe
  std::string router_hub;  // Hub: under the block, e.g. gate.weight
};

struct FamilyNames {
  std::string family;
  std::vector<std::string> model_types = {};  // config.json model_types beyond `family` that select it
  std::string hub_block = "mlp";  // the MoE block on the Hub: mlp | block_sparse_moe | feed_forward | mixer | ffn
  std::string v5_block = "mlp";
  std::vector<std::string> leaves = {"gate_proj", "up_proj", "down_proj"};  // gate, up, down; non-gated: up, down
  std::string router_hub = "gate.weight";  // under the block
  std::string router_v5 = "gate.weight";
  std::string scale_suffix = ".weight_scale_inv";  // an FP8 weight's block scales on the Hub
  std::vector<Rewrite> renames = {};               // in v5's order, before the block and router renames
  // How v5 holds the fused experts, by the name inspect gives it:
  // fused (gate_up_proj [E, 2I, H], gate rows first; down_proj [E, H, I]),
  // fused-transposed (llama4: [E, H, 2I], gate columns first; [E, I, H]) or
  // fused-interleaved (gpt_oss: [E, H, 2I], gate at even columns; [E, I, H]).
  std::string v5_layout = "fused";
  // The fused experts' leaves under the Hub's block when the Hub ships them
  // fused under names of its own (granitemoe), which v5 renames to
  // experts.gate_up_proj and experts.down_proj; empty: it ships none.
  std::vector<std::string> hub_fused = {};
  bool expert_bias = false;  // gpt_oss: every expert projection has a bias; v5 gate_up_proj_bias, down_proj_bias
  std::vector<ShareNames> shares = {};  // empty: one expert list, fused under experts.
  // ernie4_5_vl_moe: the block's [shares, E] correction bias, which v5 cuts
  // into a [1, E] row under each share (<module>. + share_bias_v5).
  std::string share_bias_hub = "";
  std::string share_bias_v5 = "";
  // The weight types synth writes for this family: its rules fuse FP8
  // block scales, or (gpt_oss) its Hub ships MXFP4.
  std::vector<std::string> dtypes = {"bf16", "f16", "f32", "fp8"};
  bool gated() const { return leaves.size() == 3; }
  bool has_dtype(const std::string& d) const {
    for (const auto& x : dtypes) {
      if (x == d) return true;
    }
    return false;
  }
};

inline const std::vector<std::string>& W1W3W2() {
  static const std::vector<std::string> w = {"w1", "w3", "w2"};  // w1 = gate, w3 = up, w2 = down
  return w;
}

inline const std::vector<FamilyNames>& AllFamilyNames() {
  using R = Rewrite;
  static const std::vector<FamilyNames> all = {
      {.family = "qwen2_moe"},
      {.family = "qwen3_moe"},
      {.family = "qwen3_next"},
      {.family = "olmoe"},
      {.family = "deepseek_v2"},
      {.family = "deepseek_v3"},
      {.family = "glm4_moe"},
      {.family = "dots1"},
      {.family = "hunyuan_v1_moe", .router_hub = "gate.wg.weight", .router_v5 = "gate.wg.weight"},
      {.family = "mixtral", .hub_block = "block_sparse_moe", .leaves = W1W3W2()},
      {.family = "minimax", .hub_block = "block_sparse_moe", .leaves = W1W3W2()},
      {.family = "phimoe", .hub_block = "block_sparse_moe", .leaves = W1W3W2(), .router_v5 = "router.weight"},
      {.family = "qwen3_omni_moe"},
      {.family = "qwen3_vl_moe"},
      {.family = "qwen3_5_moe"},
      // v5's qwen2_moe pattern under other model types.
      {.family = "afmoe", .router_hub = "router.gate.weight", .router_v5 = "router.gate.weight"},
      {.family = "glm4_moe_lite"},
      {.family = "glm_moe_dsa"},
      {.family = "glm4v_moe"},
      {.family = "longcat_flash", .router_hub = "router.classifier.weight", .router_v5 = "router.classifier.weight"},
      {.family = "solar_open"},
      {.family = "flex_olmo"},
      {.family = "qwen3_omni_moe_thinker"},
      {.family = "ernie4_5_moe",
       .renames = {{".mlp.moe_statics.e_score_correction_bias", ".mlp.gate.moe_statics.e_score_correction_bias",
                    R::kSuffix}}},
      {.family = "exaone_moe",
       .renames = {{".mlp.e_score_correction_bias", ".mlp.gate.e_score_correction_bias", R::kSuffix}}},
      {.family = "hy_v3",
       .router_hub = "router.gate.weight",
       .router_v5 = "gate.weight",
       .renames = {{".mlp.expert_bias", ".mlp.e_score_correction_bias", R::kSuffix},
                   {".mlp.shared_mlp.", ".mlp.shared_experts."}}},
      {.family = "laguna",
       .renames = {{".mlp.experts.e_score_correction_bias", ".mlp.gate.e_score_correction_bias", R::kSuffix},
                   {".mlp.shared_expert.", ".mlp.shared_experts."}}},
      {.family = "deepseek_v32"},
      {.family = "mimo_v2_flash", .renames = {{".self_attn.attention_sink_bias", ".self_attn.sinks", R::kSuffix}}},
      // The mixtral pattern.
      {.family = "minimax_m2", .hub_block = "block_sparse_moe", .leaves = W1W3W2()},
      {.family = "kimi_linear",
       .hub_block = "block_sparse_moe",
       .leaves = W1W3W2(),
       .renames = {{"self_attn.f_a_proj.", "self_attn.forget_gate.f_a_proj."},
                   {"self_attn.f_b_proj.", "self_attn.forget_gate.f_b_proj."},
                   {"self_attn.dt_bias", "self_attn.forget_gate.dt_bias", R::kSuffix},
                   {"self_attn.A_log", "self_attn.forget_gate.A_log", R::kSuffix}}},
      // Experts under feed_forward.
      {.family = "lfm2_moe", .hub_block = "feed_forward", .v5_block = "feed_forward", .leaves = W1W3W2()},
      {.family = "jamba",
       .hub_block = "feed_forward",
       .v5_block = "feed_forward",
       .router_hub = "router.weight",
       .router_v5 = "router.weight"},
      // Non-gated experts.
      {.family = "nemotron_h",
       .hub_block = "mixer",
       .v5_block = "mixer",
       .leaves = {"up_proj", "down_proj"},
       .renames = {{"backbone.", "model.", R::kPrefix}}},
      // Hub layouts of their own (docs/models.md; the fact sheet's 5.1, 5.2,
      // 4.22 and 4.13): gpt_oss and llama4 ship v5's fused form, granitemoe
      // v5's standard form under names of its own, ernie4_5_vl_moe one
      // per-expert list that v5 fuses in two shares.
      {.family = "gpt_oss",
       .router_hub = "router.weight",
       .router_v5 = "router.weight",
       .v5_layout = "fused-interleaved",
       .expert_bias = true,
       .dtypes = {"bf16", "f16", "f32"}},
      {.family = "llama4",
       .hub_block = "feed_forward",
       .v5_block = "feed_forward",
       .router_hub = "router.weight",
       .router_v5 = "router.weight",
       .v5_layout = "fused-transposed",
       .dtypes = {"bf16", "f16", "f32"}},
      {.family = "granitemoe",
       .model_types = {"granitemoeshared", "granitemoehybrid"},
       .hub_block = "block_sparse_moe",
       .v5_block = "block_sparse_moe",
       .router_hub = "router.layer.weight",
       .router_v5 = "router.weight",
       .hub_fused = {"input_linear.weight", "output_linear.weight"},
       .dtypes = {"bf16", "f16", "f32"}},
      {.family = "ernie4_5_vl_moe",
       .renames = {{"vision_model.", "vision_tower.", R::kPrefix},
                   {".spatial_linear.0.", ".spatial_linear.fc1."},
                   {".spatial_linear.2.", ".spatial_linear.fc2."},
                   {".spatial_linear.3.", ".spatial_linear.ln."},
                   {".temporal_linear.0.", ".temporal_linear.fc1."},
                   {".temporal_linear.2.", ".temporal_linear.fc2."},
                   {".temporal_linear.3.", ".temporal_linear.ln."},
                   {"model.embed_tokens.", "model.language_model.embed_tokens.", R::kPrefix},
                   {"model.layers.", "model.language_model.layers.", R::kPrefix},
                   {"model.norm.", "model.language_model.norm.", R::kPrefix},
                   {".mlp.gate.weight_1", ".mlp.vision_moe.gate.weight", R::kSuffix},
                   {".mlp.gate.weight", ".mlp.text_moe.gate.weight", R::kSuffix}},
       .shares = {{"text_moe", "gate.weight"}, {"vision_moe", "gate.weight_1"}},
       .share_bias_hub = "moe_statics.e_score_correction_bias",
       .share_bias_v5 = "gate.moe_statics.e_score_correction_bias",
       .dtypes = {"bf16", "f16", "f32"}},
      // DeepSeek-V4's upstream names: the FP8 quantizer's rename first, then
      // the model's, then v5's model. prefix.
      {.family = "deepseek_v4",
       .hub_block = "ffn",
       .leaves = W1W3W2(),
       .scale_suffix = ".scale",
       .renames = {{".scale", ".weight_scale_inv", R::kSuffix},
                   {"embed.weight", "model.embed_tokens.weight", R::kWhole},
                   {"head.weight", "lm_head.weight", R::kWhole},
                   {"norm.weight", "model.norm.weight", R::kWhole},
                   {"hc_head_fn", "model.hc_head.hc_fn", R::kWhole},
                   {"hc_head_base", "model.hc_head.hc_base", R::kWhole},
                   {"hc_head_scale", "model.hc_head.hc_scale", R::kWhole},
                   {"layers.", "model.layers.", R::kPrefix},
                   {".attn_norm.", ".input_layernorm."},
                   {".ffn_norm.", ".post_attention_layernorm."},
                   {".attn.indexer.compressor.", ".self_attn.compressor.indexer."},
                   {".attn.indexer.wq_b.", ".self_attn.compressor.indexer.q_b_proj."},
                   {".attn.indexer.weights_proj.", ".self_attn.compressor.indexer.scorer.weights_proj."},
                   {".attn.", ".self_attn."},
                   {".compressor.norm.", ".compressor.kv_norm."},
                   {".indexer.norm.", ".indexer.kv_norm."},
                   {".wq_a.", ".q_a_proj."},
                   {".wq_b.", ".q_b_proj."},
                   {".wkv.", ".kv_proj."},
                   {".wgate.", ".gate_proj."},
                   {".wo_a.", ".o_a_proj."},
                   {".wo_b.", ".o_b_proj."},
                   {".q_norm.", ".q_a_norm."},
                   {".attn_sink", ".sinks", R::kSuffix},
                   {".ape", ".position_bias", R::kSuffix},
                   {".gate.bias", ".gate.e_score_correction_bias", R::kSuffix},
                   {".shared_experts.w1.", ".shared_experts.gate_proj."},
                   {".shared_experts.w2.", ".shared_experts.down_proj."},
                   {".shared_experts.w3.", ".shared_experts.up_proj."},
                   {".hc_attn_fn", ".attn_hc.fn", R::kSuffix},
                   {".hc_attn_base", ".attn_hc.base", R::kSuffix},
                   {".hc_attn_scale", ".attn_hc.scale", R::kSuffix},
                   {".hc_ffn_fn", ".ffn_hc.fn", R::kSuffix},
                   {".hc_ffn_base", ".ffn_hc.base", R::kSuffix},
                   {".hc_ffn_scale", ".ffn_hc.scale", R::kSuffix}}},
  };
  return all;
}

// By family, or by any model_type that selects it.
inline const FamilyNames& NamesOf(const std::string& family) {
  for (const auto& f : AllFamilyNames()) {
    if (f.family == family) return f;
    for (const auto& t : f.model_types) {
      if (t == family) return f;
    }
  }
  ADD_FAILURE() << "no names for family " << family;
  return AllFamilyNames()[0];
}

inline bool EndsWith(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The v5 name of a Hub tensor that is not an expert.
inline std::string V5Name(const FamilyNames& f, std::string name) {
  for (const Rewrite& r : f.renames) {
    switch (r.where) {
      case Rewrite::kAnywhere:
        if (auto p = name.find(r.from); p != std::string::npos) name.replace(p, r.from.size(), r.to);
        break;
      case Rewrite::kSuffix:
        if (EndsWith(name, r.from)) name.replace(name.size() - r.from.size(), r.from.size(), r.to);
        break;
      case Rewrite::kWhole:
        if (name == r.from) name = r.to;
        break;
      case Rewrite::kPrefix:
        if (name.rfind(r.from, 0) == 0) name.replace(0, r.from.size(), r.to);
        break;
    }
  }
  if (f.hub_block != f.v5_block) {
    const std::string from = "." + f.hub_block + ".", to = "." + f.v5_block + ".";
    for (size_t p; (p = name.find(from)) != std::string::npos;) name.replace(p, from.size(), to);
  }
  const std::string router = "." + f.v5_block + "." + f.router_hub;
  if (f.router_v5 != f.router_hub && EndsWith(name, router)) {
    name.replace(name.size() - router.size(), router.size(), "." + f.v5_block + "." + f.router_v5);
  }
  const char* const v5_fused[] = {"experts.gate_up_proj", "experts.down_proj"};
  for (size_t i = 0; i < f.hub_fused.size() && i < 2; ++i) {
    const std::string hub = "." + f.v5_block + "." + f.hub_fused[i];
    if (EndsWith(name, hub)) name.replace(name.size() - hub.size(), hub.size(), "." + f.v5_block + "." + v5_fused[i]);
  }
  return name;
}

// ---- how v5 lays out one expert's block, from its per-expert bytes ----------

// [rows, cols] -> [cols, rows], elements of `es` bytes.
inline std::string TransposeMatrix(const std::string& m, uint64_t rows, uint64_t cols, uint64_t es) {
  std::string out(m.size(), '\0');
  for (uint64_t r = 0; r < rows; ++r) {
    for (uint64_t c = 0; c < cols; ++c) std::memcpy(&out[(c * rows + r) * es], &m[(r * cols + c) * es], es);
  }
  return out;
}

// One expert's block of a fused gate_up tensor in the layout `form` names,
// from its gate and up projections, [I, cols] each (cols = H; 1 for
// gpt_oss's biases); a non-gated expert has an empty gate.
//   fused: [2I, cols], the gate's rows then the up's;
//   fused-transposed: [cols, 2I], the gate's columns then the up's;
//   fused-interleaved: [cols, 2I], column 2i the gate's row i, 2i + 1 the up's.
inline std::string FusedGateUp(const std::string& form, const std::string& gate, const std::string& up, uint64_t I,
                               uint64_t cols, uint64_t es) {
  const std::string rows = gate + up;
  if (form == "fused") return rows;
  if (form == "fused-transposed") return TransposeMatrix(rows, (gate.empty() ? 1 : 2) * I, cols, es);
  std::string out(rows.size(), '\0');
  for (uint64_t c = 0; c < cols; ++c) {
    for (uint64_t i = 0; i < I; ++i) {
      std::memcpy(&out[((c * I + i) * 2 + 0) * es], &gate[(i * cols + c) * es], es);
      std::memcpy(&out[((c * I + i) * 2 + 1) * es], &up[(i * cols + c) * es], es);
    }
  }
  return out;
}

// One expert's block of a fused down tensor: [H, I] (fused) or [I, H].
inline std::string FusedDown(const std::string& form, const std::string& down, uint64_t H, uint64_t I, uint64_t es) {
  return form == "fused" ? down : TransposeMatrix(down, H, I, es);
}

// The fused shapes v5 gives gate_up (or non-gated up) and down in `form`.
inline std::vector<uint64_t> FusedGateUpShape(const std::string& form, uint64_t E, uint64_t rows, uint64_t H) {
  return form == "fused" ? std::vector<uint64_t>{E, rows, H} : std::vector<uint64_t>{E, H, rows};
}
inline std::vector<uint64_t> FusedDownShape(const std::string& form, uint64_t E, uint64_t H, uint64_t I) {
  return form == "fused" ? std::vector<uint64_t>{E, H, I} : std::vector<uint64_t>{E, I, H};
}

// The Hub tensors of a MoE block that v5 holds reshaped, not only renamed:
// ernie4_5_vl_moe's share routers (transposed) and their [shares, E]
// correction bias (cut in rows).
inline bool ReshapedInV5(const FamilyNames& f, const std::string& name) {
  const std::string block = "." + f.hub_block + ".";
  if (!f.share_bias_hub.empty() && EndsWith(name, block + f.share_bias_hub)) return true;
  for (const auto& s : f.shares) {
    if (EndsWith(name, block + s.router_hub)) return true;
  }
  return false;
}

// The layers of a decoder stack that have routed experts, from its config
// object, by each family's own field: first_k_dense_replace,
// num_dense_layers (afmoe, lfm2_moe), moe_layer_start_index (ernie4_5_moe,
// ernie4_5_vl_moe), mlp_layer_types, expert_layer_period / _offset (jamba),
// hybrid_override_pattern (nemotron_h, 'E' is MoE), moe_layers (llama4).
// LongCat counts its layers in num_layers (num_hidden_layers counts both
// attention blocks).
inline int NumLayers(const nlohmann::json& text) {
  return (text.contains("num_layers") ? text["num_layers"] : text["num_hidden_layers"]).get<int>();
}

inline std::vector<int> MoeLayerIndices(const nlohmann::json& text) {
  const int layers = NumLayers(text);
  int first = 0;
  for (const char* k : {"first_k_dense_replace", "num_dense_layers", "moe_layer_start_index"}) {
    if (text.contains(k)) first = text[k].get<int>();
  }
  std::vector<int> out;
  for (int L = first; L < layers; ++L) {
    if (text.contains("mlp_layer_types") && text["mlp_layer_types"][L] != "sparse") continue;
    if (text.contains("expert_layer_period")) {
      const int period = text["expert_layer_period"].get<int>(), offset = text["expert_layer_offset"].get<int>();
      if (L < offset || (L - offset) % period != 0) continue;
    }
    if (text.contains("hybrid_override_pattern") && text["hybrid_override_pattern"].get<std::string>()[L] != 'E') {
      continue;
    }
    if (text.contains("moe_layers")) {
      const auto moe = text["moe_layers"].get<std::vector<int>>();
      if (std::find(moe.begin(), moe.end(), L) == moe.end()) continue;
    }
    out.push_back(L);
  }
  return out;
}

}  // namespace moepack::testing
