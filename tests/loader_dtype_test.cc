// The loader dequantizing as it reads (LoadOptions::dtype): a whole load is
// the checkpoint `convert --dtype` writes, byte for byte; a rank's slice is
// what the loader cuts from that converted checkpoint; and a rank reads
// only its own share of the stored codes (FP8) or blocks (MXFP4) and of
// their scales.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/loader.h"
#include "moepack/parse.h"
#include "testutil.h"

namespace moepack {
namespace loader_dtype_test {
namespace {

using moepack::testing::LoadAll;
using moepack::testing::RunMoepack;
using moepack::testing::TempDir;

// The same names with the same bytes.
void ExpectSameTensors(const std::map<std::string, std::string>& want, const std::map<std::string, std::string>& got) {
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [name, bytes] : want) {
    auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << name << " was not loaded";
      continue;
    }
    EXPECT_TRUE(it->second == bytes) << name;
  }
}

// Whatever Loader::Open gives, or a failed test.
Loader Open(const std::string& path, const LoadOptions& o) {
  auto l = Loader::Open(path, o);
  EXPECT_TRUE(l.ok()) << path << ": " << l.status().message();
  if (!l.ok()) std::abort();
  return std::move(*l);
}

struct Stored {
  // Bytes of routed-expert weights (codes, blocks, scales), of their biases
  // (gpt_oss; not quantized) and of the rest.
  uint64_t expert = 0, bias = 0, other = 0;
};

bool IsExpertBias(const std::string& n) {
  return n.find(".experts.") != std::string::npos && n.find("_bias") != std::string::npos;
}

Stored StoredBytes(const std::string& dir) {
  auto c = Checkpoint::Open(dir);
  EXPECT_TRUE(c.ok());
  Stored s;
  for (const std::string& n : c->names()) {
    const uint64_t bytes = c->Find(n)->info->nbytes();
    if (IsExpertBias(n)) {
      s.bias += bytes;
    } else {
      (n.find(".experts.") != std::string::npos ? s.expert : s.other) += bytes;
    }
  }
  return s;
}

struct DtypeCase {
  std::string name;
  std::string synth;
  std::string layout;  // of the converted checkpoint the slices are cut from
};

const DtypeCase kDtypeCases[] = {
    // I = 384 with 128x128 blocks: a tensor-parallel half (192) starts inside a
    // block, so a rank's columns start mid-block and share a scale with the
    // other rank's.
    {"deepseek_v3_fp8", "--model-type deepseek_v3 --dtype fp8 --layers 2 --experts 4 --hidden 256 --intermediate 384 "
                        "--max-shard-size 400KB --seed 5",
     "fused"},
    // gate and up interleaved in [E, H, 2I], down [E, I, H], each expert
    // decoded then transposed.
    {"gpt_oss_mxfp4", "--model-type gpt_oss --dtype mxfp4 --layout fused --layers 2 --experts 4 --hidden 64 "
                      "--intermediate 128 --max-shard-size 60KB --seed 9",
     "fused"},
};

class LoaderDtypeTest : public ::testing::TestWithParam<DtypeCase> {
 protected:
  void SetUp() override {
    auto r = RunMoepack("synth " + d_ / "src" + " " + GetParam().synth);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::string Converted(Direction dir) {
    const std::string out = d_ / (dir == Direction::kToFused ? "bf16-fused" : "bf16-per-expert");
    ConvertOptions o;
    o.direction = dir;
    o.dtype = DTypeChange::kToBF16;
    auto r = Convert(d_ / "src", out, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return out;
  }
  TempDir d_;
};

TEST_P(LoaderDtypeTest, WholeLoadIsTheDequantizedConversion) {
  const Stored stored = StoredBytes(d_ / "src");
  for (Direction dir : {Direction::kToFused, Direction::kToPerExpert}) {
    LoadOptions plain;
    plain.direction = dir;
    const auto want = LoadAll(Open(Converted(dir), plain));
    LoadOptions o;
    o.direction = dir;
    o.dtype = DTypeChange::kToBF16;
    const Loader l = Open(d_ / "src", o);
    const auto got = LoadAll(l);
    SCOPED_TRACE(DirectionName(dir));
    ExpectSameTensors(want, got);
    for (const LoadTensor& t : l.tensors()) EXPECT_FALSE(IsFloat8(t.dtype)) << t.name;
    // To fused, every stored byte once: codes and blocks, each scale row
    // once though many rows use it. (Cutting MXFP4's interleaved gate and up
    // apart decodes each expert once for each.)
    if (dir == Direction::kToFused) {
      EXPECT_EQ(l.bytes_read(), stored.expert + stored.bias + stored.other);
    }
  }
}

TEST_P(LoaderDtypeTest, EveryRankDequantizesOnlyItsOwnSlice) {
  const std::string bf16 = Converted(Direction::kToFused);
  const Stored stored = StoredBytes(d_ / "src");
  for (auto [ep, tp] : {std::pair{2, 1}, std::pair{1, 2}, std::pair{2, 2}, std::pair{4, 2}}) {
    uint64_t read_sum = 0;
    for (int er = 0; er < ep; ++er) {
      for (int tr = 0; tr < tp; ++tr) {
        SCOPED_TRACE("ep " + std::to_string(er) + "/" + std::to_string(ep) + " tp " + std::to_string(tr) + "/" +
                     std::to_string(tp));
        LoadOptions o;
        o.parallel = {er, ep, tr, tp};
        const auto want = LoadAll(Open(bf16, o));
        o.dtype = DTypeChange::kToBF16;
        const Loader l = Open(d_ / "src", o);
        const auto got = LoadAll(l);
        ExpectSameTensors(want, got);
        // The rank's share of the experts' stored weights, plus at most the
        // scale rows (FP8) that two tensor-parallel ranks share; biases as
        // the rank gets them.
        uint64_t rank_bias = 0;
        for (const LoadTensor& t : l.tensors()) rank_bias += IsExpertBias(t.name) ? t.nbytes : 0;
        const uint64_t share = stored.expert / static_cast<uint64_t>(ep * tp);
        const uint64_t weights = l.bytes_read() - stored.other - rank_bias;
        EXPECT_GE(weights, share);
        EXPECT_LE(weights, share + share / 16);
        read_sum += weights;
      }
    }
    if (GetParam().name == "gpt_oss_mxfp4") {
      EXPECT_EQ(read_sum, stored.expert);  // MXFP4 rows and groups split exactly
    }
  }
}

// ReadMany cuts tensors into chunks that workers dequantize apart, a
// chunk starting anywhere in a block or an expert.
TEST_P(LoaderDtypeTest, ParallelReadsInChunksEqualReadInto) {
  for (ParallelSpec p : {ParallelSpec{}, ParallelSpec{1, 2, 1, 2}}) {
    LoadOptions o;
    o.parallel = p;
    o.dtype = DTypeChange::kToBF16;
    const Loader l = Open(d_ / "src", o);
    const auto want = LoadAll(l);
    const auto& ts = l.tensors();
    for (uint64_t chunk : {uint64_t{1} << 20, uint64_t{998}}) {
      std::vector<std::string> bufs(ts.size());
      std::vector<ReadRequest> reqs;
      for (size_t i = 0; i < ts.size(); ++i) {
        bufs[i].assign(ts[i].nbytes, '\x5a');
        reqs.push_back(ReadRequest{i, bufs[i].data(), bufs[i].size()});
      }
      Status st = l.ReadMany(reqs, {.threads = 3, .chunk_bytes = chunk});
      ASSERT_TRUE(st.ok()) << st.message();
      for (size_t i = 0; i < ts.size(); ++i) EXPECT_TRUE(bufs[i] == want.at(ts[i].name)) << ts[i].name << " chunk " << chunk;
    }
  }
}

void PrintTo(const DtypeCase& c, std::ostream* os) { *os << c.name; }

INSTANTIATE_TEST_SUITE_P(Quantized, LoaderDtypeTest, ::testing::ValuesIn(kDtypeCases),
                         [](const auto& info) { return info.param.name; });

TEST(LoaderDtype, RefusesQuantizingAndANonQuantizedTensorPassesThrough) {
  TempDir d;
  auto r = RunMoepack("synth " + d / "src" +
                      " --model-type qwen3_moe --dtype bf16 --layers 1 --experts 4 --hidden 32 --intermediate 16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  LoadOptions o;
  o.dtype = DTypeChange::kToFP8;
  auto l = Loader::Open(d / "src", o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("convert --dtype fp8"), std::string::npos) << l.status().message();
  // A BF16 checkpoint loaded "as bf16" is what it is.
  o.dtype = DTypeChange::kToBF16;
  const auto got = LoadAll(Open(d / "src", o));
  const auto want = LoadAll(Open(d / "src", {}));
  EXPECT_TRUE(got == want);
}

}  // namespace
}  // namespace loader_dtype_test
}  // namespace moepack
