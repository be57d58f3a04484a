#include "synth/families.h"

#include <utility>

namespace moepack::synth {
namespace {

// Shared experts as each lineage names and sizes them.
constexpr Shared kNoShared = {};
// Qwen: shared_expert.* with its own width and a sigmoid gate [1, H].
constexpr Shared kQwenShared = {.hub = "shared_expert",
                                .width = SharedWidth::kField,
                                .width_field = "shared_expert_intermediate_size",
                                .gate = true};
// DeepSeek: shared_experts.*, the expert width times the count.
constexpr Shared SharedExperts(std::string_view count_field) {
  return {.hub = "shared_experts", .width = SharedWidth::kTimesCount, .count_field = count_field};
}
// Hunyuan v1: shared_mlp.*, the expert width.
constexpr Shared kHunyuanShared = {.hub = "shared_mlp", .width = SharedWidth::kExpert};

// Shorthand for the usual single stack under "model.".
std::vector<Stack> OneStack(Shared shared) {
  return {Stack{.prefix = "model.", .embed = "embed_tokens.weight", .head = "lm_head.weight", .shared = shared}};
}

std::vector<Stack> LanguageModelStack(std::string_view text_model_type, Shared shared) {
  return {Stack{.prefix = "model.language_model.",
                .embed = "embed_tokens.weight",
                .head = "lm_head.weight",
                .config_path = "text_config",
                .model_type = text_model_type,
                .shared = shared}};
}

// The config keys Qwen3-MoE writes, which its VL and omni models keep.
constexpr std::string_view kQwen3Config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                                              "attention_bias":false})";
// DeepSeek-V3's routing (noaux_tc, sigmoid scores), which V3.2 keeps.
constexpr std::string_view kDeepseekV3Config =
    R"({"topk_method":"noaux_tc","scoring_func":"sigmoid","routed_scaling_factor":2.5,
        "moe_layer_freq":1,"norm_topk_prob":true,"attention_bias":false})";

// The archetypes below give what a lineage has in common; each entry then
// assigns, in `edit`, only what sets its family apart.
template <typename Edit>
Family With(Family base, Edit edit) {
  edit(base);
  return base;
}

// The MoE block most families copy: routed experts under mlp.experts with
// gate/up/down names, the router at mlp.gate, the expert width in
// moe_intermediate_size beside the dense intermediate_size, top-k in
// num_experts_per_tok; one stack, no shared experts. Lineages differ first
// in the expert count's key.
Family MlpMoe(std::string_view model_type, std::string_view architecture, std::string_view experts_field) {
  return {.model_type = model_type,
          .architecture = architecture,
          .experts_field = experts_field,
          .intermediate_field = "moe_intermediate_size",
          .topk_field = "num_experts_per_tok",
          .dense_intermediate_field = true,
          .hub_block = "mlp",
          .router_leaf = "gate.weight",
          .fused_router_leaf = "gate.weight",
          .stacks = OneStack(kNoShared)};
}

// Qwen2-MoE and the families v5 maps through its pattern: num_experts.
Family QwenLike(std::string_view model_type, std::string_view architecture) {
  return MlpMoe(model_type, architecture, "num_experts");
}

// Qwen3-MoE: Qwen2-MoE with per-head q/k norms, no attention bias and no
// shared expert.
Family Qwen3Like(std::string_view model_type, std::string_view architecture) {
  return With(QwenLike(model_type, architecture), [](Family& m) {
    m.qk_norm = QkNorm::kPerHead;
    m.extra_config = kQwen3Config;
  });
}

// OLMoE: the experts' width is intermediate_size, with no dense width of its
// own, and q/k are normed over their full projected width.
Family OlmoeLike(std::string_view model_type, std::string_view architecture) {
  return With(QwenLike(model_type, architecture), [](Family& m) {
    m.intermediate_field = "intermediate_size";
    m.dense_intermediate_field = false;
    m.qk_norm = QkNorm::kFullWidth;
  });
}

// DeepSeek-V3's MoE block: n_routed_experts, group-limited routing with a
// correction bias, the first first_k_dense_replace layers dense, and
// n_shared_experts shared experts. Attention is each family's own (MLA in
// DeepSeek's, plain attention in most GLM ones), so it is left to them.
Family DeepseekLike(std::string_view model_type, std::string_view architecture) {
  return With(MlpMoe(model_type, architecture, "n_routed_experts"), [](Family& m) {
    m.bias_leaf = "gate.e_score_correction_bias";
    m.grouped_routing = true;
    m.dense_layers = DenseLayers::kFirstK;
    m.stacks = OneStack(SharedExperts("n_shared_experts"));
  });
}

// Mixtral: num_local_experts experts of intermediate_size, named w1/w3/w2,
// under block_sparse_moe; no dense layers, so no dense width.
Family MixtralLike(std::string_view model_type, std::string_view architecture) {
  return {.model_type = model_type,
          .architecture = architecture,
          .experts_field = "num_local_experts",
          .intermediate_field = "intermediate_size",
          .topk_field = "num_experts_per_tok",
          .expert_names = ExpertNames::kW1W3W2,
          .hub_block = "block_sparse_moe",
          .router_leaf = "gate.weight",
          .fused_router_leaf = "gate.weight",
          .stacks = OneStack(kNoShared)};
}

// ERNIE-4.5: moe_num_experts and moe_k, an F32 router, the correction bias
// under moe_statics (which v5 moves under the gate), dense layers before
// moe_layer_start_index and moe_num_shared_experts shared experts.
Family ErnieLike(std::string_view model_type, std::string_view architecture) {
  return With(MlpMoe(model_type, architecture, "moe_num_experts"), [](Family& m) {
    m.topk_field = "moe_k";
    m.router_f32 = true;
    m.bias_leaf = "moe_statics.e_score_correction_bias";
    m.fused_bias_leaf = "gate.moe_statics.e_score_correction_bias";
    m.dense_layers = DenseLayers::kFirstK;
    m.dense_field = "moe_layer_start_index";
    m.stacks = OneStack(SharedExperts("moe_num_shared_experts"));
  });
}

// The existing families, then the ones v5's conversion_mapping adds
// (docs/models.md, "More families").
void AddFirstFamilies(std::vector<Family>& f) {
  f.push_back(With(QwenLike("qwen2_moe", "Qwen2MoeForCausalLM"), [](Family& m) {
    m.attn_bias = AttnBias::kQkv;
    m.extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":false,
                         "use_sliding_window":false})";
    m.stacks = OneStack(kQwenShared);
  }));
  f.push_back(Qwen3Like("qwen3_moe", "Qwen3MoeForCausalLM"));
  f.push_back(With(Qwen3Like("qwen3_next", "Qwen3NextForCausalLM"), [](Family& m) {
    m.attention = Attention::kQwen3NextHybrid;
    m.extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                         "attention_bias":false,"partial_rotary_factor":0.25})";
    m.stacks = OneStack(kQwenShared);
  }));
  f.push_back(With(OlmoeLike("olmoe", "OlmoeForCausalLM"), [](Family& m) {
    m.extra_config = R"({"clip_qkv":null,"norm_topk_prob":false,"attention_bias":false})";
  }));
  f.push_back(With(DeepseekLike("deepseek_v2", "DeepseekV2ForCausalLM"), [](Family& m) {
    m.bias_leaf = {};  // V2 routes group_limited_greedy on softmax scores, with no correction bias
    m.attention = Attention::kMla;
    m.extra_config = R"({"topk_method":"group_limited_greedy","scoring_func":"softmax",
                         "routed_scaling_factor":16.0,"moe_layer_freq":1,"norm_topk_prob":false,
                         "attention_bias":false})";
  }));
  f.push_back(With(DeepseekLike("deepseek_v3", "DeepseekV3ForCausalLM"), [](Family& m) {
    m.attention = Attention::kMla;
    m.extra_config = kDeepseekV3Config;
  }));
  f.push_back(With(DeepseekLike("glm4_moe", "Glm4MoeForCausalLM"), [](Family& m) {
    m.attn_bias = AttnBias::kQkv;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"use_qk_norm":false,
                         "attention_bias":true,"partial_rotary_factor":0.5})";
  }));
  f.push_back(With(DeepseekLike("dots1", "Dots1ForCausalLM"), [](Family& m) {
    m.qk_norm = QkNorm::kPerHead;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"attention_bias":false})";
  }));
  // Hunyuan v1: the experts' width is intermediate_size, top-k moe_topk and
  // the router an F32 gate.wg.
  f.push_back(With(MlpMoe("hunyuan_v1_moe", "HunYuanMoEV1ForCausalLM", "num_experts"), [](Family& m) {
    m.intermediate_field = "intermediate_size";
    m.topk_field = "moe_topk";
    m.dense_intermediate_field = false;
    m.router_leaf = "gate.wg.weight";
    m.fused_router_leaf = "gate.wg.weight";
    m.router_f32 = true;
    m.qk_norm = QkNorm::kHunyuan;
    m.extra_config = R"({"use_qk_norm":true,"use_mixed_mlp_moe":true,"num_shared_expert":1,
                         "attention_bias":false})";
    m.stacks = OneStack(kHunyuanShared);
  }));
  f.push_back(With(MixtralLike("mixtral", "MixtralForCausalLM"), [](Family& m) {
    m.extra_config = R"({"router_jitter_noise":0.0,"router_aux_loss_coef":0.02,"sliding_window":null,
                         "rms_norm_eps":1e-05})";
  }));
  f.push_back(With(MixtralLike("minimax", "MiniMaxForCausalLM"), [](Family& m) {
    m.extra_config = R"({"router_jitter_noise":0.0,"router_aux_loss_coef":0.001,"rms_norm_eps":1e-05})";
  }));
  f.push_back(With(MixtralLike("phimoe", "PhimoeForCausalLM"), [](Family& m) {
    m.fused_router_leaf = "router.weight";
    m.attn_bias = AttnBias::kAll;
    m.layer_norm_bias = true;
    m.lm_head_bias = true;
    m.extra_config = R"({"router_jitter_noise":0.01,"input_jitter_noise":0.01,"attention_bias":true,
                         "lm_head_bias":true,"rms_norm_eps":1e-05})";
  }));
  f.push_back(With(Qwen3Like("qwen3_omni_moe", "Qwen3OmniMoeForConditionalGeneration"), [](Family& m) {
    m.towers = Towers::kOmni;
    m.stacks = {Stack{.prefix = "thinker.model.",
                      .embed = "embed_tokens.weight",
                      .head = "thinker.lm_head.weight",
                      .config_path = "thinker_config.text_config",
                      .model_type = "qwen3_omni_moe_text"},
                // The talker is smaller than the thinker and has its
                // own expert count: converters must read each one.
                Stack{.prefix = "talker.model.",
                      .embed = "codec_embedding.weight",
                      .head = "talker.codec_head.weight",
                      .config_path = "talker_config.text_config",
                      .model_type = "qwen3_omni_moe_talker_text",
                      .shared = kQwenShared,
                      .divisor = 2,
                      .codec_vocab = true}};
    m.sub_configs = {{"thinker_config", "qwen3_omni_moe_thinker"}, {"talker_config", "qwen3_omni_moe_talker"}};
  }));
  f.push_back(With(Qwen3Like("qwen3_vl_moe", "Qwen3VLMoeForConditionalGeneration"), [](Family& m) {
    m.default_layout = Layout::kFusedTransposed;
    m.towers = Towers::kVision;
    m.stacks = LanguageModelStack("qwen3_vl_moe_text", kNoShared);
  }));
  f.push_back(With(QwenLike("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration"), [](Family& m) {
    m.dense_intermediate_field = false;
    m.attention = Attention::kQwen35Hybrid;
    m.qk_norm = QkNorm::kPerHead;
    m.default_layout = Layout::kFused;
    m.towers = Towers::kVision;
    m.extra_config = R"({"attention_bias":false,"partial_rotary_factor":0.25})";
    m.stacks = LanguageModelStack("qwen3_5_moe_text", kQwenShared);
  }));
}

// Aliases of v5's qwen2_moe pattern: mlp.experts.{j}.{gate,up,down}_proj,
// some with renames of their own.
void AddQwen2MoeAliases(std::vector<Family>& f) {
  f.push_back(With(QwenLike("afmoe", "AfmoeForCausalLM"), [](Family& m) {
    m.router_leaf = "router.gate.weight";
    m.fused_router_leaf = "router.gate.weight";
    m.bias_leaf = "expert_bias";
    m.qk_norm = QkNorm::kPerHead;
    m.attn_output_gate = true;
    m.sandwich_norms = true;
    m.dense_layers = DenseLayers::kFirstK;
    m.dense_field = "num_dense_layers";
    m.extra_config = R"({"score_func":"sigmoid","route_norm":true,"route_scale":2.826,"n_group":1,
                         "topk_group":1,"attention_bias":false})";
    m.stacks = OneStack(SharedExperts("num_shared_experts"));
  }));
  f.push_back(With(DeepseekLike("glm4_moe_lite", "Glm4MoeLiteForCausalLM"), [](Family& m) {
    m.attention = Attention::kMla;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":1.8,"topk_method":"noaux_tc",
                         "attention_bias":false})";
  }));
  f.push_back(With(DeepseekLike("glm_moe_dsa", "GlmMoeDsaForCausalLM"), [](Family& m) {
    m.attention = Attention::kMlaIndexer;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"topk_method":"noaux_tc",
                         "attention_bias":false})";
  }));
  f.push_back(With(DeepseekLike("glm4v_moe", "Glm4vMoeForConditionalGeneration"), [](Family& m) {
    m.attn_bias = AttnBias::kQkv;
    m.towers = Towers::kVision;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":1.0,"use_qk_norm":false,
                         "attention_bias":true,"partial_rotary_factor":0.5})";
    m.stacks = LanguageModelStack("glm4v_moe_text", SharedExperts("n_shared_experts"));
  }));
  // LongCat-Flash: its own key names, an F32 router.classifier that also
  // scores the zero (identity) experts, and two attention blocks a layer.
  f.push_back(With(MlpMoe("longcat_flash", "LongcatFlashForCausalLM", "n_routed_experts"), [](Family& m) {
    m.intermediate_field = "expert_ffn_hidden_size";
    m.topk_field = "moe_topk";
    m.dense_intermediate_field = false;
    m.router_leaf = "router.classifier.weight";
    m.fused_router_leaf = "router.classifier.weight";
    m.router_f32 = true;
    m.zero_experts = true;
    m.bias_leaf = "router.e_score_correction_bias";
    m.attention = Attention::kLongcat;
    m.extra_config = R"({"routed_scaling_factor":6.0,"router_bias":false,"attention_bias":false})";
  }));
  // Solar Open: DeepSeek's routing, but every layer MoE.
  f.push_back(With(DeepseekLike("solar_open", "SolarOpenForCausalLM"), [](Family& m) {
    m.dense_intermediate_field = false;
    m.dense_layers = DenseLayers::kNone;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":1.0,"attention_bias":false})";
  }));
  f.push_back(With(OlmoeLike("flex_olmo", "FlexOlmoForCausalLM"), [](Family& m) {
    // OLMo-2 style post-norms: after attention and after the MLP.
    m.attn_norm = "post_attention_layernorm";
    m.ffn_norm = "post_feedforward_layernorm";
    m.extra_config = R"({"norm_topk_prob":false,"attention_bias":false})";
  }));
  // The omni model's thinker alone, its towers included.
  Family thinker = Qwen3Like("qwen3_omni_moe_thinker", "Qwen3OmniMoeThinkerForConditionalGeneration");
  f.push_back(With(std::move(thinker), [](Family& m) {
    m.towers = Towers::kOmniThinker;
    m.stacks = {Stack{.prefix = "model.",
                      .embed = "embed_tokens.weight",
                      .head = "lm_head.weight",
                      .config_path = "text_config",
                      .model_type = "qwen3_omni_moe_text"}};
  }));
  f.push_back(With(ErnieLike("ernie4_5_moe", "Ernie4_5_MoeForCausalLM"), [](Family& m) {
    m.bias_row = true;
    m.extra_config = R"({"moe_layer_end_index":-1,"moe_layer_interval":1,"use_bias":false})";
  }));
  f.push_back(With(QwenLike("exaone_moe", "ExaoneMoeForCausalLM"), [](Family& m) {
    m.bias_leaf = "e_score_correction_bias";
    m.fused_bias_leaf = "gate.e_score_correction_bias";
    m.qk_norm = QkNorm::kPerHead;
    m.dense_layers = DenseLayers::kFirstK;
    m.extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"attention_bias":false})";
    m.stacks = OneStack(SharedExperts("num_shared_experts"));
  }));
  f.push_back(With(QwenLike("hy_v3", "HYV3ForCausalLM"), [](Family& m) {
    m.router_leaf = "router.gate.weight";
    m.bias_leaf = "expert_bias";
    m.fused_bias_leaf = "e_score_correction_bias";
    m.qk_norm = QkNorm::kPerHead;
    m.dense_layers = DenseLayers::kLayerTypes;
    m.extra_config = R"({"attention_bias":false})";
    m.stacks = OneStack({.hub = "shared_mlp",
                         .v5 = "shared_experts",
                         .width = SharedWidth::kTimesCount,
                         .count_field = "num_shared_experts"});
  }));
  f.push_back(With(QwenLike("laguna", "LagunaForCausalLM"), [](Family& m) {
    m.bias_leaf = "experts.e_score_correction_bias";
    m.fused_bias_leaf = "gate.e_score_correction_bias";
    m.qk_norm = QkNorm::kPerHead;
    m.dense_layers = DenseLayers::kLayerTypes;
    m.extra_config = R"({"attention_bias":false})";
    m.stacks = OneStack({.hub = "shared_expert",
                         .v5 = "shared_experts",
                         .width = SharedWidth::kField,
                         .width_field = "shared_expert_intermediate_size"});
  }));
  f.push_back(With(DeepseekLike("deepseek_v32", "DeepseekV32ForCausalLM"), [](Family& m) {
    m.attention = Attention::kMlaIndexer;
    m.extra_config = kDeepseekV3Config;
  }));
  f.push_back(With(MlpMoe("mimo_v2_flash", "MiMoV2FlashForCausalLM", "n_routed_experts"), [](Family& m) {
    m.bias_leaf = "gate.e_score_correction_bias";
    m.sinks_leaf = "attention_sink_bias";
    m.fused_sinks_leaf = "sinks";
    m.dense_layers = DenseLayers::kLayerTypes;
    m.extra_config = R"({"norm_topk_prob":true,"scoring_func":"sigmoid","attention_bias":false})";
  }));
}

// The mixtral pattern (block_sparse_moe, w1/w3/w2), feed_forward experts,
// non-gated experts and DeepSeek-V4's own names.
void AddOtherFamilies(std::vector<Family>& f) {
  f.push_back(With(MixtralLike("minimax_m2", "MiniMaxM2ForCausalLM"), [](Family& m) {
    m.bias_leaf = "e_score_correction_bias";
    m.qk_norm = QkNorm::kFullWidth;
    m.extra_config = R"({"scoring_func":"sigmoid","use_qk_norm":true,"qk_norm_type":"per_layer",
                         "router_jitter_noise":0.0,"attention_bias":false})";
  }));
  // Kimi Linear: Mixtral's module names over a DeepSeek-style config.
  f.push_back(With(MlpMoe("kimi_linear", "KimiLinearForCausalLM", "num_experts"), [](Family& m) {
    m.topk_field = "num_experts_per_token";
    m.expert_names = ExpertNames::kW1W3W2;
    m.hub_block = "block_sparse_moe";
    m.bias_leaf = "gate.e_score_correction_bias";
    m.attention = Attention::kKimiHybrid;
    m.dense_layers = DenseLayers::kFirstK;
    m.extra_config = R"({"moe_layer_freq":1,"moe_router_activation_func":"sigmoid","use_grouped_topk":true,
                         "routed_scaling_factor":2.446})";
    m.stacks = OneStack(SharedExperts("num_shared_experts"));
  }));
  f.push_back(With(MlpMoe("lfm2_moe", "Lfm2MoeForCausalLM", "num_experts"), [](Family& m) {
    m.expert_names = ExpertNames::kW1W3W2;
    m.hub_block = "feed_forward";
    m.fused_block = "feed_forward";
    m.bias_leaf = "expert_bias";
    m.attention = Attention::kLfm2Hybrid;
    m.qk_norm = QkNorm::kLfm2;
    m.attn_norm = "operator_norm";
    m.ffn_norm = "ffn_norm";
    m.dense_layers = DenseLayers::kFirstK;
    m.dense_field = "num_dense_layers";
    m.dense_names = ExpertNames::kW1W3W2;
    m.extra_config = R"({"use_expert_bias":true,"norm_topk_prob":true,"routed_scaling_factor":1.0})";
    m.stacks = {Stack{
        .prefix = "model.", .embed = "embed_tokens.weight", .final_norm = "embedding_norm", .head = "lm_head.weight"}};
  }));
  f.push_back(With(MlpMoe("jamba", "JambaForCausalLM", "num_experts"), [](Family& m) {
    m.intermediate_field = "intermediate_size";
    m.dense_intermediate_field = false;
    m.hub_block = "feed_forward";
    m.fused_block = "feed_forward";
    m.router_leaf = "router.weight";
    m.fused_router_leaf = "router.weight";
    m.attention = Attention::kJambaHybrid;
    m.ffn_norm = "pre_ff_layernorm";
    m.dense_layers = DenseLayers::kPeriod;
    m.extra_config = R"({"use_mamba_kernels":true,"mamba_conv_bias":true,"mamba_proj_bias":false})";
    m.stacks = {Stack{
        .prefix = "model.", .embed = "embed_tokens.weight", .final_norm = "final_layernorm", .head = "lm_head.weight"}};
  }));
  f.push_back(With(MlpMoe("nemotron_h", "NemotronHForCausalLM", "n_routed_experts"), [](Family& m) {
    m.dense_intermediate_field = false;
    m.expert_names = ExpertNames::kUpDown;
    m.hub_block = "mixer";
    m.fused_block = "mixer";
    m.router_f32 = true;
    m.bias_leaf = "gate.e_score_correction_bias";
    m.grouped_routing = true;
    m.attention = Attention::kNemotronHybrid;
    m.extra_config = R"({"mlp_hidden_act":"relu2","moe_latent_size":null,"norm_topk_prob":true,
                         "routed_scaling_factor":2.5,"attention_bias":false})";
    m.stacks = {Stack{.prefix = "backbone.",
                      .fused_prefix = "model.",
                      .embed = "embeddings.weight",
                      .final_norm = "norm_f",
                      .head = "lm_head.weight",
                      .shared = {.hub = "shared_experts",
                                 .names = ExpertNames::kUpDown,
                                 .fused_names = ExpertNames::kUpDown,
                                 .width = SharedWidth::kField,
                                 .width_field = "moe_shared_expert_intermediate_size",
                                 .count_field = "n_shared_experts"}}};
  }));
  f.push_back(With(MlpMoe("deepseek_v4", "DeepseekV4ForCausalLM", "n_routed_experts"), [](Family& m) {
    m.dense_intermediate_field = false;
    m.expert_names = ExpertNames::kW1W3W2;
    m.hub_block = "ffn";
    m.bias_leaf = "gate.bias";
    m.fused_bias_leaf = "gate.e_score_correction_bias";
    m.scale_suffix = ".scale";
    m.attention = Attention::kDeepseekV4;
    m.extra_config = R"({"scoring_func":"sqrtsoftplus","norm_topk_prob":true,"routed_scaling_factor":1.5,
                         "num_hash_layers":0,"sliding_window":128,"swiglu_limit":10.0})";
    m.stacks = {Stack{.prefix = "",
                      .fused_prefix = "model.",
                      .embed = "embed.weight",
                      .fused_embed = "embed_tokens.weight",
                      .head = "head.weight",
                      .fused_head = "lm_head.weight",
                      .shared = {.hub = "shared_experts",
                                 .names = ExpertNames::kW1W3W2,
                                 .fused_names = ExpertNames::kGateUpDown,
                                 .width = SharedWidth::kExpert}}};
  }));
}

// Granite MoE: fused on the Hub under names of its own, which v5 renames;
// the shared and hybrid variants add a shared MLP under the layer and Mamba2
// layers (docs/models.md, granitemoe).
Family Granite(std::string_view model_type, std::string_view architecture, bool shared, bool hybrid) {
  return {.model_type = model_type,
          .architecture = architecture,
          .experts_field = "num_local_experts",
          .intermediate_field = "intermediate_size",
          .topk_field = "num_experts_per_tok",
          .hub_fused_gate_up = "input_linear.weight",
          .hub_fused_down = "output_linear.weight",
          .hub_block = "block_sparse_moe",
          .fused_block = "block_sparse_moe",
          .router_leaf = "router.layer.weight",
          .fused_router_leaf = "router.weight",
          .fp8 = false,
          .attention = hybrid ? Attention::kGraniteHybrid : Attention::kMha,
          .default_layout = Layout::kFusedHubNames,
          .extra_config = hybrid ? R"({"embedding_multiplier":12.0,"logits_scaling":8.0,"residual_multiplier":0.22,
                                       "attention_multiplier":0.0078125,"router_aux_loss_coef":0.0,
                                       "attention_bias":false,"position_embedding_type":"nope",
                                       "mamba_chunk_size":256,"mamba_conv_bias":true,"mamba_proj_bias":false})"
                                 : R"({"embedding_multiplier":12.0,"logits_scaling":6.0,"residual_multiplier":0.22,
                                       "attention_multiplier":0.015625,"router_aux_loss_coef":0.001,
                                       "attention_bias":false})",
          .stacks = OneStack(shared ? Shared{.hub = "shared_mlp",
                                             .names = ExpertNames::kInputOutput,
                                             .fused_names = ExpertNames::kInputOutput,
                                             .width = SharedWidth::kField,
                                             .width_field = "shared_intermediate_size",
                                             .under_layer = true}
                                    : kNoShared)};
}

// Families whose Hub layout is not per-expert v5 names (gpt_oss, llama4,
// granitemoe*), and ERNIE-4.5-VL's text and vision experts in one list.
void AddNativeFamilies(std::vector<Family>& f) {
  f.push_back({.model_type = "gpt_oss",
               .architecture = "GptOssForCausalLM",
               .experts_field = "num_local_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .fused_form = FusedForm::kInterleaved,
               .expert_bias = true,
               .hub_block = "mlp",
               .router_leaf = "router.weight",
               .fused_router_leaf = "router.weight",
               .router_bias_leaf = "router.bias",
               .fp8 = false,
               .mxfp4 = true,
               .attention = Attention::kSlidingWindow,
               .attn_bias = AttnBias::kAll,
               .sinks_leaf = "sinks",
               .fused_sinks_leaf = "sinks",
               .sinks_f32 = false,
               .default_layout = Layout::kFused,
               .extra_config = R"({"sliding_window":128,"attention_bias":true,"attention_dropout":0.0,
                                   "swiglu_limit":7.0,"router_aux_loss_coef":0.9,"output_router_logits":false,
                                   "rms_norm_eps":1e-05,"initial_context_length":4096,
                                   "rope_scaling":{"rope_type":"yarn","factor":32.0,"beta_fast":32.0,
                                                   "beta_slow":1.0,"original_max_position_embeddings":4096,
                                                   "truncate":false}})",
               .stacks = OneStack(kNoShared)});
  f.push_back({.model_type = "llama4",
               .architecture = "Llama4ForConditionalGeneration",
               .experts_field = "num_local_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .dense_intermediate_key = "intermediate_size_mlp",
               .fused_form = FusedForm::kTransposed,
               .hub_block = "feed_forward",
               .fused_block = "feed_forward",
               .router_leaf = "router.weight",
               .fused_router_leaf = "router.weight",
               .fp8 = false,
               .dense_layers = DenseLayers::kMoeLayers,
               .default_layout = Layout::kFused,
               .towers = Towers::kLlama4,
               .extra_config = R"({"attention_bias":false,"use_qk_norm":true,"attention_chunk_size":8192,
                                   "attn_temperature_tuning":true,"floor_scale":8192,"attn_scale":0.1,
                                   "router_aux_loss_coef":0.001,"rms_norm_eps":1e-05})",
               .stacks = {Stack{.prefix = "language_model.model.",
                                .embed = "embed_tokens.weight",
                                .head = "language_model.lm_head.weight",
                                .config_path = "text_config",
                                .model_type = "llama4_text",
                                .shared = {.hub = "shared_expert", .width = SharedWidth::kExpert}}}});
  f.push_back(Granite("granitemoe", "GraniteMoeForCausalLM", /*shared=*/false, /*hybrid=*/false));
  f.push_back(Granite("granitemoeshared", "GraniteMoeSharedForCausalLM", /*shared=*/true, /*hybrid=*/false));
  f.push_back(Granite("granitemoehybrid", "GraniteMoeHybridForCausalLM", /*shared=*/true, /*hybrid=*/true));
  f.push_back(With(ErnieLike("ernie4_5_vl_moe", "Ernie4_5_VLMoeForConditionalGeneration"), [](Family& m) {
    // Vision experts are a third as wide (ERNIE-4.5-VL-28B-A3B: 1536 and 512).
    m.shares = {{.module = "text_moe", .hub_router = "gate.weight"},
                {.module = "vision_moe", .hub_router = "gate.weight_1", .width_divisor = 3}};
    m.router_leaf = {};  // each share names its own
    m.fp8 = false;
    m.towers = Towers::kErnieVl;
    m.extra_config = R"({"moe_layer_end_index":-1,"moe_layer_interval":1,"use_bias":false,
                         "moe_gate":"top2_fused","spatial_conv_size":2,"temporal_conv_size":2,
                         "rms_norm_eps":1e-05})";
    m.stacks = {Stack{.prefix = "model.",
                      .fused_prefix = "model.language_model.",
                      .embed = "embed_tokens.weight",
                      .head = "lm_head.weight",
                      .shared = SharedExperts("moe_num_shared_experts")}};
  }));
}

std::vector<Family> MakeFamilies() {
  std::vector<Family> f;
  AddFirstFamilies(f);
  AddQwen2MoeAliases(f);
  AddOtherFamilies(f);
  AddNativeFamilies(f);
  return f;
}

std::vector<Preset> MakePresets() {
  std::vector<Preset> p;
  // Kilobytes, but with H, I and 2I all different so that a layout can be
  // told from the shapes alone, and shards small enough that one layer's
  // experts land in several of them.
  p.push_back({.name = "tiny",
               .family = "",
               .dims = {.layers = 4,
                        .experts = 8,
                        .hidden = 64,
                        .intermediate = 48,
                        .dense_intermediate = 96,
                        .shared_intermediate = 80,
                        .heads = 4,
                        .kv_heads = 2,
                        .head_dim = 16,
                        .vocab = 256,
                        .topk = 2,
                        .first_k_dense = 1,
                        .n_shared = 1,
                        .n_group = 2,
                        .topk_group = 1,
                        .q_lora = 32,
                        .kv_lora = 16,
                        .qk_nope = 16,
                        .qk_rope = 8,
                        .v_head = 16,
                        .lin_k_heads = 2,
                        .lin_v_heads = 4,
                        .lin_k_dim = 16,
                        .lin_v_dim = 16,
                        .conv_kernel = 4,
                        .full_attention_interval = 4,
                        .tower_hidden = 16,
                        .codec_vocab = 128,
                        .max_position = 4096,
                        .rope_theta = 1000000.0},
               .dtype = WeightType::kBF16,
               .max_shard_size = 64'000});
  p.push_back({.name = "qwen3-30b-a3b",
               .family = "qwen3_moe",
               .dims = {.layers = 48,
                        .experts = 128,
                        .hidden = 2048,
                        .intermediate = 768,
                        .dense_intermediate = 6144,
                        .heads = 32,
                        .kv_heads = 4,
                        .head_dim = 128,
                        .vocab = 151936,
                        .topk = 8,
                        .n_group = 1,
                        .topk_group = 1,
                        .max_position = 40960,
                        .rope_theta = 1000000.0},
               .dtype = WeightType::kBF16,
               .max_shard_size = 5'000'000'000});
  p.push_back({.name = "deepseek-v3",
               .family = "deepseek_v3",
               .dims = {.layers = 61,
                        .experts = 256,
                        .hidden = 7168,
                        .intermediate = 2048,
                        .dense_intermediate = 18432,
                        .heads = 128,
                        .kv_heads = 128,
                        .vocab = 129280,
                        .topk = 8,
                        .first_k_dense = 3,
                        .n_shared = 1,
                        .n_group = 8,
                        .topk_group = 4,
                        .q_lora = 1536,
                        .kv_lora = 512,
                        .qk_nope = 128,
                        .qk_rope = 64,
                        .v_head = 128,
                        .max_position = 163840,
                        .rope_theta = 10000.0},
               .dtype = WeightType::kFP8,
               .max_shard_size = 5'000'000'000});
  p.push_back({.name = "mixtral-8x7b",
               .family = "mixtral",
               .dims = {.layers = 32,
                        .experts = 8,
                        .hidden = 4096,
                        .intermediate = 14336,
                        .dense_intermediate = 14336,
                        .heads = 32,
                        .kv_heads = 8,
                        .head_dim = 128,
                        .vocab = 32000,
                        .topk = 2,
                        .n_group = 1,
                        .topk_group = 1,
                        .max_position = 32768,
                        .rope_theta = 1000000.0},
               .dtype = WeightType::kBF16,
               .max_shard_size = 5'000'000'000});
  return p;
}

}  // namespace

const std::vector<Family>& Families() {
  static const std::vector<Family> kFamilies = MakeFamilies();
  return kFamilies;
}

const std::vector<Preset>& Presets() {
  static const std::vector<Preset> kPresets = MakePresets();
  return kPresets;
}

const Family* FindFamily(std::string_view model_type) {
  for (const Family& f : Families()) {
    if (f.model_type == model_type) return &f;
  }
  return nullptr;
}

const Preset* FindPreset(std::string_view name) {
  for (const Preset& p : Presets()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string_view LayoutName(Layout l) {
  switch (l) {
    case Layout::kPerExpert:
      return "per-expert";
    case Layout::kFused:
      return "fused";
    case Layout::kFusedTransposed:
      return "fused-transposed";
    case Layout::kFusedHubNames:
      return "fused-hub-names";
  }
  return "?";
}

std::string_view WeightTypeName(WeightType t) {
  switch (t) {
    case WeightType::kBF16:
      return "bf16";
    case WeightType::kF16:
      return "f16";
    case WeightType::kF32:
      return "f32";
    case WeightType::kFP8:
      return "fp8";
    case WeightType::kMXFP4:
      return "mxfp4";
  }
  return "?";
}

}  // namespace moepack::synth
