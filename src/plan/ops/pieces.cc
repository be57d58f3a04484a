#include "plan/ops/pieces.h"

#include <cstring>

#include "plan/ops/transpose_kernel.h"

namespace moepack::ops {
namespace {

template <typename T>
void MoveElements(const Block& b, const uint8_t* in, uint8_t* out) {
  for (uint64_t r = 0; r < b.rows; ++r) {
    const uint8_t* s = in + b.src + r * b.src_row;
    uint8_t* d = out + b.dst + r * b.dst_row;
    for (uint64_t c = 0; c < b.cols; ++c) std::memcpy(d + c * b.dst_col, s + c * b.src_col, sizeof(T));
  }
}

}  // namespace

Block Block::Transposing(uint64_t src, uint64_t dst, uint64_t rows, uint64_t cols, uint32_t elem_bytes) {
  return Block{src, dst, rows, cols, elem_bytes, cols * elem_bytes, elem_bytes, elem_bytes, rows * elem_bytes};
}

bool Block::IsTranspose() const {
  return src_col == elem_bytes && src_row == cols * elem_bytes && dst_row == elem_bytes &&
         dst_col == rows * elem_bytes;
}

uint64_t Block::src_span() const {
  return rows && cols ? (rows - 1) * src_row + (cols - 1) * src_col + elem_bytes : 0;
}

uint64_t Block::dst_span() const {
  return rows && cols ? (rows - 1) * dst_row + (cols - 1) * dst_col + elem_bytes : 0;
}

Block Block::Inverse() const { return Block{dst, src, rows, cols, elem_bytes, dst_row, dst_col, src_row, src_col}; }

Pieces Pieces::Inverse() const {
  Pieces inv;
  inv.runs.reserve(runs.size());
  for (const Run& r : runs) inv.runs.push_back(Run{r.dst, r.src, r.length});
  inv.blocks.reserve(blocks.size());
  for (const Block& b : blocks) inv.blocks.push_back(b.Inverse());
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

void Apply(const Block& b, const void* in, void* out) {
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  if (b.IsTranspose()) return internal::Transpose(src + b.src, dst + b.dst, b.rows, b.cols, b.elem_bytes);
  switch (b.elem_bytes) {
    case 1: return MoveElements<uint8_t>(b, src, dst);
    case 2: return MoveElements<uint16_t>(b, src, dst);
    case 4: return MoveElements<uint32_t>(b, src, dst);
    case 8: return MoveElements<uint64_t>(b, src, dst);
    default:
      for (uint64_t r = 0; r < b.rows; ++r) {
        for (uint64_t c = 0; c < b.cols; ++c) {
          std::memcpy(dst + b.dst + r * b.dst_row + c * b.dst_col, src + b.src + r * b.src_row + c * b.src_col,
                      b.elem_bytes);
        }
      }
  }
}

void Apply(const Pieces& p, const void* in, void* out) {
  const auto* src = static_cast<const uint8_t*>(in);
  auto* dst = static_cast<uint8_t*>(out);
  for (const Run& r : p.runs) std::memcpy(dst + r.dst, src + r.src, r.length);
  for (const Block& b : p.blocks) Apply(b, in, out);
}

}  // namespace moepack::ops
