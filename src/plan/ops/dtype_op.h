// The dtype ops: a stored tensor read as another element type while
// converting. Dequantization reads an FP8 block-scaled weight (F8_E4M3 with
// its F32 weight_scale_inv) or an MXFP4 weight (gpt-oss: e2m1 blocks with
// e8m0 scales) as BF16, F16 or F32; quantization reads a float weight as FP8
// codes and their block scales. Each is a ComputedSource (plan.h) that the
// other ops then move like any stored tensor: a computed range of bytes
// takes the place of a copied one, read and computed by the same workers,
// in units no larger than a block row of one matrix (an expert for MXFP4),
// so memory stays flat in model size.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack::ops {

// DeepSeek-V3's and the *-FP8 checkpoints' block, when neither the rules
// nor config.json say.
inline constexpr uint64_t kDefaultFP8Block = 128;

// A tensor as stored: where its bytes are and what they are.
struct StoredTensor {
  std::string name;
  uint32_t file = 0;
  uint64_t offset = 0;  // absolute
  DType dtype = DType::U8;
  std::vector<uint64_t> shape;
};

// The float type a change to `d` dequantizes into (BF16, F16, F32).
DType TargetFloat(DTypeChange d);
// config.json's name of a float type: "bfloat16", "float16", "float32".
std::string TorchDTypeName(DType d);

// The FP8 block [rows, cols] of tensors under `prefix`: the rules' dims BR
// and BC, else config.json's quantization_config.weight_block_size (top
// level or in text_config), else 128x128. `config` may be null.
std::pair<uint64_t, uint64_t> FP8Block(const RuleSet& rules, const ModelConfig* config, std::string_view prefix);

// How stored tensors pair up to be dequantized, by their v5 names: an
// F8_E4M3 weight X with its scales X_scale_inv (F32); MXFP4 blocks X_blocks
// with X_scales (both U8), which read as X.
enum class QuantPart { kNone, kFP8Weight, kFP8Scales, kMXFP4Blocks, kMXFP4Scales };
QuantPart QuantPartOf(const std::string& v5, DType dtype);
// The v5 name of the other tensor of the pair, and the name the pair reads
// under once dequantized.
std::string PartnerOf(const std::string& v5, QuantPart part);
std::string DequantizedName(const std::string& v5, QuantPart part);

// Whether quantizing to FP8 takes the tensor named `v5` (a float weight):
// what FP8 checkpoints of MoE families (DeepSeek-V3, Qwen3-*-FP8,
// MiniMax-M2) quantize, i.e. every 2-D linear weight ("*.weight") and every
// fused expert weight that has a scale fusion, except embeddings, the
// output head, norms, routers (gate, router, shared_expert_gate) and
// correction biases, which they keep in BF16 or F32.
bool QuantizesToFP8(const RuleSet& rules, const std::string& v5, DType dtype, const std::vector<uint64_t>& shape);

// How many matrices a block-quantized weight named `v5` holds: one per
// expert and source of a fused tensor (its scales are fused like the
// weights), else one (2-D) or one per slice of dim 0 (3-D). A fused layout
// whose matrices are not whole row ranges is refused.
Result<uint64_t> QuantizedMatrices(const RuleSet& rules, const std::string& v5, const std::vector<uint64_t>& shape);

// `weight` [units*rows, cols] (2-D) or [E, K*rows, cols] (3-D, one unit per
// expert and source) of F8_E4M3 with `scale` [units*ceil(rows/br),
// ceil(cols/bc)] (or its 3-D form) of F32, read as `out`. Errors name the
// tensors: another FP8 format, scales of the wrong dtype, a scale grid that
// does not fit the weight.
Result<ComputedSource> DequantFP8(const StoredTensor& weight, const StoredTensor& scale, uint64_t units,
                                  uint64_t block_rows, uint64_t block_cols, DType out);

// gpt-oss's `blocks` [E, R, G, 16] U8 and `scales` [E, R, G] U8, read as
// `out` [E, G*32, R]: decoded row by row, then each expert transposed, as
// transformers' MXFP4 dequantization gives the layout GptOss holds.
Result<ComputedSource> DequantMXFP4(const StoredTensor& blocks, const StoredTensor& scales, DType out);

// The same MXFP4 weight read untransposed, [E, rows, cols]; and the copy
// range `r` of a kDequantMXFP4 source `c` written as transposes (one per
// expert) of that one, which is plan file `decoded_file`: a reader that
// needs a few of the output's columns then decodes only those rows. Null
// when `c` is not MXFP4 or `r` is not whole experts.
ComputedSource DecodedRows(const ComputedSource& c);
std::optional<std::vector<BlockMove>> AsDecodedTransposes(const ComputedSource& c, uint32_t decoded_file,
                                                          const CopyRange& r);

// A float weight (BF16, F16, F32) [units*rows, cols] read as FP8 codes
// (`scales` false) or as their F32 block scales [units*ceil(rows/br),
// ceil(cols/bc)] (`scales` true), 3-D weights keeping their dim 0.
Result<ComputedSource> QuantFP8(const StoredTensor& weight, uint64_t units, uint64_t block_rows, uint64_t block_cols,
                                bool scales);

// Reads `len` bytes at `offset` of the stored file `file` into `dst`.
using ReadStored = std::function<Status(uint32_t file, uint64_t offset, uint64_t len, void* dst)>;

// Bytes [offset, offset + len) of the computed tensor, read through `read`
// (only the stored bytes those need, and their scales) and computed.
// REQUIRES: offset and len are whole elements of c.dtype.
Status ReadComputed(const ComputedSource& c, uint64_t offset, uint64_t len, void* dst, const ReadStored& read);

}  // namespace moepack::ops
