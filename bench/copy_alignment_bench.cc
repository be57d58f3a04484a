// Why a conversion copies slower than `cp -r` on some CPUs: the kernel copies
// page-cache bytes with `rep movsb` (on CPUs with ERMS/FSRM), whose speed can
// depend on how source and destination are aligned relative to each other.
// `cp` copies file offset x to offset x; a conversion moves a tensor from
// 8 + source header + offset to 8 + output header + offset, which differ by a
// multiple of 8 modulo 64. Args: source offset, destination offset (mod 64).
//
// BM_CopyFileRange copies 256 MiB between files in the page cache (under
// $TMPDIR, default /tmp) with copy_file_range, source and destination offsets
// given mod 4096: when they differ, each splice round writes a little under
// 64 KiB at an unaligned position and the page cache allocates small folios.
// The output is truncated between iterations and never synced.
//
//   build/bench/copy_alignment_bench [--benchmark_filter=CopyFileRange]
//
// Not a test: not registered with ctest.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

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

// A warm source file and an output file, removed at exit.
struct Files {
  std::string dir;
  int src = -1, dst = -1;
  Files() {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/copy_alignment_bench.XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    src = ::open((dir + "/src").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    dst = ::open((dir + "/dst").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (src < 0 || dst < 0) std::abort();
    Buffer b;
    if (::pwrite(src, b.p.get(), kBytes + 4096, 0) != static_cast<ssize_t>(kBytes + 4096)) std::abort();
  }
  ~Files() {
    ::close(src);
    ::close(dst);
    ::unlink((dir + "/src").c_str());
    ::unlink((dir + "/dst").c_str());
    ::rmdir(dir.c_str());
  }
};

void BM_CopyFileRange(benchmark::State& state) {
  static Files f;
  for (auto _ : state) {
    state.PauseTiming();
    if (::ftruncate(f.dst, 0) != 0) std::abort();
    state.ResumeTiming();
    loff_t in = state.range(0), out = state.range(1);
    size_t left = kBytes;
    while (left > 0) {
      const ssize_t n = ::copy_file_range(f.src, &in, f.dst, &out, left, 0);
      if (n <= 0) {
        state.SkipWithError("copy_file_range failed");
        return;
      }
      left -= static_cast<size_t>(n);
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
}

void PageOffsets(benchmark::internal::Benchmark* b) {
  for (auto [s, d] : {std::pair{0, 0}, {8, 8}, {8, 0}, {0, 8}, {0, 24}, {0, 2048}}) b->Args({s, d});
}

BENCHMARK(BM_RepMovsb)->Apply(Offsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Memcpy)->Apply(Offsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CopyFileRange)->Apply(PageOffsets)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
