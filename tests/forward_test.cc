// The reference MoE layer behind `verify --forward`, checked on values
// small enough to work out by hand, and end to end on a converted checkpoint.
#include <gtest/gtest.h>

#include <cmath>

#include "verify/moe_reference.h"
#include "format/decode.h"
#include "moepack/convert.h"
#include "moepack/synth.h"
#include "moepack/verify.h"
#include "testutil.h"

namespace moepack {
namespace forward_test {
namespace {

TEST(MoeReference, RoutesToTopKWithRenormalisedSoftmax) {
  // H = 1: logits are router[e] * x.
  const std::vector<float> router = {1.0f, 3.0f, 2.0f};
  const std::vector<float> x = {1.0f};
  auto routes = internal::RouteTokens(router, x, 1, 3, 1, 2);
  ASSERT_EQ(routes.size(), 2u);
  EXPECT_EQ(routes[0].expert, 1u);
  EXPECT_EQ(routes[1].expert, 2u);
  const double w1 = 1.0 / (1.0 + std::exp(-1.0));  // e^3 / (e^3 + e^2)
  EXPECT_NEAR(routes[0].weight, w1, 1e-6);
  EXPECT_NEAR(routes[1].weight, 1.0 - w1, 1e-6);
}

TEST(MoeReference, SwiGluExpertMatchesHandComputation) {
  // H = 1, I = 1: y = w * down * silu(gate * x) * (up * x).
  const std::vector<float> x = {2.0f};
  std::vector<internal::Route> routes = {{0, 0, 0.5f}};
  std::vector<float> y(1, 0.0f);
  internal::AddExpert(routes, 0, {0.5f}, {3.0f}, {4.0f}, x, 1, 1, y);
  const double g = 1.0, silu = g / (1.0 + std::exp(-g));
  EXPECT_NEAR(y[0], 0.5 * 4.0 * silu * 6.0, 1e-5);
  internal::AddExpert(routes, 1, {9.0f}, {9.0f}, {9.0f}, x, 1, 1, y);  // not routed: no change
  EXPECT_NEAR(y[0], 0.5 * 4.0 * silu * 6.0, 1e-5);
}

TEST(Decode, Bf16F16Fp8) {
  const uint16_t bf16[] = {0x3F80, 0xC000};  // 1, -2
  auto a = internal::DecodeToFloat(DType::BF16, bf16, 2);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ((*a)[0], 1.0f);
  EXPECT_EQ((*a)[1], -2.0f);
  const uint16_t f16[] = {0x3C00, 0x3800, 0x0001};  // 1, 0.5, smallest subnormal
  auto b = internal::DecodeToFloat(DType::F16, f16, 3);
  EXPECT_EQ((*b)[0], 1.0f);
  EXPECT_EQ((*b)[1], 0.5f);
  EXPECT_EQ((*b)[2], std::ldexp(1.0f, -24));
  const uint8_t e4m3[] = {0x38, 0xB8, 0x7E, 0x01};  // 1, -1, 448, 2^-9
  auto c = internal::DecodeToFloat(DType::F8_E4M3, e4m3, 4);
  EXPECT_EQ((*c)[0], 1.0f);
  EXPECT_EQ((*c)[1], -1.0f);
  EXPECT_EQ((*c)[2], 448.0f);
  EXPECT_EQ((*c)[3], std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan((*internal::DecodeToFloat(DType::F8_E4M3, "\x7f", 1))[0]));
}

TEST(VerifyForward, ZeroDifferenceAfterRelayoutBothDirections) {
  testing::TempDir dir;
  SynthOptions so;
  so.model_type = "qwen3_moe";
  so.dtype = "f32";
  ASSERT_TRUE(Synthesize(dir / "src", so).ok());
  ConvertOptions co;
  ASSERT_TRUE(Convert(dir / "src", dir / "fused", co).ok());
  co.direction = Direction::kToPerExpert;
  ASSERT_TRUE(Convert(dir / "fused", dir / "back", co).ok());
  VerifyOptions vo;
  vo.forward = true;
  for (const char* dst : {"fused", "back"}) {
    auto r = Verify(dir / "src", dir / dst, vo);
    ASSERT_TRUE(r.ok()) << r.status().message();
    EXPECT_TRUE(r->ok) << r->problem;
    ASSERT_FALSE(r->forward.empty());
    for (const auto& f : r->forward) {
      EXPECT_EQ(f.max_abs_diff, 0.0) << f.layer;
      EXPECT_GT(f.experts_run, 0u);
    }
  }
}

}  // namespace
}  // namespace forward_test
}  // namespace moepack
