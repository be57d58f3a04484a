// The names of the MoE layouts a checkpoint (or one of its layers) can be in.
#pragma once

#include <optional>
#include <string_view>

namespace moepack {

enum class MoeLayout {
  kPerExpert,        // one tensor per expert and projection (the Hub)
  kFused,            // v5's fused tensors, e.g. gate_up_proj [E, 2I, H]
  kFusedTransposed,  // fused with the last two dims swapped: gate_up [E, H, 2I] (qwen3_vl_moe on the Hub, llama4)
  kFusedInterleaved,  // fused [E, H, 2I] with gate and up alternating (gpt_oss)
  kStacked,          // experts stacked under per-projection names no rule describes
  kDense,            // no MoE layer at all
  kMixed,            // layers (or one layer's tensors) in different layouts
};

// "per-expert", "fused", "fused-transposed", "fused-interleaved", "stacked",
// "dense", "mixed".
std::string_view LayoutName(MoeLayout l);
std::optional<MoeLayout> ParseLayout(std::string_view name);

}  // namespace moepack
