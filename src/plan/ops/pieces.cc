#include "plan/ops/pieces.h"

#include <cstring>

#include "plan/ops/transpose_kernel.h"

namespace moepack::ops {

Pieces Pieces::Inverse() const {
  Pieces inv;
  inv.runs.reserve(runs.size());
  for (const Run& r : runs) inv.runs.push_back(Run{r.dst, r.src, r.length});
  inv.blocks.reserve(blocks.size());
  // The transpose of [cols, rows] is [rows, cols] again.
  for (const Block& b : blocks) inv.blocks.push_back(Block{b.dst, b.src, b.cols, b.rows, b.elem_bytes});
  return inv;
}

uint64_t Pieces::bytes() const {
  uint64_t n = 0;
  for (const Run& r : runs) n += r.length;
  for (const Block& b : blocks) n += b.bytes();
  return n;
}

Pieces Pieces::ShiftDst(int64_t delta) const {
  Pieces p = *this;
  for (Run& r : p.runs) r.dst += static_cast<uint64_t>(delta);
  for (Block& b : p.blocks) b.dst += static_cast<uint64_t>(delta);
  return p;
}

void Apply(const Pieces& p, const void* in, void* out) {
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  for (const Run& r : p.runs) std::memcpy(dst + r.dst, src + r.src, r.length);
  for (const Block& b : p.blocks) internal::Transpose(src + b.src, dst + b.dst, b.rows, b.cols, b.elem_bytes);
}

}  // namespace moepack::ops
