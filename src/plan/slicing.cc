#include "plan/slicing.h"

#include <string>

namespace moepack::internal {

Result<ConcatGeometry> Geometry(const std::vector<uint64_t>& shape, DType dtype, uint64_t sources, int axis) {
  if (axis < 0 || static_cast<size_t>(axis) >= shape.size()) {
    return Status::InvalidArgument("concat dim " + std::to_string(axis + 1) + " is outside a " +
                                   std::to_string(shape.size() + 1) + "-D fused tensor");
  }
  ConcatGeometry g;
  g.sources = sources;
  uint64_t inner = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    uint64_t& acc = d < static_cast<size_t>(axis) ? g.outer : inner;
    if (__builtin_mul_overflow(acc, shape[d], &acc)) return Status::InvalidArgument("tensor size overflows");
  }
  auto bytes = ByteSize(dtype, inner);
  if (!bytes) {
    return Status::InvalidArgument(std::string(DTypeName(dtype)) + " slices of " + std::to_string(inner) +
                                   " elements are not whole bytes");
  }
  g.chunk_bytes = *bytes;
  return g;
}

}  // namespace moepack::internal
