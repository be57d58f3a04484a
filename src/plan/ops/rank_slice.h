// A rank's part of a fused expert tensor, cut the way the rules' roles say:
// expert parallelism takes a contiguous range of experts (dim 0); tensor
// parallelism cuts the rule's tp_dim, each of the role's equal parts (the
// gate half and the up half of gate_up) separately; block scales are cut in
// units of their quantization block. Every other tensor goes whole to every
// rank. The loader intersects this slice with the plan's byte geometry.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moepack/config.h"
#include "moepack/dtype.h"
#include "moepack/parallel.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack::ops {

using Intervals = std::vector<std::pair<uint64_t, uint64_t>>;
uint64_t Total(const Intervals& v);

// What the rules say an output tensor is, as far as slicing goes.
struct SliceRole {
  bool fused = false;  // a fused expert tensor (a fusion target or a transpose pattern)
  ExpertRole role = ExpertRole::kNone;
  int tp_dim = 0;           // the fused dim tensor parallelism cuts; 0: none, every rank gets it whole
  int parts = 1;            // equal parts of tp_dim, each cut on its own
  uint64_t interleave = 1;  // sources alternating along tp_dim (gpt-oss gate, up): cut in whole groups
  bool scale = false;
  std::string rule;    // the fusion or transpose rule, for messages
  std::string weight;  // for a scale: the output name of the weight it scales
  uint64_t block = 0;  // for a scale: the quantization block along tp_dim
};
// `config` may be null (then scale blocks take the 128 of DeepSeek-V3 and
// the *-FP8 checkpoints).
SliceRole RoleOf(const RuleSet& rules, const ModelConfig* config, std::string_view name);

// For a weight: the size tensor parallelism divides (the expert
// intermediate size), or nullopt when the tensor has no such dim.
std::optional<uint64_t> CutSize(const SliceRole& role, const std::vector<uint64_t>& shape);

// A rank's part of a tensor seen as [E, A, B] ([E, A, 1] when 2-D, [E, 1,
// rest] beyond 3-D): experts [expert_begin, expert_end) x dim1 x dim2, each
// dim's intervals concatenated in order.
struct RankSlice {
  bool whole = true;
  uint64_t expert_begin = 0, expert_end = 0;
  uint64_t A = 1, B = 1;
  Intervals dim1, dim2;
  std::vector<uint64_t> shape;  // the rank's part
};

// `weight_cut`: for a scale, CutSize of the weight it scales (nullopt when
// that weight is absent). Errors name the tensor: a count that does not
// divide, a slice off the quantization blocks, a role without a cut dim.
Result<RankSlice> SliceForRank(const SliceRole& role, const std::string& name, DType dtype,
                               const std::vector<uint64_t>& shape, const ParallelSpec& parallel,
                               std::optional<uint64_t> weight_cut);

}  // namespace moepack::ops
