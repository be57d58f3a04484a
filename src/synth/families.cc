#include "synth/families.h"

namespace moepack::synth {
namespace {

// Shorthand for the usual single stack under "model.".
std::vector<Stack> OneStack(Shared shared) {
  return {Stack{.prefix = "model.",
                .embed = "embed_tokens.weight",
                .head = "lm_head.weight",
                .config_path = "",
                .model_type = "",
                .shared = shared}};
}

std::vector<Stack> LanguageModelStack(std::string_view text_model_type, Shared shared) {
  return {Stack{.prefix = "model.language_model.",
                .embed = "embed_tokens.weight",
                .head = "lm_head.weight",
                .config_path = "text_config",
                .model_type = text_model_type,
                .shared = shared}};
}

std::vector<Family> MakeFamilies() {
  std::vector<Family> f;
  f.push_back({.model_type = "qwen2_moe",
               .architecture = "Qwen2MoeForCausalLM",
               .experts_field = "num_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .attn_bias = AttnBias::kQkv,
               .extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":false,
                                   "use_sliding_window":false})",
               .stacks = OneStack(Shared::kQwen)});
  f.push_back({.model_type = "qwen3_moe",
               .architecture = "Qwen3MoeForCausalLM",
               .experts_field = "num_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .qk_norm = QkNorm::kPerHead,
               .extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                                   "attention_bias":false})",
               .stacks = OneStack(Shared::kNone)});
  f.push_back({.model_type = "qwen3_next",
               .architecture = "Qwen3NextForCausalLM",
               .experts_field = "num_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .attention = Attention::kQwen3NextHybrid,
               .qk_norm = QkNorm::kPerHead,
               .extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                                   "attention_bias":false,"partial_rotary_factor":0.25})",
               .stacks = OneStack(Shared::kQwen)});
  f.push_back({.model_type = "olmoe",
               .architecture = "OlmoeForCausalLM",
               .experts_field = "num_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .qk_norm = QkNorm::kFullWidth,
               .extra_config = R"({"clip_qkv":null,"norm_topk_prob":false,"attention_bias":false})",
               .stacks = OneStack(Shared::kNone)});
  f.push_back({.model_type = "deepseek_v2",
               .architecture = "DeepseekV2ForCausalLM",
               .experts_field = "n_routed_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .grouped_routing = true,
               .attention = Attention::kMla,
               .dense_first_layers = true,
               .extra_config = R"({"topk_method":"group_limited_greedy","scoring_func":"softmax",
                                   "routed_scaling_factor":16.0,"moe_layer_freq":1,"norm_topk_prob":false,
                                   "attention_bias":false})",
               .stacks = OneStack(Shared::kDeepseek)});
  f.push_back({.model_type = "deepseek_v3",
               .architecture = "DeepseekV3ForCausalLM",
               .experts_field = "n_routed_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .correction_bias = true,
               .grouped_routing = true,
               .attention = Attention::kMla,
               .dense_first_layers = true,
               .extra_config = R"({"topk_method":"noaux_tc","scoring_func":"sigmoid","routed_scaling_factor":2.5,
                                   "moe_layer_freq":1,"norm_topk_prob":true,"attention_bias":false})",
               .stacks = OneStack(Shared::kDeepseek)});
  f.push_back({.model_type = "glm4_moe",
               .architecture = "Glm4MoeForCausalLM",
               .experts_field = "n_routed_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .correction_bias = true,
               .grouped_routing = true,
               .attn_bias = AttnBias::kQkv,
               .dense_first_layers = true,
               .extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"use_qk_norm":false,
                                   "attention_bias":true,"partial_rotary_factor":0.5})",
               .stacks = OneStack(Shared::kDeepseek)});
  f.push_back({.model_type = "dots1",
               .architecture = "Dots1ForCausalLM",
               .experts_field = "n_routed_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .correction_bias = true,
               .grouped_routing = true,
               .qk_norm = QkNorm::kPerHead,
               .dense_first_layers = true,
               .extra_config = R"({"norm_topk_prob":true,"routed_scaling_factor":2.5,"attention_bias":false})",
               .stacks = OneStack(Shared::kDeepseek)});
  f.push_back({.model_type = "hunyuan_v1_moe",
               .architecture = "HunYuanMoEV1ForCausalLM",
               .experts_field = "num_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "moe_topk",
               .hub_block = "mlp",
               .router_leaf = "gate.wg.weight",
               .fused_router_leaf = "gate.wg.weight",
               .router_f32 = true,
               .qk_norm = QkNorm::kHunyuan,
               .extra_config = R"({"use_qk_norm":true,"use_mixed_mlp_moe":true,"num_shared_expert":1,
                                   "attention_bias":false})",
               .stacks = OneStack(Shared::kHunyuan)});
  f.push_back({.model_type = "mixtral",
               .architecture = "MixtralForCausalLM",
               .experts_field = "num_local_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .expert_names = ExpertNames::kW1W3W2,
               .hub_block = "block_sparse_moe",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .extra_config = R"({"router_jitter_noise":0.0,"router_aux_loss_coef":0.02,"sliding_window":null,
                                   "rms_norm_eps":1e-05})",
               .stacks = OneStack(Shared::kNone)});
  f.push_back({.model_type = "minimax",
               .architecture = "MiniMaxForCausalLM",
               .experts_field = "num_local_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .expert_names = ExpertNames::kW1W3W2,
               .hub_block = "block_sparse_moe",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .extra_config = R"({"router_jitter_noise":0.0,"router_aux_loss_coef":0.001,"rms_norm_eps":1e-05})",
               .stacks = OneStack(Shared::kNone)});
  f.push_back({.model_type = "phimoe",
               .architecture = "PhimoeForCausalLM",
               .experts_field = "num_local_experts",
               .intermediate_field = "intermediate_size",
               .topk_field = "num_experts_per_tok",
               .expert_names = ExpertNames::kW1W3W2,
               .hub_block = "block_sparse_moe",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "router.weight",
               .attn_bias = AttnBias::kAll,
               .layer_norm_bias = true,
               .lm_head_bias = true,
               .extra_config = R"({"router_jitter_noise":0.01,"input_jitter_noise":0.01,"attention_bias":true,
                                   "lm_head_bias":true,"rms_norm_eps":1e-05})",
               .stacks = OneStack(Shared::kNone)});
  f.push_back(
      {.model_type = "qwen3_omni_moe",
       .architecture = "Qwen3OmniMoeForConditionalGeneration",
       .experts_field = "num_experts",
       .intermediate_field = "moe_intermediate_size",
       .topk_field = "num_experts_per_tok",
       .dense_intermediate_field = true,
       .hub_block = "mlp",
       .router_leaf = "gate.weight",
       .fused_router_leaf = "gate.weight",
       .qk_norm = QkNorm::kPerHead,
       .towers = Towers::kOmni,
       .extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                                   "attention_bias":false})",
       .stacks = {Stack{.prefix = "thinker.model.",
                        .embed = "embed_tokens.weight",
                        .head = "thinker.lm_head.weight",
                        .config_path = "thinker_config.text_config",
                        .model_type = "qwen3_omni_moe_text",
                        .shared = Shared::kNone},
                  // The talker is smaller than the thinker and has its
                  // own expert count: converters must read each one.
                  Stack{.prefix = "talker.model.",
                        .embed = "codec_embedding.weight",
                        .head = "talker.codec_head.weight",
                        .config_path = "talker_config.text_config",
                        .model_type = "qwen3_omni_moe_talker_text",
                        .shared = Shared::kQwen,
                        .divisor = 2,
                        .codec_vocab = true}},
       .sub_configs = {{"thinker_config", "qwen3_omni_moe_thinker"}, {"talker_config", "qwen3_omni_moe_talker"}}});
  f.push_back({.model_type = "qwen3_vl_moe",
               .architecture = "Qwen3VLMoeForConditionalGeneration",
               .experts_field = "num_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .dense_intermediate_field = true,
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .qk_norm = QkNorm::kPerHead,
               .default_layout = Layout::kFusedTransposed,
               .towers = Towers::kVision,
               .extra_config = R"({"decoder_sparse_step":1,"mlp_only_layers":[],"norm_topk_prob":true,
                                   "attention_bias":false})",
               .stacks = LanguageModelStack("qwen3_vl_moe_text", Shared::kNone)});
  f.push_back({.model_type = "qwen3_5_moe",
               .architecture = "Qwen3_5MoeForConditionalGeneration",
               .experts_field = "num_experts",
               .intermediate_field = "moe_intermediate_size",
               .topk_field = "num_experts_per_tok",
               .hub_block = "mlp",
               .router_leaf = "gate.weight",
               .fused_router_leaf = "gate.weight",
               .attention = Attention::kQwen35Hybrid,
               .qk_norm = QkNorm::kPerHead,
               .default_layout = Layout::kFused,
               .towers = Towers::kVision,
               .extra_config = R"({"attention_bias":false,"partial_rotary_factor":0.25})",
               .stacks = LanguageModelStack("qwen3_5_moe_text", Shared::kQwen)});
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
  }
  return "?";
}

}  // namespace moepack::synth
