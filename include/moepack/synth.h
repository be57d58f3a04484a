// Synthetic checkpoints that look like real ones of a family: real key
// names, the family's config.json fields, seeded values of sensible
// magnitude, and tensors shuffled so that a layer's experts straddle shards.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moepack/status.h"

namespace moepack {

struct SynthOptions {
  std::string model_type;          // required: a family from SynthFamilies()
  std::string preset = "tiny";     // tiny | qwen3-30b-a3b | deepseek-v3 | mixtral-8x7b
  std::optional<int> layers;       // a slice of the preset's layers
  std::optional<int> experts;
  std::optional<int> hidden;
  std::optional<int> intermediate;  // expert intermediate size
  std::string dtype;               // bf16 | f16 | f32 | fp8; empty: the preset's
  uint64_t max_shard_size = 0;     // bytes; 0: the preset's default
  std::string layout = "per-expert";  // per-expert | fused | fused-transposed
  uint64_t seed = 0;
  bool sparse = false;             // leave tensor data as file holes
};

struct SynthReport {
  int num_shards = 0;
  int num_tensors = 0;
  uint64_t total_bytes = 0;
};

// Writes a new checkpoint directory at `dst` (which must not exist).
Result<SynthReport> Synthesize(const std::string& dst, const SynthOptions& options);

std::vector<std::string> SynthFamilies();
std::vector<std::string> SynthPresets();

}  // namespace moepack
