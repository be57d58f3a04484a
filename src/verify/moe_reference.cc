#include "verify/moe_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moepack::internal {

std::vector<Route> RouteTokens(const std::vector<float>& router, const std::vector<float>& x, uint64_t tokens,
                               uint64_t experts, uint64_t hidden, uint64_t top_k) {
  top_k = std::min(top_k, experts);
  std::vector<Route> routes;
  std::vector<double> logits(experts);
  std::vector<uint64_t> order(experts);
  for (uint64_t t = 0; t < tokens; ++t) {
    for (uint64_t e = 0; e < experts; ++e) {
      double s = 0;
      for (uint64_t h = 0; h < hidden; ++h) s += static_cast<double>(router[e * hidden + h]) * x[t * hidden + h];
      logits[e] = s;
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) { return logits[a] > logits[b]; });
    double denom = 0;
    for (uint64_t k = 0; k < top_k; ++k) denom += std::exp(logits[order[k]] - logits[order[0]]);
    for (uint64_t k = 0; k < top_k; ++k) {
      routes.push_back({t, order[k], static_cast<float>(std::exp(logits[order[k]] - logits[order[0]]) / denom)});
    }
  }
  return routes;
}

void AddExpert(const std::vector<Route>& routes, uint64_t expert, const std::vector<float>& gate,
               const std::vector<float>& up, const std::vector<float>& down, const std::vector<float>& x,
               uint64_t H, uint64_t I, std::vector<float>& y) {
  std::vector<double> act(I);
  for (const Route& r : routes) {
    if (r.expert != expert) continue;
    const float* xt = &x[r.token * H];
    for (uint64_t i = 0; i < I; ++i) {
      double g = 0, u = 0;
      for (uint64_t h = 0; h < H; ++h) {
        g += static_cast<double>(gate[i * H + h]) * xt[h];
        u += static_cast<double>(up[i * H + h]) * xt[h];
      }
      act[i] = g / (1.0 + std::exp(-g)) * u;
    }
    for (uint64_t h = 0; h < H; ++h) {
      double s = 0;
      for (uint64_t i = 0; i < I; ++i) s += static_cast<double>(down[h * I + i]) * act[i];
      y[r.token * H + h] += r.weight * static_cast<float>(s);
    }
  }
}

}  // namespace moepack::internal
