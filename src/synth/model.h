// What a synthetic checkpoint contains: every tensor with its name, dtype,
// shape and where its values come from, plus config.json. Nothing here
// touches the disk.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/status.h"
#include "synth/families.h"
#include "synth/values.h"

namespace moepack::synth {

// A tensor is made of sources: per-expert Hub tensors, each rows x cols and
// identified by its key (see values.h). A plain tensor is its own single
// source. A fused tensor concatenates `group` sources along rows per expert
// block (gate then up for gate_up_proj), blocks stacked in expert order;
// `transposed` writes each block transposed ([cols, group * rows]), and
// `interleaved` (with `transposed`) alternates the sources element by
// element along the last dim instead ([cols, rows * group], gpt_oss). A
// transposed single source is a transposed matrix (ERNIE-4.5-VL's routers).
struct PlannedTensor {
  std::string name;
  DType dtype = DType::BF16;
  Fill fill = Fill::kWeight;
  std::vector<uint64_t> shape;
  std::vector<uint64_t> keys;
  uint32_t group = 1;
  uint64_t rows = 0;
  uint64_t cols = 0;
  bool transposed = false;
  bool interleaved = false;
  uint64_t nbytes = 0;
};

struct Model {
  std::vector<PlannedTensor> tensors;  // in layer order
  nlohmann::json config;
};

// REQUIRES: dims are positive where the family uses them.
Result<Model> BuildModel(const Family& family, const Dims& dims, WeightType dtype, Layout layout, uint64_t seed);

}  // namespace moepack::synth
