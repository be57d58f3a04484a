// Why a conversion copies slower than `cp -r` on some CPUs: the kernel copies
// page-cache bytes with `rep movsb` (on CPUs with ERMS/FSRM), whose speed can
// depend on how source and destination are aligned relative to each other.
// `cp` copies file offset x to offset x; a conversion moves a tensor from
// 8 + source header + offset to 8 + output header + offset, which differ by a
// multiple of 8 modulo 64. Args: source offset, destination offset (mod 64).
//
//   build/bench/copy_alignment_bench
//
// Not a test: not registered with ctest.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

namespace {

constexpr size_t kBytes = 256ull << 20;  // well beyond the caches
constexpr size_t kChunk = 64 << 10;      // what one splice round moves

struct Buffer {
  std::unique_ptr<char, decltype(&std::free)> p{static_cast<char*>(std::aligned_alloc(4096, kBytes + 4096)), &std::free};
  Buffer() { std::memset(p.get(), 1, kBytes + 4096); }
};

void RepMovsb(void* dst, const void* src, size_t n) {
#if defined(__x86_64__)
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
  std::memcpy(dst, src, n);
#endif
}

void BM_RepMovsb(benchmark::State& state) {
  static Buffer src, dst;
  const size_t so = static_cast<size_t>(state.range(0)), dof = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    for (size_t o = 0; o + kChunk <= kBytes; o += kChunk) RepMovsb(dst.p.get() + dof + o, src.p.get() + so + o, kChunk);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
}

void BM_Memcpy(benchmark::State& state) {
  static Buffer src, dst;
  const size_t so = static_cast<size_t>(state.range(0)), dof = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    for (size_t o = 0; o + kChunk <= kBytes; o += kChunk) std::memcpy(dst.p.get() + dof + o, src.p.get() + so + o, kChunk);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
}

void Offsets(benchmark::internal::Benchmark* b) {
  for (auto [s, d] : {std::pair{0, 0}, {8, 0}, {0, 8}, {0, 24}, {0, 40}, {48, 0}, {8, 8}}) b->Args({s, d});
}

BENCHMARK(BM_RepMovsb)->Apply(Offsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Memcpy)->Apply(Offsets)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
