// The streaming converter over one MoE layer of Qwen3-30B-A3B's shape (128
// experts, hidden 2048, expert intermediate 768, BF16: 1.2 GB of expert
// weights), next to plain memcpy of the same bytes. The converter copies each
// byte once into a freshly allocated fused tensor, so its bytes/s should sit
// at the "memcpy into a fresh buffer" baseline; "memcpy into a reused buffer"
// is the bandwidth bound without the page faults of new memory.
//
//   build-bench/bench/streaming_bench [--benchmark_filter=...]
//
// Not a test: not registered with ctest.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "moepack/config.h"
#include "moepack/rules.h"
#include "moepack/streaming.h"

namespace {

using moepack::DType;
using moepack::Direction;
using moepack::StreamingConverter;
using moepack::TensorView;

constexpr uint64_t kHidden = 2048;
constexpr uint64_t kInter = 768;
constexpr uint64_t kExpertBytes = kHidden * kInter * 2;  // one projection of one expert, BF16
const char* const kProj[3] = {"gate_proj", "up_proj", "down_proj"};

// One layer's per-expert tensors, built once and shared by the benchmarks.
struct Layer {
  uint64_t experts = 0;
  std::vector<std::string> names;                // [expert * 3 + proj]
  std::vector<std::unique_ptr<uint8_t[]>> data;  // [expert * 3 + proj]
  uint64_t bytes() const { return experts * 3 * kExpertBytes; }
};

const Layer& GetLayer(uint64_t experts) {
  static Layer layer;
  if (layer.experts != experts) {
    layer = Layer{};
    layer.experts = experts;
    for (uint64_t j = 0; j < experts; ++j) {
      for (int p = 0; p < 3; ++p) {
        layer.names.push_back("model.layers.0.mlp.experts." + std::to_string(j) + "." + kProj[p] + ".weight");
        auto buf = std::make_unique<uint8_t[]>(kExpertBytes);
        std::memset(buf.get(), static_cast<int>(1 + (j * 3 + p) % 251), kExpertBytes);  // touched: real pages
        layer.data.push_back(std::move(buf));
      }
    }
  }
  return layer;
}

moepack::ModelConfig Config(uint64_t experts) {
  const std::string json = R"({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"], "num_experts": )" +
                           std::to_string(experts) + R"(, "hidden_size": 2048, "moe_intermediate_size": 768})";
  return moepack::ModelConfig::Parse(json, "bench config.json").value();
}

StreamingConverter MakeConverter(uint64_t experts, Direction d) {
  return StreamingConverter::Create(moepack::BuiltinRules("qwen3_moe").value(), Config(experts), d).value();
}

TensorView ExpertView(const Layer& l, uint64_t i) {
  const bool down = i % 3 == 2;
  return TensorView{DType::BF16, down ? std::vector<uint64_t>{kHidden, kInter} : std::vector<uint64_t>{kInter, kHidden},
                    l.data[i].get(), kExpertBytes};
}

// Per-expert -> fused: every expert tensor of the layer, one at a time.
void BM_StreamingToFused(benchmark::State& state) {
  const Layer& l = GetLayer(static_cast<uint64_t>(state.range(0)));
  for (auto _ : state) {
    StreamingConverter conv = MakeConverter(l.experts, Direction::kToFused);
    uint64_t produced = 0;
    for (uint64_t i = 0; i < l.names.size(); ++i) {
      auto out = conv.Convert(l.names[i], ExpertView(l, i));
      if (!out.ok()) {
        state.SkipWithError(out.status().message().c_str());
        return;
      }
      for (const auto& t : *out) {
        benchmark::DoNotOptimize(t.data.get());
        produced += t.nbytes;
      }
    }
    if (produced != l.bytes() || !conv.Finalize().ok()) {
      state.SkipWithError("the converter did not hand over the whole layer");
      return;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * l.bytes()));
}

// The same bytes to the same places with memcpy, into buffers allocated
// each iteration as the converter does.
void BM_MemcpyFreshBuffer(benchmark::State& state) {
  const Layer& l = GetLayer(static_cast<uint64_t>(state.range(0)));
  const uint64_t slice = 2 * kExpertBytes;
  for (auto _ : state) {
    std::unique_ptr<uint8_t[]> gate_up(new uint8_t[l.experts * slice]);
    std::unique_ptr<uint8_t[]> down(new uint8_t[l.experts * kExpertBytes]);
    for (uint64_t j = 0; j < l.experts; ++j) {
      std::memcpy(gate_up.get() + j * slice, l.data[j * 3].get(), kExpertBytes);
      std::memcpy(gate_up.get() + j * slice + kExpertBytes, l.data[j * 3 + 1].get(), kExpertBytes);
      std::memcpy(down.get() + j * kExpertBytes, l.data[j * 3 + 2].get(), kExpertBytes);
    }
    benchmark::DoNotOptimize(gate_up.get());
    benchmark::DoNotOptimize(down.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * l.bytes()));
}

// memcpy into buffers allocated once: memory bandwidth alone, no page faults.
void BM_MemcpyReusedBuffer(benchmark::State& state) {
  const Layer& l = GetLayer(static_cast<uint64_t>(state.range(0)));
  const uint64_t slice = 2 * kExpertBytes;
  std::unique_ptr<uint8_t[]> gate_up(new uint8_t[l.experts * slice]);
  std::unique_ptr<uint8_t[]> down(new uint8_t[l.experts * kExpertBytes]);
  std::memset(gate_up.get(), 0, l.experts * slice);
  std::memset(down.get(), 0, l.experts * kExpertBytes);
  for (auto _ : state) {
    for (uint64_t j = 0; j < l.experts; ++j) {
      std::memcpy(gate_up.get() + j * slice, l.data[j * 3].get(), kExpertBytes);
      std::memcpy(gate_up.get() + j * slice + kExpertBytes, l.data[j * 3 + 1].get(), kExpertBytes);
      std::memcpy(down.get() + j * kExpertBytes, l.data[j * 3 + 2].get(), kExpertBytes);
    }
    benchmark::DoNotOptimize(gate_up.get());
    benchmark::DoNotOptimize(down.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * l.bytes()));
}

// Fused -> per-expert: the two fused tensors of a layer cut into 3 * E pieces.
void BM_StreamingToPerExpert(benchmark::State& state) {
  const uint64_t E = static_cast<uint64_t>(state.range(0));
  const uint64_t slice = 2 * kExpertBytes;
  std::unique_ptr<uint8_t[]> gate_up(new uint8_t[E * slice]);
  std::unique_ptr<uint8_t[]> down(new uint8_t[E * kExpertBytes]);
  std::memset(gate_up.get(), 3, E * slice);
  std::memset(down.get(), 5, E * kExpertBytes);
  const TensorView gu{DType::BF16, {E, 2 * kInter, kHidden}, gate_up.get(), E * slice};
  const TensorView dn{DType::BF16, {E, kHidden, kInter}, down.get(), E * kExpertBytes};
  for (auto _ : state) {
    StreamingConverter conv = MakeConverter(E, Direction::kToPerExpert);
    uint64_t produced = 0;
    for (const auto& [name, view] : {std::pair{"model.layers.0.mlp.experts.gate_up_proj", &gu},
                                     std::pair{"model.layers.0.mlp.experts.down_proj", &dn}}) {
      auto out = conv.Convert(name, *view);
      if (!out.ok()) {
        state.SkipWithError(out.status().message().c_str());
        return;
      }
      for (const auto& t : *out) produced += t.nbytes;
    }
    if (produced != E * 3 * kExpertBytes) {
      state.SkipWithError("the converter did not hand over every expert");
      return;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * E * 3 * kExpertBytes));
}

BENCHMARK(BM_StreamingToFused)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemcpyFreshBuffer)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemcpyReusedBuffer)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamingToPerExpert)->Arg(128)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
