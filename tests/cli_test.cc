// The CLI end to end: inspect on every family and layout, malformed input,
// a user's rule file through convert/verify, exit codes and error lines.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "family_names.h"
#include "moepack/rules.h"
#include "testutil.h"

namespace moepack {
namespace cli_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::RawTensor;
using testing::TempDir;


// MoE layers of the tiny preset (4 layers, 8 experts): families with dense
// first layers or hybrid layouts say which in config.json (family_names.h
// reads them); qwen3_omni_moe adds its talker's (half as many) layers.
uint64_t MoeLayers(const std::string& family, const json& cfg) {
  if (family == "qwen3_omni_moe") {
    return cfg["thinker_config"]["text_config"]["num_hidden_layers"].get<uint64_t>() +
           cfg["talker_config"]["text_config"]["num_hidden_layers"].get<uint64_t>();
  }
  const json& text = cfg.contains("text_config") ? cfg["text_config"] : cfg;
  EXPECT_EQ(testing::NumLayers(text), 4) << family;
  return testing::MoeLayerIndices(text).size();
}

struct InspectCase {
  std::string family;
  std::string layout;     // what synth writes
  std::string dtype;      // "" = the preset's
  std::string inspected;  // the layout inspect names
  std::string model_type = family;
};

void PrintTo(const InspectCase& c, std::ostream* os) { *os << c.model_type << "/" << c.layout; }

class InspectEvery : public ::testing::TestWithParam<InspectCase> {};

TEST_P(InspectEvery, JsonDescribesTheCheckpoint) {
  const InspectCase& c = GetParam();
  TempDir d;
  auto report = testing::SynthOrDie(d / "m", testing::TinyOptions(c.model_type, c.layout, c.dtype));
  auto r = testing::RunMoepack("inspect --json " + d / "m");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  const json cfg = testing::ReadJson(d / "m/config.json");
  EXPECT_EQ(j["model_type"], c.model_type);
  EXPECT_EQ(j["family"], c.family);
  EXPECT_EQ(j["layout"], c.inspected);
  EXPECT_EQ(j["num_tensors"].get<int>(), report.num_tensors);
  EXPECT_EQ(j["total_bytes"].get<uint64_t>(), report.total_bytes);
  EXPECT_EQ(j["moe_layers"].get<uint64_t>(), MoeLayers(c.family, cfg));
  EXPECT_EQ(j["num_experts"].get<uint64_t>(), 8u);

  // Every tensor as the test's own header parser sees it.
  std::map<std::string, testing::HeaderEntry> want;
  std::map<std::string, std::string> file_of;
  for (const auto& f : testing::ListDir(d / "m")) {
    if (f.size() < 12 || f.substr(f.size() - 12) != ".safetensors") continue;
    for (const auto& t : testing::ParseSafetensors(d / ("m/" + f)).tensors) {
      want[t.name] = t;
      file_of[t.name] = f;
    }
  }
  ASSERT_EQ(j["tensors"].size(), want.size());
  uint64_t total = 0;
  for (const json& t : j["tensors"]) {
    const std::string name = t["name"];
    ASSERT_TRUE(want.count(name)) << name;
    const auto& w = want[name];
    EXPECT_EQ(t["dtype"], w.dtype) << name;
    EXPECT_EQ(t["shape"].get<std::vector<uint64_t>>(), w.shape) << name;
    EXPECT_EQ(t["file"], file_of[name]) << name;
    EXPECT_EQ(t["offset"].get<uint64_t>(), w.offset) << name;
    EXPECT_EQ(t["length"].get<uint64_t>(), w.length) << name;
    total += w.length;
  }
  EXPECT_EQ(total, report.total_bytes);

  // The text form says the same in a line each.
  auto text = testing::RunMoepack("inspect " + d / "m");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("layout:      " + c.inspected), std::string::npos) << text.out;
}

// Families whose v5 layout is fused in a form of their own, by the name
// inspect gives it (family_names.h).
bool OwnFusedForm(const std::string& family) { return testing::NamesOf(family).v5_layout != "fused"; }

std::vector<InspectCase> InspectCases(bool own_fused_form) {
  std::vector<InspectCase> v;
  // Every built-in family, so that a new rule file cannot go untested.
  for (const auto& f : BuiltinFamilies()) {
    const testing::FamilyNames& n = testing::NamesOf(f);
    if (own_fused_form != OwnFusedForm(f)) {
      if (own_fused_form) continue;
      v.push_back({f, "per-expert", "", "per-expert"});  // the other list has the fused one
      continue;
    }
    if (!own_fused_form) v.push_back({f, "per-expert", "", "per-expert"});
    v.push_back({f, "fused", n.has_dtype("fp8") ? "fp8" : "", n.v5_layout});
  }
  if (own_fused_form) return v;
  v.push_back({"qwen3_vl_moe", "fused-transposed", "", "fused-transposed"});  // fused-transposed on the Hub, fused in v5
  // granitemoe's Hub: v5's layout under names of its own; and the model
  // types that select granitemoe.
  v.push_back({"granitemoe", "fused-hub-names", "", "fused"});
  for (const char* t : {"granitemoeshared", "granitemoehybrid"}) {
    for (const char* l : {"per-expert", "fused", "fused-hub-names"}) {
      v.push_back({"granitemoe", l, "", std::string(l) == "per-expert" ? "per-expert" : "fused", t});
    }
  }
  return v;
}

std::string InspectCaseName(const ::testing::TestParamInfo<InspectCase>& info) {
  std::string n = info.param.model_type + "_" + info.param.layout;
  for (char& ch : n) {
    if (ch == '-') ch = '_';
  }
  return n;
}

INSTANTIATE_TEST_SUITE_P(All, InspectEvery, ::testing::ValuesIn(InspectCases(false)), InspectCaseName);
// gpt_oss and llama4 fused: their own fused forms, down_proj included.
INSTANTIATE_TEST_SUITE_P(OwnForms, InspectEvery,
                         ::testing::ValuesIn(InspectCases(true)), InspectCaseName);

TEST(InspectMalformed, OneErrorLineNamingTheFile) {
  TempDir d;
  testing::SynthOrDie(d / "m", testing::TinyOptions("qwen3_moe", "per-expert"));
  std::string shard;
  for (const auto& f : testing::ListDir(d / "m")) {
    if (f.rfind("model-00003-of-", 0) == 0) shard = f;
  }
  ASSERT_FALSE(shard.empty());
  struct Case {
    std::string what;
    std::function<void(const std::string& dir)> damage;
    std::string names;
  };
  const std::vector<Case> cases = {
      {"truncated shard", [&](const std::string& dir) { fs::resize_file(dir + "/" + shard, fs::file_size(dir + "/" + shard) - 1); },
       shard},
      {"header length beyond the file",
       [&](const std::string& dir) {
         std::fstream io(dir + "/" + shard, std::ios::in | std::ios::out | std::ios::binary);
         const char huge[8] = {'\xff', '\xff', '\xff', '\x0f', 0, 0, 0, 0};
         io.write(huge, 8);
       },
       shard},
      {"header that is not JSON",
       [&](const std::string& dir) {
         std::fstream io(dir + "/" + shard, std::ios::in | std::ios::out | std::ios::binary);
         io.seekp(8);
         io.write("#", 1);
       },
       shard},
      {"index that is not JSON",
       [&](const std::string& dir) { testing::WriteFileOrDie(dir + "/model.safetensors.index.json", "{\"weight_map\": "); },
       "model.safetensors.index.json"},
      {"index naming a missing shard", [&](const std::string& dir) { fs::remove(dir + "/" + shard); }, shard},
      {"config that is not JSON", [&](const std::string& dir) { testing::WriteFileOrDie(dir + "/config.json", "{"); },
       "config.json"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string dir = d / ("bad-" + std::to_string(&c - cases.data()));
    fs::copy(d / "m", dir);
    c.damage(dir);
    for (const char* json_flag : {"", "--json "}) {
      auto r = testing::RunMoepack(std::string("inspect ") + json_flag + dir);
      EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
      EXPECT_EQ(r.err.rfind("moepack: error: ", 0), 0u) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_NE(r.err.find(c.names), std::string::npos) << r.err;
      EXPECT_TRUE(r.out.empty()) << r.out;
    }
  }
  auto missing = testing::RunMoepack("inspect " + d / "nothing-here");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("nothing-here"), std::string::npos) << missing.err;
  auto usage = testing::RunMoepack("inspect");
  EXPECT_EQ(usage.exit_code, 2);
  EXPECT_EQ(usage.err.rfind("moepack: error: ", 0), 0u) << usage.err;
}

TEST(InspectLone, OneSafetensorsFileAndADenseCheckpoint) {
  TempDir d;
  std::vector<RawTensor> ts = {{"model.embed_tokens.weight", DType::F32, {4, 2}, testing::PatternBytes(32, 1)},
                               {"model.layers.0.mlp.up_proj.weight", DType::BF16, {3, 2}, testing::PatternBytes(12, 2)}};
  testing::WriteCheckpoint(d / "dense", ts, nullptr, 1);
  auto r = testing::RunMoepack("inspect --json " + d / "dense/model.safetensors");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["layout"], "dense");
  EXPECT_EQ(j["num_tensors"], 2);
  EXPECT_EQ(j["total_bytes"], 44);
  EXPECT_EQ(j["moe_layers"], 0);
  EXPECT_EQ(j["num_experts"], 0);
  EXPECT_EQ(j["model_type"], "");
}

// ---- a user's rule file, end to end through the binary ----------------------

TEST(CliRules, UserFamilyConvertsVerifiesAndComesBack) {
  TempDir d;
  testing::WriteFileOrDie(d / "my.json", testing::kUserRules);
  const uint64_t E = 11, H = 8, I = 4;  // 11 experts: 10 sorts after 9
  std::vector<RawTensor> ts;
  uint64_t seed = 1;
  for (int L = 0; L < 2; ++L) {
    for (uint64_t j = 0; j < E; ++j) {
      const std::string p = "model.layers." + std::to_string(L) + ".ffn.experts." + std::to_string(j) + ".";
      ts.push_back({p + "wi.weight", DType::F16, {2 * I, H}, testing::PatternBytes(2 * I * H * 2, seed++)});
      ts.push_back({p + "wo.weight", DType::F16, {H, I}, testing::PatternBytes(H * I * 2, seed++)});
    }
    ts.push_back({"model.layers." + std::to_string(L) + ".ffn.router.weight", DType::F32, {E, H},
                  testing::PatternBytes(E * H * 4, seed++)});
  }
  testing::WriteCheckpoint(d / "src", ts, {{"model_type", "my_moe"}, {"num_experts", E}}, 4);

  auto unknown = testing::RunMoepack("convert " + d / "src" + " " + d / "fused");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("my_moe"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("--rules"), std::string::npos) << unknown.err;

  const std::string rules = " --rules " + d / "my.json" + " ";
  auto fwd = testing::RunMoepack("convert" + rules + d / "src" + " " + d / "fused");
  ASSERT_EQ(fwd.exit_code, 0) << fwd.err;
  const auto a = testing::ReadTensors(d / "src"), b = testing::ReadTensors(d / "fused");
  EXPECT_EQ(b.size(), 2u * 3);
  const auto& gu = b.at("model.layers.1.mlp.experts.gate_up_proj");
  EXPECT_EQ(gu.shape, (std::vector<uint64_t>{E, 2 * I, H}));
  const uint64_t slice = 2 * I * H * 2;
  EXPECT_TRUE(gu.data.substr(10 * slice, slice) == a.at("model.layers.1.ffn.experts.10.wi.weight").data);
  EXPECT_TRUE(gu.data.substr(9 * slice, slice) == a.at("model.layers.1.ffn.experts.9.wi.weight").data);
  EXPECT_TRUE(b.at("model.layers.0.mlp.router.weight").data == a.at("model.layers.0.ffn.router.weight").data);

  auto ok = testing::RunMoepack("verify" + rules + d / "src" + " " + d / "fused");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  auto back = testing::RunMoepack("convert --to per-expert" + rules + d / "fused" + " " + d / "back");
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(testing::DiffTensors(a, testing::ReadTensors(d / "back")), "");

  // A broken rule file is refused naming the rule, and nothing is written.
  json broken = json::parse(testing::kUserRules);
  broken["fusions"][1]["sources"][0] = "{prefix}mlp.experts.wo.weight";
  testing::WriteFileOrDie(d / "broken.json", broken.dump());
  auto bad = testing::RunMoepack("convert --rules " + d / "broken.json" + " " + d / "src" + " " + d / "x");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("broken.json"), std::string::npos) << bad.err;
  EXPECT_NE(bad.err.find("fusions[1] (\"down_proj\")"), std::string::npos) << bad.err;
  EXPECT_FALSE(fs::exists(d / "x"));
}

TEST(CliUsage, BadFlagsAreUsageErrors) {
  TempDir d;
  testing::SynthOrDie(d / "m", testing::TinyOptions("qwen3_moe", "per-expert"));
  for (const std::string& args : {std::string("convert --to sideways ") + d / "m" + " " + d / "o",
                                  std::string("convert --source-layout hub ") + d / "m" + " " + d / "o",
                                  std::string("convert --threads -1 ") + d / "m" + " " + d / "o",
                                  std::string("convert --no-such-flag ") + d / "m" + " " + d / "o", std::string("frobnicate")}) {
    auto r = testing::RunMoepack(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.err;
    EXPECT_EQ(r.err.rfind("moepack: error: ", 0), 0u) << args << ": " << r.err;
  }
  EXPECT_FALSE(fs::exists(d / "o"));
  auto unknown_type = testing::RunMoepack("convert --model-type llama " + d / "m" + " " + d / "o");
  EXPECT_EQ(unknown_type.exit_code, 1);
  EXPECT_NE(unknown_type.err.find("llama"), std::string::npos) << unknown_type.err;
  EXPECT_NE(unknown_type.err.find("qwen3_moe"), std::string::npos) << unknown_type.err;
  EXPECT_FALSE(fs::exists(d / "o"));
  // --model-type picks a family over config.json's: qwen2_moe rules read the same names.
  auto other = testing::RunMoepack("convert --model-type qwen2_moe " + d / "m" + " " + d / "o");
  EXPECT_EQ(other.exit_code, 0) << other.err;
  EXPECT_NE(other.out.find("qwen2_moe"), std::string::npos) << other.out;
}

}  // namespace
}  // namespace cli_test
}  // namespace moepack
