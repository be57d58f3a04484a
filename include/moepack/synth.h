// Synthetic checkpoints that look like real ones of a family: real key
// names, the family's config.json fields, seeded values of sensible
// magnitude, and tensors shuffled so that a layer's experts straddle shards.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "moepack/status.h"

namespace moepack {

struct SynthOptions {
  std::string model_type;          // a family from SynthFamilies(); may be empty when the preset implies one
  std::string preset = "tiny";     // tiny | qwen3-30b-a3b | deepseek-v3 | mixtral-8x7b
  std::optional<int> layers;       // a slice: the first N layers of the preset
  std::optional<int> experts;
  std::optional<int> hidden;
  std::optional<int> intermediate;  // expert intermediate size
  // bf16 | f16 | f32 | fp8 (e4m3, 128x128 block scales; families whose
  // rules fuse the scales) | mxfp4 (gpt_oss only, fused: its Hub form); empty: the preset's
  std::string dtype;
  uint64_t max_shard_size = 0;     // bytes; 0: the preset's default
  // per-expert | fused (v5's layout: for gpt_oss and llama4 their own fused
  // forms, which are also the Hub's) | fused-transposed (v5's standard form
  // transposed, as qwen3_vl_moe's Hub; not for gpt_oss, llama4) |
  // fused-hub-names (v5's layout under the Hub's own names: granitemoe*);
  // empty: the family's Hub layout. A form the family lacks is refused.
  std::string layout;
  uint64_t seed = 0;
  bool sparse = false;             // leave tensor data as file holes (reads as zeros)
  // Called after each tensor with the bytes written so far; may be empty.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct SynthReport {
  std::string model_type;
  std::string layout;
  std::string dtype;
  int num_shards = 0;
  int num_tensors = 0;
  uint64_t total_bytes = 0;  // tensor data, as the index's metadata.total_size
};

// Writes a new checkpoint directory at `dst` (which must not exist; it is
// removed again if writing fails). Every tensor's bytes are a function of
// (seed, the tensor's per-expert Hub name, element index) only, so writing
// the fused layout gives exactly what converting the per-expert one gives
// (MXFP4 blocks and scales, which have no per-expert form, go by their own
// names).
Result<SynthReport> Synthesize(const std::string& dst, const SynthOptions& options);

std::vector<std::string> SynthFamilies();
std::vector<std::string> SynthPresets();
// The family a preset implies, "" when it fits every family, nullopt when
// there is no such preset.
std::optional<std::string> SynthPresetFamily(const std::string& preset);

}  // namespace moepack
