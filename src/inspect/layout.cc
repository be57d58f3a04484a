#include "moepack/layout.h"

namespace moepack {

std::string_view LayoutName(MoeLayout l) {
  switch (l) {
    case MoeLayout::kPerExpert: return "per-expert";
    case MoeLayout::kFused: return "fused";
    case MoeLayout::kFusedTransposed: return "fused-transposed";
    case MoeLayout::kFusedInterleaved: return "fused-interleaved";
    case MoeLayout::kStacked: return "stacked";
    case MoeLayout::kDense: return "dense";
    case MoeLayout::kMixed: return "mixed";
  }
  return "";
}

std::optional<MoeLayout> ParseLayout(std::string_view name) {
  for (MoeLayout l : {MoeLayout::kPerExpert, MoeLayout::kFused, MoeLayout::kFusedTransposed,
                      MoeLayout::kFusedInterleaved, MoeLayout::kStacked, MoeLayout::kDense, MoeLayout::kMixed}) {
    if (LayoutName(l) == name) return l;
  }
  return std::nullopt;
}

}  // namespace moepack
