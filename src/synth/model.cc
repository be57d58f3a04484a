#include "synth/model.h"

#include <algorithm>
#include <array>
#include <utility>

#include "moepack/safetensors.h"

namespace moepack::synth {
namespace {

using nlohmann::json;

constexpr uint64_t kBlock = 128;  // FP8 weight_block_size, both dims

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

DType BaseDType(WeightType t) {
  switch (t) {
    case WeightType::kF16:
      return DType::F16;
    case WeightType::kF32:
      return DType::F32;
    default:
      return DType::BF16;  // FP8 checkpoints keep norms, embeddings and routers in BF16
  }
}

const char* TorchDType(WeightType t) {
  switch (t) {
    case WeightType::kF16:
      return "float16";
    case WeightType::kF32:
      return "float32";
    default:
      return "bfloat16";
  }
}

// The sizes one stack sees: the talker of qwen3_omni_moe is scaled down.
Dims StackDims(const Dims& d, const Stack& s) {
  Dims out = d;
  if (s.divisor > 1) {
    out.layers = std::max(1, d.layers / s.divisor);
    out.experts = std::max(1, d.experts / s.divisor);
    out.intermediate = std::max(1, d.intermediate / s.divisor);
    out.shared_intermediate = std::max(1, d.shared_intermediate / s.divisor);
  }
  return out;
}

bool IsDenseLayer(const Family& f, const Dims& d, int layer) { return f.dense_first_layers && layer < d.first_k_dense; }

bool IsFullAttentionLayer(const Dims& d, int layer) {
  return d.full_attention_interval > 0 && (layer + 1) % d.full_attention_interval == 0;
}

class Builder {
 public:
  Builder(const Family& family, WeightType weight_type, Layout layout, uint64_t seed)
      : f_(family),
        fp8_(weight_type == WeightType::kFP8),
        base_(BaseDType(weight_type)),
        layout_(layout),
        seed_(seed) {}

  Status status() const { return status_; }
  std::vector<PlannedTensor> Take() { return std::move(tensors_); }

  void AddStack(const Stack& s, const Dims& d) {
    const std::string p(s.prefix);
    const uint64_t H = d.hidden;
    const uint64_t vocab = s.codec_vocab ? d.codec_vocab : d.vocab;
    Plain(p + std::string(s.embed), {vocab, H}, base_, Fill::kWeight);
    for (int layer = 0; layer < d.layers; ++layer) Layer(s, d, layer);
    Norm(p + "norm", H);
    std::string head(s.head);
    Plain(head, {vocab, H}, base_, Fill::kWeight);
    if (f_.lm_head_bias) Plain(head.substr(0, head.size() - 6) + "bias", {vocab}, base_, Fill::kWeight);
  }

  // Stand-ins for the vision / audio towers and the talker's projections:
  // plausible names and shapes, present so that converters are seen to pass
  // everything that is not an expert through untouched.
  void AddTowers(const Dims& d) {
    const uint64_t H = d.hidden, t = d.tower_hidden;
    switch (f_.towers) {
      case Towers::kNone:
        return;
      case Towers::kVision:
        VisionTower("model.visual.", t, H);
        return;
      case Towers::kOmni: {
        VisionTower("thinker.visual.", t, H);
        const std::string a = "thinker.audio_tower.";
        Plain(a + "conv2d1.weight", {t, 1, 3, 3}, base_, Fill::kWeight);
        Plain(a + "conv2d1.bias", {t}, base_, Fill::kWeight);
        for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
          Plain(a + "layers.0.self_attn." + proj + ".weight", {t, t}, base_, Fill::kWeight);
        }
        TowerNorm(a + "layers.0.self_attn_layer_norm", t);
        TowerLinear(a + "layers.0.fc1", 4 * t, t);
        TowerLinear(a + "layers.0.fc2", t, 4 * t);
        TowerNorm(a + "layers.0.final_layer_norm", t);
        TowerNorm(a + "ln_post", t);
        TowerLinear(a + "proj1", t, t);
        TowerLinear(a + "proj2", H, t);
        for (const char* proj : {"talker.text_projection.", "talker.hidden_projection."}) {
          TowerLinear(std::string(proj) + "linear_fc1", H, H);
          TowerLinear(std::string(proj) + "linear_fc2", H, H);
        }
        return;
      }
    }
  }

 private:
  void Layer(const Stack& s, const Dims& d, int layer) {
    const std::string lp = std::string(s.prefix) + "layers." + std::to_string(layer) + ".";
    const uint64_t H = d.hidden;
    Norm(lp + "input_layernorm", H);
    Norm(lp + "post_attention_layernorm", H);
    switch (f_.attention) {
      case Attention::kMha:
        SelfAttention(lp + "self_attn.", d, /*gated=*/false);
        break;
      case Attention::kMla:
        Mla(lp + "self_attn.", d);
        break;
      case Attention::kQwen3NextHybrid:
      case Attention::kQwen35Hybrid:
        if (IsFullAttentionLayer(d, layer)) {
          SelfAttention(lp + "self_attn.", d, /*gated=*/true);
        } else {
          LinearAttention(lp + "linear_attn.", d, f_.attention == Attention::kQwen35Hybrid);
        }
        break;
    }
    if (IsDenseLayer(f_, d, layer)) {
      Mlp(lp + "mlp.", d.dense_intermediate, H);
    } else {
      Moe(lp, s.shared, d);
    }
  }

  void SelfAttention(const std::string& ap, const Dims& d, bool gated) {
    const uint64_t H = d.hidden, q = uint64_t(d.heads) * d.head_dim, kv = uint64_t(d.kv_heads) * d.head_dim;
    // Gated attention (Qwen3-Next, Qwen3.5) projects the output gate with q.
    Linear(ap + "q_proj", gated ? 2 * q : q, H);
    Linear(ap + "k_proj", kv, H);
    Linear(ap + "v_proj", kv, H);
    Linear(ap + "o_proj", H, q);
    if (f_.attn_bias != AttnBias::kNone) {
      Plain(ap + "q_proj.bias", {gated ? 2 * q : q}, base_, Fill::kWeight);
      Plain(ap + "k_proj.bias", {kv}, base_, Fill::kWeight);
      Plain(ap + "v_proj.bias", {kv}, base_, Fill::kWeight);
      if (f_.attn_bias == AttnBias::kAll) Plain(ap + "o_proj.bias", {H}, base_, Fill::kWeight);
    }
    const uint64_t hd = d.head_dim;
    switch (f_.qk_norm) {
      case QkNorm::kNone:
        break;
      case QkNorm::kPerHead:
        RmsNorm(ap + "q_norm", hd);
        RmsNorm(ap + "k_norm", hd);
        break;
      case QkNorm::kFullWidth:
        RmsNorm(ap + "q_norm", q);
        RmsNorm(ap + "k_norm", kv);
        break;
      case QkNorm::kHunyuan:
        RmsNorm(ap + "query_layernorm", hd);
        RmsNorm(ap + "key_layernorm", hd);
        break;
    }
  }

  void Mla(const std::string& ap, const Dims& d) {
    const uint64_t H = d.hidden, heads = d.heads;
    Linear(ap + "q_a_proj", d.q_lora, H);
    RmsNorm(ap + "q_a_layernorm", d.q_lora);
    Linear(ap + "q_b_proj", heads * (d.qk_nope + d.qk_rope), d.q_lora);
    Linear(ap + "kv_a_proj_with_mqa", uint64_t(d.kv_lora) + d.qk_rope, H);
    RmsNorm(ap + "kv_a_layernorm", d.kv_lora);
    Linear(ap + "kv_b_proj", heads * (d.qk_nope + d.v_head), d.kv_lora);
    Linear(ap + "o_proj", H, heads * d.v_head);
  }

  void LinearAttention(const std::string& ap, const Dims& d, bool split) {
    const uint64_t H = d.hidden, nv = d.lin_v_heads;
    const uint64_t kd = uint64_t(d.lin_k_heads) * d.lin_k_dim, vd = nv * d.lin_v_dim;
    const uint64_t conv = 2 * kd + vd;
    if (split) {  // Qwen3.5
      Linear(ap + "in_proj_qkv", conv, H);
      Linear(ap + "in_proj_z", vd, H);
      Linear(ap + "in_proj_b", nv, H);
      Linear(ap + "in_proj_a", nv, H);
    } else {  // Qwen3-Next
      Linear(ap + "in_proj_qkvz", 2 * kd + 2 * vd, H);
      Linear(ap + "in_proj_ba", 2 * nv, H);
    }
    Plain(ap + "conv1d.weight", {conv, 1, uint64_t(d.conv_kernel)}, base_, Fill::kWeight);
    Plain(ap + "dt_bias", {nv}, base_, Fill::kNorm);
    Plain(ap + "A_log", {nv}, base_, Fill::kNorm);
    RmsNorm(ap + "norm", d.lin_v_dim);
    Linear(ap + "out_proj", H, vd);
  }

  void Mlp(const std::string& mp, uint64_t width, uint64_t H) {
    Linear(mp + "gate_proj", width, H);
    Linear(mp + "up_proj", width, H);
    Linear(mp + "down_proj", H, width);
  }

  void Moe(const std::string& lp, Shared shared, const Dims& d) {
    const uint64_t H = d.hidden, E = d.experts, I = d.intermediate;
    const bool per_expert = layout_ == Layout::kPerExpert;
    const std::string hub = lp + std::string(f_.hub_block) + ".";
    // transformers v5 renames `.block_sparse_moe.` to `.mlp.` everywhere.
    const std::string out = per_expert ? hub : lp + "mlp.";
    Plain(hub + std::string(f_.router_leaf), out + std::string(per_expert ? f_.router_leaf : f_.fused_router_leaf),
          {E, H}, f_.router_f32 ? DType::F32 : base_, Fill::kWeight);
    if (f_.correction_bias) {
      Plain(hub + "gate.e_score_correction_bias", out + "gate.e_score_correction_bias", {E}, DType::F32, Fill::kWeight);
    }
    Experts(hub + "experts.", out + "experts.", d);
    switch (shared) {
      case Shared::kNone:
        break;
      case Shared::kQwen:
        Mlp(lp + "mlp.shared_expert.", d.shared_intermediate, H);
        Plain(lp + "mlp.shared_expert_gate.weight", {1, H}, base_, Fill::kWeight);
        break;
      case Shared::kDeepseek:
        Mlp(lp + "mlp.shared_experts.", I * d.n_shared, H);
        break;
      case Shared::kHunyuan:
        Mlp(lp + "mlp.shared_mlp.", I, H);
        break;
    }
  }

  void Experts(const std::string& hub, const std::string& out, const Dims& d) {
    const uint64_t H = d.hidden, E = d.experts, I = d.intermediate;
    static constexpr std::array<const char*, 3> kGateUpDown = {"gate_proj", "up_proj", "down_proj"};
    static constexpr std::array<const char*, 3> kW = {"w1", "w3", "w2"};  // w1 = gate, w3 = up, w2 = down
    const auto& leaf = f_.expert_names == ExpertNames::kW1W3W2 ? kW : kGateUpDown;
    auto name = [&](uint64_t j, int which, const char* suffix) {
      return hub + std::to_string(j) + "." + leaf[which] + suffix;
    };
    if (layout_ == Layout::kPerExpert) {
      for (uint64_t j = 0; j < E; ++j) {
        Linear(hub + std::to_string(j) + "." + leaf[0], I, H);
        Linear(hub + std::to_string(j) + "." + leaf[1], I, H);
        Linear(hub + std::to_string(j) + "." + leaf[2], H, I);
      }
      return;
    }
    for (const char* suffix : {".weight", ".weight_scale_inv"}) {
      const bool scale = suffix[7] == '_';
      if (scale && !fp8_) break;
      std::vector<uint64_t> gate_up, down;
      for (uint64_t j = 0; j < E; ++j) {
        gate_up.push_back(SourceKey(seed_, name(j, 0, suffix)));
        gate_up.push_back(SourceKey(seed_, name(j, 1, suffix)));
        down.push_back(SourceKey(seed_, name(j, 2, suffix)));
      }
      const DType dt = scale ? DType::F32 : fp8_ ? DType::F8_E4M3 : base_;
      const Fill fill = scale ? Fill::kScale : Fill::kWeight;
      const uint64_t i_rows = scale ? CeilDiv(I, kBlock) : I, h_rows = scale ? CeilDiv(H, kBlock) : H;
      const std::string tail = scale ? "_scale_inv" : "";
      Fused(out + "gate_up_proj" + tail, dt, fill, std::move(gate_up), 2, i_rows, h_rows);
      Fused(out + "down_proj" + tail, dt, fill, std::move(down), 1, h_rows, i_rows);
    }
  }

  void Fused(std::string name, DType dtype, Fill fill, std::vector<uint64_t> keys, uint32_t group, uint64_t rows,
             uint64_t cols) {
    PlannedTensor t;
    t.name = std::move(name);
    t.dtype = dtype;
    t.fill = fill;
    const uint64_t E = keys.size() / group;
    t.transposed = layout_ == Layout::kFusedTransposed;
    t.shape =
        t.transposed ? std::vector<uint64_t>{E, cols, group * rows} : std::vector<uint64_t>{E, group * rows, cols};
    t.keys = std::move(keys);
    t.group = group;
    t.rows = rows;
    t.cols = cols;
    Add(std::move(t));
  }

  // A linear layer's weight; in FP8 checkpoints an FP8 weight plus its
  // 128x128 block scales.
  void Linear(const std::string& base, uint64_t rows, uint64_t cols) {
    if (!fp8_) {
      Plain(base + ".weight", {rows, cols}, base_, Fill::kWeight);
      return;
    }
    Plain(base + ".weight", {rows, cols}, DType::F8_E4M3, Fill::kWeight);
    Plain(base + ".weight_scale_inv", {CeilDiv(rows, kBlock), CeilDiv(cols, kBlock)}, DType::F32, Fill::kScale);
  }

  void Norm(const std::string& base, uint64_t n) {
    Plain(base + ".weight", {n}, base_, Fill::kNorm);
    if (f_.layer_norm_bias) Plain(base + ".bias", {n}, base_, Fill::kWeight);
  }

  void RmsNorm(const std::string& base, uint64_t n) { Plain(base + ".weight", {n}, base_, Fill::kNorm); }

  void VisionTower(const std::string& v, uint64_t t, uint64_t H) {
    Plain(v + "patch_embed.proj.weight", {t, 3, 2, 16, 16}, base_, Fill::kWeight);
    Plain(v + "patch_embed.proj.bias", {t}, base_, Fill::kWeight);
    TowerNorm(v + "blocks.0.norm1", t);
    TowerNorm(v + "blocks.0.norm2", t);
    TowerLinear(v + "blocks.0.attn.qkv", 3 * t, t);
    TowerLinear(v + "blocks.0.attn.proj", t, t);
    TowerLinear(v + "blocks.0.mlp.linear_fc1", 4 * t, t);
    TowerLinear(v + "blocks.0.mlp.linear_fc2", t, 4 * t);
    TowerNorm(v + "merger.norm", t);
    TowerLinear(v + "merger.linear_fc1", 4 * t, 4 * t);
    TowerLinear(v + "merger.linear_fc2", H, 4 * t);
  }

  // Towers are never quantized.
  void TowerLinear(const std::string& base, uint64_t rows, uint64_t cols) {
    Plain(base + ".weight", {rows, cols}, base_, Fill::kWeight);
    Plain(base + ".bias", {rows}, base_, Fill::kWeight);
  }

  void TowerNorm(const std::string& base, uint64_t n) {
    Plain(base + ".weight", {n}, base_, Fill::kNorm);
    Plain(base + ".bias", {n}, base_, Fill::kWeight);
  }

  void Plain(const std::string& name, std::vector<uint64_t> shape, DType dtype, Fill fill) {
    Plain(name, name, std::move(shape), dtype, fill);
  }

  // `hub_name` keys the values; `name` is what the tensor is called in this layout.
  void Plain(const std::string& hub_name, std::string name, std::vector<uint64_t> shape, DType dtype, Fill fill) {
    PlannedTensor t;
    t.name = std::move(name);
    t.dtype = dtype;
    t.fill = fill;
    t.shape = std::move(shape);
    t.keys = {SourceKey(seed_, hub_name)};
    auto n = NumElements(t.shape);
    t.rows = n.value_or(0);
    t.cols = 1;
    Add(std::move(t));
  }

  void Add(PlannedTensor t) {
    auto n = NumElements(t.shape);
    auto bytes = n ? ByteSize(t.dtype, *n) : std::nullopt;
    if (!bytes) {
      if (status_.ok()) status_ = Status::InvalidArgument("tensor '" + t.name + "' is too large");
      return;
    }
    t.nbytes = *bytes;
    tensors_.push_back(std::move(t));
  }

  const Family& f_;
  const bool fp8_;
  const DType base_;
  const Layout layout_;
  const uint64_t seed_;
  Status status_;
  std::vector<PlannedTensor> tensors_;
};

json& At(json& root, std::string_view path) {
  json* j = &root;
  while (!path.empty()) {
    size_t dot = path.find('.');
    j = &(*j)[std::string(path.substr(0, dot))];
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return *j;
}

json TextConfig(const Family& f, const Dims& d, WeightType wt) {
  json c = {
      {"hidden_size", d.hidden},           {"num_hidden_layers", d.layers}, {"num_attention_heads", d.heads},
      {"num_key_value_heads", d.kv_heads}, {"vocab_size", d.vocab},         {"max_position_embeddings", d.max_position},
      {"rope_theta", d.rope_theta},        {"rms_norm_eps", 1e-06},         {"hidden_act", "silu"},
      {"initializer_range", 0.02},         {"tie_word_embeddings", false},  {"use_cache", true},
      {"torch_dtype", TorchDType(wt)},
  };
  c[std::string(f.experts_field)] = d.experts;
  c[std::string(f.intermediate_field)] = d.intermediate;
  c[std::string(f.topk_field)] = std::min(d.topk, d.experts);
  if (f.dense_intermediate_field) c["intermediate_size"] = d.dense_intermediate;
  if (f.dense_first_layers) c["first_k_dense_replace"] = d.first_k_dense;
  if (f.grouped_routing) {
    // Expert groups must divide the experts; a sliced or resized model
    // falls back to one group.
    const bool fits = d.n_group > 0 && d.experts % d.n_group == 0;
    c["n_group"] = fits ? d.n_group : 1;
    c["topk_group"] = fits ? d.topk_group : 1;
  }
  if (f.attention == Attention::kMla) {
    c["q_lora_rank"] = d.q_lora;
    c["kv_lora_rank"] = d.kv_lora;
    c["qk_nope_head_dim"] = d.qk_nope;
    c["qk_rope_head_dim"] = d.qk_rope;
    c["v_head_dim"] = d.v_head;
  } else {
    c["head_dim"] = d.head_dim;
  }
  if (f.attention == Attention::kQwen3NextHybrid || f.attention == Attention::kQwen35Hybrid) {
    json types = json::array();
    for (int l = 0; l < d.layers; ++l)
      types.push_back(IsFullAttentionLayer(d, l) ? "full_attention" : "linear_attention");
    c["layer_types"] = std::move(types);
    c["full_attention_interval"] = d.full_attention_interval;
    c["linear_num_key_heads"] = d.lin_k_heads;
    c["linear_num_value_heads"] = d.lin_v_heads;
    c["linear_key_head_dim"] = d.lin_k_dim;
    c["linear_value_head_dim"] = d.lin_v_dim;
    c["linear_conv_kernel_dim"] = d.conv_kernel;
  }
  c.update(json::parse(f.extra_config));
  return c;
}

void AddSharedFields(json& c, Shared shared, const Dims& d) {
  if (shared == Shared::kQwen) c["shared_expert_intermediate_size"] = d.shared_intermediate;
  if (shared == Shared::kDeepseek) c["n_shared_experts"] = d.n_shared;
}

json Config(const Family& f, const Dims& dims, WeightType wt) {
  json cfg = json::object();
  for (const SubConfig& s : f.sub_configs) At(cfg, s.path)["model_type"] = s.model_type;
  for (const Stack& s : f.stacks) {
    const Dims d = StackDims(dims, s);
    json& obj = At(cfg, s.config_path);
    obj.update(TextConfig(f, d, wt));
    AddSharedFields(obj, s.shared, d);
    if (!s.model_type.empty()) obj["model_type"] = s.model_type;
    if (s.codec_vocab) obj["vocab_size"] = d.codec_vocab;
  }
  const int t = dims.tower_hidden;
  const json vision = {{"depth", 1},
                       {"hidden_size", t},
                       {"intermediate_size", 4 * t},
                       {"num_heads", 2},
                       {"out_hidden_size", dims.hidden},
                       {"patch_size", 16},
                       {"temporal_patch_size", 2},
                       {"spatial_merge_size", 2},
                       {"in_channels", 3}};
  switch (f.towers) {
    case Towers::kNone:
      break;
    case Towers::kVision:
      cfg["vision_config"] = vision;
      break;
    case Towers::kOmni:
      At(cfg, "thinker_config.vision_config") = vision;
      At(cfg, "thinker_config.audio_config") = {{"d_model", t},
                                                {"encoder_layers", 1},
                                                {"encoder_attention_heads", 2},
                                                {"encoder_ffn_dim", 4 * t},
                                                {"output_dim", dims.hidden}};
      break;
  }
  cfg["model_type"] = f.model_type;
  cfg["architectures"] = {f.architecture};
  cfg["torch_dtype"] = TorchDType(wt);
  cfg["tie_word_embeddings"] = false;
  if (wt == WeightType::kFP8) {
    cfg["quantization_config"] = {{"quant_method", "fp8"},
                                  {"fmt", "e4m3"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {kBlock, kBlock}}};
  }
  return cfg;
}

}  // namespace

Result<Model> BuildModel(const Family& family, const Dims& dims, WeightType dtype, Layout layout, uint64_t seed) {
  Builder b(family, dtype, layout, seed);
  for (const Stack& s : family.stacks) b.AddStack(s, StackDims(dims, s));
  b.AddTowers(dims);
  MOEPACK_RETURN_IF_ERROR(b.status());
  Model m;
  m.tensors = b.Take();
  m.config = Config(family, dims, dtype);
  return m;
}

}  // namespace moepack::synth
