// Cache-blocked transpose of a row-major [rows, cols] matrix of elem_bytes
// elements into [cols, rows].
#pragma once

#include <cstdint>

namespace moepack::internal {

void Transpose(const void* src, void* dst, uint64_t rows, uint64_t cols, uint32_t elem_bytes);

}  // namespace moepack::internal
