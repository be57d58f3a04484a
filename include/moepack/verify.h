// Proves that DST is SRC under the conversion, independently of the
// planner's byte ranges: both checkpoints are cut into canonical pieces (one
// per expert and projection, one per other tensor), each hashed with
// XXH3-128 from its own file, and the two sets must match exactly. The
// planner is asked only which tensor names, dtypes and shapes DST must have.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moepack/plan.h"
#include "moepack/status.h"

namespace moepack {

struct VerifyOptions {
  std::string model_type;
  std::string rules_file;
  SourceLayout source_layout = SourceLayout::kUnspecified;
  int threads = 0;
  // Also run a reference MoE layer (softmax top-2 routing, SwiGLU) on seeded
  // tokens with SRC's and with DST's experts, per MoE layer.
  bool forward = false;
};

struct ForwardCheck {
  std::string layer;         // the experts' name prefix, e.g. "model.layers.3.mlp."
  double max_abs_diff = 0;   // 0 for a pure relayout
  uint64_t experts_run = 0;  // experts that some token was routed to
};

struct VerifyReport {
  bool ok = false;
  std::string to;              // "fused" or "per-expert": what DST is
  std::string dtype;           // "" or the dtype change DST carries: "bf16", "f16", "f32", "fp8"
  uint64_t tensors = 0;        // DST tensors checked
  uint64_t pieces = 0;         // expert slices and whole tensors compared
  uint64_t bytes_hashed = 0;   // both sides
  std::string problem;         // the first difference, when !ok
  std::vector<ForwardCheck> forward;
};

// A failed comparison is a report with ok == false; a Status error means the
// inputs could not be read at all.
Result<VerifyReport> Verify(const std::string& src, const std::string& dst, const VerifyOptions& options);

// What `verify --json` prints (and Python's verify returns); "forward" is
// listed when `with_forward`, i.e. when the layer check was asked for.
std::string VerifyToJson(const VerifyReport& report, bool with_forward);

}  // namespace moepack
