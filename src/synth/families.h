// The facts `moepack synth` needs about each model family and each preset,
// as data: one Family entry per model_type and one Preset per named size.
// docs/models.md is where each fact comes from.
//
// Names are given twice where transformers v5 renames them: as the Hub
// stores them and as v5 holds them (the "fused_" / "v5" members; empty
// means the same name). synth writes the Hub names in the per-expert layout
// and the v5 names in the fused ones, so that `synth --layout fused` is what
// converting `synth --layout per-expert` must give.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace moepack::synth {

// kFusedHubNames: the experts fused as v5 holds them, under the Hub's own
// names (granitemoe's input_linear / output_linear); only for families
// whose Hub ships them so.
enum class Layout { kPerExpert, kFused, kFusedTransposed, kFusedHubNames };
// kMXFP4: gpt_oss's experts as the Hub ships them, 4-bit e2m1 blocks of 32
// with e8m0 scales (fused layout only; everything else BF16).
enum class WeightType { kBF16, kF16, kF32, kFP8, kMXFP4 };

// kGateUpDown: gate_proj/up_proj/down_proj; kW1W3W2: w1 (gate), w3 (up),
// w2 (down); kUpDown: non-gated experts, up_proj/down_proj only;
// kInputOutput: Granite's input_linear [2 * width, H] (gate rows, then up)
// and output_linear [H, width].
enum class ExpertNames { kGateUpDown, kW1W3W2, kUpDown, kInputOutput };
// How v5 holds a layer's routed experts fused (docs/models.md).
//   kConcat: gate_up_proj [E, 2I, H] (gate rows, then up), down_proj [E, H, I];
//   kTransposed: gate_up_proj [E, H, 2I] (gate columns, then up; llama4),
//     down_proj [E, I, H];
//   kInterleaved: gate_up_proj [E, H, 2I] with gate at the even and up at the
//     odd columns (gpt_oss), down_proj [E, I, H].
enum class FusedForm { kConcat, kTransposed, kInterleaved };
// What a decoder layer's token mixer is.
//   kQwen3NextHybrid / kQwen35Hybrid: every full_attention_interval-th layer
//     has gated self-attention, the others GatedDeltaNet `linear_attn` (fused
//     in_proj_qkvz/in_proj_ba in Qwen3-Next, split in Qwen3.5);
//   kMlaIndexer: MLA plus the sparse-attention indexer (DeepSeek-V3.2, GLM-5);
//   kLongcat: two MLA blocks per layer (self_attn.0 / .1), each with its own
//     norms and dense MLP (mlps.0 / .1) beside the MoE block;
//   kKimiHybrid: Kimi Delta Attention, every full_attention_interval-th layer MLA;
//   kLfm2Hybrid: short convolutions, every full_attention_interval-th layer attention;
//   kJambaHybrid: Mamba, every full_attention_interval-th layer attention;
//   kNemotronHybrid: one mixer per layer (Mamba2, attention or MoE, as
//     hybrid_override_pattern says);
//   kDeepseekV4: DeepSeek-V4's compressed sparse attention and hyper-connections;
//   kSlidingWindow: attention, sliding-window and full layers alternating
//     (gpt_oss's layer_types);
//   kGraniteHybrid: Mamba2 (`mamba`), every full_attention_interval-th layer
//     attention, each layer with its MoE block too (granitemoehybrid).
enum class Attention {
  kMha,
  kMla,
  kQwen3NextHybrid,
  kQwen35Hybrid,
  kMlaIndexer,
  kLongcat,
  kKimiHybrid,
  kLfm2Hybrid,
  kJambaHybrid,
  kNemotronHybrid,
  kDeepseekV4,
  kSlidingWindow,
  kGraniteHybrid,
};
enum class AttnBias { kNone, kQkv, kAll };
// kPerHead: q_norm/k_norm [head_dim]; kFullWidth: q_norm/k_norm over the
// projected width (olmoe, minimax_m2); kHunyuan: query_layernorm/key_layernorm
// [head_dim]; kLfm2: q_layernorm/k_layernorm [head_dim].
enum class QkNorm { kNone, kPerHead, kFullWidth, kHunyuan, kLfm2 };
// Which layers are dense instead of MoE, and the config field that says so.
//   kFirstK: the first `first_k_dense` layers, field `dense_field`
//     (first_k_dense_replace, num_dense_layers, moe_layer_start_index);
//   kLayerTypes: the same layers, as mlp_layer_types ["dense", ..., "sparse"];
//   kPeriod: layer L is MoE iff L % 2 == 1 (jamba's expert_layer_period 2,
//     expert_layer_offset 1);
//   kMoeLayers: the same layers, as llama4's interleave_moe_layer_step 2 and
//     moe_layers.
enum class DenseLayers { kNone, kFirstK, kLayerTypes, kPeriod, kMoeLayers };
// How wide the shared expert is.
//   kField: the config field `width_field` (shared_intermediate);
//   kTimesCount: the expert width times the count in `count_field`;
//   kExpert: the expert width.
enum class SharedWidth { kField, kTimesCount, kExpert };

// Shared experts: a dense MLP beside the routed experts, under the MoE block.
struct Shared {
  std::string_view hub = {};  // module under the block on the Hub; empty: none
  std::string_view v5 = {};   // its v5 name; empty: the same
  ExpertNames names = ExpertNames::kGateUpDown;
  ExpertNames fused_names = ExpertNames::kGateUpDown;  // the leaves in v5
  SharedWidth width = SharedWidth::kField;
  std::string_view width_field = {};  // config field of the width (kField)
  std::string_view count_field = {};  // config field of the count (written as Dims::n_shared)
  bool gate = false;                  // shared_expert_gate [1, H] beside it (Qwen)
  bool under_layer = false;           // under the decoder layer, not the MoE block (Granite's shared_mlp)
};
// Non-language towers that ride along in the same checkpoint.
// kOmniThinker: the thinker's towers saved without the "thinker." prefix;
// kLlama4: vision_model.* and multi_modal_projector; kErnieVl:
// vision_model.* and model.resampler_model.*, which v5 renames.
enum class Towers { kNone, kVision, kOmni, kOmniThinker, kLlama4, kErnieVl };

// One share of a layer's expert list that v5 fuses on its own
// (ERNIE-4.5-VL: the text experts, then as many vision experts). Each has
// its own router, stored [H, E] on the Hub and [E, H] in v5, and its row of
// the block's [shares, E] correction bias.
struct ExpertShare {
  std::string_view module = {};      // v5: the share's module under the block ("text_moe")
  std::string_view hub_router = {};  // Hub: its router leaf under the block ("gate.weight_1")
  int width_divisor = 1;             // its experts are this many times narrower
};

// One decoder stack. Most families have one; qwen3_omni_moe has a thinker
// and a talker, each with its own expert count.
struct Stack {
  std::string_view prefix = {};        // tensor prefix before "layers." on the Hub, e.g. "model." or "thinker.model."
  std::string_view fused_prefix = {};  // in v5; empty: the same
  std::string_view embed = {};         // embedding leaf under prefix
  std::string_view fused_embed = {};
  std::string_view final_norm = "norm";  // leaf under prefix, without ".weight"
  std::string_view head = {};            // full name of the output head
  std::string_view fused_head = {};
  std::string_view config_path = {};  // dotted path of its config object; empty: top level
  std::string_view model_type = {};   // model_type of that nested object; empty at top level
  Shared shared = {};
  int divisor = 1;           // experts, expert width and layers are this many times smaller than the preset's
  bool codec_vocab = false;  // the vocabulary is the speech codec's (Dims::codec_vocab)
};

// A nested config object that holds no decoder stack (thinker_config, ...).
struct SubConfig {
  std::string_view path = {};
  std::string_view model_type = {};
};

struct Family {
  std::string_view model_type = {};
  std::string_view architecture = {};
  std::string_view experts_field = {};       // num_experts | n_routed_experts | num_local_experts | moe_num_experts
  std::string_view intermediate_field = {};  // moe_intermediate_size | intermediate_size | expert_ffn_hidden_size
  std::string_view topk_field = {};          // num_experts_per_tok | moe_topk | moe_k
  bool dense_intermediate_field = false;     // also write the dense width, as `dense_intermediate_key`
  std::string_view dense_intermediate_key = "intermediate_size";
  ExpertNames expert_names = ExpertNames::kGateUpDown;
  FusedForm fused_form = FusedForm::kConcat;
  bool expert_bias = false;  // each expert projection has a .bias; v5: gate_up_proj_bias, down_proj_bias
  // The fused experts' leaves under the block on the Hub, when the Hub ships
  // them fused under names of its own (granitemoe); empty: it does not.
  std::string_view hub_fused_gate_up = {};
  std::string_view hub_fused_down = {};
  std::vector<ExpertShare> shares = {};  // empty: one expert list, fused under "experts."
  std::string_view hub_block = {};          // "mlp" | "block_sparse_moe" | "feed_forward" | "mixer" | "ffn"
  std::string_view fused_block = {};        // in v5; empty: "mlp"
  std::string_view router_leaf = {};        // under the block, Hub names
  std::string_view fused_router_leaf = {};  // under the v5 block, v5 names
  bool router_f32 = false;
  std::string_view router_bias_leaf = {};  // the router Linear's own bias [E] (gpt_oss); empty: none
  bool zero_experts = false;  // LongCat: the router also scores zero_expert_num (E / 2) identity experts
  // The routing correction bias [E] F32 under the block ("gate.e_score_correction_bias",
  // "expert_bias", ...); empty: none. bias_row: stored [1, E] (ERNIE's moe_statics).
  std::string_view bias_leaf = {};
  std::string_view fused_bias_leaf = {};
  bool bias_row = false;
  bool grouped_routing = false;  // n_group / topk_group fields
  std::string_view scale_suffix = ".weight_scale_inv";  // FP8 block scales on the Hub (DeepSeek-V4: ".scale")
  // Which quantized forms synth writes: FP8 block-scaled (where the rules
  // fuse the scales) and MXFP4 (gpt_oss's Hub form).
  bool fp8 = true;
  bool mxfp4 = false;
  Attention attention = Attention::kMha;
  AttnBias attn_bias = AttnBias::kNone;
  QkNorm qk_norm = QkNorm::kNone;
  bool attn_output_gate = false;  // self_attn.gate_proj [heads * head_dim, H] (AFMoE)
  // Per-head attention sinks [heads]: Hub leaf under self_attn, v5 leaf; F32,
  // or (sinks_f32 false) the checkpoint's dtype.
  std::string_view sinks_leaf = {};
  std::string_view fused_sinks_leaf = {};
  bool sinks_f32 = true;
  bool layer_norm_bias = false;  // LayerNorm (weight + bias) instead of RMSNorm
  bool lm_head_bias = false;
  // The two norms of a layer, before its token mixer and before its MLP.
  std::string_view attn_norm = "input_layernorm";
  std::string_view ffn_norm = "post_attention_layernorm";
  bool sandwich_norms = false;  // also pre_mlp_layernorm and post_mlp_layernorm (AFMoE)
  DenseLayers dense_layers = DenseLayers::kNone;
  std::string_view dense_field = "first_k_dense_replace";
  ExpertNames dense_names = ExpertNames::kGateUpDown;  // the dense layers' MLP leaves
  Layout default_layout = Layout::kPerExpert;
  Towers towers = Towers::kNone;
  std::string_view extra_config = {};  // JSON object merged into each text config
  std::vector<Stack> stacks = {};
  std::vector<SubConfig> sub_configs = {};
};

// Sizes. Fields a family does not use are ignored.
struct Dims {
  int layers = 0;
  int experts = 0;
  int hidden = 0;
  int intermediate = 0;         // expert width
  int dense_intermediate = 0;   // dense layers (and config's intermediate_size)
  int shared_intermediate = 0;  // width of a shared expert whose width is its own field
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  int vocab = 0;
  int topk = 0;
  int first_k_dense = 0;
  int n_shared = 0;
  int n_group = 0;
  int topk_group = 0;
  int q_lora = 0;
  int kv_lora = 0;
  int qk_nope = 0;
  int qk_rope = 0;
  int v_head = 0;
  // Linear attention and state-space mixers (GatedDeltaNet, KDA, Mamba):
  // key heads (Mamba2: groups), value heads (Mamba2: heads), their head dims
  // (Mamba2: state size, head dim) and the convolution kernel.
  int lin_k_heads = 0;
  int lin_v_heads = 0;
  int lin_k_dim = 0;
  int lin_v_dim = 0;
  int conv_kernel = 0;
  int full_attention_interval = 0;
  int tower_hidden = 0;  // vision/audio stand-in towers
  int codec_vocab = 0;   // omni talker
  int64_t max_position = 0;
  double rope_theta = 0;
};

struct Preset {
  std::string_view name = {};
  std::string_view family = {};  // empty: any family
  Dims dims;
  WeightType dtype;
  uint64_t max_shard_size;
};

const std::vector<Family>& Families();
const std::vector<Preset>& Presets();
const Family* FindFamily(std::string_view model_type);
const Preset* FindPreset(std::string_view name);

std::string_view LayoutName(Layout l);
std::string_view WeightTypeName(WeightType t);

}  // namespace moepack::synth
