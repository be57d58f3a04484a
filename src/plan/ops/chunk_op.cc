#include "plan/ops/chunk_op.h"

#include "util/strings.h"

namespace moepack::ops {
namespace {

// The fusion that has the chunk op's geometry: the parts stacked under one
// expert and joined along `dim` (fused dim dim + 1).
FusionRule AsFusion(const ChunkRule& c) {
  FusionRule f;
  f.name = c.name;
  f.target = c.source;
  f.sources = c.targets;
  f.concat_dim = c.dim + 1;
  return f;
}

}  // namespace

ChunkOp::ChunkOp(FusionOp op) : op_(std::move(op)), whole_(op_.fused_shape().begin() + 1, op_.fused_shape().end()) {}

Result<ChunkOp> ChunkOp::FromWhole(const ChunkRule& rule, DType dtype, const std::vector<uint64_t>& whole) {
  std::vector<uint64_t> fused = {1};
  fused.insert(fused.end(), whole.begin(), whole.end());
  auto op = FusionOp::FromFused(AsFusion(rule), dtype, fused);
  if (!op.ok()) {
    return Status::Corrupt("shape " + internal::ShapeString(whole) + " does not cut into " +
                           std::to_string(rule.targets.size()) + " equal parts along dim " + std::to_string(rule.dim) +
                           " (chunk \"" + rule.name + "\")");
  }
  return ChunkOp(std::move(op).value());
}

Result<ChunkOp> ChunkOp::FromPart(const ChunkRule& rule, DType dtype, const std::vector<uint64_t>& part) {
  auto op = FusionOp::FromSource(AsFusion(rule), 1, dtype, part);
  if (!op.ok()) {
    return Status::Corrupt("shape " + internal::ShapeString(part) + " has no dim " + std::to_string(rule.dim) +
                           " to join along (chunk \"" + rule.name + "\")");
  }
  return ChunkOp(std::move(op).value());
}

}  // namespace moepack::ops
