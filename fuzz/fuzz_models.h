// Small checkpoints the fuzz targets build on: a config.json and the tensors
// of one MoE layer (4 experts) in several families and layouts. Built from
// code so that seeds and harnesses always agree.
#pragma once

#include <string>
#include <vector>

#include "fuzz_util.h"
#include "moepack/safetensors.h"

namespace moepack::fuzz {

struct ModelSpec {
  const char* config;
  std::vector<TensorSpec> tensors;
};

inline std::vector<TensorSpec> Common(const std::string& prefix, uint64_t hidden) {
  return {{prefix + "embed_tokens.weight", DType::BF16, {16, hidden}},
          {prefix + "norm.weight", DType::BF16, {hidden}},
          {prefix + "layers.0.input_layernorm.weight", DType::BF16, {hidden}},
          {prefix + "layers.0.mlp.gate.weight", DType::BF16, {4, hidden}}};
}

// Per-expert: experts.{j}.{gate,up,down}_proj.weight (or mixtral's w1/w3/w2).
inline std::vector<TensorSpec> PerExpert(const std::string& moe, const char* g, const char* u, const char* d,
                                         DType dt, bool scales) {
  std::vector<TensorSpec> t = Common("model.", 8);
  for (uint64_t j = 0; j < 4; ++j) {
    const std::string e = moe + "experts." + std::to_string(j) + ".";
    t.push_back({e + g + ".weight", dt, {4, 8}});
    t.push_back({e + u + ".weight", dt, {4, 8}});
    t.push_back({e + d + ".weight", dt, {8, 4}});
    if (scales) {
      for (const char* p : {g, u, d}) t.push_back({e + p + ".weight_scale_inv", DType::F32, {1, 1}});
    }
  }
  return t;
}

inline const ModelSpec kQwen3MoePerExpert{
    R"({"model_type":"qwen3_moe","num_experts":4,"hidden_size":8,"moe_intermediate_size":4})",
    PerExpert("model.layers.0.mlp.", "gate_proj", "up_proj", "down_proj", DType::BF16, false)};

inline const ModelSpec kQwen3MoeFused{
    R"({"model_type":"qwen3_moe","num_experts":4,"hidden_size":8,"moe_intermediate_size":4})", [] {
      auto t = Common("model.", 8);
      t.push_back({"model.layers.0.mlp.experts.gate_up_proj", DType::BF16, {4, 8, 8}});
      t.push_back({"model.layers.0.mlp.experts.down_proj", DType::BF16, {4, 8, 4}});
      return t;
    }()};

inline const ModelSpec kDeepseekFp8PerExpert{
    R"({"model_type":"deepseek_v3","n_routed_experts":4,"hidden_size":8,"moe_intermediate_size":4})",
    PerExpert("model.layers.0.mlp.", "gate_proj", "up_proj", "down_proj", DType::F8_E4M3, true)};

inline const ModelSpec kMixtralPerExpert{
    R"({"model_type":"mixtral","num_local_experts":4,"hidden_size":8,"intermediate_size":4})",
    PerExpert("model.layers.0.block_sparse_moe.", "w1", "w3", "w2", DType::BF16, false)};

// Qwen3-VL-MoE stores fused experts transposed: [E, H, 2I] and [E, I, H].
inline const ModelSpec kQwen3VlHub{
    R"({"model_type":"qwen3_vl_moe","text_config":{"num_experts":4,"hidden_size":12,"moe_intermediate_size":4}})",
    [] {
      auto t = Common("model.language_model.", 12);
      t.push_back({"model.language_model.layers.0.mlp.experts.gate_up_proj", DType::BF16, {4, 12, 8}});
      t.push_back({"model.language_model.layers.0.mlp.experts.down_proj", DType::BF16, {4, 4, 12}});
      return t;
    }()};

inline const ModelSpec* const kModels[] = {&kQwen3MoePerExpert, &kQwen3MoeFused, &kDeepseekFp8PerExpert,
                                           &kMixtralPerExpert, &kQwen3VlHub};
inline constexpr size_t kNumModels = sizeof(kModels) / sizeof(kModels[0]);

// The header text (without the 8-byte length) of a model's tensors.
inline std::string HeaderOf(const std::vector<TensorSpec>& tensors, uint64_t* data_size) {
  auto layout = LayoutFile({{"format", "pt"}}, tensors);
  if (!layout.ok()) std::abort();
  *data_size = layout->data_size;
  std::string h = layout->prefix.substr(8);
  while (!h.empty() && h.back() == ' ') h.pop_back();
  return h;
}

inline void WriteShard(const std::string& path, const std::vector<TensorSpec>& tensors) {
  uint64_t n = 0;
  std::string h = HeaderOf(tensors, &n);
  WriteBytes(path, SafetensorsBytes(h, n));
}

// A directory holding the model's config.json and model.safetensors.
inline std::string MakeModelDir(const std::string& name, const ModelSpec& m) {
  std::string dir = Subdir(name);
  WriteBytes(dir + "/config.json", m.config);
  WriteShard(dir + "/model.safetensors", m.tensors);
  return dir;
}

// When MOEPACK_FUZZ_WRITE_SEEDS names a directory, a target writes its seed
// inputs there (see scripts/fuzz.sh --seeds) and exits.
inline const char* SeedDir() { return std::getenv("MOEPACK_FUZZ_WRITE_SEEDS"); }

inline void WriteSeed(const std::string& name, std::string_view bytes) {
  WriteBytes(std::string(SeedDir()) + "/" + name, bytes);
}

}  // namespace moepack::fuzz
