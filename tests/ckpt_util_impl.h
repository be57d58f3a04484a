// Definitions for ckpt_util.h. Include ckpt_util.h, not this file.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "moepack/safetensors.h"
#include "ckpt_util.h"

namespace moepack::testing {
namespace ckpt_util_detail {

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace ckpt_util_detail

inline uint64_t ElementBytes(DType t) {
  switch (t) {
    case DType::BOOL: case DType::U8: case DType::I8: case DType::F8_E5M2: case DType::F8_E4M3:
    case DType::F8_E8M0: case DType::F8_E4M3FNUZ: case DType::F8_E5M2FNUZ:
      return 1;
    case DType::I16: case DType::U16: case DType::F16: case DType::BF16:
      return 2;
    case DType::I32: case DType::U32: case DType::F32:
      return 4;
    case DType::C64: case DType::F64: case DType::I64: case DType::U64:
      return 8;
    default:
      ADD_FAILURE() << "ElementBytes: sub-byte dtype";
      return 1;
  }
}

inline uint64_t NumElementsOf(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

inline std::string ShapeString(const std::vector<uint64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

inline std::string PatternBytes(uint64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 12345);
  std::string out(n, '\0');
  for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<char>(rng() >> 56);
  return out;
}

inline ParsedFile ParseSafetensors(const std::string& path) {
  ParsedFile pf;
  const std::string bytes = ckpt_util_detail::Slurp(path);
  pf.file_size = bytes.size();
  if (bytes.size() < 8) {
    ADD_FAILURE() << path << ": shorter than 8 bytes";
    return pf;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  pf.header_len = n;
  if (8 + n > bytes.size()) {
    ADD_FAILURE() << path << ": header length " << n << " beyond the file";
    return pf;
  }
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(bytes.substr(8, n), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    ADD_FAILURE() << path << ": header is not a JSON object";
    return pf;
  }
  uint64_t covered = 0;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      pf.metadata = nlohmann::json::parse(it.value().dump());
      continue;
    }
    HeaderEntry e;
    e.name = it.key();
    e.dtype = it.value()["dtype"].get<std::string>();
    e.shape = it.value()["shape"].get<std::vector<uint64_t>>();
    auto off = it.value()["data_offsets"].get<std::vector<uint64_t>>();
    EXPECT_EQ(off.size(), 2u) << path << ": " << e.name;
    e.offset = 8 + n + off[0];
    e.length = off[1] - off[0];
    covered += e.length;
    EXPECT_LE(e.offset + e.length, bytes.size()) << path << ": " << e.name << " beyond the file";
    pf.tensors.push_back(std::move(e));
  }
  EXPECT_EQ(8 + n + covered, bytes.size()) << path << ": data section is not exactly the tensors' bytes";
  return pf;
}

inline TensorMap ReadTensors(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  if (fs::is_regular_file(dir)) {
    files.push_back(dir);
  } else {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && ckpt_util_detail::EndsWith(name, ".safetensors")) files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  TensorMap out;
  for (const auto& f : files) {
    ParsedFile pf = ParseSafetensors(f);
    const std::string bytes = ckpt_util_detail::Slurp(f);
    for (const auto& e : pf.tensors) {
      RawTensor t;
      t.name = e.name;
      auto dt = ParseDType(e.dtype);
      if (!dt) {
        ADD_FAILURE() << f << ": unknown dtype " << e.dtype;
        continue;
      }
      t.dtype = *dt;
      t.shape = e.shape;
      EXPECT_EQ(e.length, NumElementsOf(e.shape) * ElementBytes(t.dtype)) << f << ": " << e.name;
      t.data = bytes.substr(e.offset, e.length);
      if (out.count(t.name)) ADD_FAILURE() << "tensor " << t.name << " is in two files";
      out[t.name] = std::move(t);
    }
  }
  return out;
}

inline std::map<std::string, std::string> TensorFiles(const std::string& dir) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || !ckpt_util_detail::EndsWith(name, ".safetensors")) continue;
    for (const auto& t : ParseSafetensors(e.path().string()).tensors) out[t.name] = name;
  }
  return out;
}

inline void WriteCheckpoint(const std::string& dir, std::vector<RawTensor> tensors, const nlohmann::json& config,
                            int num_shards, uint64_t seed) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  std::mt19937_64 rng(seed);
  std::shuffle(tensors.begin(), tensors.end(), rng);
  const size_t shards = std::max<size_t>(1, std::min<size_t>(num_shards, std::max<size_t>(1, tensors.size())));
  nlohmann::json weight_map = nlohmann::json::object();
  uint64_t total = 0;
  for (size_t s = 0; s < shards; ++s) {
    char fname[64];
    std::snprintf(fname, sizeof fname, "model-%05zu-of-%05zu.safetensors", s + 1, shards);
    const std::string file = shards == 1 ? std::string("model.safetensors") : std::string(fname);
    std::vector<TensorSpec> specs;
    std::vector<std::string_view> data;
    // Deal contiguous runs so that each shard holds a mix of layers.
    const size_t begin = tensors.size() * s / shards, end = tensors.size() * (s + 1) / shards;
    for (size_t i = begin; i < end; ++i) {
      specs.push_back(TensorSpec{tensors[i].name, tensors[i].dtype, tensors[i].shape});
      data.push_back(tensors[i].data);
      weight_map[tensors[i].name] = file;
      total += tensors[i].data.size();
    }
    Status st = WriteFile(dir + "/" + file, {{"format", "pt"}}, specs, data);
    ASSERT_TRUE(st.ok()) << st.message();
  }
  if (shards > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    std::ofstream(dir + "/model.safetensors.index.json") << index.dump(2) << "\n";
  }
  if (!config.is_null()) std::ofstream(dir + "/config.json") << config.dump(2) << "\n";
}

inline nlohmann::json ReadJson(const std::string& path) {
  nlohmann::json j = nlohmann::json::parse(ckpt_util_detail::Slurp(path), nullptr, false);
  if (j.is_discarded()) ADD_FAILURE() << path << ": not JSON";
  return j;
}

inline void RewriteCheckpoint(const std::string& src, const std::string& dst,
                              const std::function<void(std::vector<RawTensor>&, nlohmann::json&)>& mutate,
                              int num_shards, uint64_t seed) {
  TensorMap m = ReadTensors(src);
  std::vector<RawTensor> tensors;
  for (auto& [_, t] : m) tensors.push_back(std::move(t));
  nlohmann::json config = ReadJson(src + "/config.json");
  mutate(tensors, config);
  WriteCheckpoint(dst, std::move(tensors), config, num_shards, seed);
}

inline SynthOptions TinyOptions(const std::string& family, const std::string& layout, const std::string& dtype) {
  SynthOptions o;
  o.model_type = family;
  o.preset = "tiny";
  o.layout = layout;
  o.dtype = dtype;
  return o;
}

inline SynthReport SynthOrDie(const std::string& dst, const SynthOptions& options) {
  auto r = Synthesize(dst, options);
  EXPECT_TRUE(r.ok()) << "synth " << options.model_type << ": " << r.status().message();
  return r.ok() ? *r : SynthReport{};
}

inline ConvertResult ConvertOrDie(const std::string& src, const std::string& dst, Direction direction,
                                  const ConvertOptions& base) {
  ConvertOptions o = base;
  o.direction = direction;
  auto r = Convert(src, dst, o);
  EXPECT_TRUE(r.ok()) << "convert " << src << " -> " << dst << ": " << r.status().message();
  return r.ok() ? std::move(r).value() : ConvertResult{};
}

inline std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

inline bool NaturalBefore(const std::string& a, const std::string& b) {
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      uint64_t x = 0, y = 0;
      while (i < a.size() && std::isdigit(static_cast<unsigned char>(a[i]))) x = x * 10 + (a[i++] - '0');
      while (j < b.size() && std::isdigit(static_cast<unsigned char>(b[j]))) y = y * 10 + (b[j++] - '0');
      if (x != y) return x < y;
    } else {
      if (a[i] != b[j]) return static_cast<unsigned char>(a[i]) < static_cast<unsigned char>(b[j]);
      ++i;
      ++j;
    }
  }
  return (a.size() - i) < (b.size() - j);
}

inline std::string DiffTensors(const TensorMap& want, const TensorMap& got) {
  for (const auto& [name, w] : want) {
    auto it = got.find(name);
    if (it == got.end()) return "missing tensor " + name;
    const RawTensor& g = it->second;
    if (g.dtype != w.dtype) {
      return name + ": dtype " + std::string(DTypeName(g.dtype)) + ", want " + std::string(DTypeName(w.dtype));
    }
    if (g.shape != w.shape) return name + ": shape " + ShapeString(g.shape) + ", want " + ShapeString(w.shape);
    if (g.data != w.data) return name + ": bytes differ";
  }
  for (const auto& [name, _] : got) {
    if (!want.count(name)) return "unexpected tensor " + name;
  }
  return "";
}

inline std::string_view Element(const std::string& data, uint64_t cols, uint64_t i, uint64_t j, uint64_t elem) {
  return std::string_view(data).substr((i * cols + j) * elem, elem);
}

}  // namespace moepack::testing
