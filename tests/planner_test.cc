// The planner (headers only): every fault is refused before a byte is
// written, naming layer and expert, and the CLI leaves nothing behind;
// pass-through; output shards and index; --dry-run.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "moepack/checkpoint.h"
#include "moepack/convert.h"
#include "moepack/plan.h"
#include "testutil.h"

namespace moepack {
namespace planner_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::RawTensor;
using testing::TempDir;

using Mutation = std::function<void(std::vector<RawTensor>&, json&)>;

void Remove(std::vector<RawTensor>& ts, const std::string& name) {
  const size_t before = ts.size();
  ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const RawTensor& t) { return t.name == name; }), ts.end());
  ASSERT_EQ(ts.size() + 1, before) << "no tensor " << name;
}

RawTensor& Find(std::vector<RawTensor>& ts, const std::string& name) {
  for (auto& t : ts) {
    if (t.name == name) return t;
  }
  ADD_FAILURE() << "no tensor " << name;
  static RawTensor none;
  return none;
}

struct Refusal {
  const char* what;
  std::string family;
  std::string dtype;
  Mutation mutate;
  std::vector<std::string> expect;  // substrings of the error
};

std::string E(const std::string& layer, int j, const std::string& leaf) {
  return "model.layers." + layer + ".mlp.experts." + std::to_string(j) + "." + leaf;
}

std::vector<Refusal> Refusals() {
  return {
      {"a missing expert", "qwen3_moe", "",
       [](auto& ts, auto&) {
         for (const char* p : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) Remove(ts, E("2", 5, p));
       },
       {"model.layers.2.", "5", "missing"}},
      {"a duplicate through renames", "mixtral", "",
       [](auto& ts, auto&) {
         RawTensor dup = Find(ts, "model.layers.1.block_sparse_moe.experts.3.w1.weight");
         dup.name = "model.layers.1.mlp.experts.3.w1.weight";
         ts.push_back(dup);
       },
       {"model.layers.1.", "expert 3", "w1", "twice"}},
      {"an expert id >= E", "qwen3_moe", "",
       [](auto& ts, auto&) {
         for (const char* p : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) {
           RawTensor t = Find(ts, E("2", 0, p));
           t.name = E("2", 8, p);
           ts.push_back(t);
         }
       },
       {"model.layers.2.", "expert 8", "out of range", "8 experts"}},
      {"a shape that differs between experts", "qwen3_moe", "",
       [](auto& ts, auto&) { Find(ts, E("1", 6, "up_proj.weight")).shape = {24, 128}; },
       {"model.layers.1.", "expert 6", "[24, 128]"}},
      {"a dtype that differs between experts", "qwen3_moe", "",
       [](auto& ts, auto&) { Find(ts, E("3", 2, "down_proj.weight")).dtype = DType::F16; },
       {"model.layers.3.", "expert 2", "F16"}},
      {"a gate without its up", "qwen3_moe", "", [](auto& ts, auto&) { Remove(ts, E("0", 4, "up_proj.weight")); },
       {"model.layers.0.", "expert 4", "gate_proj", "up_proj"}},
      {"an up without its gate", "mixtral", "",
       [](auto& ts, auto&) { Remove(ts, "model.layers.3.block_sparse_moe.experts.1.w1.weight"); },
       {"model.layers.3.", "expert 1", "w3", "w1"}},
      {"an FP8 expert weight without its scale", "deepseek_v3", "fp8",
       [](auto& ts, auto&) {
         for (const char* p : {"gate_proj.weight_scale_inv", "up_proj.weight_scale_inv"}) Remove(ts, E("2", 7, p));
       },
       {"model.layers.2.", "7", "weight_scale_inv"}},
      {"FP8 weights of a layer without any scale", "deepseek_v3", "fp8",
       [](auto& ts, auto&) {
         for (int j = 0; j < 8; ++j) Remove(ts, E("1", j, "down_proj.weight_scale_inv"));
       },
       {"model.layers.1.", "down_proj", "scale"}},
      {"a scale without its weight", "deepseek_v3", "fp8",
       [](auto& ts, auto&) {
         for (const char* p : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) Remove(ts, E("3", 6, p));
       },
       {"model.layers.3.", "6", "weight"}},
      {"scales of a layer without any weight", "deepseek_v3", "fp8",
       [](auto& ts, auto&) {
         for (int j = 0; j < 8; ++j) Remove(ts, E("2", j, "down_proj.weight"));
       },
       {"model.layers.2.", "down_proj_scale_inv", "no down_proj weights"}},
      {"experts stored transposed ([H, I] gates)", "qwen3_moe", "",
       [](auto& ts, auto&) {
         for (auto& t : ts) {
           if (t.name.find("model.layers.1.mlp.experts.") == 0 && t.shape.size() == 2) std::swap(t.shape[0], t.shape[1]);
         }
       },
       {"model.layers.1.", "expert 0", "gate_proj.weight", "config.json (hidden_size=", "moe_intermediate_size=",
        "[I, H] = ["}},
      {"a config whose expert width disagrees with the weights", "mixtral", "",
       [](auto&, json& c) { c["intermediate_size"] = c["intermediate_size"].get<int>() + 1; },
       {"model.layers.0.", "w1.weight", "intermediate_size=", "per expert"}},
      {"an expert tensor no fusion takes (a bias)", "qwen3_moe", "",
       [](auto& ts, auto&) {
         RawTensor b = Find(ts, E("2", 3, "gate_proj.weight"));
         b.name = E("2", 3, "gate_proj.bias");
         b.shape = {b.shape[0]};
         b.data.resize(b.shape[0] * 2);
         ts.push_back(b);
       },
       {"model.layers.2.mlp.experts: 'model.layers.2.mlp.experts.3.gate_proj.bias' belongs to expert 3",
        "no fusion of the qwen3_moe rules takes it"}},
      {"an expert tensor no fusion takes, under renames", "mixtral", "",
       [](auto& ts, auto&) {
         RawTensor b = Find(ts, "model.layers.1.block_sparse_moe.experts.6.w2.weight");
         b.name = "model.layers.1.block_sparse_moe.experts.6.w2.input_scale";
         b.shape = {};
         b.data.resize(2);
         ts.push_back(b);
       },
       {"'model.layers.1.block_sparse_moe.experts.6.w2.input_scale' belongs to expert 6", "mixtral"}},
      {"FP8 block scales whose grid does not fit the weights", "deepseek_v3", "fp8",
       [](auto& ts, auto&) {
         for (int j = 0; j < 8; ++j) {
           for (const char* p : {"gate_proj.weight_scale_inv", "up_proj.weight_scale_inv"}) {
             RawTensor& t = Find(ts, E("2", j, p));
             t.shape[0] += 1;
             t.data.resize(t.data.size() / (t.shape[0] - 1) * t.shape[0]);
           }
         }
       },
       {"model.layers.2.mlp.experts: expert 0 gate_proj.weight_scale_inv",
        "quantization_config.weight_block_size.0=128", "gives [I/BR, H/BC] = [1, 1] per expert"}},
      {"omni talker experts stored transposed (its own H and I)", "qwen3_omni_moe", "",
       [](auto& ts, auto&) {
         for (auto& t : ts) {
           if (t.name.find("talker.model.layers.1.mlp.experts.") == 0 && t.shape.size() == 2) {
             std::swap(t.shape[0], t.shape[1]);
           }
         }
       },
       {"talker.model.layers.1.mlp.experts: expert 0", "config.json (talker_config.text_config.hidden_size=",
        "talker_config.text_config.moe_intermediate_size="}},
      {"an unknown model type", "qwen3_moe", "",
       [](auto&, json& c) {
         c["model_type"] = "foo_moe";
         c["architectures"] = json::array({"FooMoeForCausalLM"});
       },
       {"foo_moe", "known:", "qwen3_moe", "mixtral", "deepseek_v3", "--rules"}},
      {"a config without an expert count", "qwen3_moe", "", [](auto&, json& c) { c.erase("num_experts"); },
       {"config.json", "num_experts", "model.layers.0."}},
      {"an omni talker without its expert count", "qwen3_omni_moe", "",
       [](auto&, json& c) { c["talker_config"]["text_config"].erase("num_experts"); },
       {"config.json", "talker_config.text_config.num_experts", "talker.model.layers.0."}},
  };
}

// The checkpoint a refusal case starts from, one per family and dtype.
std::string Base(const TempDir& bases, const std::string& family, const std::string& dtype) {
  const std::string dir = bases / (family + "-" + (dtype.empty() ? "bf16" : dtype));
  if (!fs::exists(dir)) testing::SynthOrDie(dir, testing::TinyOptions(family, "per-expert", dtype));
  return dir;
}

TEST(PlannerRefuses, EachFaultNamingLayerAndExpert_LibraryAndCli) {
  TempDir bases;
  for (const Refusal& c : Refusals()) {
    SCOPED_TRACE(c.what);
    TempDir d;
    testing::RewriteCheckpoint(Base(bases, c.family, c.dtype), d / "src", c.mutate, 3, 11);
    const std::string before = testing::HashTree(d / "src");

    // Library: the plan is refused.
    auto ckpt = Checkpoint::Open(d / "src");
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
    std::string msg;
    auto rules = ChooseRules(*ckpt, "", "");
    if (!rules.ok()) {
      msg = rules.status().message();
    } else {
      auto plan = MakePlan(*ckpt, *rules, PlanOptions{});
      ASSERT_FALSE(plan.ok()) << "planned";
      msg = plan.status().message();
    }
    for (const auto& e : c.expect) EXPECT_NE(msg.find(e), std::string::npos) << "'" << e << "' not in: " << msg;

    // CLI: exit 1, one error line naming the fault, nothing written.
    auto r = testing::RunMoepack("convert " + d / "src" + " " + d / "out");
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(r.err.rfind("moepack: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    for (const auto& e : c.expect) EXPECT_NE(r.err.find(e), std::string::npos) << "'" << e << "' not in: " << r.err;
    EXPECT_EQ(testing::ListDir(d.path()), std::vector<std::string>{"src"}) << "DST or a temporary was left";
    // --dry-run refuses the same way.
    auto dry = testing::RunMoepack("convert --dry-run " + d / "src" + " " + d / "out");
    EXPECT_EQ(dry.exit_code, 1);
    EXPECT_EQ(dry.err, r.err);
    EXPECT_EQ(testing::HashTree(d / "src"), before);
  }
}

TEST(PlannerRefuses, AnIndexNamingAMissingShard) {
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions("qwen3_moe", "per-expert"));
  std::string gone;
  for (const auto& f : testing::ListDir(d / "src")) {
    if (f.rfind("model-00002-of-", 0) == 0) gone = f;
  }
  ASSERT_FALSE(gone.empty()) << "synth made a single shard";
  fs::remove(d / ("src/" + gone));
  auto r = testing::RunMoepack("convert " + d / "src" + " " + d / "out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("moepack: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find(gone), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.safetensors.index.json"), std::string::npos) << r.err;
  EXPECT_EQ(testing::ListDir(d.path()), std::vector<std::string>{"src"});
}

TEST(PlannerRefuses, NoConfigJsonWithoutModelType) {
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions("qwen3_moe", "per-expert"));
  fs::remove(d / "src/config.json");
  auto r = testing::RunMoepack("convert " + d / "src" + " " + d / "out");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("config.json"), std::string::npos) << r.err;
  // With --model-type the rules are known but E is still missing.
  auto r2 = testing::RunMoepack("convert --model-type qwen3_moe " + d / "src" + " " + d / "out");
  EXPECT_EQ(r2.exit_code, 1);
  EXPECT_NE(r2.err.find("config.json"), std::string::npos) << r2.err;
  EXPECT_EQ(testing::ListDir(d.path()), std::vector<std::string>{"src"});
}

// ---- pass-through -----------------------------------------------------------

bool IsRoutedExpert(const std::string& name) {
  auto p = name.find(".experts.");
  return p != std::string::npos && p + 9 < name.size() && std::isdigit(static_cast<unsigned char>(name[p + 9]));
}

TEST(PlannerPassThrough, UntouchedTensorsKeepNameDtypeShapeAndBytes) {
  TempDir d;
  // qwen2_moe has shared experts (not fused), biases, norms; fp8 adds
  // dense weight_scale_inv tensors that must not be taken for expert scales.
  for (const char* dtype : {"bf16", "fp8"}) {
    const std::string src = d / (std::string("src-") + dtype), out = d / (std::string("out-") + dtype);
    testing::SynthOrDie(src, testing::TinyOptions("qwen2_moe", "per-expert", dtype));
    testing::ConvertOrDie(src, out, Direction::kToFused);
    const auto a = testing::ReadTensors(src), b = testing::ReadTensors(out);
    size_t untouched = 0;
    for (const auto& [name, t] : a) {
      if (IsRoutedExpert(name)) {
        EXPECT_FALSE(b.count(name)) << name << " should have been fused";
        continue;
      }
      ++untouched;
      auto it = b.find(name);
      ASSERT_NE(it, b.end()) << name;
      EXPECT_EQ(it->second.dtype, t.dtype) << name;
      EXPECT_EQ(it->second.shape, t.shape) << name;
      EXPECT_TRUE(it->second.data == t.data) << name;
    }
    // Everything else is the 4 layers x (gate_up, down) fused tensors, and
    // their two scale tensors in fp8.
    EXPECT_EQ(b.size(), untouched + 4 * (dtype == std::string("fp8") ? 4 : 2)) << dtype;
    EXPECT_GT(untouched, 40u);
    for (const auto& [name, _] : b) {
      EXPECT_TRUE(a.count(name) || name.find(".mlp.experts.") != std::string::npos) << name;
    }
  }
}

TEST(PlannerPassThrough, AlreadyInTheTargetLayoutIsACopy) {
  TempDir d;
  testing::SynthOrDie(d / "pe", testing::TinyOptions("qwen3_moe", "per-expert", "f16"));
  testing::SynthOrDie(d / "fu", testing::TinyOptions("qwen3_moe", "fused", "f16"));
  // fused -> fused and per-expert -> per-expert change nothing.
  for (auto [src, dir] : {std::pair{std::string("fu"), Direction::kToFused}, {std::string("pe"), Direction::kToPerExpert}}) {
    auto r = testing::ConvertOrDie(d / src, d / (src + "-again"), dir);
    for (const auto& t : r.plan.tensors) EXPECT_EQ(t.op, TensorOp::kCopy) << src << ": " << t.name;
    EXPECT_EQ(testing::DiffTensors(testing::ReadTensors(d / src), testing::ReadTensors(d / (src + "-again"))), "")
        << src;
  }
}

// A fused checkpoint whose experts are stored [E, H, 2I] / [E, I, H] (as the
// Hub stores Qwen3-VL) under a family whose v5 layout is [E, 2I, H]: copying it
// as fused, or cutting it along dim 1, would be silently wrong.
TEST(PlannerRefuses, AFusedTensorInAnotherLayoutThanConfigGives) {
  TempDir d;
  testing::SynthOrDie(d / "fu", testing::TinyOptions("qwen3_moe", "fused"));
  testing::RewriteCheckpoint(d / "fu", d / "src", [](auto& ts, auto&) {
    for (auto& t : ts) {
      if (t.name.find(".mlp.experts.") != std::string::npos) std::swap(t.shape[1], t.shape[2]);
    }
  });
  const std::string before = testing::HashTree(d / "src");
  auto ckpt = Checkpoint::Open(d / "src");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
  auto rules = ChooseRules(*ckpt, "", "");
  ASSERT_TRUE(rules.ok()) << rules.status().message();
  for (Direction dir : {Direction::kToFused, Direction::kToPerExpert}) {
    PlanOptions opt;
    opt.direction = dir;
    auto plan = MakePlan(*ckpt, *rules, opt);
    ASSERT_FALSE(plan.ok()) << "planned " << (dir == Direction::kToFused ? "to fused" : "to per-expert");
    const std::string msg(plan.status().message());
    for (const char* e : {"mlp.experts.", "config.json (E=8, hidden_size=", "the fused layout ["}) {
      EXPECT_NE(msg.find(e), std::string::npos) << "'" << e << "' not in: " << msg;
    }
    const bool down = msg.find("down_proj") < msg.find(" has shape");
    EXPECT_NE(msg.find(down ? "[E, H, I]" : "[E, 2*I, H]"), std::string::npos) << msg;
  }
  auto r = testing::RunMoepack("convert --to per-expert " + d / "src" + " " + d / "out");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("is not converted"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d / "out"));
  EXPECT_EQ(testing::HashTree(d / "src"), before);
}

// The check is as good as config.json: without a block size (per-tensor FP8,
// or a config that omits it) the scale grids are only checked against each
// other, never refused for a block size moepack guessed.
TEST(PlannerShapes, ScaleGridsAreCheckedOnlyWhenConfigGivesTheBlockSize) {
  TempDir d;
  testing::SynthOrDie(d / "pe", testing::TinyOptions("deepseek_v3", "per-expert", "fp8"));
  auto grow = [](auto& ts) {
    for (auto& t : ts) {
      if (t.name.find("down_proj.weight_scale_inv") == std::string::npos) continue;
      t.shape[1] += 1;
      t.data.resize(t.data.size() / (t.shape[1] - 1) * t.shape[1]);
    }
  };
  testing::RewriteCheckpoint(d / "pe", d / "with", [&](auto& ts, json&) { grow(ts); });
  testing::RewriteCheckpoint(d / "pe", d / "without", [&](auto& ts, json& c) {
    grow(ts);
    c["quantization_config"].erase("weight_block_size");
  });
  for (const char* dir : {"with", "without"}) {
    auto ckpt = Checkpoint::Open(d / dir);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
    auto rules = ChooseRules(*ckpt, "", "");
    ASSERT_TRUE(rules.ok()) << rules.status().message();
    auto plan = MakePlan(*ckpt, *rules, PlanOptions{});
    if (std::string(dir) == "with") {
      ASSERT_FALSE(plan.ok());
      EXPECT_NE(plan.status().message().find("gives [H/BR, I/BC] = [1, 1] per expert"), std::string::npos)
          << plan.status().message();
    } else {
      ASSERT_TRUE(plan.ok()) << plan.status().message();
    }
  }
}

// ---- output shards and index --------------------------------------------------

TEST(PlannerShards, GreedyInNaturalOrderUpToTheLimit) {
  TempDir d;
  auto o = testing::TinyOptions("qwen3_moe", "per-expert");
  o.layers = 12;  // layers 10 and 11 must come after 9, not after 1
  testing::SynthOrDie(d / "src", o);
  ConvertOptions co;
  co.max_shard_size = 100'000;
  auto r = testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused, co);
  const size_t n = r.plan.shards.size();
  ASSERT_GE(n, 3u);
  auto files = testing::ListDir(d / "out");
  std::vector<std::string> shard_files;
  for (const auto& f : files) {
    if (f.size() > 12 && f.substr(f.size() - 12) == ".safetensors") shard_files.push_back(f);
  }
  ASSERT_EQ(shard_files.size(), n);
  std::vector<std::string> order;  // names, shard by shard
  std::vector<uint64_t> shard_bytes;
  for (size_t k = 0; k < n; ++k) {
    char want[64];
    std::snprintf(want, sizeof want, "model-%05zu-of-%05zu.safetensors", k + 1, n);
    ASSERT_EQ(shard_files[k], want);
    testing::ParsedFile pf = testing::ParseSafetensors(d / ("out/" + shard_files[k]));
    const json want_meta = {{"format", "pt"}};
    EXPECT_EQ(pf.metadata, want_meta) << shard_files[k];
    std::vector<testing::HeaderEntry> ts = pf.tensors;
    std::sort(ts.begin(), ts.end(), [](const auto& a, const auto& b) { return testing::NaturalBefore(a.name, b.name); });
    uint64_t bytes = 0;
    for (const auto& t : ts) bytes += t.length;
    if (ts.size() > 1) {
      EXPECT_LE(bytes, co.max_shard_size) << shard_files[k];
    }
    if (k > 0) {
      // Greedy: the first tensor of this shard did not fit in the previous one.
      EXPECT_GT(shard_bytes.back() + ts.front().length, co.max_shard_size) << shard_files[k];
    }
    shard_bytes.push_back(bytes);
    for (const auto& t : ts) order.push_back(t.name);
  }
  EXPECT_TRUE(std::is_sorted(order.begin(), order.end(), testing::NaturalBefore)) << "shards are not in natural order";
  auto pos = [&](const std::string& name) { return std::find(order.begin(), order.end(), name) - order.begin(); };
  EXPECT_LT(pos("model.layers.9.mlp.experts.gate_up_proj"), pos("model.layers.10.mlp.experts.gate_up_proj"));
  EXPECT_LT(pos("model.layers.2.mlp.gate.weight"), pos("model.layers.10.mlp.gate.weight"));

  // The index: what the Hub writes (json.dumps(indent=2, sort_keys=True) + "\n"),
  // readable by Python, total_size and weight_map true to the shards.
  const std::string index = d / "out/model.safetensors.index.json";
  ASSERT_TRUE(fs::exists(index));
  const std::string text = testing::ReadFileOrDie(index);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  json j = json::parse(text);
  uint64_t total = 0;
  for (const auto& [_, t] : testing::ReadTensors(d / "out")) total += t.data.size();
  EXPECT_EQ(j["metadata"]["total_size"].get<uint64_t>(), total);
  const auto weight_map = j["weight_map"].get<std::map<std::string, std::string>>();
  EXPECT_EQ(weight_map, testing::TensorFiles(d / "out"));
  const std::string py = "python3 -c 'import json,sys; t=open(sys.argv[1]).read(); d=json.loads(t); "
                         "assert t == json.dumps(d, indent=2, sort_keys=True) + \"\\n\", \"format\"; "
                         "assert set(d) == {\"metadata\", \"weight_map\"}' " +
                         index;
  EXPECT_EQ(std::system(py.c_str()), 0) << "python's json.load / json.dumps disagree with " << index;
}

TEST(PlannerShards, OneShardIsASingleModelSafetensors) {
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions("mixtral", "per-expert"));
  auto r = testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused);
  ASSERT_EQ(r.plan.shards.size(), 1u);
  EXPECT_TRUE(r.plan.index_json.empty());
  EXPECT_EQ(testing::ListDir(d / "out"), (std::vector<std::string>{"config.json", "generation_config.json",
                                                                 "model.safetensors", "tokenizer_config.json"}));
  const json meta = testing::ParseSafetensors(d / "out/model.safetensors").metadata;
  EXPECT_EQ(meta, json({{"format", "pt"}}));
}

TEST(PlannerShards, OversizedTensorGetsAShardOfItsOwn) {
  TempDir d;
  std::vector<RawTensor> ts = {
      {"a", DType::U8, {100}, testing::PatternBytes(100, 1)},
      {"b", DType::U8, {5000}, testing::PatternBytes(5000, 2)},
      {"c", DType::U8, {100}, testing::PatternBytes(100, 3)},
      {"d", DType::U8, {100}, testing::PatternBytes(100, 4)},
  };
  testing::WriteCheckpoint(d / "src", ts, {{"model_type", "qwen3_moe"}, {"num_experts", 1}}, 2);
  ConvertOptions co;
  co.max_shard_size = 1000;
  auto r = testing::ConvertOrDie(d / "src", d / "out", Direction::kToFused, co);
  auto files = testing::TensorFiles(d / "out");
  EXPECT_EQ(files["a"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(files["b"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(files["c"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(files["d"], "model-00003-of-00003.safetensors");
}

TEST(PlannerDryRun, PrintsTheSummaryAndWritesNothing) {
  TempDir d;
  testing::SynthOrDie(d / "src", testing::TinyOptions("qwen3_moe", "per-expert"));
  const std::string before = testing::HashTree(d.path());
  auto text = testing::RunMoepack("convert --dry-run " + d / "src" + " " + d / "out");
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("qwen3_moe"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("fuse=8"), std::string::npos) << text.out;  // 4 layers x 2 fusions
  EXPECT_EQ(testing::HashTree(d.path()), before);
  EXPECT_FALSE(fs::exists(d / "out"));

  auto js = testing::RunMoepack("convert --dry-run --json --max-shard-size 100KB " + d / "src" + " " + d / "out");
  ASSERT_EQ(js.exit_code, 0) << js.err;
  json j = json::parse(js.out);
  EXPECT_EQ(j["family"], "qwen3_moe");
  EXPECT_EQ(j["to"], "fused");
  // 4 layers: 2 fused + router + 2 norms + 6 attention tensors (q,k,v,o + q_norm, k_norm),
  // plus embed, norm, lm_head.
  EXPECT_EQ(j["num_tensors"].get<int>(), 4 * (2 + 1 + 2 + 6) + 3);
  EXPECT_EQ(j["ops"]["fuse"].get<int>(), 8);
  EXPECT_TRUE(j["index"].get<bool>());
  EXPECT_GT(j["shards"].size(), 1u);
  EXPECT_EQ(j["tensors"].size(), j["num_tensors"].get<size_t>());
  EXPECT_EQ(testing::HashTree(d.path()), before);
  EXPECT_FALSE(fs::exists(d / "out"));

  // No DST at all is fine for a dry run, required otherwise.
  EXPECT_EQ(testing::RunMoepack("convert --dry-run " + d / "src").exit_code, 0);
  auto usage = testing::RunMoepack("convert " + d / "src");
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(usage.err.rfind("moepack: error: ", 0), 0u) << usage.err;
}

TEST(PlannerShards, MaxShardSizeIsInDecimalUnits) {
  TempDir d;
  // Four 512-byte tensors: 1KB (1000) holds one per shard, 1KiB (1024) two,
  // 2KB (2000) three.
  std::vector<RawTensor> ts;
  for (int i = 0; i < 4; ++i) ts.push_back({"t" + std::to_string(i), DType::U8, {512}, testing::PatternBytes(512, i)});
  testing::WriteCheckpoint(d / "src", ts, {{"model_type", "qwen3_moe"}, {"num_experts", 1}}, 1);
  auto shards = [&](const std::string& size) {
    auto r = testing::RunMoepack("convert --dry-run --json --max-shard-size " + size + " " + d / "src");
    EXPECT_EQ(r.exit_code, 0) << size << ": " << r.err;
    std::vector<int> counts;
    const json j = json::parse(r.out);
    for (const auto& s : j["shards"]) counts.push_back(s["tensors"].get<int>());
    return counts;
  };
  EXPECT_EQ(shards("1KB"), (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(shards("1000"), (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(shards("1KiB"), (std::vector<int>{2, 2}));
  EXPECT_EQ(shards("2KB"), (std::vector<int>{3, 1}));
  EXPECT_EQ(shards("5GB"), (std::vector<int>{4}));
  auto bad = testing::RunMoepack("convert --dry-run --max-shard-size 5XB " + d / "src");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--max-shard-size"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace planner_test
}  // namespace moepack
