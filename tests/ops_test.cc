// The op model against plain references written here: on random shapes,
// dtypes, source counts and concat dims, each op's geometry (applied in
// memory) gives what stacking, concatenating and transposing element by
// element gives, and its inverse gives the sources back. Also the layout
// decision of the transpose op and a rank's slice.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <utility>
#include <vector>

#include "moepack/config.h"
#include "moepack/rules.h"
#include "plan/ops/fusion_op.h"
#include "plan/ops/pieces.h"
#include "plan/ops/rank_slice.h"
#include "plan/ops/transpose_op.h"

namespace moepack {
namespace ops_test {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes Random(std::mt19937_64& rng, uint64_t n) {
  Bytes b(n);
  for (auto& v : b) v = static_cast<uint8_t>(rng());
  return b;
}

uint64_t Count(const std::vector<uint64_t>& shape) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  return n;
}

// Row-major index of `idx` in `shape`.
uint64_t Flat(const std::vector<uint64_t>& shape, const std::vector<uint64_t>& idx) {
  uint64_t f = 0;
  for (size_t d = 0; d < shape.size(); ++d) f = f * shape[d] + idx[d];
  return f;
}

// Advances a multi-index; false after the last.
bool Next(const std::vector<uint64_t>& shape, std::vector<uint64_t>& idx) {
  for (size_t d = shape.size(); d-- > 0;) {
    if (++idx[d] < shape[d]) return true;
    idx[d] = 0;
  }
  return false;
}

FusionRule Rule(size_t sources, int concat_dim, bool transpose, bool interleave = false) {
  FusionRule f;
  f.name = "f";
  f.target = "{prefix}t";
  for (size_t k = 0; k < sources; ++k) f.sources.push_back("{prefix}e.{expert}.s" + std::to_string(k));
  f.concat_dim = concat_dim;
  f.transpose = transpose;
  f.interleave = interleave;
  return f;
}

// torch.stack over experts of torch.cat over sources (each transposed
// first when the rule says so), element by element; interleaved, source k's
// x-th index along the concat dim is the fused index K*x + k.
Bytes ReferenceFuse(const std::vector<std::vector<Bytes>>& src, const std::vector<uint64_t>& shape, uint64_t eb,
                    int concat_dim, bool transpose, bool interleave, std::vector<uint64_t>* fused_shape) {
  const uint64_t E = src.size(), K = src[0].size();
  std::vector<uint64_t> per = shape;
  if (transpose) per = {shape[1], shape[0]};
  const size_t axis = static_cast<size_t>(concat_dim - 1);
  std::vector<uint64_t> out_per = per;
  out_per[axis] *= K;
  *fused_shape = {E};
  fused_shape->insert(fused_shape->end(), out_per.begin(), out_per.end());
  Bytes out(E * Count(out_per) * eb);
  // `in` lives outside the loop: an allocation per element made this test
  // take half a minute under ASan.
  std::vector<uint64_t> in(out_per.size());
  for (uint64_t e = 0; e < E; ++e) {
    std::vector<uint64_t> idx(out_per.size(), 0);
    do {
      in = idx;
      const uint64_t k = interleave ? in[axis] % K : in[axis] / per[axis];
      in[axis] = interleave ? in[axis] / K : in[axis] % per[axis];
      if (transpose) std::swap(in[0], in[1]);
      const uint64_t from = Flat(shape, in), to = e * Count(out_per) + Flat(out_per, idx);
      std::copy_n(src[e][k].begin() + from * eb, eb, out.begin() + to * eb);
    } while (Next(out_per, idx));
  }
  return out;
}

TEST(FusionOp, GeometryIsStackThenConcatOnRandomShapes) {
  std::mt19937_64 rng(20261202);
  const DType dtypes[] = {DType::U8, DType::BF16, DType::F32, DType::F64};
  for (int iter = 0; iter < 400; ++iter) {
    const bool transpose = iter % 4 == 3;
    const size_t rank = transpose ? 2 : 1 + rng() % 3;
    std::vector<uint64_t> shape(rank);
    // Up to 160 elements per dim: large enough that interleaved rows of
    // >= 512 bytes become runs, not element moves.
    for (auto& d : shape) d = 1 + (iter % 16 == 5 ? rng() % 160 : rng() % 5);
    const uint64_t E = 1 + rng() % 4, K = 1 + rng() % 3;
    const int concat_dim = 1 + static_cast<int>(rng() % (transpose ? 2 : rank));
    const bool interleave = K > 1 && rng() % 3 == 0;
    const DType dtype = dtypes[rng() % 4];
    const uint64_t eb = static_cast<uint64_t>(DTypeBits(dtype) / 8);
    SCOPED_TRACE("iter " + std::to_string(iter) + " E=" + std::to_string(E) + " K=" + std::to_string(K) +
                 " concat_dim=" + std::to_string(concat_dim) + (transpose ? " transposed" : "") +
                 (interleave ? " interleaved" : ""));
    std::vector<std::vector<Bytes>> src(E);
    for (auto& e : src) {
      for (uint64_t k = 0; k < K; ++k) e.push_back(Random(rng, Count(shape) * eb));
    }
    std::vector<uint64_t> want_shape;
    const Bytes want = ReferenceFuse(src, shape, eb, concat_dim, transpose, interleave, &want_shape);

    const FusionRule rule = Rule(K, concat_dim, transpose, interleave);
    auto op = ops::FusionOp::FromSource(rule, E, dtype, shape);
    ASSERT_TRUE(op.ok()) << op.status().message();
    EXPECT_EQ(op->fused_shape(), want_shape);
    EXPECT_EQ(op->fused_bytes(), want.size());
    Bytes got(want.size(), 0xAA);
    for (uint64_t j = 0; j < E; ++j) {
      for (uint64_t k = 0; k < K; ++k) ops::Apply(op->SourceInFused(j, k), src[j][k].data(), got.data());
    }
    EXPECT_TRUE(got == want);

    // The inverse, from the fused shape alone, cuts the sources back out.
    auto cut = ops::FusionOp::FromFused(rule, dtype, want_shape, E);
    ASSERT_TRUE(cut.ok()) << cut.status().message();
    EXPECT_EQ(cut->source_shape(), shape);
    EXPECT_EQ(cut->experts(), E);
    for (uint64_t j = 0; j < E; ++j) {
      for (uint64_t k = 0; k < K; ++k) {
        Bytes piece(cut->source_bytes(), 0x55);
        ops::Apply(cut->SourceInFused(j, k).Inverse(), want.data(), piece.data());
        EXPECT_TRUE(piece == src[j][k]) << "expert " << j << " source " << k;
      }
    }
  }
}

TEST(FusionOp, RefusesWhatItCannotCut) {
  const FusionRule two = Rule(2, 1, false);
  auto odd = ops::FusionOp::FromFused(two, DType::BF16, {4, 7, 8});
  ASSERT_FALSE(odd.ok());
  EXPECT_NE(odd.status().message().find("cannot split into 2 sources along dim 1"), std::string::npos);
  auto experts = ops::FusionOp::FromFused(two, DType::BF16, {3, 8, 8}, 4);
  ASSERT_FALSE(experts.ok());
  EXPECT_NE(experts.status().message().find("does not start with the 4 experts"), std::string::npos);
  auto many = ops::FusionOp::FromFused(two, DType::BF16, {uint64_t{1} << 40, 0, 4});
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.status().message().find("too many tensors"), std::string::npos);
  auto sub_byte = ops::FusionOp::FromSource(Rule(1, 1, true), 4, DType::F4, {4, 8});
  ASSERT_FALSE(sub_byte.ok());
  EXPECT_NE(sub_byte.status().message().find("cannot transpose F4"), std::string::npos);
  auto not_2d = ops::FusionOp::FromSource(Rule(2, 1, true), 4, DType::BF16, {4, 8, 2});
  ASSERT_FALSE(not_2d.ok());
  EXPECT_NE(not_2d.status().message().find("transposes 2-D sources"), std::string::npos);
}

TEST(Pieces, InverseUndoesApply) {
  std::mt19937_64 rng(7);
  ops::Pieces p;
  p.runs = {{8, 0, 24}, {0, 24, 8}};
  p.blocks = {ops::Block::Transposing(32, 32, 3, 4, 2), ops::Block::Transposing(56, 56, 2, 2, 2)};
  ASSERT_EQ(p.bytes(), 64u);
  const Bytes in = Random(rng, 64);
  Bytes mid(64, 0), back(64, 0);
  ops::Apply(p, in.data(), mid.data());
  ops::Apply(p.Inverse(), mid.data(), back.data());
  EXPECT_TRUE(back == in);
  // A transposed block really is transposed: element (r, c) -> (c, r).
  EXPECT_EQ(mid[32 + (1 * 3 + 2) * 2], in[32 + (2 * 4 + 1) * 2]);
}

// A transpose rule over config.json's dims, as qwen3_vl_moe has it.
struct TransposeFixture {
  RuleSet rules;
  ModelConfig config;
};

TransposeFixture VlRules(int H, int I) {
  auto rs = RuleSet::Parse(R"({"family": "t", "num_experts": ["num_experts"],
    "dims": {"H": ["hidden_size"], "I": ["moe_intermediate_size"]},
    "transposes": [{"name": "gate_up_proj", "role": "gate_up", "pattern": "{prefix}gate_up_proj",
                    "hub_shape": ["E", "H", "2*I"], "v5_shape": ["E", "2*I", "H"]}]})",
                           "t.json");
  EXPECT_TRUE(rs.ok()) << rs.status().message();
  nlohmann::json c = {{"num_experts", 3}, {"hidden_size", H}, {"moe_intermediate_size", I}};
  auto config = ModelConfig::Parse(c.dump(), "config.json");
  EXPECT_TRUE(config.ok());
  return {std::move(rs).value(), std::move(config).value()};
}

TEST(TransposeOp, DecidesTheLayoutFromTheShapeAndSwapsEachExpert) {
  std::mt19937_64 rng(11);
  auto [rules, config] = VlRules(5, 2);  // Hub [3, 5, 4], v5 [3, 4, 5]
  const std::vector<uint64_t> hub = {3, 5, 4};
  const Bytes in = Random(rng, 3 * 5 * 4 * 2);
  auto op = ops::TransposeOp::Make(rules, 0, config, "", "gate_up_proj", DType::BF16, hub, SourceLayout::kUnspecified,
                                   ops::Orientation::kV5);
  ASSERT_TRUE(op.ok()) << op.status().message();
  EXPECT_EQ(op->from(), ops::Orientation::kHub);
  EXPECT_TRUE(op->changes());
  EXPECT_EQ(op->output_shape(), (std::vector<uint64_t>{3, 4, 5}));
  Bytes out(in.size());
  for (uint64_t j = 0; j < op->experts(); ++j) ops::Apply(op->Expert(j), in.data(), out.data());
  for (uint64_t e = 0; e < 3; ++e) {
    for (uint64_t a = 0; a < 5; ++a) {
      for (uint64_t b = 0; b < 4; ++b) {
        for (uint64_t byte = 0; byte < 2; ++byte) {
          EXPECT_EQ(out[((e * 4 + b) * 5 + a) * 2 + byte], in[((e * 5 + a) * 4 + b) * 2 + byte]);
        }
      }
    }
  }
  // Already in the target layout: nothing moves.
  auto same = ops::TransposeOp::Make(rules, 0, config, "", "gate_up_proj", DType::BF16, hub,
                                     SourceLayout::kUnspecified, ops::Orientation::kHub);
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same->changes());
  EXPECT_EQ(same->output_shape(), hub);
  // Neither layout; a hint the shape contradicts.
  EXPECT_FALSE(ops::TransposeOp::Make(rules, 0, config, "", "x", DType::BF16, {3, 5, 5}, SourceLayout::kUnspecified,
                                      ops::Orientation::kV5)
                   .ok());
  auto contradicted = ops::TransposeOp::Make(rules, 0, config, "", "x", DType::BF16, hub, SourceLayout::kV5,
                                             ops::Orientation::kV5);
  ASSERT_FALSE(contradicted.ok());
  EXPECT_NE(contradicted.status().message().find("--source-layout"), std::string::npos);
}

TEST(TransposeOp, NeverGuessesWhenTheShapeFitsBoth) {
  auto [rules, config] = VlRules(4, 2);  // H == 2I: [3, 4, 4] either way
  auto guess = ops::TransposeOp::Make(rules, 0, config, "", "x", DType::BF16, {3, 4, 4}, SourceLayout::kUnspecified,
                                      ops::Orientation::kV5);
  ASSERT_FALSE(guess.ok());
  EXPECT_NE(guess.status().message().find("fits both"), std::string::npos);
  for (SourceLayout hint : {SourceLayout::kHub, SourceLayout::kV5}) {
    auto told = ops::TransposeOp::Make(rules, 0, config, "", "x", DType::BF16, {3, 4, 4}, hint,
                                       ops::Orientation::kV5);
    ASSERT_TRUE(told.ok());
    EXPECT_EQ(told->changes(), hint == SourceLayout::kHub);
  }
}

TEST(RankSlice, GateUpCutsBothHalvesDownItsColumnsScalesTheirBlocks) {
  ops::SliceRole gate_up;
  gate_up.fused = true;
  gate_up.role = ExpertRole::kGateUp;
  gate_up.tp_dim = 1;
  gate_up.parts = 2;
  ParallelSpec p{1, 2, 1, 4};  // experts 4..7 of 8, the second quarter of I
  auto s = ops::SliceForRank(gate_up, "g", DType::BF16, {8, 32, 6}, p, std::nullopt);
  ASSERT_TRUE(s.ok()) << s.status().message();
  EXPECT_EQ(s->expert_begin, 4u);
  EXPECT_EQ(s->expert_end, 8u);
  EXPECT_EQ(s->dim1, (ops::Intervals{{4, 8}, {20, 24}}));
  EXPECT_EQ(s->dim2, (ops::Intervals{{0, 6}}));
  EXPECT_EQ(s->shape, (std::vector<uint64_t>{4, 8, 6}));
  EXPECT_EQ(ops::CutSize(gate_up, {8, 32, 6}), 16u);

  ops::SliceRole down = gate_up;
  down.role = ExpertRole::kDown;
  down.tp_dim = 2;
  down.parts = 1;
  auto d = ops::SliceForRank(down, "d", DType::BF16, {8, 6, 16}, p, std::nullopt);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->dim1, (ops::Intervals{{0, 6}}));
  EXPECT_EQ(d->dim2, (ops::Intervals{{4, 8}}));

  ops::SliceRole scale = gate_up;
  scale.scale = true;
  scale.weight = "g";
  scale.block = 4;
  auto sc = ops::SliceForRank(scale, "gs", DType::F32, {8, 8, 2}, p, 16);  // 16 / 4 = 4 blocks per half
  ASSERT_TRUE(sc.ok()) << sc.status().message();
  EXPECT_EQ(sc->dim1, (ops::Intervals{{1, 2}, {5, 6}}));
  scale.block = 8;  // slices of 4 rows do not fall on 8-row blocks
  auto off = ops::SliceForRank(scale, "gs", DType::F32, {8, 4, 2}, p, 16);
  ASSERT_FALSE(off.ok());
  EXPECT_NE(off.status().message().find("8-wide quantization blocks"), std::string::npos);

  ops::SliceRole none = gate_up;
  none.role = ExpertRole::kNone;
  auto refused = ops::SliceForRank(none, "x", DType::BF16, {8, 32, 6}, p, std::nullopt);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("declares no role"), std::string::npos);
}

}  // namespace
}  // namespace ops_test
}  // namespace moepack
