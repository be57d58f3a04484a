#include "plan/ops/dtype_op.h"

#include <algorithm>
#include <cstring>

#include "plan/ops/numerics.h"
#include "plan/ops/transpose_kernel.h"
#include "util/strings.h"

namespace moepack::ops {
namespace {

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

FloatType FloatOf(DType d) { return FloatTypeOf(d).value_or(FloatType::kBF16); }

uint64_t ElemBytes(DType d) { return static_cast<uint64_t>(DTypeBits(d) / 8); }

// The stored tensors a computed source reads: its codes and, when it has
// them, their scales.
void ReadsFrom(ComputedSource& c, const StoredTensor& data, const StoredTensor* scales) {
  c.data_file = data.file;
  c.data_offset = data.offset;
  c.data_dtype = data.dtype;
  if (scales) {
    c.scale_file = scales->file;
    c.scale_offset = scales->offset;
  }
}

// A weight seen as [units * rows, cols]: 2-D as it is, 3-D with its first
// two dims together. Sets rows and cols of `c`.
Status Matrices(const StoredTensor& t, uint64_t units, ComputedSource& c) {
  if (t.shape.size() != 2 && t.shape.size() != 3) {
    return Status::Corrupt("'" + t.name + "' has shape " + internal::ShapeString(t.shape) +
                           "; only 2-D and 3-D (fused) weights are block-quantized");
  }
  const uint64_t all_rows = t.shape.size() == 2 ? t.shape[0] : t.shape[0] * t.shape[1];
  if (units == 0 || all_rows % units) {
    return Status::Corrupt("'" + t.name + "' has shape " + internal::ShapeString(t.shape) + ", which does not cut into " +
                           std::to_string(units) + " matrices");
  }
  c.units = units;
  c.rows = all_rows / units;
  c.cols = t.shape.back();
  return Status::OK();
}

// The shape of the scales of a weight: one per block of each matrix, in the
// weight's own rank.
std::vector<uint64_t> ScaleShape(const StoredTensor& weight, const ComputedSource& c) {
  const uint64_t sr = CeilDiv(c.rows, c.block_rows), sc = CeilDiv(c.cols, c.block_cols);
  if (weight.shape.size() == 2) return {c.units * sr, sc};
  return {weight.shape[0], c.units / weight.shape[0] * sr, sc};
}

std::string BlockText(const ComputedSource& c) {
  return std::to_string(c.block_rows) + "x" + std::to_string(c.block_cols) + " blocks";
}

}  // namespace

DType TargetFloat(DTypeChange d) {
  switch (d) {
    case DTypeChange::kToF16: return DType::F16;
    case DTypeChange::kToF32: return DType::F32;
    default: return DType::BF16;
  }
}

std::string TorchDTypeName(DType d) {
  switch (d) {
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    default: return "bfloat16";
  }
}

std::pair<uint64_t, uint64_t> FP8Block(const RuleSet& rules, const ModelConfig* config, std::string_view prefix) {
  std::pair<uint64_t, uint64_t> block{kDefaultFP8Block, kDefaultFP8Block};
  if (!config) return block;
  auto from_config = [&](int i) -> std::optional<uint64_t> {
    for (const char* p : {"quantization_config.weight_block_size.", "text_config.quantization_config.weight_block_size."}) {
      if (auto v = config->Int(p + std::to_string(i)); v && *v > 0) return static_cast<uint64_t>(*v);
    }
    return std::nullopt;
  };
  if (auto v = rules.DimValue(*config, "BR", prefix)) block.first = *v;
  else if (auto c = from_config(0)) block.first = *c;
  if (auto v = rules.DimValue(*config, "BC", prefix)) block.second = *v;
  else if (auto c = from_config(1)) block.second = *c;
  return block;
}

namespace {
constexpr std::string_view kScaleInv = "_scale_inv", kBlocks = "_blocks", kScales = "_scales";
bool EndsWith(const std::string& a, std::string_view b) {
  return a.size() > b.size() && a.compare(a.size() - b.size(), b.size(), b) == 0;
}
std::string Base(const std::string& v5, std::string_view suffix) { return v5.substr(0, v5.size() - suffix.size()); }
}  // namespace

QuantPart QuantPartOf(const std::string& v5, DType dtype) {
  if (IsFloat8(dtype)) return QuantPart::kFP8Weight;
  if (EndsWith(v5, kScaleInv)) return QuantPart::kFP8Scales;
  if (dtype == DType::U8 && EndsWith(v5, kBlocks)) return QuantPart::kMXFP4Blocks;
  if (dtype == DType::U8 && EndsWith(v5, kScales)) return QuantPart::kMXFP4Scales;
  return QuantPart::kNone;
}

std::string PartnerOf(const std::string& v5, QuantPart part) {
  switch (part) {
    case QuantPart::kFP8Weight: return v5 + std::string(kScaleInv);
    case QuantPart::kFP8Scales: return Base(v5, kScaleInv);
    case QuantPart::kMXFP4Blocks: return Base(v5, kBlocks) + std::string(kScales);
    case QuantPart::kMXFP4Scales: return Base(v5, kScales) + std::string(kBlocks);
    case QuantPart::kNone: break;
  }
  return v5;
}

std::string DequantizedName(const std::string& v5, QuantPart part) {
  switch (part) {
    case QuantPart::kFP8Scales: return Base(v5, kScaleInv);
    case QuantPart::kMXFP4Blocks: return Base(v5, kBlocks);
    case QuantPart::kMXFP4Scales: return Base(v5, kScales);
    default: return v5;
  }
}

bool QuantizesToFP8(const RuleSet& rules, const std::string& v5, DType dtype, const std::vector<uint64_t>& shape) {
  if (dtype != DType::BF16 && dtype != DType::F16 && dtype != DType::F32) return false;
  if (auto m = rules.MatchTarget(v5)) return shape.size() == 3 && rules.ScalesOf(m->fusion) >= 0;
  if (auto m = rules.MatchSource(v5)) return shape.size() == 2 && rules.ScalesOf(m->fusion) >= 0;
  if (shape.size() != 2 || !EndsWith(v5, ".weight")) return false;
  // The module's own name: the component before ".weight".
  const std::string module = v5.substr(0, v5.size() - 7);
  const std::string leaf = module.substr(module.rfind('.') + 1);
  static const char* kKept[] = {"embed", "lm_head", "head", "norm", "gate", "router", "wg", "score", "bias"};
  for (const char* k : kKept) {
    if (leaf.find(k) != std::string::npos && leaf.find("_proj") == std::string::npos) return false;
  }
  return module.find("router") == std::string::npos && module.find("embed") == std::string::npos;
}

Result<uint64_t> QuantizedMatrices(const RuleSet& rules, const std::string& v5, const std::vector<uint64_t>& shape) {
  if (auto m = rules.MatchTarget(v5); m && shape.size() == 3) {
    const FusionRule& f = rules.fusions()[m->fusion];
    if (f.transpose || f.interleave || f.concat_dim != 1) {
      return Status::InvalidArgument("'" + v5 + "': block scales of a fused tensor in the layout of fusion \"" + f.name +
                                     "\" are not converted (only [E, K*rows, cols] fused along dim 1)");
    }
    return shape[0] * f.sources.size();
  }
  return shape.size() == 3 ? shape[0] : 1;
}

Result<ComputedSource> DequantFP8(const StoredTensor& weight, const StoredTensor& scale, uint64_t units,
                                  uint64_t block_rows, uint64_t block_cols, DType out) {
  if (weight.dtype != DType::F8_E4M3) {
    return Status::InvalidArgument("'" + weight.name + "' is " + std::string(DTypeName(weight.dtype)) +
                                   ": only F8_E4M3 block-scaled weights are dequantized");
  }
  if (scale.dtype != DType::F32) {
    return Status::Corrupt("'" + scale.name + "' is " + std::string(DTypeName(scale.dtype)) +
                           " but the block scales of an F8_E4M3 weight are F32");
  }
  ComputedSource c;
  c.kind = ComputedSource::Kind::kDequantFP8;
  c.name = weight.name;
  c.block_rows = block_rows;
  c.block_cols = block_cols;
  MOEPACK_RETURN_IF_ERROR(Matrices(weight, units, c));
  const std::vector<uint64_t> want = ScaleShape(weight, c);
  if (scale.shape != want) {
    return Status::Corrupt("'" + scale.name + "' has shape " + internal::ShapeString(scale.shape) + " but '" +
                           weight.name + "' " + internal::ShapeString(weight.shape) + " in " + BlockText(c) +
                           " needs " + internal::ShapeString(want) + " (a truncated or foreign scale grid)");
  }
  c.dtype = out;
  c.shape = weight.shape;
  c.nbytes = c.units * c.rows * c.cols * ElemBytes(out);
  ReadsFrom(c, weight, &scale);
  return c;
}

Result<ComputedSource> DequantMXFP4(const StoredTensor& blocks, const StoredTensor& scales, DType out) {
  const auto& b = blocks.shape;
  if (blocks.dtype != DType::U8 || b.size() != 4 || b[3] != 16) {
    return Status::Corrupt("'" + blocks.name + "' is " + std::string(DTypeName(blocks.dtype)) + " " +
                           internal::ShapeString(b) + " but MXFP4 blocks are U8 [E, rows, groups, 16]");
  }
  if (scales.dtype != DType::U8 || scales.shape != std::vector<uint64_t>{b[0], b[1], b[2]}) {
    return Status::Corrupt("'" + scales.name + "' is " + std::string(DTypeName(scales.dtype)) + " " +
                           internal::ShapeString(scales.shape) + " but the e8m0 scales of '" + blocks.name +
                           "' are U8 " + internal::ShapeString({b[0], b[1], b[2]}));
  }
  ComputedSource c;
  c.kind = ComputedSource::Kind::kDequantMXFP4;
  c.name = blocks.name;
  c.units = b[0];
  c.rows = b[1];
  c.cols = b[2] * 32;
  c.block_rows = 1;
  c.block_cols = 32;
  c.dtype = out;
  c.shape = {b[0], c.cols, c.rows};
  c.nbytes = c.units * c.rows * c.cols * ElemBytes(out);
  ReadsFrom(c, blocks, &scales);
  return c;
}

ComputedSource DecodedRows(const ComputedSource& c) {
  ComputedSource r = c;
  r.kind = ComputedSource::Kind::kDequantMXFP4Rows;
  r.shape = {c.units, c.rows, c.cols};
  return r;
}

std::optional<std::vector<BlockMove>> AsDecodedTransposes(const ComputedSource& c, uint32_t decoded_file,
                                                          const CopyRange& r) {
  if (c.kind != ComputedSource::Kind::kDequantMXFP4) return std::nullopt;
  const uint64_t eo = ElemBytes(c.dtype), slab = c.rows * c.cols * eo;
  if (r.src_offset % slab || r.length % slab) return std::nullopt;
  std::vector<BlockMove> out;
  for (uint64_t k = 0; k < r.length / slab; ++k) {
    BlockMove b;
    b.src_file = decoded_file;
    b.src_offset = r.src_offset + k * slab;
    b.dst_offset = r.dst_offset + k * slab;
    b.rows = c.rows;
    b.cols = c.cols;
    b.elem_bytes = static_cast<uint32_t>(eo);
    // Source [rows, cols] row-major into [cols, rows] row-major.
    b.src_row_stride = c.cols * eo;
    b.src_col_stride = eo;
    b.dst_row_stride = eo;
    b.dst_col_stride = c.rows * eo;
    out.push_back(b);
  }
  return out;
}

Result<ComputedSource> QuantFP8(const StoredTensor& weight, uint64_t units, uint64_t block_rows, uint64_t block_cols,
                                bool scales) {
  if (weight.dtype != DType::BF16 && weight.dtype != DType::F16 && weight.dtype != DType::F32) {
    return Status::InvalidArgument("'" + weight.name + "' is " + std::string(DTypeName(weight.dtype)) +
                                   ": only BF16, F16 and F32 weights are quantized");
  }
  ComputedSource c;
  c.kind = scales ? ComputedSource::Kind::kQuantFP8Scales : ComputedSource::Kind::kQuantFP8;
  c.name = weight.name;
  c.block_rows = block_rows;
  c.block_cols = block_cols;
  MOEPACK_RETURN_IF_ERROR(Matrices(weight, units, c));
  c.dtype = scales ? DType::F32 : DType::F8_E4M3;
  c.shape = scales ? ScaleShape(weight, c) : weight.shape;
  c.nbytes = scales ? c.units * CeilDiv(c.rows, block_rows) * CeilDiv(c.cols, block_cols) * 4 : c.units * c.rows * c.cols;
  ReadsFrom(c, weight, nullptr);
  return c;
}

namespace {

// FP8 dequantization, a row segment at a time; full rows within one block
// row are read and computed together.
Status ReadDequantFP8(const ComputedSource& c, uint64_t offset, uint64_t len, uint8_t* dst, const ReadStored& read) {
  const uint64_t eo = ElemBytes(c.dtype);
  const uint64_t sr = CeilDiv(c.rows, c.block_rows), sc = CeilDiv(c.cols, c.block_cols);
  const FloatType ft = FloatOf(c.dtype);
  std::vector<uint8_t> w;
  std::vector<float> srow(sc);
  for (uint64_t e = offset / eo, end = (offset + len) / eo; e < end;) {
    const uint64_t g = e / c.cols, c0 = e % c.cols;
    const uint64_t u = g / c.rows, r = g % c.rows;
    // Full rows up to the end of the block row, or one row's segment.
    uint64_t nrows = 1, c1 = std::min(c.cols, c0 + (end - e));
    if (c0 == 0 && c1 == c.cols) {
      const uint64_t band_end = std::min(c.rows, (r / c.block_rows + 1) * c.block_rows);
      nrows = std::min(band_end - r, (end - e) / c.cols);
    }
    const uint64_t n = nrows == 1 ? c1 - c0 : nrows * c.cols;
    w.resize(n);
    MOEPACK_RETURN_IF_ERROR(read(c.data_file, c.data_offset + g * c.cols + c0, n, w.data()));
    // Only the scales of the blocks the segment touches: a rank's slice
    // reads its own scales.
    const uint64_t b0 = c0 / c.block_cols, b1 = CeilDiv(c1, c.block_cols);
    MOEPACK_RETURN_IF_ERROR(read(c.scale_file, c.scale_offset + ((u * sr + r / c.block_rows) * sc + b0) * 4,
                                 (b1 - b0) * 4, srow.data()));
    const uint64_t seg = nrows == 1 ? c1 - c0 : c.cols;
    for (uint64_t k = 0; k < nrows; ++k) {
      DequantFp8Row(w.data() + k * c.cols, srow.data(), seg, c.block_cols, ft, dst, c0 - b0 * c.block_cols);
      dst += seg * eo;
    }
    e += nrows == 1 ? c1 - c0 : nrows * c.cols;
  }
  return Status::OK();
}

// MXFP4 decoded as stored, [units * rows, cols]: each row segment from the
// groups of 32 it touches (whole rows from one read of their blocks and
// scales).
Status ReadMXFP4Rows(const ComputedSource& c, uint64_t offset, uint64_t len, uint8_t* dst, const ReadStored& read) {
  const uint64_t eo = ElemBytes(c.dtype), groups = c.cols / 32;
  std::vector<uint8_t> blocks, scales, decoded;
  for (uint64_t e = offset / eo, end = (offset + len) / eo; e < end;) {
    const uint64_t g = e / c.cols, c0 = e % c.cols;
    uint64_t nrows = 1, c1 = std::min(c.cols, c0 + (end - e));
    if (c0 == 0 && c1 == c.cols) nrows = (end - e) / c.cols;
    const uint64_t g0 = nrows > 1 ? 0 : c0 / 32, g1 = nrows > 1 ? groups : CeilDiv(c1, 32);
    const uint64_t n = nrows > 1 ? nrows * groups : g1 - g0;  // groups to read
    blocks.resize(n * 16);
    scales.resize(n);
    MOEPACK_RETURN_IF_ERROR(read(c.data_file, c.data_offset + (g * groups + g0) * 16, blocks.size(), blocks.data()));
    MOEPACK_RETURN_IF_ERROR(read(c.scale_file, c.scale_offset + g * groups + g0, scales.size(), scales.data()));
    if (nrows > 1) {
      DequantMxfp4Row(blocks.data(), scales.data(), n, FloatOf(c.dtype), dst);
      dst += nrows * c.cols * eo;
      e += nrows * c.cols;
      continue;
    }
    decoded.resize(n * 32 * eo);
    DequantMxfp4Row(blocks.data(), scales.data(), n, FloatOf(c.dtype), decoded.data());
    std::memcpy(dst, decoded.data() + (c0 - g0 * 32) * eo, (c1 - c0) * eo);
    dst += (c1 - c0) * eo;
    e += c1 - c0;
  }
  return Status::OK();
}

// MXFP4 as v5 holds it, an expert at a time: decoded [rows, cols], then
// transposed to [cols, rows].
Status ReadDequantMXFP4(const ComputedSource& c, uint64_t offset, uint64_t len, uint8_t* dst, const ReadStored& read) {
  const uint64_t eo = ElemBytes(c.dtype);
  const uint64_t slab = c.rows * c.cols * eo;
  const ComputedSource rows_of = DecodedRows(c);
  std::vector<uint8_t> rows(slab), out(slab);
  for (uint64_t u = offset / slab; u * slab < offset + len; ++u) {
    MOEPACK_RETURN_IF_ERROR(ReadMXFP4Rows(rows_of, u * slab, slab, rows.data(), read));
    internal::Transpose(rows.data(), out.data(), c.rows, c.cols, static_cast<uint32_t>(eo));
    const uint64_t lo = std::max(offset, u * slab), hi = std::min(offset + len, (u + 1) * slab);
    std::memcpy(dst + (lo - offset), out.data() + (lo - u * slab), hi - lo);
  }
  return Status::OK();
}

// FP8 quantization, a block row of one matrix at a time: its codes and its
// scales come out of the same computation.
Status ReadQuantFP8(const ComputedSource& c, uint64_t offset, uint64_t len, uint8_t* dst, const ReadStored& read) {
  const bool want_scales = c.kind == ComputedSource::Kind::kQuantFP8Scales;
  const uint64_t es = ElemBytes(c.data_dtype);
  const uint64_t sr = CeilDiv(c.rows, c.block_rows), sc = CeilDiv(c.cols, c.block_cols);
  // Bytes of one block row of output: codes of block_rows rows, or one row of scales.
  std::vector<uint8_t> in, codes;
  std::vector<float> band_scales(sc);
  const uint64_t band_out = want_scales ? sc * 4 : c.block_rows * c.cols;
  uint64_t first = offset / band_out;
  if (!want_scales) {
    const uint64_t g = offset / c.cols;
    first = g / c.rows * sr + g % c.rows / c.block_rows;
  }
  for (uint64_t b = first; b < c.units * sr; ++b) {
    const uint64_t u = b / sr, r0 = (b % sr) * c.block_rows;
    const uint64_t nr = std::min(c.block_rows, c.rows - r0);
    // Where this band's output starts and ends among the computed bytes.
    const uint64_t lo = want_scales ? b * band_out : (u * c.rows + r0) * c.cols;
    const uint64_t hi = want_scales ? lo + band_out : lo + nr * c.cols;
    if (hi <= offset) continue;
    if (lo >= offset + len) break;
    in.resize(nr * c.cols * es);
    codes.resize(nr * c.cols);
    MOEPACK_RETURN_IF_ERROR(read(c.data_file, c.data_offset + (u * c.rows + r0) * c.cols * es, in.size(), in.data()));
    QuantizeFp8(in.data(), FloatOf(c.data_dtype), nr, c.cols, c.cols, c.block_rows, c.block_cols, codes.data(),
                band_scales.data());
    const uint8_t* from = want_scales ? reinterpret_cast<const uint8_t*>(band_scales.data()) : codes.data();
    const uint64_t s = std::max(lo, offset), e = std::min(hi, offset + len);
    std::memcpy(dst + (s - offset), from + (s - lo), e - s);
  }
  return Status::OK();
}

}  // namespace

Status ReadComputed(const ComputedSource& c, uint64_t offset, uint64_t len, void* dst, const ReadStored& read) {
  if (len == 0) return Status::OK();
  auto* out = static_cast<uint8_t*>(dst);
  switch (c.kind) {
    case ComputedSource::Kind::kDequantFP8: return ReadDequantFP8(c, offset, len, out, read);
    case ComputedSource::Kind::kDequantMXFP4: return ReadDequantMXFP4(c, offset, len, out, read);
    case ComputedSource::Kind::kDequantMXFP4Rows: return ReadMXFP4Rows(c, offset, len, out, read);
    case ComputedSource::Kind::kQuantFP8:
    case ComputedSource::Kind::kQuantFP8Scales: return ReadQuantFP8(c, offset, len, out, read);
  }
  return Status::OK();
}

}  // namespace moepack::ops
