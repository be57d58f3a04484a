#include "plan/ops/fusion_op.h"

#include "util/strings.h"

namespace moepack::ops {
namespace {

std::string RuleLabel(const FusionRule& f) { return "fusion \"" + f.name + "\""; }

uint64_t Times(uint64_t k, uint64_t d) { return k * d; }

// "2*I", "2*(I/BR)": k copies of a symbolic dim, for messages.
std::string SymbolTimes(uint64_t k, const std::string& d) {
  if (k == 1) return d;
  const std::string n = std::to_string(k);
  return d.find_first_of("*/") == std::string::npos ? n + "*" + d : n + "*(" + d + ")";
}

}  // namespace

std::string ShapeExprString(const std::vector<std::string>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + shape[i];
  return s + "]";
}

std::string FusedShapeExpr(const FusionRule& f) {
  return ShapeExprString(FusedShapeOf<std::string>(FusionForm::Of(f), "E", f.source_shape, SymbolTimes));
}

FusionOp::FusionOp(const FusionRule& rule, uint64_t experts, DType dtype, std::vector<uint64_t> source_shape)
    : form_(FusionForm::Of(rule)), experts_(experts), dtype_(dtype), source_shape_(std::move(source_shape)) {}

Status FusionOp::Layout(const std::string& rule_label) {
  const int bits = DTypeBits(dtype_);
  if (form_.transpose) {
    if (source_shape_.size() != 2) {
      return Status::Corrupt(rule_label + " transposes 2-D sources, got " + internal::ShapeString(source_shape_));
    }
    if (bits % 8) {
      return Status::Corrupt(rule_label + " cannot transpose " + std::string(DTypeName(dtype_)) + " elements");
    }
    if (form_.concat_dim > 2) return Status::Corrupt(rule_label + ": concat dim " + std::to_string(form_.concat_dim) +
                                                     " is outside a 3-D fused tensor");
  }
  const size_t axis = form_.transpose ? 0 : static_cast<size_t>(form_.concat_dim - 1);
  if (axis >= source_shape_.size()) {
    return Status::Corrupt(rule_label + ": concat dim " + std::to_string(axis + 1) + " is outside a " +
                           std::to_string(source_shape_.size() + 1) + "-D fused tensor");
  }
  // [outer, n, inner] elements around the concat dim of one source.
  uint64_t outer = 1, inner = 1, all = 1;
  for (size_t d = 0; d < source_shape_.size(); ++d) {
    if (__builtin_mul_overflow(all, source_shape_[d], &all)) return Status::Corrupt(rule_label + ": tensor size overflows");
    if (d < axis) outer *= source_shape_[d];
    if (d > axis) inner *= source_shape_[d];
  }
  auto bytes = ByteSize(dtype_, all);
  // Whole bytes per chunk (per element when interleaving) keep every move
  // a byte move.
  auto unit = form_.interleave ? ByteSize(dtype_, inner) : ByteSize(dtype_, source_shape_[axis] * inner);
  if (!bytes || !unit) {
    return Status::Corrupt(rule_label + ": " + std::string(DTypeName(dtype_)) + " slices of " +
                           std::to_string(form_.interleave ? inner : source_shape_[axis] * inner) +
                           " elements are not whole bytes");
  }
  source_bytes_ = *bytes;
  outer_ = outer;
  n_ = source_shape_[axis];
  if (form_.interleave) {
    unit_bytes_ = *unit;
  } else {
    chunk_bytes_ = *unit;
  }
  uint64_t total = 0;
  if (__builtin_mul_overflow(source_bytes_, form_.sources, &total) || __builtin_mul_overflow(total, experts_, &total)) {
    return Status::Corrupt(rule_label + ": fused tensor size overflows");
  }
  fused_shape_ = FusedShapeOf<uint64_t>(form_, experts_, source_shape_, Times);
  return Status::OK();
}

Result<FusionOp> FusionOp::FromSource(const FusionRule& rule, uint64_t experts, DType dtype,
                                      const std::vector<uint64_t>& source_shape) {
  FusionOp op(rule, experts, dtype, source_shape);
  MOEPACK_RETURN_IF_ERROR(op.Layout(RuleLabel(rule)));
  return op;
}

Result<FusionOp> FusionOp::FromFused(const FusionRule& rule, DType dtype, const std::vector<uint64_t>& fused,
                                     std::optional<uint64_t> experts) {
  const std::string shape = internal::ShapeString(fused);
  if (experts && (fused.size() < 2 || fused[0] != *experts)) {
    return Status::Corrupt("fused shape " + shape + " does not start with the " + std::to_string(*experts) +
                           " experts that config.json declares");
  }
  if (fused.size() < 2) return Status::Corrupt("fused shape " + shape + " has no expert dim");
  const uint64_t E = fused[0], K = rule.sources.size();
  uint64_t pieces = 0;
  if (__builtin_mul_overflow(E, K, &pieces) || pieces > kMaxSplitPieces) {
    // A zero-byte fused tensor can claim any number of experts.
    return Status::Corrupt("splitting " + std::to_string(E) + " experts into " + std::to_string(K) +
                           " sources would make too many tensors (the limit is " + std::to_string(kMaxSplitPieces) +
                           ")");
  }
  std::vector<uint64_t> per(fused.begin() + 1, fused.end());
  if (rule.transpose && per.size() != 2) return Status::Corrupt(RuleLabel(rule) + " transposes 2-D slices, got " + shape);
  const size_t axis = static_cast<size_t>(rule.concat_dim - 1);
  if (axis >= per.size() || per[axis] % K) {
    return Status::Corrupt("shape " + shape + " cannot split into " + std::to_string(K) + " sources along dim " +
                           std::to_string(axis + 1) + " (" + RuleLabel(rule) + ")");
  }
  per[axis] /= K;
  if (rule.transpose) per = {per[1], per[0]};
  FusionOp op(rule, E, dtype, std::move(per));
  MOEPACK_RETURN_IF_ERROR(op.Layout(RuleLabel(rule)));
  return op;
}

Status FusionOp::CheckSource(DType dtype, const std::vector<uint64_t>& shape, const std::string& what,
                             const std::string& first) const {
  if (dtype != dtype_) {
    return Status::Corrupt(what + " is " + std::string(DTypeName(dtype)) + " but " + first + " is " +
                           std::string(DTypeName(dtype_)));
  }
  if (shape != source_shape_) {
    return Status::Corrupt(what + " has shape " + internal::ShapeString(shape) + " but " + first + " has " +
                           internal::ShapeString(source_shape_) + " (fused sources must share one shape)");
  }
  return Status::OK();
}

Pieces FusionOp::SourceInFused(uint64_t j, uint64_t k) const {
  const uint64_t K = form_.sources;
  const uint64_t slice = source_bytes_ * K;  // one expert in the fused tensor
  const uint64_t base = j * slice;
  Pieces p;
  if (source_bytes_ == 0) return p;
  if (form_.transpose) {
    // Source element (r, c) is element (c, r) of its transposed slot: along
    // fused dim 1 after the other sources' rows, or (dim 2) in each row after
    // their columns, or (interleaved) alternating with them.
    const uint32_t e = static_cast<uint32_t>(DTypeBits(dtype_) / 8);
    const uint64_t s0 = source_shape_[0], s1 = source_shape_[1];
    Block b;
    b.src = 0;
    b.rows = s0;
    b.cols = s1;
    b.elem_bytes = e;
    b.src_row = s1 * e;
    b.src_col = e;
    if (form_.concat_dim == 1 && !form_.interleave) {
      b = Block::Transposing(0, base + k * s0 * s1 * e, s0, s1, e);
    } else if (form_.concat_dim == 2 && form_.interleave) {
      b.dst = base + k * e;
      b.dst_row = K * e;
      b.dst_col = K * s0 * e;
    } else {  // rows interleaved along dim 1 are laid out as halves along dim 2
      b.dst = base + k * s0 * e;
      b.dst_row = e;
      b.dst_col = K * s0 * e;
    }
    p.blocks.push_back(b);
    return p;
  }
  if (!form_.interleave) {
    const uint64_t chunk = chunk_bytes_;
    p.runs.reserve(outer_);
    for (uint64_t o = 0; o < outer_; ++o) p.runs.push_back(Run{o * chunk, base + (o * K + k) * chunk, chunk});
    return p;
  }
  // Interleaved: unit x of source k is unit K*x + k of the fused run.
  constexpr uint64_t kRunBytes = 512;  // larger units copy as runs, smaller ones move as elements
  if (unit_bytes_ >= kRunBytes) {
    p.runs.reserve(outer_ * n_);
    for (uint64_t o = 0; o < outer_; ++o) {
      for (uint64_t x = 0; x < n_; ++x) {
        p.runs.push_back(Run{(o * n_ + x) * unit_bytes_, base + (o * K * n_ + K * x + k) * unit_bytes_, unit_bytes_});
      }
    }
    return p;
  }
  Block b;
  b.src = 0;
  b.dst = base + k * unit_bytes_;
  b.rows = outer_;
  b.cols = n_;
  b.elem_bytes = static_cast<uint32_t>(unit_bytes_);
  b.src_row = n_ * unit_bytes_;
  b.src_col = unit_bytes_;
  b.dst_row = K * n_ * unit_bytes_;
  b.dst_col = K * unit_bytes_;
  p.blocks.push_back(b);
  return p;
}

int FusionForm::SourceDim(int fused_dim) const {
  if (fused_dim <= 0) return -1;
  if (transpose) return fused_dim == 1 ? 1 : 0;
  return fused_dim - 1;
}

Status CheckSourceShape(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                        const std::vector<uint64_t>& source, const std::string& what) {
  const FusionRule& f = rules.fusions()[fusion];
  std::vector<uint64_t> want;
  std::string given;
  if (f.source_shape.empty() || !rules.ResolveShape(config, f.source_shape, 0, prefix, &want, &given) ||
      source == want) {
    return Status::OK();
  }
  return Status::Corrupt(what + " has shape " + internal::ShapeString(source) + " but config.json (" + given +
                         ") gives " + ShapeExprString(f.source_shape) + " = " + internal::ShapeString(want) +
                         " per expert (fusion \"" + f.name + "\")");
}

Status CheckFusedShape(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                       int64_t experts, const std::vector<uint64_t>& fused, const std::string& what) {
  const FusionRule& f = rules.fusions()[fusion];
  std::vector<uint64_t> source;
  std::string given;
  if (f.source_shape.empty() || !rules.ResolveShape(config, f.source_shape, experts, prefix, &source, &given)) {
    return Status::OK();
  }
  const FusionForm form = FusionForm::Of(f);
  const auto want = FusedShapeOf<uint64_t>(form, static_cast<uint64_t>(experts), source, Times);
  if (fused == want) return Status::OK();
  return Status::Corrupt(what + " has shape " + internal::ShapeString(fused) + " but config.json (E=" +
                         std::to_string(experts) + ", " + given + ") gives the fused layout " + FusedShapeExpr(f) +
                         " = " + internal::ShapeString(want) + " (fusion \"" + f.name +
                         "\"); a transposed or foreign layout is not converted");
}

Result<FusionOp> FuseOf(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                        uint64_t experts, DType dtype, const std::vector<uint64_t>& source, const std::string& what) {
  MOEPACK_RETURN_IF_ERROR(CheckSourceShape(rules, config, fusion, prefix, source, what));
  auto op = FusionOp::FromSource(rules.fusions()[fusion], experts, dtype, source);
  if (!op.ok()) return op.status().WithPrefix(what);
  return op;
}

Result<FusionOp> CutOf(const RuleSet& rules, const ModelConfig& config, int fusion, std::string_view prefix,
                       uint64_t experts, DType dtype, const std::vector<uint64_t>& fused, const std::string& what) {
  // A wrong expert count is reported as such, not as a wrong fused shape.
  if (fused.size() >= 2 && fused[0] == experts) {
    MOEPACK_RETURN_IF_ERROR(
        CheckFusedShape(rules, config, fusion, prefix, static_cast<int64_t>(experts), fused, what));
  }
  auto op = FusionOp::FromFused(rules.fusions()[fusion], dtype, fused, experts);
  if (!op.ok()) return op.status().WithPrefix(what);
  return op;
}

}  // namespace moepack::ops
