// Builders for hostile checkpoints: safetensors files written byte by byte
// (so that any header, valid or not, can be produced), and a tiny Qwen3-MoE
// model (1 MoE layer, 4 experts, hidden 8, intermediate 4) to corrupt.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace moepack::testing::hostile {

struct T {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
};

inline uint64_t DTypeBytes(const std::string& d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F8_E4M3" || d == "F8_E5M2" || d == "U8" || d == "I8" || d == "BOOL") return 1;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  return 2;  // BF16, F16, I16, U16
}

// The JSON header of `tensors` with contiguous offsets in the given order.
inline std::string Header(const std::vector<T>& tensors, uint64_t* data_size) {
  std::string h = R"({"__metadata__":{"format":"pt"})";
  uint64_t at = 0;
  for (const T& t : tensors) {
    uint64_t n = DTypeBytes(t.dtype);
    for (uint64_t d : t.shape) n *= d;
    h += "," + nlohmann::json(t.name).dump() + ":{\"dtype\":\"" + t.dtype + "\",\"shape\":" +
         nlohmann::json(t.shape).dump() + ",\"data_offsets\":[" + std::to_string(at) + "," +
         std::to_string(at + n) + "]}";
    at += n;
  }
  *data_size = at;
  return h + "}";
}

inline std::string U64Le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// 8-byte length, `header` verbatim, then `data_size` bytes.
inline std::string Safetensors(const std::string& header, uint64_t data_size) {
  std::string out = U64Le(header.size()) + header;
  for (uint64_t i = 0; i < data_size; ++i) out.push_back(static_cast<char>(i * 7 + 1));
  return out;
}

inline std::string Safetensors(const std::vector<T>& tensors) {
  uint64_t n = 0;
  std::string h = Header(tensors, &n);
  return Safetensors(h, n);
}

// One MoE layer of Qwen3-MoE, per-expert, experts 0..E-1.
inline std::vector<T> TinyQwen(int experts = 4, const std::string& dtype = "BF16") {
  std::vector<T> t = {{"model.embed_tokens.weight", "BF16", {16, 8}},
                      {"model.norm.weight", "BF16", {8}},
                      {"model.layers.0.mlp.gate.weight", "BF16", {4, 8}}};
  for (int j = 0; j < experts; ++j) {
    const std::string e = "model.layers.0.mlp.experts." + std::to_string(j) + ".";
    t.push_back({e + "gate_proj.weight", dtype, {4, 8}});
    t.push_back({e + "up_proj.weight", dtype, {4, 8}});
    t.push_back({e + "down_proj.weight", dtype, {8, 4}});
  }
  return t;
}

// The same layer fused (v5 layout).
inline std::vector<T> TinyQwenFused(uint64_t experts = 4) {
  return {{"model.embed_tokens.weight", "BF16", {16, 8}},
          {"model.norm.weight", "BF16", {8}},
          {"model.layers.0.mlp.gate.weight", "BF16", {4, 8}},
          {"model.layers.0.mlp.experts.gate_up_proj", "BF16", {experts, 8, 8}},
          {"model.layers.0.mlp.experts.down_proj", "BF16", {experts, 8, 4}}};
}

inline std::string QwenConfig(const std::string& num_experts = "4") {
  return R"({"model_type":"qwen3_moe","architectures":["Qwen3MoeForCausalLM"],"num_experts":)" + num_experts +
         R"(,"hidden_size":8,"moe_intermediate_size":4,"num_hidden_layers":1})";
}

// The same without moe_intermediate_size: shapes are then checked only
// against each other, which lets a case reach the checks after that one.
inline std::string QwenConfigWithoutI(const std::string& num_experts = "4") {
  return R"({"model_type":"qwen3_moe","architectures":["Qwen3MoeForCausalLM"],"num_experts":)" + num_experts +
         R"(,"hidden_size":8,"num_hidden_layers":1})";
}

// DeepSeek-V3 with FP8 expert weights and their F32 block scales.
inline std::vector<T> TinyDeepseekFp8() {
  std::vector<T> t = {{"model.embed_tokens.weight", "BF16", {16, 8}}};
  for (int j = 0; j < 4; ++j) {
    const std::string e = "model.layers.0.mlp.experts." + std::to_string(j) + ".";
    for (const char* p : {"gate_proj", "up_proj"}) {
      t.push_back({e + p + ".weight", "F8_E4M3", {4, 8}});
      t.push_back({e + p + ".weight_scale_inv", "F32", {1, 1}});
    }
    t.push_back({e + "down_proj.weight", "F8_E4M3", {8, 4}});
    t.push_back({e + "down_proj.weight_scale_inv", "F32", {1, 1}});
  }
  return t;
}

inline const char* kDeepseekConfig =
    R"({"model_type":"deepseek_v3","n_routed_experts":4,"hidden_size":8,"moe_intermediate_size":4})";

// Qwen3-VL-MoE text model, fused and transposed as on the Hub: [E, H, 2I].
inline const char* kVlConfig =
    R"({"model_type":"qwen3_vl_moe","text_config":{"num_experts":4,"hidden_size":12,"moe_intermediate_size":4}})";

// Everything under `dir` (files with their bytes, links with their targets,
// FIFOs and directories by name), for "unchanged" checks on trees that may
// hold links that loop.
inline std::string Snapshot(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> entries;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::error_code ec;
    const auto st = e.symlink_status(ec);
    std::string item = e.path().lexically_relative(dir).string() + '\0';
    if (fs::is_symlink(st)) {
      item += "link:" + fs::read_symlink(e.path(), ec).string();
    } else if (fs::is_regular_file(st)) {
      std::ifstream in(e.path(), std::ios::binary);
      item += "file:" + std::string(std::istreambuf_iterator<char>(in), {});
    } else {
      item += "other:" + std::to_string(static_cast<int>(st.type()));
    }
    entries.push_back(std::move(item));
  }
  std::sort(entries.begin(), entries.end());
  std::string out;
  for (const auto& x : entries) out += x + '\0';
  return out;
}

inline void Write(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace moepack::testing::hostile
