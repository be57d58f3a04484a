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
// BM_BounceCopy moves the same bytes with pread into a user buffer placed at
// the source's offset mod 4096 and pwrite from it (args: source offset,
// destination offset, buffer KiB): two copies, but each pwrite fills whole
// destination pages, where each splice round of copy_file_range writes
// pieces of source pages that straddle destination pages.
//
//   build/bench/copy_alignment_bench [--benchmark_filter=CopyFileRange]
//
// Not a test: not registered with ctest.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
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

// 2856 -> 3000: a fused shard's tensors and the per-expert shard made from
// it (qwen3-30b-a3b, 2 layers), the direction that lags `cp -r`.
void PageOffsets(benchmark::internal::Benchmark* b) {
  for (auto [s, d] : {std::pair{0, 0}, {8, 8}, {8, 0}, {0, 8}, {0, 24}, {0, 2048}, {2856, 3000}, {3000, 2856}}) {
    b->Args({s, d});
  }
}

void BM_BounceCopy(benchmark::State& state) {
  static Files f;
  const size_t so = static_cast<size_t>(state.range(0)), dof = static_cast<size_t>(state.range(1));
  const size_t chunk = static_cast<size_t>(state.range(2)) << 10;
  const bool presized = state.range(3) != 0;  // the executor sizes each shard before it fills it
  std::unique_ptr<char, decltype(&std::free)> buf{static_cast<char*>(std::aligned_alloc(4096, chunk + 4096)), &std::free};
  char* b = buf.get() + so % 4096;
  for (auto _ : state) {
    state.PauseTiming();
    if (::ftruncate(f.dst, 0) != 0 || (presized && ::ftruncate(f.dst, static_cast<off_t>(kBytes + 4096)) != 0)) {
      std::abort();
    }
    state.ResumeTiming();
    for (size_t done = 0; done < kBytes;) {
      const size_t n = std::min(chunk, kBytes - done);
      if (::pread(f.src, b, n, static_cast<off_t>(so + done)) != static_cast<ssize_t>(n) ||
          ::pwrite(f.dst, b, n, static_cast<off_t>(dof + done)) != static_cast<ssize_t>(n)) {
        state.SkipWithError("pread/pwrite failed");
        return;
      }
      done += n;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kBytes));
}

void BounceArgs(benchmark::internal::Benchmark* b) {
  for (auto [s, d] : {std::pair{0, 0}, {0, 8}, {2856, 3000}, {3000, 2856}}) {
    for (int kib : {1024, 8192}) {
      for (int presized : {0, 1}) b->Args({s, d, kib, presized});
    }
  }
}

BENCHMARK(BM_RepMovsb)->Apply(Offsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Memcpy)->Apply(Offsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CopyFileRange)->Apply(PageOffsets)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BounceCopy)->Apply(BounceArgs)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
