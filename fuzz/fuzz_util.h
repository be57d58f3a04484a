// Shared by the libFuzzer targets: a scratch directory for the life of the
// process, small file writers, and an oracle that checks a plan's byte
// ranges against the files they point into.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "moepack/dtype.h"
#include "moepack/plan.h"
#include "moepack/safetensors.h"

namespace moepack::fuzz {

// Aborts (a crash libFuzzer reports and keeps) when an invariant breaks.
#define FUZZ_CHECK(cond, what)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "fuzz invariant failed: %s (%s)\n", #cond, what);   \
      std::abort();                                                            \
    }                                                                          \
  } while (0)

// A directory under /dev/shm (or TMPDIR) removed when the process exits.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    std::string templ = base + "/moepack-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) std::abort();
    static std::string keep = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return templ;
  }();
  return dir;
}

inline std::string Subdir(const std::string& name) {
  std::string p = ScratchDir() + "/" + name;
  std::filesystem::create_directories(p);
  return p;
}

inline void WriteBytes(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) std::abort();
  std::fclose(f);
}

inline std::string U64Le(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out;
}

// 8-byte little-endian length, the header text, then `data_size` bytes of a
// position-dependent pattern (so misplaced copies change hashes).
inline std::string SafetensorsBytes(std::string_view header, uint64_t data_size) {
  std::string out = U64Le(header.size());
  out.append(header);
  out.reserve(out.size() + data_size);
  for (uint64_t i = 0; i < data_size; ++i) out.push_back(static_cast<char>((i * 131 + (i >> 8) * 7) & 0xff));
  return out;
}

// The data size a header asks for (largest end offset), or 0 when it cannot
// be read or would exceed `cap`; the reader then reports the mismatch.
inline uint64_t DataSizeFor(std::string_view header, uint64_t cap) {
  nlohmann::json j = nlohmann::json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return 0;
  uint64_t end = 0;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it->is_object() || !it->contains("data_offsets")) continue;
    const auto& o = (*it)["data_offsets"];
    if (o.is_array() && o.size() == 2 && o[1].is_number_unsigned()) end = std::max(end, o[1].get<uint64_t>());
  }
  return end <= cap ? end : 0;
}

// Every planned byte comes from inside its source file and lands inside its
// output tensor, each output byte exactly once, and the shapes add up.
inline void CheckPlan(const Plan& plan) {
  std::vector<uint64_t> sizes;
  for (const auto& f : plan.src_files) {
    std::error_code ec;
    sizes.push_back(std::filesystem::file_size(f, ec));
    FUZZ_CHECK(!ec, f.c_str());
  }
  uint64_t total = 0;
  for (const PlannedTensor& t : plan.tensors) {
    auto n = NumElements(t.shape);
    FUZZ_CHECK(n.has_value(), t.name.c_str());
    auto bytes = ByteSize(t.dtype, *n);
    FUZZ_CHECK(bytes.has_value() && *bytes == t.nbytes, t.name.c_str());
    std::vector<std::pair<uint64_t, uint64_t>> dst;  // [begin, end) in the tensor
    for (const CopyRange& c : t.copies) {
      FUZZ_CHECK(c.src_file < sizes.size(), t.name.c_str());
      FUZZ_CHECK(c.length > 0, t.name.c_str());
      FUZZ_CHECK(c.src_offset <= sizes[c.src_file] && c.length <= sizes[c.src_file] - c.src_offset, t.name.c_str());
      FUZZ_CHECK(c.dst_offset <= t.nbytes && c.length <= t.nbytes - c.dst_offset, t.name.c_str());
      dst.emplace_back(c.dst_offset, c.dst_offset + c.length);
    }
    for (const Gather& g : t.gathers) {
      FUZZ_CHECK(g.dst_offset <= t.nbytes && g.length <= t.nbytes - g.dst_offset, t.name.c_str());
      uint64_t written = 0;
      for (const BlockMove& b : g.blocks) {
        FUZZ_CHECK(b.src_file < sizes.size(), t.name.c_str());
        FUZZ_CHECK(b.elem_bytes > 0, t.name.c_str());
        uint64_t len = 0;
        FUZZ_CHECK(!__builtin_mul_overflow(b.rows, b.cols, &len) && !__builtin_mul_overflow(len, b.elem_bytes, &len),
                   t.name.c_str());
        FUZZ_CHECK(b.src_offset <= sizes[b.src_file] && b.src_span() <= sizes[b.src_file] - b.src_offset,
                   t.name.c_str());
        FUZZ_CHECK(b.dst_offset >= g.dst_offset && b.dst_offset - g.dst_offset + b.dst_span() <= g.length,
                   t.name.c_str());
        written += len;
      }
      FUZZ_CHECK(written == g.length, t.name.c_str());  // each byte of the region once
      if (g.length) dst.emplace_back(g.dst_offset, g.dst_offset + g.length);
    }
    std::sort(dst.begin(), dst.end());
    uint64_t at = 0;
    for (const auto& [b, e] : dst) {
      FUZZ_CHECK(b == at, t.name.c_str());  // no gap, no overlap
      at = e;
    }
    FUZZ_CHECK(at == t.nbytes, t.name.c_str());
    total += t.nbytes;
  }
  FUZZ_CHECK(total == plan.total_bytes, "total_bytes");
  for (const PlannedShard& s : plan.shards) {
    FUZZ_CHECK(s.tensors.size() == s.layout.tensors.size(), s.filename.c_str());
    auto h = ParseHeader(std::string_view(s.layout.prefix).substr(8), s.layout.data_size, s.filename);
    FUZZ_CHECK(h.ok(), h.status().message().c_str());
  }
}

}  // namespace moepack::fuzz
