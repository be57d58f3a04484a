// The facts `moepack synth` needs about each model family and each preset,
// as data: one Family entry per model_type and one Preset per named size.
// docs/models.md is where each fact comes from.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace moepack::synth {

enum class Layout { kPerExpert, kFused, kFusedTransposed };
enum class WeightType { kBF16, kF16, kF32, kFP8 };

enum class ExpertNames { kGateUpDown, kW1W3W2 };
// kQwen3NextHybrid / kQwen35Hybrid: every full_attention_interval-th layer
// has gated self-attention, the others GatedDeltaNet `linear_attn` (fused
// in_proj_qkvz/in_proj_ba in Qwen3-Next, split in Qwen3.5).
enum class Attention { kMha, kMla, kQwen3NextHybrid, kQwen35Hybrid };
enum class AttnBias { kNone, kQkv, kAll };
// kPerHead: q_norm/k_norm [head_dim]; kFullWidth: q_norm/k_norm over the
// projected width (olmoe); kHunyuan: query_layernorm/key_layernorm [head_dim].
enum class QkNorm { kNone, kPerHead, kFullWidth, kHunyuan };
// kQwen: shared_expert.* + shared_expert_gate [1,H], width
// shared_expert_intermediate_size; kDeepseek: shared_experts.*, width
// moe_intermediate_size * n_shared_experts; kHunyuan: shared_mlp.*, width
// intermediate_size (the expert width).
enum class Shared { kNone, kQwen, kDeepseek, kHunyuan };
// Non-language towers that ride along in the same checkpoint.
enum class Towers { kNone, kVision, kOmni };

// One decoder stack. Most families have one; qwen3_omni_moe has a thinker
// and a talker, each with its own expert count.
struct Stack {
  std::string_view prefix = {};       // tensor prefix before "layers.", e.g. "model." or "thinker.model."
  std::string_view embed = {};        // embedding leaf under prefix
  std::string_view head = {};         // full name of the output head
  std::string_view config_path = {};  // dotted path of its config object; empty: top level
  std::string_view model_type = {};   // model_type of that nested object; empty at top level
  Shared shared = Shared::kNone;
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
  std::string_view experts_field = {};       // num_experts | n_routed_experts | num_local_experts
  std::string_view intermediate_field = {};  // moe_intermediate_size | intermediate_size
  std::string_view topk_field = {};          // num_experts_per_tok | moe_topk
  bool dense_intermediate_field = false;     // also write intermediate_size (dense width)
  ExpertNames expert_names = ExpertNames::kGateUpDown;
  std::string_view hub_block = {};          // "mlp" | "block_sparse_moe"; v5 always uses "mlp"
  std::string_view router_leaf = {};        // under the block, Hub names
  std::string_view fused_router_leaf = {};  // under "mlp", v5 names
  bool router_f32 = false;
  bool correction_bias = false;  // gate.e_score_correction_bias [E] F32
  bool grouped_routing = false;  // n_group / topk_group fields
  Attention attention = Attention::kMha;
  AttnBias attn_bias = AttnBias::kNone;
  QkNorm qk_norm = QkNorm::kNone;
  bool layer_norm_bias = false;  // LayerNorm (weight + bias) instead of RMSNorm
  bool lm_head_bias = false;
  bool dense_first_layers = false;  // first_k_dense_replace
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
  int shared_intermediate = 0;  // qwen-style shared expert width
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
