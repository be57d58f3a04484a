// The rank-aware loader: whole loads equal the converted checkpoint, every
// rank's slice equals a reference cut of the full tensor (computed here by
// plain indexing, not by the loader's intervals), the ranks together make
// the whole, and each rank reads exactly its own bytes.
#include "moepack/loader.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "testutil.h"

namespace moepack {
namespace loader_test {
namespace {

using moepack::testing::LoadAll;
using moepack::testing::RunMoepack;
using moepack::testing::TempDir;

void Synth(const std::string& dst, const std::string& args) {
  auto r = RunMoepack("synth " + dst + " " + args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void ConvertTo(const std::string& src, const std::string& dst, Direction d) {
  ConvertOptions o;
  o.direction = d;
  o.threads = 2;
  auto r = Convert(src, dst, o);
  ASSERT_TRUE(r.ok()) << r.status().message();
}

// name -> bytes, read from the files with plain streams.
std::map<std::string, std::string> ReadAll(const std::string& dir) {
  std::map<std::string, std::string> out;
  auto c = Checkpoint::Open(dir);
  EXPECT_TRUE(c.ok()) << c.status().message();
  if (!c.ok()) return out;
  for (const std::string& n : c->names()) {
    const TensorLocation* loc = c->Find(n);
    const Shard& s = c->shards()[loc->shard];
    std::ifstream in(s.path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(s.header.data_start() + loc->info->begin));
    std::string bytes(loc->info->nbytes(), '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out[n] = bytes;
  }
  return out;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Case {
  std::string name;
  std::string synth;  // synth flags
};

const Case kCases[] = {
    {"qwen3_moe_bf16", "--model-type qwen3_moe --dtype bf16 --layers 2 --experts 8 --hidden 32 --intermediate 16 "
                       "--max-shard-size 20KB --seed 3"},
    {"qwen3_moe_fused", "--model-type qwen3_moe --dtype f32 --layers 2 --experts 8 --hidden 32 --intermediate 16 "
                        "--layout fused --max-shard-size 20KB"},
    {"qwen3_vl_transposed", "--model-type qwen3_vl_moe --dtype bf16 --layers 2 --experts 8 --hidden 32 "
                            "--intermediate 12 --max-shard-size 20KB"},
    {"mixtral_f16", "--model-type mixtral --dtype f16 --layers 2 --experts 4 --hidden 16 --intermediate 8"},
    {"deepseek_v3_fp8", "--model-type deepseek_v3 --dtype fp8 --layers 2 --experts 4 --hidden 256 --intermediate 256"},
};

class LoaderCaseTest : public ::testing::TestWithParam<Case> {};

TEST_P(LoaderCaseTest, WholeLoadEqualsTheConvertedCheckpoint) {
  TempDir d;
  Synth(d / "src", GetParam().synth);
  for (Direction dir : {Direction::kToFused, Direction::kToPerExpert}) {
    const std::string out = d / (dir == Direction::kToFused ? "fused" : "per-expert");
    ConvertTo(d / "src", out, dir);
    LoadOptions o;
    o.direction = dir;
    auto l = Loader::Open(d / "src", o);
    ASSERT_TRUE(l.ok()) << l.status().message();
    auto want = ReadAll(out);
    auto got = LoadAll(*l);
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [name, bytes] : want) {
      ASSERT_TRUE(got.count(name)) << name;
      EXPECT_TRUE(got[name] == bytes) << name;
    }
    EXPECT_EQ(l->bytes_read(), l->rank_bytes());
    EXPECT_EQ(l->rank_bytes(), l->total_bytes());
  }
}

// The reference cut of one full fused expert tensor [E, A, B] (bytes).
std::string ReferenceSlice(const std::string& name, const std::string& full, const std::vector<uint64_t>& shape,
                           uint64_t eb, const ParallelSpec& p) {
  const uint64_t E = shape[0], A = shape[1], B = shape[2];
  const uint64_t El = E / p.ep_size, e0 = El * p.ep_rank;
  const uint64_t tp = p.tp_size, t = p.tp_rank;
  auto at = [&](uint64_t e, uint64_t a, uint64_t b) { return full.substr(((e * A + a) * B + b) * eb, eb); };
  std::string out;
  for (uint64_t e = e0; e < e0 + El; ++e) {
    if (name.find("gate_up_proj") != std::string::npos) {
      const uint64_t I = A / 2, Il = I / tp;
      for (uint64_t half = 0; half < 2; ++half) {  // gate rows, then up rows of the same range
        for (uint64_t a = half * I + t * Il; a < half * I + (t + 1) * Il; ++a) {
          for (uint64_t b = 0; b < B; ++b) out += at(e, a, b);
        }
      }
    } else {
      const uint64_t Il = B / tp;
      for (uint64_t a = 0; a < A; ++a) {
        for (uint64_t b = t * Il; b < (t + 1) * Il; ++b) out += at(e, a, b);
      }
    }
  }
  return out;
}

bool IsExpert(const std::string& name) {
  return EndsWith(name, "experts.gate_up_proj") || EndsWith(name, "experts.down_proj") ||
         EndsWith(name, "experts.gate_up_proj_scale_inv") || EndsWith(name, "experts.down_proj_scale_inv");
}

TEST_P(LoaderCaseTest, EveryRankGetsItsSliceAndReadsOnlyItsBytes) {
  TempDir d;
  Synth(d / "src", GetParam().synth);
  auto whole = Loader::Open(d / "src", {});
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  auto full = LoadAll(*whole);
  uint64_t expert_bytes = 0, other_bytes = 0;
  for (const auto& t : whole->tensors()) (IsExpert(t.name) ? expert_bytes : other_bytes) += t.nbytes;
  ASSERT_GT(expert_bytes, 0u);

  const std::pair<int, int> sizes[] = {{2, 1}, {4, 1}, {1, 2}, {2, 2}, {4, 2}};
  for (auto [ep, tp] : sizes) {
    uint64_t expert_sum = 0;
    for (int er = 0; er < ep; ++er) {
      for (int tr = 0; tr < tp; ++tr) {
        LoadOptions o;
        o.parallel = {er, ep, tr, tp};
        auto l = Loader::Open(d / "src", o);
        ASSERT_TRUE(l.ok()) << GetParam().name << " ep " << ep << " tp " << tp << ": " << l.status().message();
        auto got = LoadAll(*l);
        ASSERT_EQ(got.size(), full.size());
        uint64_t rank_expert = 0;
        for (const auto& t : l->tensors()) {
          const std::string& want_full = full[t.name];
          if (!IsExpert(t.name)) {
            EXPECT_EQ(t.split, Split::kWhole) << t.name;
            EXPECT_TRUE(got[t.name] == want_full) << t.name;
            continue;
          }
          ASSERT_EQ(t.full_shape.size(), 3u) << t.name;
          const uint64_t eb = static_cast<uint64_t>(DTypeBits(t.dtype) / 8);
          EXPECT_TRUE(got[t.name] == ReferenceSlice(t.name, want_full, t.full_shape, eb, o.parallel))
              << GetParam().name << " " << t.name << " ep " << er << "/" << ep << " tp " << tr << "/" << tp;
          EXPECT_EQ(t.shape[0], t.full_shape[0] / ep) << t.name;
          rank_expert += t.nbytes;
        }
        // Exactly the rank's bytes come off the disk, and they scale with 1/size.
        EXPECT_EQ(l->bytes_read(), l->rank_bytes());
        EXPECT_EQ(l->bytes_read(), other_bytes + expert_bytes / (ep * tp)) << "ep " << ep << " tp " << tp;
        expert_sum += rank_expert;
      }
    }
    EXPECT_EQ(expert_sum, expert_bytes);
  }
}

// ReadMany (threads, chunks cut inside tensors) and ReadRange over the
// windows of Chunks, read from several threads, give what ReadInto gives,
// and read each of the rank's bytes exactly once.
TEST_P(LoaderCaseTest, ParallelAndWindowedReadsEqualReadInto) {
  TempDir d;
  Synth(d / "src", GetParam().synth);
  for (ParallelSpec p : {ParallelSpec{}, ParallelSpec{1, 2, 1, 2}}) {
    LoadOptions o;
    o.parallel = p;
    auto l = Loader::Open(d / "src", o);
    ASSERT_TRUE(l.ok()) << l.status().message();
    const auto want = LoadAll(*l);
    const auto& ts = l->tensors();
    for (uint64_t chunk : {uint64_t{1} << 20, uint64_t{100}, uint64_t{7}}) {
      for (int threads : {1, 3}) {
        std::vector<std::string> bufs(ts.size());
        std::vector<ReadRequest> reqs;
        for (size_t i = 0; i < ts.size(); ++i) {
          bufs[i].assign(ts[i].nbytes, '\x5a');
          reqs.push_back(ReadRequest{i, bufs[i].data(), bufs[i].size()});
        }
        l->ResetCounters();
        Status s = l->ReadMany(reqs, {.threads = threads, .chunk_bytes = chunk});
        ASSERT_TRUE(s.ok()) << s.message();
        for (size_t i = 0; i < ts.size(); ++i) EXPECT_TRUE(bufs[i] == want.at(ts[i].name)) << ts[i].name << " chunk " << chunk;
        EXPECT_EQ(l->bytes_read(), l->rank_bytes()) << "chunk " << chunk << " threads " << threads;
      }
      // The windows of Chunks: consecutive, cut at multiples of `chunk`
      // unless a transposed block is kept whole, read from two threads.
      l->ResetCounters();
      std::vector<std::string> bufs(ts.size());
      std::vector<std::tuple<size_t, uint64_t, uint64_t>> windows;
      for (size_t i = 0; i < ts.size(); ++i) {
        bufs[i].assign(ts[i].nbytes, '\0');
        uint64_t at = 0;
        for (auto [b, e] : l->Chunks(i, chunk)) {
          EXPECT_EQ(b, at) << ts[i].name;
          EXPECT_LT(b, e);
          if (e - b > chunk) {
            EXPECT_NE(GetParam().name.find("transposed"), std::string::npos) << ts[i].name;
          }
          windows.emplace_back(i, b, e);
          at = e;
        }
        EXPECT_EQ(at, ts[i].nbytes) << ts[i].name;
      }
      std::vector<Status> errs(2);
      std::vector<std::thread> pool;
      for (size_t w = 0; w < 2; ++w) {
        pool.emplace_back([&, w] {
          for (size_t k = w; k < windows.size(); k += 2) {
            auto [i, b, e] = windows[k];
            Status s = l->ReadRange(i, b, bufs[i].data() + b, e - b);
            if (!s.ok()) errs[w] = s;
          }
        });
      }
      for (auto& t : pool) t.join();
      for (const Status& e : errs) ASSERT_TRUE(e.ok()) << e.message();
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_TRUE(bufs[i] == want.at(ts[i].name)) << ts[i].name << " chunk " << chunk;
      EXPECT_EQ(l->bytes_read(), l->rank_bytes()) << "chunk " << chunk;
    }
    // Any window, cutting transposed blocks anywhere, still has the right bytes.
    for (size_t i = 0; i < ts.size(); ++i) {
      const std::string& full = want.at(ts[i].name);
      for (uint64_t b = 0; b < full.size(); b += 1 + full.size() / 3) {
        const uint64_t len = std::min<uint64_t>(full.size() - b, 5 + full.size() / 4);
        std::string part(len, '\0');
        Status s = l->ReadRange(i, b, part.data(), len);
        ASSERT_TRUE(s.ok()) << s.message();
        EXPECT_TRUE(part == full.substr(b, len)) << ts[i].name << " at " << b;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, LoaderCaseTest, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return info.param.name; });

TEST(LoaderTest, GateAndUpRowsOfTheSameRangeInterleave) {
  TempDir d;
  Synth(d / "src", "--model-type qwen3_moe --dtype f32 --layers 1 --experts 2 --hidden 4 --intermediate 4");
  auto whole = Loader::Open(d / "src", {});
  ASSERT_TRUE(whole.ok());
  LoadOptions o;
  o.parallel.tp_size = 2;
  o.parallel.tp_rank = 1;
  auto l = Loader::Open(d / "src", o);
  ASSERT_TRUE(l.ok()) << l.status().message();
  const std::string name = "model.layers.0.mlp.experts.gate_up_proj";
  size_t wi = 0, li = 0;
  while (whole->tensors()[wi].name != name) ++wi;
  while (l->tensors()[li].name != name) ++li;
  EXPECT_EQ(l->tensors()[li].shape, (std::vector<uint64_t>{2, 4, 4}));
  auto f = whole->Read(wi), s = l->Read(li);
  ASSERT_TRUE(f.ok() && s.ok());
  const float* full = reinterpret_cast<const float*>(f->data.get());
  const float* part = reinterpret_cast<const float*>(s->data.get());
  // Rank 1 of 2, I = 4: gate rows 2, 3 then up rows 6, 7 of each expert.
  const int rows[] = {2, 3, 6, 7};
  for (int e = 0; e < 2; ++e) {
    for (int r = 0; r < 4; ++r) {
      for (int h = 0; h < 4; ++h) EXPECT_EQ(part[(e * 4 + r) * 4 + h], full[(e * 8 + rows[r]) * 4 + h]);
    }
  }
}

TEST(LoaderTest, MaxGapTradesBytesForReads) {
  TempDir d;
  Synth(d / "src", "--model-type qwen3_moe --dtype bf16 --layers 1 --experts 4 --hidden 64 --intermediate 32");
  LoadOptions exact;
  exact.parallel.tp_size = 4;
  exact.parallel.tp_rank = 2;
  LoadOptions merged = exact;
  merged.max_gap = 1 << 20;
  auto a = Loader::Open(d / "src", exact);
  auto b = Loader::Open(d / "src", merged);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(LoadAll(*a), LoadAll(*b));
  EXPECT_EQ(a->bytes_read(), a->rank_bytes());
  EXPECT_GT(b->bytes_read(), b->rank_bytes());
  // down_proj [4, 64, 8] of the rank: 64 rows of 16 bytes per expert, each a
  // read of its own unless merged.
  EXPECT_GE(a->read_calls(), 4u * 64u);
  EXPECT_LT(b->read_calls() * 8, a->read_calls());
}

TEST(LoaderTest, Refusals) {
  TempDir d;
  Synth(d / "q", "--model-type qwen3_moe --dtype bf16 --layers 1 --experts 6 --hidden 16 --intermediate 12");
  Synth(d / "f8", "--model-type deepseek_v3 --dtype fp8 --layers 2 --experts 4 --hidden 256 --intermediate 256");
  struct Row {
    std::string dir;
    ParallelSpec p;
    Direction direction;
    std::string expect;  // a part of the message
  };
  const Row rows[] = {
      {"q", {0, 4, 0, 1}, Direction::kToFused,
       "ep_size 4 does not divide the 6 experts of 'model.layers.0.mlp.experts."},
      {"q", {0, 1, 0, 5}, Direction::kToFused, "tp_size 5 does not divide the expert intermediate size 12 of"},
      {"q", {2, 2, 0, 1}, Direction::kToFused, "ep_rank 2 is outside [0, 2)"},
      {"q", {0, 1, -1, 2}, Direction::kToFused, "tp_rank -1 is outside [0, 2)"},
      {"q", {0, 0, 0, 1}, Direction::kToFused, "ep_size must be at least 1"},
      {"q", {0, 2, 0, 1}, Direction::kToPerExpert, "load to the fused layout"},
      {"f8", {0, 1, 0, 4}, Direction::kToFused, "do not fall on the 128-wide quantization blocks"},
  };
  for (const Row& r : rows) {
    LoadOptions o;
    o.parallel = r.p;
    o.direction = r.direction;
    auto l = Loader::Open(d / r.dir, o);
    ASSERT_FALSE(l.ok()) << r.expect;
    EXPECT_NE(l.status().message().find(r.expect), std::string::npos) << l.status().message();
  }
  // What the planner finds is reported by Open with the planner's words.
  LoadOptions o;
  o.model_type = "no_such_family";
  auto l = Loader::Open(d / "q", o);
  ASSERT_FALSE(l.ok());
  ConvertOptions co;
  co.model_type = "no_such_family";
  auto c = Convert(d / "q", d / "out", co);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(l.status().message(), c.status().message());
}

TEST(LoaderTest, RawLoadGivesTheSourceTensorsInShardOrder) {
  TempDir d;
  Synth(d / "q", "--model-type qwen3_moe --dtype f32 --layers 2 --experts 4 --hidden 8 --intermediate 4 "
                 "--max-shard-size 2KB");
  LoadOptions o;
  o.raw = true;
  auto l = Loader::Open(d / "q", o);
  ASSERT_TRUE(l.ok()) << l.status().message();
  auto got = LoadAll(*l);
  EXPECT_EQ(got, ReadAll(d / "q"));
  auto c = Checkpoint::Open(d / "q");
  ASSERT_TRUE(c.ok());
  std::vector<std::string> names;
  for (const auto& t : l->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, c->names());
  o.parallel.ep_size = 2;
  EXPECT_FALSE(Loader::Open(d / "q", o).ok());
}

}  // namespace
}  // namespace loader_test
}  // namespace moepack

namespace moepack {
namespace loader_test {
namespace {

// A refused ReadMany or ReadRange writes nothing: every buffer keeps its bytes.
TEST(LoaderTest, RefusedReadsLeaveTheBuffersUntouched) {
  TempDir d;
  Synth(d / "q", "--model-type qwen3_moe --dtype bf16 --layers 1 --experts 4 --hidden 16 --intermediate 8");
  auto l = Loader::Open(d / "q", {});
  ASSERT_TRUE(l.ok()) << l.status().message();
  const auto& ts = l->tensors();
  ASSERT_GE(ts.size(), 2u);
  std::vector<std::string> bufs;
  for (const auto& t : ts) bufs.emplace_back(t.nbytes + 16, '\x77');
  const std::vector<std::string> before = bufs;
  auto all = [&] {
    std::vector<ReadRequest> r;
    for (size_t i = 0; i < ts.size(); ++i) r.push_back(ReadRequest{i, bufs[i].data(), ts[i].nbytes});
    return r;
  };
  struct Row {
    std::string what;
    std::vector<ReadRequest> reqs;
  };
  std::vector<Row> rows;
  rows.push_back({"is out of range", all()});
  rows.back().reqs.back().index = ts.size();
  rows.push_back({"bytes for", all()});
  rows.back().reqs.back().size += 1;
  rows.push_back({"overlap", all()});
  rows.back().reqs.back().dst = static_cast<char*>(rows.back().reqs.front().dst) + 1;
  for (const Row& r : rows) {
    Status s = l->ReadMany(r.reqs, {.threads = 2});
    ASSERT_FALSE(s.ok()) << r.what;
    EXPECT_NE(s.message().find(r.what), std::string::npos) << s.message();
    EXPECT_EQ(bufs, before) << r.what;
  }
  Status s = l->ReadRange(0, ts[0].nbytes - 1, bufs[0].data(), 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("lie outside"), std::string::npos) << s.message();
  EXPECT_EQ(bufs, before);
  EXPECT_EQ(l->bytes_read(), 0u);
}

// A failure on any worker stops the others and is what ReadMany returns.
TEST(LoaderTest, AReadErrorOnAWorkerIsReturned) {
  TempDir d;
  Synth(d / "q", "--model-type qwen3_moe --dtype f32 --layers 2 --experts 4 --hidden 16 --intermediate 8");
  auto l = Loader::Open(d / "q", {});
  ASSERT_TRUE(l.ok()) << l.status().message();
  for (const auto& f : std::filesystem::directory_iterator(d / "q")) {  // shrunk after Open
    if (f.path().extension() == ".safetensors") std::filesystem::resize_file(f.path(), 64);
  }
  const auto& ts = l->tensors();
  std::vector<std::string> bufs;
  std::vector<ReadRequest> reqs;
  bufs.reserve(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    bufs.emplace_back(ts[i].nbytes, '\0');
    reqs.push_back(ReadRequest{i, bufs.back().data(), ts[i].nbytes});
  }
  Status s = l->ReadMany(reqs, {.threads = 2, .chunk_bytes = 256});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("unexpected end of file"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace loader_test
}  // namespace moepack
