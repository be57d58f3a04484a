// Checkpoint helpers for the conversion tests: an independent safetensors
// reader (its own header parser, so that tests do not trust the library's
// reader to check the library's writer), a writer for hand-built and
// mutated checkpoints (shards in shuffled order plus an index), synth and
// convert wrappers, and small comparisons. Header-only (tests/CMakeLists.txt
// compiles only *_test.cc and testutil.cc); the definitions are inline, in
// ckpt_util_impl.h.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "moepack/convert.h"
#include "moepack/dtype.h"
#include "moepack/synth.h"

namespace moepack::testing {

struct RawTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  std::string data;  // row-major bytes
};
using TensorMap = std::map<std::string, RawTensor>;

// One entry of a safetensors header, parsed by the test itself.
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;  // absolute in the file
  uint64_t length = 0;
};
struct ParsedFile {
  std::vector<HeaderEntry> tensors;  // in header (JSON) order
  nlohmann::json metadata;           // null when absent
  uint64_t header_len = 0;
  uint64_t file_size = 0;
};
ParsedFile ParseSafetensors(const std::string& path);

// Every tensor of every *.safetensors file directly in `dir` (or of `dir`
// itself when it is a file). Adds a test failure on any inconsistency.
TensorMap ReadTensors(const std::string& dir);
// Tensor -> file, from the headers.
std::map<std::string, std::string> TensorFiles(const std::string& dir);

uint64_t ElementBytes(DType t);  // REQUIRES: byte-sized dtype
uint64_t NumElementsOf(const std::vector<uint64_t>& shape);
std::string ShapeString(const std::vector<uint64_t>& shape);

// Deterministic, distinct-per-seed bytes.
std::string PatternBytes(uint64_t n, uint64_t seed);

// Writes `tensors` into `num_shards` shards (model-0000k-of-0000n with an
// index, or model.safetensors when 1), tensors dealt out in an order
// shuffled by `seed`, and config.json (when `config` is not null).
void WriteCheckpoint(const std::string& dir, std::vector<RawTensor> tensors, const nlohmann::json& config,
                     int num_shards = 3, uint64_t seed = 1);

// Reads `src`, lets `mutate` change tensors and config, writes `dst`.
void RewriteCheckpoint(const std::string& src, const std::string& dst,
                       const std::function<void(std::vector<RawTensor>&, nlohmann::json&)>& mutate,
                       int num_shards = 3, uint64_t seed = 7);

nlohmann::json ReadJson(const std::string& path);

// Synthesize, failing the test on error. Defaults: tiny preset.
SynthOptions TinyOptions(const std::string& family, const std::string& layout = "", const std::string& dtype = "");
SynthReport SynthOrDie(const std::string& dst, const SynthOptions& options);

// Convert via the library, failing the test on error.
ConvertResult ConvertOrDie(const std::string& src, const std::string& dst, Direction direction,
                           const ConvertOptions& base = {});

// Names (files and directories, hidden ones included) directly in `dir`.
std::vector<std::string> ListDir(const std::string& dir);

// The test's own natural order: digit runs compare as numbers.
bool NaturalBefore(const std::string& a, const std::string& b);

// Compares two tensor maps: same names, dtypes, shapes and bytes. Returns ""
// when equal, else the first difference.
std::string DiffTensors(const TensorMap& want, const TensorMap& got);

// Element (i, j) of a row-major [rows, cols] matrix stored in `data`.
std::string_view Element(const std::string& data, uint64_t cols, uint64_t i, uint64_t j, uint64_t elem);

// A user's rule file: family "my_moe", experts `ffn.experts.{expert}.wi` /
// `.wo`, renamed to `mlp.` (tests of --rules through the binary and the
// library).
inline constexpr const char* kUserRules = R"({
  "family": "my_moe",
  "model_types": ["my_moe"],
  "num_experts": ["num_experts"],
  "renames": [{"name": "ffn is mlp", "pattern": "\\.ffn\\.", "replacement": ".mlp.",
               "reverse_pattern": "\\.mlp\\.", "reverse_replacement": ".ffn."}],
  "fusions": [
    {"name": "gate_up_proj", "target": "{prefix}mlp.experts.gate_up_proj",
     "sources": ["{prefix}mlp.experts.{expert}.wi.weight"]},
    {"name": "down_proj", "target": "{prefix}mlp.experts.down_proj",
     "sources": ["{prefix}mlp.experts.{expert}.wo.weight"]}
  ]
})";

}  // namespace moepack::testing

#include "ckpt_util_impl.h"
