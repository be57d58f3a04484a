// Formatting shared by error messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moepack::internal {

// "[2, 3, 4]"
std::string ShapeString(const std::vector<uint64_t>& shape);

// Sorted ids as ranges: "0-4,6,9-11"; "none" when empty.
std::string IdRanges(const std::vector<int64_t>& sorted_ids);

}  // namespace moepack::internal
