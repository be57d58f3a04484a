// Decodes tensor elements to float for numeric checks (verify --forward).
#pragma once

#include <cstdint>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/status.h"

namespace moepack::internal {

// Supports F64, F32, F16, BF16, F8_E4M3, F8_E5M2 and the integer types.
Result<std::vector<float>> DecodeToFloat(DType dtype, const void* data, uint64_t count);

}  // namespace moepack::internal
