// The element types of the safetensors format. Sizes come from bits: a
// tensor whose elements do not fill a whole number of bytes is refused.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moepack {

// Declared in the reference implementation's order; the writer sorts tensors
// by this order, descending, then by name.
enum class DType : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ,
  F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

inline constexpr int kNumDTypes = 22;

std::optional<DType> ParseDType(std::string_view name);
std::string_view DTypeName(DType t);
int DTypeBits(DType t);
bool IsFloat8(DType t);

// Bytes taken by `elements` elements, or nullopt when the bits do not make
// whole bytes or the count overflows.
std::optional<uint64_t> ByteSize(DType t, uint64_t elements);

}  // namespace moepack
