#include "plan/ops/transpose_kernel.h"

#include <algorithm>
#include <cstring>

namespace moepack::internal {
namespace {

template <typename T>
void TransposeTyped(const T* src, T* dst, uint64_t rows, uint64_t cols) {
  // 64x64 tiles keep both the read and the write side in L1.
  constexpr uint64_t kTile = 64;
  for (uint64_t r0 = 0; r0 < rows; r0 += kTile) {
    const uint64_t r1 = std::min(rows, r0 + kTile);
    for (uint64_t c0 = 0; c0 < cols; c0 += kTile) {
      const uint64_t c1 = std::min(cols, c0 + kTile);
      for (uint64_t r = r0; r < r1; ++r) {
        for (uint64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
      }
    }
  }
}

struct Bytes16 {
  unsigned char b[16];
};

}  // namespace

void Transpose(const void* src, void* dst, uint64_t rows, uint64_t cols, uint32_t elem_bytes) {
  switch (elem_bytes) {
    case 1: TransposeTyped(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), rows, cols); return;
    case 2: TransposeTyped(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), rows, cols); return;
    case 4: TransposeTyped(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), rows, cols); return;
    case 8: TransposeTyped(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), rows, cols); return;
    case 16: TransposeTyped(static_cast<const Bytes16*>(src), static_cast<Bytes16*>(dst), rows, cols); return;
    default: {
      const auto* s = static_cast<const unsigned char*>(src);
      auto* d = static_cast<unsigned char*>(dst);
      for (uint64_t r = 0; r < rows; ++r) {
        for (uint64_t c = 0; c < cols; ++c) std::memcpy(d + (c * rows + r) * elem_bytes, s + (r * cols + c) * elem_bytes, elem_bytes);
      }
    }
  }
}

}  // namespace moepack::internal
