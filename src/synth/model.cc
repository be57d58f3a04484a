#include "synth/model.h"

#include <algorithm>
#include <array>
#include <utility>

#include "moepack/safetensors.h"

namespace moepack::synth {
namespace {

using nlohmann::json;

constexpr uint64_t kBlock = 128;  // FP8 weight_block_size, both dims
constexpr uint64_t kMxBlock = 32, kMxBlockBytes = 16;  // MXFP4: 32 e2m1 values in 16 bytes, one e8m0 scale
constexpr uint64_t kHcMult = 4;   // DeepSeek-V4's hyper-connection streams
constexpr uint64_t kCsaRate = 4, kHcaRate = 128;  // DeepSeek-V4's compression rates

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

bool IsDenseLayer(const Family& f, const Dims& d, int layer) {
  switch (f.dense_layers) {
    case DenseLayers::kNone:
      return false;
    case DenseLayers::kFirstK:
    case DenseLayers::kLayerTypes:
      return layer < d.first_k_dense;
    case DenseLayers::kPeriod:
    case DenseLayers::kMoeLayers:
      return layer % 2 == 0;
  }
  return false;
}

bool IsFullAttentionLayer(const Dims& d, int layer) {
  return d.full_attention_interval > 0 && (layer + 1) % d.full_attention_interval == 0;
}

// gpt_oss's layer_types: sliding-window and full attention alternate.
bool IsSlidingWindowLayer(int layer) { return layer % 2 == 0; }

// The expert width of one share of an expert list.
uint64_t ShareWidth(const ExpertShare& s, const Dims& d) {
  return std::max<uint64_t>(1, uint64_t(d.intermediate) / uint64_t(std::max(1, s.width_divisor)));
}

// Nemotron-H's hybrid_override_pattern: every other layer MoE ('E'), the
// others Mamba2 ('M') with an attention layer ('*') every fourth.
char NemotronLayerKind(int layer) { return layer % 2 == 1 ? 'E' : (layer + 2) % 4 == 0 ? '*' : 'M'; }

// DeepSeek-V4's compress_ratios: a sliding-window layer first, then
// heavily compressed (128) and compressed sparse (4, with the indexer) layers.
uint64_t V4CompressRatio(int layer) { return layer == 0 ? 0 : layer % 2 == 1 ? kCsaRate : kHcaRate; }

uint64_t SharedExpertWidth(const Shared& s, const Dims& d) {
  switch (s.width) {
    case SharedWidth::kField:
      return d.shared_intermediate;
    case SharedWidth::kTimesCount:
      return uint64_t(d.intermediate) * d.n_shared;
    case SharedWidth::kExpert:
      return d.intermediate;
  }
  return 0;
}

// gate, up, down leaves; non-gated names have no gate ("").
std::array<const char*, 3> Leaves(ExpertNames n) {
  switch (n) {
    case ExpertNames::kGateUpDown:
      return {"gate_proj", "up_proj", "down_proj"};
    case ExpertNames::kW1W3W2:
      return {"w1", "w3", "w2"};  // w1 = gate, w3 = up, w2 = down
    case ExpertNames::kUpDown:
      return {"", "up_proj", "down_proj"};
    case ExpertNames::kInputOutput:
      break;  // one tensor holds gate and up (Builder::Mlp)
  }
  return {"", "", ""};
}

std::string_view Or(std::string_view v, std::string_view fallback) { return v.empty() ? fallback : v; }

// A tensor's name in both layouts: as the Hub stores it and as v5 holds it.
struct Name {
  std::string hub, v5;
  Name operator+(std::string_view leaf) const { return {hub + std::string(leaf), v5 + std::string(leaf)}; }
  // A leaf v5 renames.
  Name Leaf(std::string_view hub_leaf, std::string_view v5_leaf) const {
    return {hub + std::string(hub_leaf), v5 + std::string(Or(v5_leaf, hub_leaf))};
  }
};

Name Same(std::string n) { return {n, n}; }

class Builder {
 public:
  Builder(const Family& family, WeightType weight_type, Layout layout, uint64_t seed)
      : f_(family),
        fp8_(weight_type == WeightType::kFP8),
        mxfp4_(weight_type == WeightType::kMXFP4),
        base_(BaseDType(weight_type)),
        layout_(layout),
        seed_(seed) {}

  Status status() const { return status_; }
  std::vector<PlannedTensor> Take() { return std::move(tensors_); }

  void AddStack(const Stack& s, const Dims& d) {
    const Name p{std::string(s.prefix), std::string(Or(s.fused_prefix, s.prefix))};
    const uint64_t H = d.hidden;
    const uint64_t vocab = s.codec_vocab ? d.codec_vocab : d.vocab;
    Plain(p.Leaf(s.embed, s.fused_embed), {vocab, H}, base_, Fill::kWeight);
    for (int layer = 0; layer < d.layers; ++layer) Layer(s, d, layer);
    if (f_.attention == Attention::kDeepseekV4) {
      const Name hc{"hc_head_", p.v5 + "hc_head.hc_"};
      Plain(hc + "fn", {kHcMult, kHcMult * H}, DType::F32, Fill::kWeight);
      Plain(hc + "base", {kHcMult}, DType::F32, Fill::kWeight);
      Plain(hc + "scale", {1}, DType::F32, Fill::kNorm);
    }
    Norm(p + s.final_norm, H);
    const Name head{std::string(s.head), std::string(Or(s.fused_head, s.head))};
    Plain(head, {vocab, H}, base_, Fill::kWeight);
    if (f_.lm_head_bias) {
      Plain(Same(head.hub.substr(0, head.hub.size() - 6) + "bias"), {vocab}, base_, Fill::kWeight);
    }
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
        VisionTower(Same("model.visual."), t, H);
        return;
      case Towers::kOmniThinker:
        VisionTower(Same("visual."), t, H);
        AudioTower("audio_tower.", t, H);
        return;
      case Towers::kOmni:
        VisionTower(Same("thinker.visual."), t, H);
        AudioTower("thinker.audio_tower.", t, H);
        for (const char* proj : {"talker.text_projection.", "talker.hidden_projection."}) {
          TowerLinear(Same(std::string(proj) + "linear_fc1"), H, H);
          TowerLinear(Same(std::string(proj) + "linear_fc2"), H, H);
        }
        return;
      case Towers::kLlama4:
        VisionTower(Same("vision_model."), t, H);
        Plain(Same("multi_modal_projector.linear_1.weight"), {H, t}, base_, Fill::kWeight);
        return;
      case Towers::kErnieVl:
        VisionTower({"vision_model.", "vision_tower."}, t, H);
        ErnieResampler(t, H);
        return;
    }
  }

 private:
  bool PerExpert() const { return layout_ == Layout::kPerExpert; }
  // Whether tensors go by their Hub names (else by v5's).
  bool HubNames() const { return layout_ == Layout::kPerExpert || layout_ == Layout::kFusedHubNames; }

  void Layer(const Stack& s, const Dims& d, int layer) {
    const std::string l = "layers." + std::to_string(layer) + ".";
    const Name lp{std::string(s.prefix) + l, std::string(Or(s.fused_prefix, s.prefix)) + l};
    const uint64_t H = d.hidden;
    switch (f_.attention) {
      case Attention::kNemotronHybrid:
        return NemotronLayer(lp, s, d, layer);
      case Attention::kDeepseekV4:
        return V4Layer(lp, s, d, layer);
      case Attention::kLongcat:
        return LongcatLayer(lp, s, d);
      default:
        break;
    }
    Norm(lp + f_.attn_norm, H);
    Norm(lp + f_.ffn_norm, H);
    if (f_.sandwich_norms) {
      Norm(lp + "pre_mlp_layernorm", H);
      Norm(lp + "post_mlp_layernorm", H);
    }
    Mixer(lp, d, layer);
    if (IsDenseLayer(f_, d, layer)) {
      // Kimi-Linear's dense layers are `mlp`, its MoE layers `block_sparse_moe`.
      const std::string_view block = f_.hub_block == "block_sparse_moe" ? "mlp" : f_.hub_block;
      const Name mp{lp.hub + std::string(block) + ".", lp.v5 + std::string(Or(f_.fused_block, "mlp")) + "."};
      Mlp(mp, d.dense_intermediate, H, f_.dense_names, f_.dense_names);
    } else {
      Moe(lp, s.shared, d);
    }
  }

  void Mixer(const Name& lp, const Dims& d, int layer) {
    const bool full = IsFullAttentionLayer(d, layer);
    switch (f_.attention) {
      case Attention::kMha:
        return SelfAttention(lp + "self_attn.", d, /*gated=*/false);
      case Attention::kMla:
        return Mla(lp + "self_attn.", d, /*q_lora=*/true);
      case Attention::kMlaIndexer:
        Mla(lp + "self_attn.", d, /*q_lora=*/true);
        return Indexer(lp + "self_attn.indexer.", d);
      case Attention::kQwen3NextHybrid:
      case Attention::kQwen35Hybrid:
        if (full) return SelfAttention(lp + "self_attn.", d, /*gated=*/true);
        return LinearAttention(lp + "linear_attn.", d, f_.attention == Attention::kQwen35Hybrid);
      case Attention::kKimiHybrid:
        if (full) return Mla(lp + "self_attn.", d, /*q_lora=*/false);
        return KimiDeltaAttention(lp + "self_attn.", d);
      case Attention::kLfm2Hybrid:
        if (full) return SelfAttention(lp + "self_attn.", d, /*gated=*/false, "out_proj");
        return ShortConv(lp + "conv.", d);
      case Attention::kJambaHybrid:
        if (full) return SelfAttention(lp + "self_attn.", d, /*gated=*/false);
        return Mamba(lp + "mamba.", d);
      case Attention::kSlidingWindow:
        return SelfAttention(lp + "self_attn.", d, /*gated=*/false);
      case Attention::kGraniteHybrid:
        if (full) return SelfAttention(lp + "self_attn.", d, /*gated=*/false);
        return Mamba2(lp + "mamba.", d);
      case Attention::kLongcat:
      case Attention::kNemotronHybrid:
      case Attention::kDeepseekV4:
        break;  // whole layers of their own
    }
  }

  void SelfAttention(const Name& ap, const Dims& d, bool gated, std::string_view out_leaf = "o_proj") {
    const uint64_t H = d.hidden, q = uint64_t(d.heads) * d.head_dim, kv = uint64_t(d.kv_heads) * d.head_dim;
    // Gated attention (Qwen3-Next, Qwen3.5) projects the output gate with q.
    Linear(ap + "q_proj", gated ? 2 * q : q, H);
    Linear(ap + "k_proj", kv, H);
    Linear(ap + "v_proj", kv, H);
    Linear(ap + out_leaf, H, q);
    if (f_.attn_output_gate) Linear(ap + "gate_proj", q, H);
    if (f_.attn_bias != AttnBias::kNone) {
      Plain(ap + "q_proj.bias", {gated ? 2 * q : q}, base_, Fill::kWeight);
      Plain(ap + "k_proj.bias", {kv}, base_, Fill::kWeight);
      Plain(ap + "v_proj.bias", {kv}, base_, Fill::kWeight);
      if (f_.attn_bias == AttnBias::kAll) Plain(ap + "o_proj.bias", {H}, base_, Fill::kWeight);
    }
    if (!f_.sinks_leaf.empty()) {
      Plain(ap.Leaf(f_.sinks_leaf, f_.fused_sinks_leaf), {uint64_t(d.heads)}, f_.sinks_f32 ? DType::F32 : base_,
            Fill::kWeight);
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
      case QkNorm::kLfm2:
        RmsNorm(ap + "q_layernorm", hd);
        RmsNorm(ap + "k_layernorm", hd);
        break;
    }
  }

  // Multi-head latent attention; without a q LoRA (Kimi-Linear) q is one projection.
  void Mla(const Name& ap, const Dims& d, bool q_lora) {
    const uint64_t H = d.hidden, heads = d.heads;
    if (q_lora) {
      Linear(ap + "q_a_proj", d.q_lora, H);
      RmsNorm(ap + "q_a_layernorm", d.q_lora);
      Linear(ap + "q_b_proj", heads * (d.qk_nope + d.qk_rope), d.q_lora);
    } else {
      Linear(ap + "q_proj", heads * (d.qk_nope + d.qk_rope), H);
    }
    Linear(ap + "kv_a_proj_with_mqa", uint64_t(d.kv_lora) + d.qk_rope, H);
    RmsNorm(ap + "kv_a_layernorm", d.kv_lora);
    Linear(ap + "kv_b_proj", heads * (d.qk_nope + d.v_head), d.kv_lora);
    Linear(ap + "o_proj", H, heads * d.v_head);
  }

  // DeepSeek-V3.2's lightning indexer (one head per attention head here).
  void Indexer(const Name& ip, const Dims& d) {
    const uint64_t H = d.hidden, heads = d.heads, hd = d.head_dim;
    Linear(ip + "wq_b", heads * hd, d.q_lora);
    Linear(ip + "wk", hd, H);
    Plain(ip + "k_norm.weight", {hd}, base_, Fill::kNorm);
    Plain(ip + "k_norm.bias", {hd}, base_, Fill::kWeight);
    Plain(ip + "weights_proj.weight", {heads, H}, base_, Fill::kWeight);
  }

  void LinearAttention(const Name& ap, const Dims& d, bool split) {
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

  // Kimi Delta Attention: v5 moves the forget gate's parameters under
  // self_attn.forget_gate.
  void KimiDeltaAttention(const Name& ap, const Dims& d) {
    const uint64_t H = d.hidden, nh = d.lin_v_heads, hd = d.lin_v_dim, w = nh * hd;
    for (const char* p : {"q_proj", "k_proj", "v_proj"}) Linear(ap + p, w, H);
    for (const char* c : {"q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight"}) {
      Plain(ap + c, {w, 1, uint64_t(d.conv_kernel)}, base_, Fill::kWeight);
    }
    Plain(ap.Leaf("A_log", "forget_gate.A_log"), {nh}, DType::F32, Fill::kNorm);
    Plain(ap.Leaf("dt_bias", "forget_gate.dt_bias"), {w}, DType::F32, Fill::kNorm);
    Linear(ap.Leaf("f_a_proj", "forget_gate.f_a_proj"), hd, H);
    Linear(ap.Leaf("f_b_proj", "forget_gate.f_b_proj"), w, hd);
    Linear(ap + "b_proj", nh, H);
    Linear(ap + "g_a_proj", hd, H);
    Linear(ap + "g_b_proj", w, hd);
    RmsNorm(ap + "o_norm", hd);
    Linear(ap + "o_proj", H, w);
  }

  // LFM2's gated short convolution.
  void ShortConv(const Name& cp, const Dims& d) {
    const uint64_t H = d.hidden;
    Linear(cp + "in_proj", 3 * H, H);
    Plain(cp + "conv.weight", {H, 1, uint64_t(d.conv_kernel)}, base_, Fill::kWeight);
    Linear(cp + "out_proj", H, H);
  }

  // Jamba's Mamba (v1) mixer: inner width 2H, state lin_k_dim.
  void Mamba(const Name& mp, const Dims& d) {
    const uint64_t H = d.hidden, inner = 2 * H, state = d.lin_k_dim, rank = CeilDiv(H, 16);
    Linear(mp + "in_proj", 2 * inner, H);
    Plain(mp + "conv1d.weight", {inner, 1, uint64_t(d.conv_kernel)}, base_, Fill::kWeight);
    Plain(mp + "conv1d.bias", {inner}, base_, Fill::kWeight);
    Linear(mp + "x_proj", rank + 2 * state, inner);
    Linear(mp + "dt_proj", inner, rank);
    Plain(mp + "dt_proj.bias", {inner}, base_, Fill::kWeight);
    Plain(mp + "A_log", {inner, state}, DType::F32, Fill::kNorm);
    Plain(mp + "D", {inner}, DType::F32, Fill::kNorm);
    Linear(mp + "out_proj", H, inner);
    RmsNorm(mp + "dt_layernorm", rank);
    RmsNorm(mp + "b_layernorm", state);
    RmsNorm(mp + "c_layernorm", state);
  }

  // Nemotron-H's Mamba2 mixer: lin_v_heads heads of lin_v_dim, lin_k_heads
  // groups of state size lin_k_dim.
  void Mamba2(const Name& mp, const Dims& d) {
    const uint64_t H = d.hidden, heads = d.lin_v_heads, inner = heads * d.lin_v_dim;
    const uint64_t bc = 2 * uint64_t(d.lin_k_heads) * d.lin_k_dim;
    Linear(mp + "in_proj", 2 * inner + bc + heads, H);
    Plain(mp + "conv1d.weight", {inner + bc, 1, uint64_t(d.conv_kernel)}, base_, Fill::kWeight);
    Plain(mp + "conv1d.bias", {inner + bc}, base_, Fill::kWeight);
    Plain(mp + "dt_bias", {heads}, DType::F32, Fill::kNorm);
    Plain(mp + "A_log", {heads}, DType::F32, Fill::kNorm);
    Plain(mp + "D", {heads}, DType::F32, Fill::kNorm);
    RmsNorm(mp + "norm", inner);
    Linear(mp + "out_proj", H, inner);
  }

  // One norm and one mixer per layer; the MoE mixer is the MoE block.
  void NemotronLayer(const Name& lp, const Stack& s, const Dims& d, int layer) {
    RmsNorm(lp + "norm", d.hidden);
    switch (NemotronLayerKind(layer)) {
      case 'E':
        return Moe(lp, s.shared, d);
      case '*':
        return SelfAttention(lp + "mixer.", d, /*gated=*/false);
      default:
        return Mamba2(lp + "mixer.", d);
    }
  }

  // Two attention blocks, each with its norms and dense MLP, and one MoE block.
  void LongcatLayer(const Name& lp, const Stack& s, const Dims& d) {
    const uint64_t H = d.hidden;
    for (const char* k : {"0", "1"}) {
      Norm(lp + "input_layernorm." + k, H);
      Norm(lp + "post_attention_layernorm." + k, H);
      Mla(lp + "self_attn." + k + ".", d, /*q_lora=*/true);
      Mlp(lp + "mlps." + k + ".", d.dense_intermediate, H, ExpertNames::kGateUpDown, ExpertNames::kGateUpDown);
    }
    Moe(lp, s.shared, d);
  }

  // DeepSeek-V4 as its upstream checkpoint names it (layers.N.attn / ffn,
  // wq_a, hc_attn_fn, ...) and as v5 does (model.layers.N.self_attn / mlp, ...).
  void V4Layer(const Name& lp, const Stack& s, const Dims& d, int layer) {
    const uint64_t H = d.hidden, heads = d.heads, hd = d.head_dim, ql = d.q_lora;
    const uint64_t groups = 2, o_lora = ql / 2;
    Norm(lp.Leaf("attn_norm", "input_layernorm"), H);
    Norm(lp.Leaf("ffn_norm", "post_attention_layernorm"), H);
    const Name ap = lp.Leaf("attn.", "self_attn.");
    Linear(ap.Leaf("wq_a", "q_a_proj"), ql, H);
    RmsNorm(ap.Leaf("q_norm", "q_a_norm"), ql);
    Linear(ap.Leaf("wq_b", "q_b_proj"), heads * hd, ql);
    Linear(ap.Leaf("wkv", "kv_proj"), hd, H);
    RmsNorm(ap + "kv_norm", hd);
    Linear(ap.Leaf("wo_a", "o_a_proj"), groups * o_lora, heads * hd / groups);
    Linear(ap.Leaf("wo_b", "o_b_proj"), H, groups * o_lora);
    Plain(ap.Leaf("attn_sink", "sinks"), {heads}, DType::F32, Fill::kWeight);
    if (const uint64_t rate = V4CompressRatio(layer); rate > 0) {
      V4Compressor(ap + "compressor.", rate, hd, H);
      if (rate == kCsaRate) {
        // The indexer's compressor is flattened into the indexer in v5.
        const Name ip = ap.Leaf("indexer.", "compressor.indexer.");
        Linear(ip.Leaf("wq_b", "q_b_proj"), heads * hd, ql);
        Plain(ip.Leaf("weights_proj.weight", "scorer.weights_proj.weight"), {heads, H}, base_, Fill::kWeight);
        V4Compressor({ip.hub + "compressor.", ip.v5}, rate, hd, H);
      }
    }
    Moe(lp, s.shared, d);
    const uint64_t mix = (2 + kHcMult) * kHcMult;
    for (const auto& [hub, v5] : {std::pair{"hc_attn_", "attn_hc."}, std::pair{"hc_ffn_", "ffn_hc."}}) {
      const Name hc = lp.Leaf(hub, v5);
      Plain(hc + "fn", {mix, kHcMult * H}, DType::F32, Fill::kWeight);
      Plain(hc + "base", {mix}, DType::F32, Fill::kWeight);
      Plain(hc + "scale", {3}, DType::F32, Fill::kNorm);
    }
  }

  // Compressed KV: the overlapping compressor (rate 4) projects twice the head dim.
  // Upstream quantizes none of a compressor's projections (nor weights_proj).
  void V4Compressor(const Name& cp, uint64_t rate, uint64_t hd, uint64_t H) {
    const uint64_t width = rate == kCsaRate ? 2 * hd : hd;
    Plain(cp.Leaf("ape", "position_bias"), {rate, width}, DType::F32, Fill::kWeight);
    Plain(cp.Leaf("wkv.weight", "kv_proj.weight"), {width, H}, base_, Fill::kWeight);
    Plain(cp.Leaf("wgate.weight", "gate_proj.weight"), {width, H}, base_, Fill::kWeight);
    RmsNorm(cp.Leaf("norm", "kv_norm"), hd);
  }

  void Mlp(const Name& mp, uint64_t width, uint64_t H, ExpertNames hub_names, ExpertNames v5_names) {
    if (hub_names == ExpertNames::kInputOutput) {  // Granite's shared_mlp, the same in v5
      Linear(mp + "input_linear", 2 * width, H);
      Linear(mp + "output_linear", H, width);
      return;
    }
    const auto hub = Leaves(hub_names), v5 = Leaves(v5_names);
    if (hub[0][0] != '\0') Linear(mp.Leaf(hub[0], v5[0]), width, H);
    Linear(mp.Leaf(hub[1], v5[1]), width, H);
    Linear(mp.Leaf(hub[2], v5[2]), H, width);
  }

  void Moe(const Name& lp, const Shared& shared, const Dims& d) {
    const uint64_t H = d.hidden, E = d.experts;
    const Name block{lp.hub + std::string(f_.hub_block) + ".", lp.v5 + std::string(Or(f_.fused_block, "mlp")) + "."};
    if (f_.shares.empty()) {
      const uint64_t scored = f_.zero_experts ? E + std::max<uint64_t>(1, E / 2) : E;
      Plain(block.Leaf(f_.router_leaf, f_.fused_router_leaf), {scored, H}, f_.router_f32 ? DType::F32 : base_,
            Fill::kWeight);
      if (!f_.router_bias_leaf.empty()) Plain(block + f_.router_bias_leaf, {scored}, base_, Fill::kWeight);
      if (!f_.bias_leaf.empty()) {
        Plain(block.Leaf(f_.bias_leaf, f_.fused_bias_leaf),
              f_.bias_row ? std::vector<uint64_t>{1, scored} : std::vector<uint64_t>{scored}, DType::F32,
              Fill::kWeight);
      }
      Experts(block, block.v5 + "experts.", 0, E, d.intermediate, H);
    } else {
      ShareRouters(block, d);
      for (size_t k = 0; k < f_.shares.size(); ++k) {
        const ExpertShare& share = f_.shares[k];
        Experts(block, block.v5 + std::string(share.module) + ".experts.", k * E, E, ShareWidth(share, d), H);
      }
    }
    if (shared.hub.empty()) return;
    const Name& parent = shared.under_layer ? lp : block;
    Mlp(parent.Leaf(std::string(shared.hub) + ".", shared.v5.empty() ? "" : std::string(shared.v5) + "."),
        SharedExpertWidth(shared, d), H, shared.names, shared.fused_names);
    if (shared.gate) Plain(block + "shared_expert_gate.weight", {1, H}, base_, Fill::kWeight);
  }

  // One router per share of the expert list, [H, E] on the Hub and [E, H]
  // in v5, and the shares' correction biases: one [shares, E] tensor on the
  // Hub, a [1, E] row of it per share in v5.
  void ShareRouters(const Name& block, const Dims& d) {
    const uint64_t H = d.hidden, E = d.experts;
    std::vector<std::string> bias_parts;
    for (const ExpertShare& share : f_.shares) {
      const std::string v5 = block.v5 + std::string(share.module) + ".";
      TransposedMatrix({block.hub + std::string(share.hub_router), v5 + std::string(f_.fused_router_leaf)}, H, E,
                       f_.router_f32 ? DType::F32 : base_);
      bias_parts.push_back(v5 + std::string(f_.fused_bias_leaf));
    }
    if (!f_.bias_leaf.empty()) RowParts(block.hub + std::string(f_.bias_leaf), bias_parts, E);
  }

  // How this layout lays out a fused tensor's expert blocks.
  enum class Arrange { kRows, kTransposed, kInterleaved };

  Arrange Arrangement(bool gate_up) const {
    switch (f_.fused_form) {
      case FusedForm::kConcat:
        return layout_ == Layout::kFusedTransposed ? Arrange::kTransposed : Arrange::kRows;
      case FusedForm::kTransposed:
        return Arrange::kTransposed;
      case FusedForm::kInterleaved:
        return gate_up ? Arrange::kInterleaved : Arrange::kTransposed;
    }
    return Arrange::kRows;
  }

  // Experts [first, first + count) of the block's expert list, each `I`
  // wide: per expert in the per-expert layout, else fused under `fused`
  // (v5's "...experts." of the list or of its share) renumbered from 0.
  void Experts(const Name& block, const std::string& fused, uint64_t first, uint64_t count, uint64_t I, uint64_t H) {
    const auto leaf = Leaves(f_.expert_names);
    const bool gated = leaf[0][0] != '\0';
    auto hub = [&](uint64_t j, int which) {
      return block.hub + "experts." + std::to_string(first + j) + "." + leaf[which];
    };
    if (PerExpert()) {
      for (uint64_t j = 0; j < count; ++j) {
        if (gated) Linear(Same(hub(j, 0)), I, H);
        Linear(Same(hub(j, 1)), I, H);
        Linear(Same(hub(j, 2)), H, I);
        if (!f_.expert_bias) continue;
        if (gated) Plain(Same(hub(j, 0) + ".bias"), {I}, base_, Fill::kWeight);
        Plain(Same(hub(j, 1) + ".bias"), {I}, base_, Fill::kWeight);
        Plain(Same(hub(j, 2) + ".bias"), {H}, base_, Fill::kWeight);
      }
      return;
    }
    auto keys = [&](int which, const std::string& suffix) {
      std::vector<uint64_t> k;
      for (uint64_t j = 0; j < count; ++j) {
        if (which == 1 && gated) k.push_back(SourceKey(seed_, hub(j, 0) + suffix));
        k.push_back(SourceKey(seed_, hub(j, which) + suffix));
      }
      return k;
    };
    const uint32_t parts = gated ? 2 : 1;
    const std::string up_leaf = gated ? "gate_up_proj" : "up_proj";
    // Granite's Hub holds them under names of its own.
    const bool hub_fused = layout_ == Layout::kFusedHubNames;
    const std::string up_name = hub_fused ? block.hub + std::string(f_.hub_fused_gate_up) : fused + up_leaf;
    const std::string down_name = hub_fused ? block.hub + std::string(f_.hub_fused_down) : fused + "down_proj";
    if (mxfp4_) {
      Mxfp4(up_name, count, parts * I, H);
      Mxfp4(down_name, count, H, I);
    } else {
      for (const bool scale : {false, true}) {
        if (scale && !fp8_) break;
        const std::string suffix = scale ? std::string(f_.scale_suffix) : ".weight";
        const DType dt = scale ? DType::F32 : fp8_ ? DType::F8_E4M3 : base_;
        const Fill fill = scale ? Fill::kScale : Fill::kWeight;
        const uint64_t i_rows = scale ? CeilDiv(I, kBlock) : I, h_rows = scale ? CeilDiv(H, kBlock) : H;
        const std::string tail = scale ? "_scale_inv" : "";
        Fused(up_name + tail, dt, fill, keys(1, suffix), parts, i_rows, h_rows, Arrangement(true));
        Fused(down_name + tail, dt, fill, keys(2, suffix), 1, h_rows, i_rows, Arrangement(false));
      }
    }
    if (f_.expert_bias) {
      // A bias is a one-column matrix: interleaving its transpose interleaves it.
      const bool interleave = Arrangement(true) == Arrange::kInterleaved;
      FusedVectors(fused + up_leaf + "_bias", keys(1, ".bias"), parts, I, interleave);
      FusedVectors(fused + "down_proj_bias", keys(2, ".bias"), 1, H, false);
    }
  }

  void Fused(std::string name, DType dtype, Fill fill, std::vector<uint64_t> keys, uint32_t group, uint64_t rows,
             uint64_t cols, Arrange arrange) {
    PlannedTensor t;
    t.name = std::move(name);
    t.dtype = dtype;
    t.fill = fill;
    const uint64_t E = keys.size() / group;
    t.transposed = arrange != Arrange::kRows;
    t.interleaved = arrange == Arrange::kInterleaved;
    t.shape =
        t.transposed ? std::vector<uint64_t>{E, cols, group * rows} : std::vector<uint64_t>{E, group * rows, cols};
    t.keys = std::move(keys);
    t.group = group;
    t.rows = rows;
    t.cols = cols;
    Add(std::move(t));
  }

  // Per-expert vectors of `n` elements fused into [E, group * n], the
  // group's vectors one after the other or interleaved.
  void FusedVectors(std::string name, std::vector<uint64_t> keys, uint32_t group, uint64_t n, bool interleave) {
    PlannedTensor t;
    t.name = std::move(name);
    t.dtype = base_;
    t.fill = Fill::kWeight;
    t.shape = {keys.size() / group, group * n};
    t.keys = std::move(keys);
    t.group = group;
    t.rows = n;
    t.cols = 1;
    t.transposed = t.interleaved = interleave;
    Add(std::move(t));
  }

  // gpt_oss's MXFP4 experts as the Hub ships them: `name`_blocks
  // [E, rows, cols / 32, 16] (two e2m1 codes a byte) and `name`_scales
  // [E, rows, cols / 32] (e8m0), a block of 32 along each row. Their values
  // are their own: there is no per-expert MXFP4 form they come from.
  void Mxfp4(const std::string& name, uint64_t E, uint64_t rows, uint64_t cols) {
    const uint64_t blocks = cols / kMxBlock;
    Plain(Same(name + "_blocks"), {E, rows, blocks, kMxBlockBytes}, DType::U8, Fill::kBytes);
    Plain(Same(name + "_scales"), {E, rows, blocks}, DType::U8, Fill::kE8m0);
  }

  // A matrix the Hub stores [rows, cols] and v5 transposed, [cols, rows].
  void TransposedMatrix(const Name& name, uint64_t rows, uint64_t cols, DType dtype) {
    if (HubNames()) return Plain(name, {rows, cols}, dtype, Fill::kWeight);
    PlannedTensor t;
    t.name = name.v5;
    t.dtype = dtype;
    t.fill = Fill::kWeight;
    t.shape = {cols, rows};
    t.keys = {SourceKey(seed_, name.hub)};
    t.rows = rows;
    t.cols = cols;
    t.transposed = true;
    Add(std::move(t));
  }

  // An F32 tensor the Hub stores [parts, n] and v5 as one [1, n] tensor per row.
  void RowParts(const std::string& hub, const std::vector<std::string>& parts, uint64_t n) {
    if (HubNames()) return Plain(Same(hub), {parts.size(), n}, DType::F32, Fill::kWeight);
    for (size_t k = 0; k < parts.size(); ++k) {
      PlannedTensor t;
      t.name = parts[k];
      t.dtype = DType::F32;
      t.fill = Fill::kWeight;
      t.shape = {1, n};
      t.keys = {PartKey(SourceKey(seed_, hub), k * n)};
      t.rows = n;
      t.cols = 1;
      Add(std::move(t));
    }
  }

  // A linear layer's weight; in FP8 checkpoints an FP8 weight plus its
  // 128x128 block scales (named `scale_suffix` on the Hub, weight_scale_inv in v5).
  void Linear(const Name& base, uint64_t rows, uint64_t cols) {
    if (!fp8_) {
      Plain(base + ".weight", {rows, cols}, base_, Fill::kWeight);
      return;
    }
    Plain(base + ".weight", {rows, cols}, DType::F8_E4M3, Fill::kWeight);
    Plain(base.Leaf(f_.scale_suffix, ".weight_scale_inv"), {CeilDiv(rows, kBlock), CeilDiv(cols, kBlock)}, DType::F32,
          Fill::kScale);
  }

  void Norm(const Name& base, uint64_t n) {
    Plain(base + ".weight", {n}, base_, Fill::kNorm);
    if (f_.layer_norm_bias) Plain(base + ".bias", {n}, base_, Fill::kWeight);
  }

  void RmsNorm(const Name& base, uint64_t n) { Plain(base + ".weight", {n}, base_, Fill::kNorm); }

  void VisionTower(const Name& v, uint64_t t, uint64_t H) {
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

  void AudioTower(const std::string& audio, uint64_t t, uint64_t H) {
    const Name a = Same(audio);
    Plain(a + "conv2d1.weight", {t, 1, 3, 3}, base_, Fill::kWeight);
    Plain(a + "conv2d1.bias", {t}, base_, Fill::kWeight);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      Plain(a + ("layers.0.self_attn." + std::string(proj) + ".weight"), {t, t}, base_, Fill::kWeight);
    }
    TowerNorm(a + "layers.0.self_attn_layer_norm", t);
    TowerLinear(a + "layers.0.fc1", 4 * t, t);
    TowerLinear(a + "layers.0.fc2", t, 4 * t);
    TowerNorm(a + "layers.0.final_layer_norm", t);
    TowerNorm(a + "ln_post", t);
    TowerLinear(a + "proj1", t, t);
    TowerLinear(a + "proj2", H, t);
  }

  // ERNIE-4.5-VL's resampler: the 2x2 merged patches (4t) through
  // spatial_linear (Linear, GELU, Linear, LayerNorm: entries 0, 2, 3, which
  // v5 names fc1, fc2, ln), two frames (8t) through temporal_linear, then
  // mlp to the text width and after_norm.
  void ErnieResampler(uint64_t t, uint64_t H) {
    const std::string r = "model.resampler_model.";
    for (const char* part : {"spatial_linear.", "temporal_linear."}) {
      const std::string p = r + part;
      TowerLinear({p + "0", p + "fc1"}, 4 * t, std::string(part) == "spatial_linear." ? 4 * t : 8 * t);
      TowerLinear({p + "2", p + "fc2"}, 4 * t, 4 * t);
      TowerNorm({p + "3", p + "ln"}, 4 * t);
    }
    TowerLinear(Same(r + "mlp"), H, 4 * t);
    Plain(Same(r + "after_norm.weight"), {H}, base_, Fill::kNorm);
  }

  // Towers are never quantized.
  void TowerLinear(const Name& base, uint64_t rows, uint64_t cols) {
    Plain(base + ".weight", {rows, cols}, base_, Fill::kWeight);
    Plain(base + ".bias", {rows}, base_, Fill::kWeight);
  }

  void TowerNorm(const Name& base, uint64_t n) {
    Plain(base + ".weight", {n}, base_, Fill::kNorm);
    Plain(base + ".bias", {n}, base_, Fill::kWeight);
  }

  // The Hub name keys the values; the tensor is called by its name in this layout.
  void Plain(const Name& name, std::vector<uint64_t> shape, DType dtype, Fill fill) {
    PlannedTensor t;
    t.name = HubNames() ? name.hub : name.v5;
    t.dtype = dtype;
    t.fill = fill;
    t.shape = std::move(shape);
    t.keys = {SourceKey(seed_, name.hub)};
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
  const bool mxfp4_;
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

// 1-based indices of the layers whose mixer is (or is not) full attention,
// as Kimi-Linear's linear_attn_config lists them.
json LayerList(const Dims& d, bool full) {
  json out = json::array();
  for (int l = 0; l < d.layers; ++l) {
    if (IsFullAttentionLayer(d, l) == full) out.push_back(l + 1);
  }
  return out;
}

json LayerTypes(const Dims& d, const char* full, const char* other) {
  json types = json::array();
  for (int l = 0; l < d.layers; ++l) types.push_back(IsFullAttentionLayer(d, l) ? full : other);
  return types;
}

// What only some mixers need in config.json.
void MixerConfig(const Family& f, const Dims& d, json& c) {
  const bool mla = f.attention == Attention::kMla || f.attention == Attention::kMlaIndexer ||
                   f.attention == Attention::kLongcat || f.attention == Attention::kKimiHybrid;
  if (mla) {
    c["q_lora_rank"] = f.attention == Attention::kKimiHybrid ? json(nullptr) : json(d.q_lora);
    c["kv_lora_rank"] = d.kv_lora;
    c["qk_nope_head_dim"] = d.qk_nope;
    c["qk_rope_head_dim"] = d.qk_rope;
    c["v_head_dim"] = d.v_head;
  } else {
    c["head_dim"] = d.head_dim;
  }
  switch (f.attention) {
    case Attention::kQwen3NextHybrid:
    case Attention::kQwen35Hybrid:
      c["layer_types"] = LayerTypes(d, "full_attention", "linear_attention");
      c["full_attention_interval"] = d.full_attention_interval;
      c["linear_num_key_heads"] = d.lin_k_heads;
      c["linear_num_value_heads"] = d.lin_v_heads;
      c["linear_key_head_dim"] = d.lin_k_dim;
      c["linear_value_head_dim"] = d.lin_v_dim;
      c["linear_conv_kernel_dim"] = d.conv_kernel;
      break;
    case Attention::kMlaIndexer:
      c["index_n_heads"] = d.heads;
      c["index_head_dim"] = d.head_dim;
      c["index_topk"] = 2048;
      break;
    case Attention::kLongcat:
      c["num_layers"] = d.layers;
      c["num_hidden_layers"] = 2 * d.layers;  // two attention blocks per layer
      c["zero_expert_num"] = std::max(1, d.experts / 2);
      c["ffn_hidden_size"] = d.dense_intermediate;
      break;
    case Attention::kKimiHybrid:
      c["linear_attn_config"] = {{"kda_layers", LayerList(d, false)},
                                 {"full_attn_layers", LayerList(d, true)},
                                 {"head_dim", d.lin_v_dim},
                                 {"num_heads", d.lin_v_heads},
                                 {"short_conv_kernel_size", d.conv_kernel}};
      break;
    case Attention::kLfm2Hybrid:
      c["layer_types"] = LayerTypes(d, "full_attention", "conv");
      c["conv_L_cache"] = d.conv_kernel;
      break;
    case Attention::kJambaHybrid:
      c["attn_layer_period"] = d.full_attention_interval;
      c["attn_layer_offset"] = d.full_attention_interval - 1;
      c["mamba_d_state"] = d.lin_k_dim;
      c["mamba_d_conv"] = d.conv_kernel;
      c["mamba_expand"] = 2;
      c["mamba_dt_rank"] = CeilDiv(d.hidden, 16);
      break;
    case Attention::kNemotronHybrid: {
      std::string pattern;
      for (int l = 0; l < d.layers; ++l) pattern += NemotronLayerKind(l);
      c["hybrid_override_pattern"] = pattern;
      c["mamba_num_heads"] = d.lin_v_heads;
      c["mamba_head_dim"] = d.lin_v_dim;
      c["ssm_state_size"] = d.lin_k_dim;
      c["n_groups"] = d.lin_k_heads;
      c["conv_kernel"] = d.conv_kernel;
      break;
    }
    case Attention::kDeepseekV4: {
      json ratios = json::array();
      for (int l = 0; l < d.layers; ++l) ratios.push_back(V4CompressRatio(l));
      c["compress_ratios"] = std::move(ratios);
      c["q_lora_rank"] = d.q_lora;
      c["o_groups"] = 2;
      c["o_lora_rank"] = d.q_lora / 2;
      c["index_n_heads"] = d.heads;
      c["index_head_dim"] = d.head_dim;
      c["hc_mult"] = kHcMult;
      break;
    }
    case Attention::kSlidingWindow: {
      json types = json::array();
      for (int l = 0; l < d.layers; ++l) types.push_back(IsSlidingWindowLayer(l) ? "sliding_attention" : "full_attention");
      c["layer_types"] = std::move(types);
      break;
    }
    case Attention::kGraniteHybrid:
      c["layer_types"] = LayerTypes(d, "attention", "mamba");
      c["mamba_n_heads"] = d.lin_v_heads;
      c["mamba_d_head"] = d.lin_v_dim;
      c["mamba_d_state"] = d.lin_k_dim;
      c["mamba_n_groups"] = d.lin_k_heads;
      c["mamba_d_conv"] = d.conv_kernel;
      break;
    case Attention::kMha:
    case Attention::kMla:
      break;
  }
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
  if (!f.shares.empty()) {  // one entry per share
    json experts = json::array(), widths = json::array();
    for (const ExpertShare& s : f.shares) {
      experts.push_back(d.experts);
      widths.push_back(ShareWidth(s, d));
    }
    c[std::string(f.experts_field)] = std::move(experts);
    c[std::string(f.intermediate_field)] = std::move(widths);
  }
  c[std::string(f.topk_field)] = std::min(d.topk, d.experts);
  if (f.dense_intermediate_field) c[std::string(f.dense_intermediate_key)] = d.dense_intermediate;
  switch (f.dense_layers) {
    case DenseLayers::kNone:
      break;
    case DenseLayers::kFirstK:
      c[std::string(f.dense_field)] = d.first_k_dense;
      break;
    case DenseLayers::kLayerTypes: {
      json types = json::array();
      for (int l = 0; l < d.layers; ++l) types.push_back(l < d.first_k_dense ? "dense" : "sparse");
      c["mlp_layer_types"] = std::move(types);
      break;
    }
    case DenseLayers::kPeriod:
      c["expert_layer_period"] = 2;
      c["expert_layer_offset"] = 1;
      break;
    case DenseLayers::kMoeLayers: {
      json moe = json::array();
      for (int l = 0; l < d.layers; ++l) {
        if (!IsDenseLayer(f, d, l)) moe.push_back(l);
      }
      c["interleave_moe_layer_step"] = 2;
      c["moe_layers"] = std::move(moe);
      break;
    }
  }
  if (f.grouped_routing) {
    // Expert groups must divide the experts; a sliced or resized model
    // falls back to one group.
    const bool fits = d.n_group > 0 && d.experts % d.n_group == 0;
    c["n_group"] = fits ? d.n_group : 1;
    c["topk_group"] = fits ? d.topk_group : 1;
  }
  MixerConfig(f, d, c);
  c.update(json::parse(f.extra_config));
  return c;
}

void AddSharedFields(json& c, const Shared& shared, const Dims& d) {
  if (!shared.width_field.empty()) c[std::string(shared.width_field)] = d.shared_intermediate;
  if (!shared.count_field.empty()) c[std::string(shared.count_field)] = d.n_shared;
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
  const json audio = {{"d_model", t},
                      {"encoder_layers", 1},
                      {"encoder_attention_heads", 2},
                      {"encoder_ffn_dim", 4 * t},
                      {"output_dim", dims.hidden}};
  switch (f.towers) {
    case Towers::kNone:
      break;
    case Towers::kVision:
    case Towers::kLlama4:
    case Towers::kErnieVl:
      cfg["vision_config"] = vision;
      break;
    case Towers::kOmniThinker:
      cfg["vision_config"] = vision;
      cfg["audio_config"] = audio;
      break;
    case Towers::kOmni:
      At(cfg, "thinker_config.vision_config") = vision;
      At(cfg, "thinker_config.audio_config") = audio;
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
  if (wt == WeightType::kMXFP4) {  // as openai/gpt-oss-20b ships it
    cfg["quantization_config"] = {
        {"quant_method", "mxfp4"},
        {"modules_to_not_convert",
         {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}}};
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
