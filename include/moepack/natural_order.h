// The order people read tensor names in: digit runs compare as numbers, so
// "layers.2" comes before "layers.10" and expert 9 before expert 10. Output
// shards and reports list tensors in this order.
#pragma once

#include <string>

namespace moepack {

bool NaturalLess(const std::string& a, const std::string& b);

}  // namespace moepack
