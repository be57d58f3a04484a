// The executor: DST appears atomically and only when complete, an existing
// DST needs --force, SRC is never touched, non-weight files are copied
// byte for byte, and the thread count does not change a byte.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/executor.h"
#include "moepack/plan.h"
#include "moepack/verify.h"
#include "testutil.h"

namespace moepack {
namespace convert_test {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto o = testing::TinyOptions("qwen3_moe", "per-expert");
    o.seed = 5;
    testing::SynthOrDie(d_ / "src", o);
    // A nested non-weight file, too.
    fs::create_directories(d_ / "src/extra");
    testing::WriteFileOrDie(d_ / "src/extra/notes.txt", "not a tensor\n");
  }
  TempDir d_;
};

TEST_F(ExecutorTest, SourceUntouchedAndAuxFilesCopiedByteIdentical) {
  const std::string before = testing::HashTree(d_ / "src");
  testing::ConvertOrDie(d_ / "src", d_ / "out", Direction::kToFused);
  EXPECT_EQ(testing::HashTree(d_ / "src"), before);
  for (const char* f : {"config.json", "tokenizer_config.json", "generation_config.json", "extra/notes.txt"}) {
    const std::string a = testing::ReadFileOrDie(d_ / (std::string("src/") + f));
    EXPECT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == testing::ReadFileOrDie(d_ / (std::string("out/") + f))) << f;
  }
  // And back: the per-expert output leaves the fused one alone too.
  const std::string fused = testing::HashTree(d_ / "out");
  testing::ConvertOrDie(d_ / "out", d_ / "back", Direction::kToPerExpert);
  EXPECT_EQ(testing::HashTree(d_ / "out"), fused);
  EXPECT_TRUE(testing::ReadFileOrDie(d_ / "src/config.json") == testing::ReadFileOrDie(d_ / "back/config.json"));
  // Only DST was created next to SRC: no temporary left behind.
  EXPECT_EQ(testing::ListDir(d_.path()), (std::vector<std::string>{"back", "out", "src"}));
}

TEST_F(ExecutorTest, ThreadCountDoesNotChangeAByte) {
  for (Direction dir : {Direction::kToFused, Direction::kToPerExpert}) {
    const std::string src = dir == Direction::kToFused ? d_ / "src" : d_ / "t1-fused";
    std::string hashes[2];
    int i = 0;
    for (int threads : {1, 4}) {
      ConvertOptions o;
      o.threads = threads;
      o.max_shard_size = 90'000;  // several output shards
      const std::string dst = d_ / ("t" + std::to_string(threads) + (dir == Direction::kToFused ? "-fused" : "-back"));
      testing::ConvertOrDie(src, dst, dir, o);
      hashes[i++] = testing::HashTree(dst);
    }
    EXPECT_EQ(hashes[0], hashes[1]);
  }
}

// --no-sync drops only the flushes: the same bytes, the same atomic rename
// (no temporary left), the same refusal of an existing DST.
TEST_F(ExecutorTest, NoSyncWritesTheSameOutput) {
  testing::ConvertOrDie(d_ / "src", d_ / "synced", Direction::kToFused);
  auto r = testing::RunMoepack("convert --no-sync --max-shard-size 90KB " + d_ / "src" + " " + d_ / "unsynced");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto again = testing::RunMoepack("convert --no-sync " + d_ / "src" + " " + d_ / "unsynced");
  EXPECT_EQ(again.exit_code, 1) << again.err;
  EXPECT_NE(again.err.find("already exists"), std::string::npos) << again.err;
  r = testing::RunMoepack("convert --no-sync --force " + d_ / "src" + " " + d_ / "unsynced");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::HashTree(d_ / "unsynced"), testing::HashTree(d_ / "synced"));
  EXPECT_EQ(testing::ListDir(d_.path()), (std::vector<std::string>{"src", "synced", "unsynced"}));
}

TEST_F(ExecutorTest, ExistingDestinationNeedsForceAndForceReplacesIt) {
  fs::create_directories(d_ / "out");
  testing::WriteFileOrDie(d_ / "out/stale.txt", "old");
  auto r = Convert(d_ / "src", d_ / "out", ConvertOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--force"), std::string::npos) << r.status().message();
  EXPECT_EQ(testing::ListDir(d_ / "out"), std::vector<std::string>{"stale.txt"});

  auto cli = testing::RunMoepack("convert " + d_ / "src" + " " + d_ / "out");
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_NE(cli.err.find(d_ / "out"), std::string::npos) << cli.err;
  EXPECT_EQ(testing::ListDir(d_ / "out"), std::vector<std::string>{"stale.txt"});

  ConvertOptions force;
  force.force = true;
  testing::ConvertOrDie(d_ / "src", d_ / "out", Direction::kToFused, force);
  EXPECT_FALSE(fs::exists(d_ / "out/stale.txt"));
  EXPECT_TRUE(fs::exists(d_ / "out/config.json"));
  EXPECT_EQ(testing::ReadTensors(d_ / "out").count("model.layers.0.mlp.experts.gate_up_proj"), 1u);
  EXPECT_EQ(testing::ListDir(d_.path()), (std::vector<std::string>{"out", "src"}));

  // --force on the CLI too; a file in the way is replaced as well.
  testing::WriteFileOrDie(d_ / "file", "x");
  auto forced = testing::RunMoepack("convert --force " + d_ / "src" + " " + d_ / "file");
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_TRUE(fs::is_directory(d_ / "file"));
}

TEST_F(ExecutorTest, DestinationMayNotBeOrOverlapTheSource) {
  const std::string before = testing::HashTree(d_ / "src");
  struct Case {
    std::string dst;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {d_ / "src", "source"},
      {d_ / "src/", "source"},
      {d_ / "src/../src", "source"},
      {d_ / "src/fused", "inside"},
      {d_ / "src/extra/fused", "inside"},
      {d_.path(), "contains"},
  };
  for (const auto& c : cases) {
    for (bool force : {false, true}) {
      ConvertOptions o;
      o.force = force;
      auto r = Convert(d_ / "src", c.dst, o);
      ASSERT_FALSE(r.ok()) << c.dst;
      EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << c.dst << ": " << r.status().message();
      auto cli = testing::RunMoepack("convert " + std::string(force ? "--force " : "") + d_ / "src" + " " + c.dst);
      EXPECT_EQ(cli.exit_code, 1) << c.dst;
      EXPECT_EQ(cli.err.rfind("moepack: error: ", 0), 0u) << cli.err;
    }
  }
  EXPECT_EQ(testing::HashTree(d_ / "src"), before);
  EXPECT_FALSE(fs::exists(d_ / "src/fused"));
  // A symlink to SRC is SRC.
  fs::create_symlink(d_ / "src", d_ / "link");
  ConvertOptions force;
  force.force = true;
  auto r = Convert(d_ / "src", d_ / "link", force);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(testing::HashTree(d_ / "src"), before);
}

TEST_F(ExecutorTest, FailureWhileWritingLeavesNoDestination) {
  // Plan, then pull a source shard from under the executor.
  auto ckpt = Checkpoint::Open(d_ / "src");
  ASSERT_TRUE(ckpt.ok());
  auto rules = BuiltinRules("qwen3_moe");
  ASSERT_TRUE(rules.ok());
  auto plan = MakePlan(*ckpt, *rules, PlanOptions{});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_GT(plan->src_files.size(), 1u);
  fs::resize_file(plan->src_files.back(), 100);
  auto r = Execute(*plan, d_ / "out", ExecuteOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_FALSE(fs::exists(d_ / "out"));
  EXPECT_EQ(testing::ListDir(d_.path()), std::vector<std::string>{"src"}) << "a temporary was left";
}

TEST_F(ExecutorTest, TemporaryOfAKilledRunIsRemoved) {
  // A dead owner: pid far beyond pid_max.
  const std::string stale = d_ / ".out.moepack-tmp-2147483646-12345";
  fs::create_directories(stale);
  testing::WriteFileOrDie(stale + "/model.safetensors", "half");
  // A live owner (this process) keeps its temporary.
  const std::string live = d_ / (".out.moepack-tmp-" + std::to_string(::getpid()) + "-1");
  fs::create_directories(live);
  auto r = testing::ConvertOrDie(d_ / "src", d_ / "out", Direction::kToFused);
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(live));
  ASSERT_EQ(r.report.removed_stale.size(), 1u);
  EXPECT_NE(r.report.removed_stale[0].find(".out.moepack-tmp-2147483646"), std::string::npos);
  // The source side ignores temporaries too: a converted tree with one inside still opens.
  fs::remove_all(live);
  EXPECT_EQ(testing::ListDir(d_.path()), (std::vector<std::string>{"out", "src"}));
}

TEST_F(ExecutorTest, ReportCountsTheBytesWritten) {
  auto r = testing::ConvertOrDie(d_ / "src", d_ / "out", Direction::kToFused);
  uint64_t tensor_bytes = 0;
  for (const auto& [_, t] : testing::ReadTensors(d_ / "out")) tensor_bytes += t.data.size();
  EXPECT_EQ(r.report.bytes_written, tensor_bytes);
  EXPECT_EQ(r.plan.total_bytes, tensor_bytes);
  uint64_t src_bytes = 0;
  for (const auto& [_, t] : testing::ReadTensors(d_ / "src")) src_bytes += t.data.size();
  EXPECT_EQ(tensor_bytes, src_bytes);  // fusing moves bytes, it adds none
}

// --align-pages pads each header so that copied bytes keep their offset
// within a 4 KiB page: the same tensors, a checkpoint verify accepts, and
// (to per-expert, where every expert slice is one run of source bytes) most
// bytes at their source's page offset, located here from the source headers
// by the fused layout, not from the plan.
TEST(AlignPages, OutputKeepsTheSourcePageOffsetsAndTheSameTensors) {
  TempDir d;
  auto o = testing::TinyOptions("qwen3_moe", "fused", "bf16");
  o.hidden = 256;
  o.intermediate = 128;  // one expert projection: 64 KiB, whole pages
  o.max_shard_size = 100'000'000;  // one file each side: every slice can keep its page offset
  testing::SynthOrDie(d / "src", o);
  ConvertOptions aligned;
  aligned.align_pages = true;
  testing::ConvertOrDie(d / "src", d / "plain", Direction::kToPerExpert);
  testing::ConvertOrDie(d / "src", d / "aligned", Direction::kToPerExpert, aligned);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d / "plain"), testing::ReadTensors(d / "aligned")), "");
  auto v = Verify(d / "src", d / "aligned", VerifyOptions{});
  ASSERT_TRUE(v.ok()) << v.status().message();
  EXPECT_TRUE(v->ok) << v->problem;

  // Where each expert slice starts in SRC: gate rows then up rows of expert
  // j in gate_up_proj [E, 2I, H], its rows of down_proj [E, H, I].
  const uint64_t H = 256, I = 128, slice = I * H * 2;
  std::map<std::string, uint64_t> source_at;
  for (const std::string& f : testing::ListDir(d / "src")) {
    if (!f.ends_with(".safetensors")) continue;
    for (const auto& t : testing::ParseSafetensors(d / ("src/" + f)).tensors) {
      const size_t at = t.name.find("mlp.experts.");
      if (at == std::string::npos) continue;
      const std::string prefix = t.name.substr(0, at + 12);
      for (uint64_t j = 0; j < t.shape[0]; ++j) {
        const std::string e = prefix + std::to_string(j) + ".";
        if (t.name.ends_with("gate_up_proj")) {
          source_at[e + "gate_proj.weight"] = t.offset + 2 * j * slice;
          source_at[e + "up_proj.weight"] = t.offset + (2 * j + 1) * slice;
        } else if (t.name.ends_with("down_proj")) {
          source_at[e + "down_proj.weight"] = t.offset + j * slice;
        }
      }
    }
  }
  ASSERT_FALSE(source_at.empty());
  auto kept = [&](const std::string& dir) {
    uint64_t same = 0, all = 0;
    for (const std::string& f : testing::ListDir(dir)) {
      if (!f.ends_with(".safetensors")) continue;
      const auto parsed = testing::ParseSafetensors(dir + "/" + f);
      // Padding is spaces and keeps the data section 8-byte aligned.
      EXPECT_EQ(parsed.header_len % 8, 0u) << f;
      for (const auto& t : parsed.tensors) {
        auto it = source_at.find(t.name);
        if (it == source_at.end()) continue;
        all += t.length;
        same += it->second % 4096 == t.offset % 4096 ? t.length : 0;
      }
    }
    EXPECT_EQ(all, source_at.size() * slice) << dir;
    return static_cast<double>(same) / static_cast<double>(all);
  };
  EXPECT_EQ(kept(d / "aligned"), 1.0);

  // The reverse needs no flag to read the padded headers, and with it
  // gives the same tensors again.
  testing::ConvertOrDie(d / "aligned", d / "back", Direction::kToFused, aligned);
  EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d / "src"), testing::ReadTensors(d / "back")), "");
  // Without the flag the headers are the reference writer's again.
  testing::ConvertOrDie(d / "aligned", d / "back-plain", Direction::kToFused);
  testing::ConvertOrDie(d / "plain", d / "plain-back", Direction::kToFused);
  EXPECT_EQ(testing::HashTree(d / "back-plain"), testing::HashTree(d / "plain-back"));
}

}  // namespace
}  // namespace convert_test
}  // namespace moepack
