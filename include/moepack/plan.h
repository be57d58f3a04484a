// The planner reads headers only and decides, before a byte is written,
// every output tensor (name, dtype, shape), the byte ranges that make it and
// the output shards. Everything that can be wrong with a checkpoint is
// found here: missing, duplicate or out-of-range experts, shapes or dtypes
// that differ between experts, a gate without its up, a weight without its
// scale, names that two rules would produce.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "moepack/checkpoint.h"
#include "moepack/rules.h"
#include "moepack/safetensors.h"
#include "moepack/status.h"

namespace moepack {

// source bytes [src_offset, src_offset + length) of file src_file ->
// output tensor bytes [dst_offset, dst_offset + length).
struct CopyRange {
  uint32_t src_file = 0;
  uint64_t src_offset = 0;  // absolute offset in the source file
  uint64_t length = 0;
  uint64_t dst_offset = 0;  // relative to the output tensor's first byte
};

// A [rows, cols] grid of elem_bytes elements moved one by one: element
// (r, c) is read at src_offset + r*src_row_stride + c*src_col_stride of
// file src_file and written at dst_offset + r*dst_row_stride +
// c*dst_col_stride of the output tensor. A transpose reads a row-major
// matrix and writes its transpose, both contiguous (IsTranspose).
struct BlockMove {
  uint32_t src_file = 0;
  uint64_t src_offset = 0;
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint32_t elem_bytes = 0;
  uint64_t src_row_stride = 0, src_col_stride = 0;
  uint64_t dst_offset = 0;  // relative to the output tensor's first byte
  uint64_t dst_row_stride = 0, dst_col_stride = 0;
  bool IsTranspose() const;
  uint64_t src_span() const;  // bytes from the first element read to the end of the last
  uint64_t dst_span() const;
};

// Output bytes [dst_offset, dst_offset + length) of a tensor that `blocks`
// write together, each byte exactly once (gate and up interleaved into one
// expert's slice; one transposed matrix). Computed in memory, then written
// or handed over whole.
struct Gather {
  uint64_t dst_offset = 0;
  uint64_t length = 0;
  std::vector<BlockMove> blocks;
};

enum class TensorOp { kCopy, kFuse, kSplit, kTranspose };

struct PlannedTensor {
  std::string name;
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
  uint64_t nbytes = 0;
  TensorOp op = TensorOp::kCopy;
  std::string rule;  // the rule that produced it, empty for kCopy
  std::vector<CopyRange> copies;
  std::vector<Gather> gathers;  // by dst_offset, disjoint from each other and from the copies
};

struct PlannedShard {
  std::string filename;
  std::vector<uint32_t> tensors;  // indices into Plan::tensors
  FileLayout layout;              // header bytes and offsets (reference order)
};

// Which layout a fused-but-ambiguous source is in: the Hub's or v5's.
enum class SourceLayout { kUnspecified, kHub, kV5 };

// What a conversion does to quantized weights (convert --dtype): keep them,
// dequantize every FP8 block-scaled and MXFP4 weight to a float type, or
// quantize float weights to FP8 with block scales.
enum class DTypeChange { kKeep, kToBF16, kToF16, kToF32, kToFP8 };

struct PlanOptions {
  Direction direction = Direction::kToFused;
  uint64_t max_shard_size = 5'000'000'000;  // decimal units, as the Hub
  SourceLayout source_layout = SourceLayout::kUnspecified;
  DTypeChange dtype = DTypeChange::kKeep;
  // kToFP8: the block of each scale; 0 takes config.json's or 128.
  uint64_t block_rows = 0, block_cols = 0;
  // Pad each output header (spaces, as the format allows) so that most
  // copied bytes keep their offset within a page: the kernel then copies
  // whole pages. Valid safetensors, but not the reference writer's bytes.
  bool align_pages = false;
};

// A source tensor the conversion computes from stored ones instead of
// reading it as stored: an FP8 weight dequantized with its block scales, an
// MXFP4 weight decoded, or a float weight quantized (its FP8 codes, or its
// scales). It is seen as `units` matrices [rows, cols] stacked (one per
// expert and projection of a fused tensor, one for a plain weight); plan
// ranges refer to its bytes as they read after the computation.
struct ComputedSource {
  // kDequantMXFP4 reads as v5 holds it ([E, cols, rows], each expert
  // transposed); kDequantMXFP4Rows as stored, [E, rows, cols] (what a
  // reader that transposes only the part it needs reads from).
  enum class Kind { kDequantFP8, kDequantMXFP4, kDequantMXFP4Rows, kQuantFP8, kQuantFP8Scales };
  Kind kind = Kind::kDequantFP8;
  std::string name;  // the stored tensor, for messages
  DType dtype = DType::BF16;
  std::vector<uint64_t> shape;
  uint64_t nbytes = 0;
  uint64_t units = 1, rows = 0, cols = 0;
  // The stored data (FP8 codes, MXFP4 blocks, or the float weight) and its
  // scales (FP8 weight_scale_inv, MXFP4 e8m0 scales; unused when quantizing).
  uint32_t data_file = 0;
  uint64_t data_offset = 0;  // absolute
  DType data_dtype = DType::U8;
  uint32_t scale_file = 0;
  uint64_t scale_offset = 0;
  uint64_t block_rows = 0, block_cols = 0;  // FP8 blocks; MXFP4: 1 x 32
};

struct Plan {
  std::string family;
  Direction direction = Direction::kToFused;
  std::string src_dir;
  // Indexed by CopyRange::src_file and BlockMove::src_file; an index past
  // the files is computed[index - src_files.size()].
  std::vector<std::string> src_files;
  std::vector<ComputedSource> computed;
  std::vector<PlannedTensor> tensors;  // in output order
  std::vector<PlannedShard> shards;
  std::vector<std::string> aux_files;  // relative to src_dir, copied as is (but config.json, see below)
  std::string index_json;              // empty when one model.safetensors suffices
  // config.json as DST gets it when the conversion changes what it says
  // (quantization_config, torch_dtype); empty: copied as is.
  std::string config_json;
  uint64_t total_bytes = 0;            // tensor bytes
  uint64_t source_tensors = 0;
  // Every tensor is copied under its own name: the checkpoint already is in
  // the layout asked for (gpt-oss to fused: v5 holds it as the Hub does).
  bool unchanged = false;
};

Result<Plan> MakePlan(const Checkpoint& src, const RuleSet& rules, const PlanOptions& options);

// Machine-readable summary (what --dry-run --json prints).
std::string PlanToJson(const Plan& plan, bool with_tensors);
std::string PlanToText(const Plan& plan);

}  // namespace moepack
