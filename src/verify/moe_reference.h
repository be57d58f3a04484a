// A reference MoE layer in plain C++ (softmax router, top-k, SwiGLU experts),
// used by `verify --forward` to show that a relayout changes no result.
// Routing comes first so that only the experts some token picked are loaded.
#pragma once

#include <cstdint>
#include <vector>

namespace moepack::internal {

struct Route {
  uint64_t token;
  uint64_t expert;
  float weight;
};

// router: [E, H], x: [T, H]. Softmax weights renormalised over the top k.
std::vector<Route> RouteTokens(const std::vector<float>& router, const std::vector<float>& x, uint64_t tokens,
                               uint64_t experts, uint64_t hidden, uint64_t top_k);

// Adds weight * down(silu(gate x) * up x) to y[token] for each route of
// `expert`. gate, up: [I, H]; down: [H, I].
void AddExpert(const std::vector<Route>& routes, uint64_t expert, const std::vector<float>& gate,
               const std::vector<float>& up, const std::vector<float>& down, const std::vector<float>& x,
               uint64_t hidden, uint64_t inter, std::vector<float>& y);

}  // namespace moepack::internal
