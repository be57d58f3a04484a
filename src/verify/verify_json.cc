#include <nlohmann/json.hpp>

#include "moepack/verify.h"

namespace moepack {

std::string VerifyToJson(const VerifyReport& r, bool with_forward) {
  nlohmann::json j = {{"ok", r.ok},         {"to", r.to}, {"dtype", r.dtype},
                      {"tensors", r.tensors}, {"pieces", r.pieces},
                      {"bytes_hashed", r.bytes_hashed}, {"problem", r.problem}};
  if (with_forward) {
    j["forward"] = nlohmann::json::array();
    for (const auto& c : r.forward) {
      j["forward"].push_back({{"layer", c.layer}, {"max_abs_diff", c.max_abs_diff}, {"experts_run", c.experts_run}});
    }
  }
  return j.dump(2);
}

}  // namespace moepack
