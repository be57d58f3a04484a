// The numeric kernels of dtype ops, one core, per instruction set, next to
// the plain scalar loop someone would write with the scalar conversions of
// numerics.h (one call per element). Shapes are DeepSeek-V3's (hidden 7168,
// 128x128 FP8 blocks) and gpt-oss's (2880, 32-value MXFP4 groups). Each
// benchmark runs on a few rows that stay in cache ("hot", the kernel's own
// speed) and on a whole matrix that does not ("matrix", bounded by memory).
// bytes_per_second counts output bytes.
//
//   build/bench/numerics_bench [--benchmark_filter=...]
//
// Not a test: not registered with ctest.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "plan/ops/numerics.h"
#include "plan/ops/numerics_kernels.h"

namespace {

using moepack::ops::FloatType;
namespace ops = moepack::ops;
namespace num = moepack::ops::numerics;

constexpr uint64_t kCols = 7168, kBlock = 128;
constexpr uint64_t kHotRows = 32, kMatrixRows = 2048;
constexpr uint64_t kMxCols = 2880, kMxRows = 5760;  // gpt-oss gate_up: 2I x H

// Realistic inputs: FP8 codes of normal-ish weights (no NaN codes), fp32
// scales around 1e-3, MXFP4 bytes uniformly random, e8m0 scales near 127.
struct Inputs {
  std::vector<uint8_t> fp8 = std::vector<uint8_t>(kMatrixRows * kCols);
  std::vector<float> scales = std::vector<float>((kMatrixRows / kBlock) * (kCols / kBlock));
  std::vector<uint8_t> mx_blocks = std::vector<uint8_t>(kMxRows * kMxCols / 2);
  std::vector<uint8_t> mx_scales = std::vector<uint8_t>(kMxRows * kMxCols / 32);
  std::vector<uint16_t> bf16 = std::vector<uint16_t>(kMatrixRows * kCols);
  Inputs() {
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal;
    for (auto& c : fp8) {
      c = ops::FloatToE4M3(normal(rng) * 64.0f);
      if ((c & 0x7F) == 0x7F) c = 0;
    }
    for (auto& s : scales) s = 1e-3f * (1.0f + normal(rng) * 0.1f);
    for (auto& b : mx_blocks) b = static_cast<uint8_t>(rng());
    for (auto& s : mx_scales) s = static_cast<uint8_t>(120 + rng() % 8);
    for (auto& x : bf16) x = ops::FloatToBF16(normal(rng) * 0.02f);
  }
};
const Inputs& In() {
  static const Inputs in;
  return in;
}

// Isa as a benchmark argument; -1 is the plain scalar loop.
constexpr int64_t kPlain = -1;
const num::Kernels* KernelsOrSkip(benchmark::State& state, int64_t isa) {
  const auto i = static_cast<num::Isa>(isa);
  if (!num::IsaSupported(i)) {
    state.SkipWithError("instruction set not supported here");
    return nullptr;
  }
  return &num::KernelsFor(i);
}
std::string Label(int64_t isa, FloatType out) {
  const char* t = out == FloatType::kBF16 ? "bf16" : out == FloatType::kF16 ? "f16" : "f32";
  return std::string(isa == kPlain ? "plain loop" : num::IsaName(static_cast<num::Isa>(isa))) + " -> " + t;
}

void PlainDequantFp8Row(const uint8_t* w, const float* s, uint64_t cols, FloatType out, void* dst) {
  for (uint64_t c = 0; c < cols; ++c) {
    const float y = ops::E4M3ToFloat(w[c]) * s[c / kBlock];
    if (out == FloatType::kF32) {
      static_cast<float*>(dst)[c] = y;
    } else {
      static_cast<uint16_t*>(dst)[c] = out == FloatType::kBF16 ? ops::FloatToBF16(y) : ops::FloatToF16(y);
    }
  }
}

// args: isa, output type, rows
void BM_DequantFp8Row(benchmark::State& state) {
  const int64_t isa = state.range(0);
  const auto out = static_cast<FloatType>(state.range(1));
  const uint64_t rows = static_cast<uint64_t>(state.range(2));
  const num::Kernels* k = isa == kPlain ? nullptr : KernelsOrSkip(state, isa);
  if (isa != kPlain && k == nullptr) return;
  const Inputs& in = In();
  const uint64_t row_bytes = kCols * ops::FloatTypeBytes(out);
  std::vector<uint8_t> dst(rows * row_bytes, 1);
  const uint64_t grid_cols = kCols / kBlock;
  for (auto _ : state) {
    for (uint64_t r = 0; r < rows; ++r) {
      const float* s = in.scales.data() + (r / kBlock) * grid_cols;
      if (k) {
        k->dequant_fp8_row(in.fp8.data() + r * kCols, s, kCols, kBlock, out, dst.data() + r * row_bytes, 0);
      } else {
        PlainDequantFp8Row(in.fp8.data() + r * kCols, s, kCols, out, dst.data() + r * row_bytes);
      }
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * row_bytes));
  state.SetLabel(Label(isa, out));
}

void PlainDequantMxfp4Row(const uint8_t* blocks, const uint8_t* scales, uint64_t groups, uint16_t* dst) {
  for (uint64_t g = 0; g < groups; ++g) {
    const float s = std::ldexp(1.0f, scales[g] - 127);
    for (uint64_t i = 0; i < 32; ++i) {
      const uint8_t byte = blocks[16 * g + i / 2];
      dst[32 * g + i] = ops::FloatToBF16(ops::E2M1ToFloat(i % 2 ? byte >> 4 : byte & 0xF) * s);
    }
  }
}

// args: isa, rows (BF16 output)
void BM_DequantMxfp4Row(benchmark::State& state) {
  const int64_t isa = state.range(0);
  const uint64_t rows = static_cast<uint64_t>(state.range(1));
  const num::Kernels* k = isa == kPlain ? nullptr : KernelsOrSkip(state, isa);
  if (isa != kPlain && k == nullptr) return;
  const Inputs& in = In();
  const uint64_t groups = kMxCols / 32;
  std::vector<uint16_t> dst(rows * kMxCols, 1);
  for (auto _ : state) {
    for (uint64_t r = 0; r < rows; ++r) {
      const uint8_t* b = in.mx_blocks.data() + r * groups * 16;
      const uint8_t* s = in.mx_scales.data() + r * groups;
      if (k) {
        k->dequant_mxfp4_row(b, s, groups, FloatType::kBF16, dst.data() + r * kMxCols);
      } else {
        PlainDequantMxfp4Row(b, s, groups, dst.data() + r * kMxCols);
      }
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * rows * kMxCols * 2));
  state.SetLabel(Label(isa, FloatType::kBF16));
}

// The quantizer written the obvious way with the scalar conversions.
void PlainQuantizeFp8(const uint16_t* x, uint64_t rows, uint64_t cols, uint8_t* q, float* s) {
  const uint64_t gc = cols / kBlock;
  for (uint64_t br = 0; br < rows / kBlock; ++br) {
    for (uint64_t bc = 0; bc < gc; ++bc) {
      float amax = 0;
      for (uint64_t r = br * kBlock; r < (br + 1) * kBlock; ++r) {
        for (uint64_t c = bc * kBlock; c < (bc + 1) * kBlock; ++c) {
          const float v = ops::BF16ToFloat(x[r * cols + c]);
          if (!(std::fabs(v) <= amax) && !std::isnan(v)) amax = std::fabs(v);
        }
      }
      const float scale = ops::Fp8BlockScale(amax);
      s[br * gc + bc] = scale;
      for (uint64_t r = br * kBlock; r < (br + 1) * kBlock; ++r) {
        for (uint64_t c = bc * kBlock; c < (bc + 1) * kBlock; ++c) {
          q[r * cols + c] = ops::FloatToE4M3(ops::BF16ToFloat(x[r * cols + c]) / scale);
        }
      }
    }
  }
}

// args: isa, rows (BF16 input, 7168 columns, 128x128 blocks)
void BM_QuantizeFp8(benchmark::State& state) {
  const int64_t isa = state.range(0);
  const uint64_t rows = static_cast<uint64_t>(state.range(1));
  const num::Kernels* k = isa == kPlain ? nullptr : KernelsOrSkip(state, isa);
  if (isa != kPlain && k == nullptr) return;
  const Inputs& in = In();
  std::vector<uint8_t> q(rows * kCols, 1);
  std::vector<float> s((rows / kBlock) * (kCols / kBlock));
  for (auto _ : state) {
    if (k) {
      num::QuantizeFp8With(*k, in.bf16.data(), FloatType::kBF16, rows, kCols, kCols, kBlock, kBlock, q.data(),
                           s.data());
    } else {
      PlainQuantizeFp8(in.bf16.data(), rows, kCols, q.data(), s.data());
    }
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  const int64_t out_bytes = static_cast<int64_t>(q.size() + 4 * s.size());
  state.SetBytesProcessed(state.iterations() * out_bytes);
  state.counters["input_B/s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * rows * kCols * 2), benchmark::Counter::kIsRate);
  state.SetLabel(Label(isa, FloatType::kBF16) + " (from)");
}

void IsaArgs(benchmark::internal::Benchmark* b, const std::vector<std::vector<int64_t>>& rest) {
  for (int64_t isa : {kPlain, int64_t{0}, int64_t{1}, int64_t{2}}) {
    for (const auto& r : rest) {
      std::vector<int64_t> args = {isa};
      args.insert(args.end(), r.begin(), r.end());
      b->Args(args);
    }
  }
}

BENCHMARK(BM_DequantFp8Row)->Apply([](benchmark::internal::Benchmark* b) {
  std::vector<std::vector<int64_t>> rest;
  for (int64_t out : {0, 1, 2}) rest.push_back({out, kHotRows});
  rest.push_back({0, kMatrixRows});
  IsaArgs(b, rest);
});
BENCHMARK(BM_DequantMxfp4Row)->Apply([](benchmark::internal::Benchmark* b) { IsaArgs(b, {{16}, {kMxRows}}); });
BENCHMARK(BM_QuantizeFp8)->Apply([](benchmark::internal::Benchmark* b) { IsaArgs(b, {{kBlock}, {kMatrixRows}}); });

}  // namespace

BENCHMARK_MAIN();
