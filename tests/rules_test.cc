// Rule files: validation errors name the rule by its JSON path; name
// templates; every op's inverse round-trips exactly (checked against a
// reference computed element by element here, not by the planner).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "ckpt_util.h"
#include "family_names.h"
#include "moepack/convert.h"
#include "moepack/rules.h"
#include "testutil.h"

namespace moepack {
namespace rules_test {
namespace {

using nlohmann::json;
using testing::RawTensor;
using testing::TempDir;

// A small valid rule file; cases below break one thing each.
json BaseRules() {
  return json::parse(R"({
    "family": "custom",
    "model_types": ["custom"],
    "num_experts": ["num_experts"],
    "dims": {"H": ["hidden_size"], "I": ["moe_intermediate_size"]},
    "renames": [
      {"name": "ffn is mlp", "pattern": "\\.ffn\\.", "replacement": ".mlp.",
       "reverse_pattern": "\\.mlp\\.", "reverse_replacement": ".ffn."}
    ],
    "fusions": [
      {"name": "down_proj", "target": "{prefix}mlp.experts.down_proj",
       "sources": ["{prefix}mlp.experts.{expert}.down_proj.weight"]},
      {"name": "gate_up_proj", "target": "{prefix}mlp.experts.gate_up_proj",
       "sources": ["{prefix}mlp.experts.{expert}.gate_proj.weight", "{prefix}mlp.experts.{expert}.up_proj.weight"],
       "concat_dim": 1},
      {"name": "gate_up_proj_scale_inv", "target": "{prefix}mlp.experts.gate_up_proj_scale_inv",
       "sources": ["{prefix}mlp.experts.{expert}.gate_proj.weight_scale_inv",
                   "{prefix}mlp.experts.{expert}.up_proj.weight_scale_inv"],
       "concat_dim": 1, "scale_of": "gate_up_proj"}
    ],
    "transposes": [
      {"name": "stacked", "pattern": "{prefix}moe.stacked", "hub_shape": ["E", "H", "2*I"], "v5_shape": ["E", "2*I", "H"]}
    ]
  })");
}

struct BadRule {
  const char* what;
  std::function<void(json&)> mutate;
  std::vector<std::string> expect;  // substrings of the error
};

TEST(RuleFile, BaseIsValid) {
  auto rs = RuleSet::Parse(BaseRules().dump(), "custom.json");
  ASSERT_TRUE(rs.ok()) << rs.status().message();
  EXPECT_EQ(rs->family(), "custom");
  EXPECT_EQ(rs->fusions().size(), 3u);
  EXPECT_EQ(rs->renames().size(), 1u);
  EXPECT_EQ(rs->transposes().size(), 1u);
}

TEST(RuleFile, MalformedRulesAreRefusedNamingTheRule) {
  const std::vector<BadRule> cases = {
      {"unknown op at the top level", [](json& j) { j["splits"] = json::array(); }, {"member \"splits\"", "unknown"}},
      {"unknown member of a fusion", [](json& j) { j["fusions"][1]["stack_dim"] = 0; },
       {"fusions[1] (\"gate_up_proj\")", "member \"stack_dim\"", "unknown member"}},
      {"unknown member of a rename", [](json& j) { j["renames"][0]["flags"] = "i"; },
       {"renames[0] (\"ffn is mlp\")", "member \"flags\""}},
      {"unknown member of a transpose", [](json& j) { j["transposes"][0]["dims"] = json::array(); },
       {"transposes[0] (\"stacked\")", "member \"dims\""}},
      {"a target two fusions produce",
       [](json& j) { j["fusions"][1]["target"] = "{prefix}mlp.experts.down_proj"; },
       {"fusions[1] (\"gate_up_proj\")", "member \"target\"", "two fusions"}},
      {"a transpose producing a fusion's target",
       [](json& j) { j["transposes"][0]["pattern"] = "{prefix}mlp.experts.down_proj"; },
       {"transposes[0] (\"stacked\")", "member \"pattern\"", "fusion"}},
      {"a source without {expert}",
       [](json& j) { j["fusions"][1]["sources"][1] = "{prefix}mlp.experts.up_proj.weight"; },
       {"fusions[1] (\"gate_up_proj\")", "member \"sources\"", "{expert}"}},
      {"a source in two fusions",
       [](json& j) { j["fusions"][1]["sources"][0] = "{prefix}mlp.experts.{expert}.down_proj.weight"; },
       {"fusions[1] (\"gate_up_proj\")", "member \"sources\"", "two fusions"}},
      {"an invalid regex", [](json& j) { j["renames"][0]["pattern"] = "\\.ffn(\\."; },
       {"renames[0] (\"ffn is mlp\")", "member \"pattern\"", "invalid regular expression"}},
      {"an invalid reverse regex", [](json& j) { j["renames"][0]["reverse_pattern"] = "[mlp"; },
       {"renames[0] (\"ffn is mlp\")", "member \"reverse_pattern\"", "invalid regular expression"}},
      {"a replacement naming a group the pattern lacks", [](json& j) { j["renames"][0]["replacement"] = ".\\2."; },
       {"renames[0] (\"ffn is mlp\")", "member \"replacement\""}},
      {"a missing reverse", [](json& j) { j["renames"][0].erase("reverse_pattern"); },
       {"renames[0] (\"ffn is mlp\")", "member \"reverse_pattern\"", "required"}},
      {"a missing reverse replacement", [](json& j) { j["renames"][0].erase("reverse_replacement"); },
       {"renames[0] (\"ffn is mlp\")", "member \"reverse_replacement\"", "required"}},
      {"scale_of naming nothing", [](json& j) { j["fusions"][2]["scale_of"] = "gate_proj"; },
       {"fusions[2] (\"gate_up_proj_scale_inv\")", "member \"scale_of\"", "gate_proj"}},
      {"scale_of naming itself", [](json& j) { j["fusions"][2]["scale_of"] = "gate_up_proj_scale_inv"; },
       {"fusions[2] (\"gate_up_proj_scale_inv\")", "member \"scale_of\""}},
      {"scales fused unlike their weights", [](json& j) { j["fusions"][2]["concat_dim"] = 2; },
       {"fusions[2] (\"gate_up_proj_scale_inv\")", "member \"scale_of\""}},
      {"transpose shapes that are not swaps", [](json& j) { j["transposes"][0]["v5_shape"] = {"E", "H", "2*I"}; },
       {"transposes[0] (\"stacked\")", "member \"v5_shape\""}},
      {"transpose shapes not 3-D", [](json& j) { j["transposes"][0]["hub_shape"] = {"E", "H"}; },
       {"transposes[0] (\"stacked\")", "member \"hub_shape\""}},
      {"transpose shapes with an undeclared symbol",
       [](json& j) {
         j["transposes"][0]["hub_shape"] = {"E", "H", "2*K"};
         j["transposes"][0]["v5_shape"] = {"E", "2*K", "H"};
       },
       {"transposes[0] (\"stacked\")", "unknown symbol 'K'"}},
      {"a source_shape with an undeclared symbol", [](json& j) { j["fusions"][1]["source_shape"] = {"I", "D"}; },
       {"fusions[1] (\"gate_up_proj\")", "member \"source_shape\"", "unknown symbol 'D'"}},
      {"a source_shape dividing twice", [](json& j) { j["fusions"][1]["source_shape"] = {"I/H/H", "H"}; },
       {"fusions[1] (\"gate_up_proj\")", "member \"source_shape\"", "at most one '/'"}},
      {"a source_shape dividing by an undeclared symbol", [](json& j) { j["fusions"][1]["source_shape"] = {"I/B", "H"}; },
       {"fusions[1] (\"gate_up_proj\")", "member \"source_shape\"", "unknown symbol 'B'"}},
      {"a source_shape that is not strings", [](json& j) { j["fusions"][1]["source_shape"] = {6, 8}; },
       {"fusions[1] (\"gate_up_proj\")", "member \"source_shape\""}},
      {"a source_shape shorter than concat_dim",
       [](json& j) {
         j["fusions"][1]["source_shape"] = {"I"};
         j["fusions"][1]["concat_dim"] = 2;
       },
       {"fusions[1] (\"gate_up_proj\")", "member \"concat_dim\"", "source_shape"}},
      {"an unknown placeholder", [](json& j) { j["fusions"][0]["target"] = "{prefix}mlp.{layer}.down_proj"; },
       {"fusions[0] (\"down_proj\")", "member \"target\"", "{layer}"}},
      {"{expert} in a target", [](json& j) { j["fusions"][0]["target"] = "{prefix}mlp.experts.{expert}.down"; },
       {"fusions[0] (\"down_proj\")", "member \"target\"", "{expert}"}},
      {"{prefix} on one side only",
       [](json& j) { j["fusions"][0]["sources"][0] = "model.mlp.experts.{expert}.down_proj.weight"; },
       {"fusions[0] (\"down_proj\")", "member \"sources\"", "{prefix}"}},
      {"concat_dim 0", [](json& j) { j["fusions"][1]["concat_dim"] = 0; },
       {"fusions[1] (\"gate_up_proj\")", "member \"concat_dim\""}},
      {"a string concat_dim", [](json& j) { j["fusions"][1]["concat_dim"] = "1"; },
       {"fusions[1] (\"gate_up_proj\")", "member \"concat_dim\""}},
      {"two fusions with one name", [](json& j) { j["fusions"][0]["name"] = "gate_up_proj"; },
       {"member \"name\"", "two fusions"}},
      {"a fusion without a name", [](json& j) { j["fusions"][0].erase("name"); }, {"fusions[0]", "member \"name\""}},
      {"fusions that are not an array", [](json& j) { j["fusions"] = json::object(); }, {"member \"fusions\""}},
      {"sources that are not strings", [](json& j) { j["fusions"][0]["sources"] = {1, 2}; },
       {"fusions[0] (\"down_proj\")", "member \"sources\""}},
      {"E declared as a dim", [](json& j) { j["dims"]["E"] = {"num_experts"}; }, {"member \"dims\"", "'E'"}},
      {"fusions without an expert count", [](json& j) { j.erase("num_experts"); }, {"member \"num_experts\""}},
      {"an unknown role", [](json& j) { j["fusions"][1]["role"] = "gate"; },
       {"fusions[1] (\"gate_up_proj\")", "member \"role\"", "unknown role 'gate'"}},
      {"a tp_dim without a role", [](json& j) { j["fusions"][0]["tp_dim"] = 2; },
       {"fusions[0] (\"down_proj\")", "member \"tp_dim\"", "needs a role"}},
      {"a tp_dim outside the fused tensor",
       [](json& j) {
         j["fusions"][0]["role"] = "down";
         j["fusions"][0]["tp_dim"] = 3;
       },
       {"fusions[0] (\"down_proj\")", "member \"tp_dim\"", "1 or 2"}},
      {"interleaving one source", [](json& j) { j["fusions"][0]["interleave"] = true; },
       {"fusions[0] (\"down_proj\")", "member \"interleave\"", "two or more sources"}},
      {"a transposing fusion joining along dim 3",
       [](json& j) {
         j["fusions"][1]["transpose"] = true;
         j["fusions"][1]["concat_dim"] = 3;
         j["fusions"][2]["transpose"] = true;
         j["fusions"][2]["concat_dim"] = 3;
       },
       {"fusions[1] (\"gate_up_proj\")", "member \"concat_dim\"", "dim 1 or 2"}},
      {"scales interleaved unlike their weights", [](json& j) { j["fusions"][1]["interleave"] = true; },
       {"fusions[2] (\"gate_up_proj_scale_inv\")", "member \"scale_of\"", "interleave"}},
      {"one expert list in two fusions without shares",
       [](json& j) {
         json again = j["fusions"][0];
         again["name"] = "down_again";
         again["target"] = "{prefix}mlp.other.down_proj";
         j["fusions"].push_back(again);
       },
       {"fusions[3] (\"down_again\")", "member \"sources\"", "expert_count"}},
      {"expert_first without expert_count", [](json& j) { j["fusions"][0]["expert_first"] = {"n"}; },
       {"fusions[0] (\"down_proj\")", "member \"expert_first\"", "expert_count"}},
      {"a chunk of one part",
       [](json& j) { j["chunks"] = {{{"name", "c"}, {"source", "{prefix}b"}, {"targets", {"{prefix}t"}}}}; },
       {"chunks[0] (\"c\")", "member \"targets\"", "two parts"}},
      {"a chunk part that a fusion makes",
       [](json& j) {
         j["chunks"] = {{{"name", "c"}, {"source", "{prefix}b"},
                         {"targets", {"{prefix}mlp.experts.down_proj", "{prefix}t"}}}};
       },
       {"chunks[0] (\"c\")", "another rule"}},
      {"an unknown hub_layout", [](json& j) { j["hub_layout"] = "stacked"; }, {"member \"hub_layout\"", "stacked"}},
      {"a 2-D transpose with a role",
       [](json& j) {
         j["transposes"][0]["hub_shape"] = {"H", "E"};
         j["transposes"][0]["v5_shape"] = {"E", "H"};
         j["transposes"][0]["role"] = "down";
       },
       {"transposes[0] (\"stacked\")", "member \"role\"", "2-D"}},
      {"scales with a role of their own",
       [](json& j) {
         j["fusions"][1]["role"] = "gate_up";
         j["fusions"][2]["role"] = "down";
       },
       {"fusions[2] (\"gate_up_proj_scale_inv\")", "member \"role\"", "role and tp_dim of their weights"}},
      {"two scale fusions for one weight",
       [](json& j) {
         json again = j["fusions"][2];
         again["name"] = "again";
         again["target"] = "{prefix}mlp.experts.again";
         again["sources"] = {"{prefix}mlp.experts.{expert}.a.s", "{prefix}mlp.experts.{expert}.b.s"};
         j["fusions"].push_back(again);
       },
       {"fusions[3] (\"again\")", "member \"scale_of\"", "already has scales"}},
      {"a transpose with an unknown role", [](json& j) { j["transposes"][0]["role"] = "gateup"; },
       {"transposes[0] (\"stacked\")", "member \"role\""}},
      {"nothing to convert",
       [](json& j) {
         j.erase("fusions");
         j.erase("renames");
         j.erase("transposes");
       },
       {"nothing to convert"}},
  };
  for (const BadRule& c : cases) {
    json j = BaseRules();
    c.mutate(j);
    auto rs = RuleSet::Parse(j.dump(), "custom.json");
    ASSERT_FALSE(rs.ok()) << c.what << ": accepted";
    const std::string msg = rs.status().message();
    EXPECT_EQ(rs.status().code(), Status::Code::kInvalidArgument) << c.what;
    EXPECT_EQ(msg.rfind("custom.json: ", 0), 0u) << c.what << ": " << msg;
    for (const auto& e : c.expect) EXPECT_NE(msg.find(e), std::string::npos) << c.what << ": '" << e << "' not in: " << msg;
  }
}

TEST(RuleFile, RolesSayWhatAFusedTensorIsAndScalesTakeTheirWeights) {
  json j = BaseRules();
  j["fusions"][0]["role"] = "down";
  j["fusions"][1]["role"] = "gate_up";
  j["transposes"][0]["role"] = "up";
  j["transposes"][0]["tp_dim"] = 2;
  auto rs = RuleSet::Parse(j.dump(), "custom.json");
  ASSERT_TRUE(rs.ok()) << rs.status().message();
  const auto& f = rs->fusions();
  EXPECT_EQ(f[0].role, ExpertRole::kDown);
  EXPECT_EQ(f[0].tp_dim, 2);  // down [E, H, I]: I is dim 2
  EXPECT_EQ(f[1].role, ExpertRole::kGateUp);
  EXPECT_EQ(f[1].tp_dim, 1);  // gate_up [E, 2I, H]
  EXPECT_EQ(f[2].role, ExpertRole::kGateUp);  // the scales of gate_up_proj
  EXPECT_EQ(f[2].tp_dim, 1);
  EXPECT_EQ(rs->transposes()[0].role, ExpertRole::kUp);
  EXPECT_EQ(rs->transposes()[0].tp_dim, 2);  // given, not the role's default
  EXPECT_EQ(rs->WeightOf(2), 1);
  EXPECT_EQ(rs->ScalesOf(1), 2);
  EXPECT_EQ(rs->WeightOf(1), -1);
  EXPECT_EQ(rs->ScalesOf(0), -1);
  // Without a role a fused tensor is only known as fused.
  auto plain = RuleSet::Parse(BaseRules().dump(), "custom.json");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->fusions()[1].role, ExpertRole::kNone);
  EXPECT_EQ(plain->fusions()[1].tp_dim, 0);
}

TEST(RuleFile, SharesOfOneExpertListGoToTheirFusionsOnceBound) {
  auto rs = RuleSet::Parse(R"({"family": "split",
    "fusions": [
      {"name": "text", "role": "down", "target": "{prefix}text.down", "sources": ["{prefix}experts.{expert}.down"],
       "expert_count": ["n.0"]},
      {"name": "vision", "role": "down", "target": "{prefix}vision.down", "sources": ["{prefix}experts.{expert}.down"],
       "expert_count": ["n.1"], "expert_first": ["n.0"]}],
    "chunks": [{"name": "bias", "source": "{prefix}moe.bias", "targets": ["{prefix}text.bias", "{prefix}vision.bias"]}]
  })",
                           "split.json");
  ASSERT_TRUE(rs.ok()) << rs.status().message();
  auto config = ModelConfig::Parse(R"({"n": [6, 4]})", "config.json");
  ASSERT_TRUE(config.ok());
  auto bound = rs->Bind(*config);
  ASSERT_TRUE(bound.ok()) << bound.status().message();
  struct Want {
    const char* name;
    int fusion;
    int64_t expert;
  };
  for (const Want& w : {Want{"l.experts.0.down", 0, 0}, Want{"l.experts.5.down", 0, 5}, Want{"l.experts.6.down", 1, 0},
                        Want{"l.experts.9.down", 1, 3}}) {
    auto m = bound->MatchSource(w.name);
    ASSERT_TRUE(m.has_value()) << w.name;
    EXPECT_EQ(m->fusion, w.fusion) << w.name;
    EXPECT_EQ(m->expert, w.expert) << w.name;
    EXPECT_EQ(m->prefix, "l.");
    EXPECT_EQ(bound->SourceName(m->fusion, 0, m->prefix, m->expert), w.name);
  }
  EXPECT_EQ(*bound->NumExperts(*config, "l.", 1), 4);
  // Unbound, the first share takes the whole list.
  EXPECT_EQ(rs->MatchSource("l.experts.9.down")->fusion, 0);
  // Without the share's start in config.json, binding says which field.
  auto none = ModelConfig::Parse("{}", "config.json");
  auto unbound = rs->Bind(*none);
  ASSERT_FALSE(unbound.ok());
  EXPECT_NE(unbound.status().message().find("n.0"), std::string::npos) << unbound.status().message();
  // Chunks: the Hub tensor and each v5 part by name.
  auto whole = rs->MatchChunk("l.moe.bias");
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->part, -1);
  auto part = rs->MatchChunk("l.vision.bias");
  ASSERT_TRUE(part.has_value());
  EXPECT_EQ(part->part, 1);
  EXPECT_EQ(rs->ChunkName(part->rule, 0, part->prefix), "l.text.bias");
  EXPECT_FALSE(rs->MatchChunk("l.other.bias").has_value());
}

TEST(RuleFile, EveryBuiltinFusedWeightHasARole) {
  for (const std::string& family : BuiltinFamilies()) {
    auto rs = BuiltinRules(family);
    ASSERT_TRUE(rs.ok()) << family << ": " << rs.status().message();
    for (const FusionRule& f : rs->fusions()) EXPECT_NE(f.role, ExpertRole::kNone) << family << " " << f.name;
    for (const TransposeRule& t : rs->transposes()) {
      if (t.experts()) {
        EXPECT_NE(t.role, ExpertRole::kNone) << family << " " << t.name;
      }
    }
  }
}

TEST(RuleFile, InvalidJsonAndDuplicateKeysAreRefused) {
  EXPECT_FALSE(RuleSet::Parse("{\"family\": ", "x.json").ok());
  auto dup = RuleSet::Parse(R"({"family": "a", "family": "b", "renames": []})", "x.json");
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("x.json"), std::string::npos) << dup.status().message();
}

TEST(RuleFile, LoadRuleFileNamesTheFile) {
  TempDir d;
  json j = BaseRules();
  j["fusions"][1]["sources"][1] = "{prefix}mlp.experts.up_proj.weight";
  testing::WriteFileOrDie(d / "mine.json", j.dump());
  auto rs = LoadRuleFile(d / "mine.json");
  ASSERT_FALSE(rs.ok());
  EXPECT_NE(rs.status().message().find(d / "mine.json"), std::string::npos) << rs.status().message();
  EXPECT_NE(rs.status().message().find("fusions[1] (\"gate_up_proj\")"), std::string::npos) << rs.status().message();
  EXPECT_FALSE(LoadRuleFile(d / "absent.json").ok());
}

TEST(RuleFile, EveryBuiltinFamilyParses) {
  const auto families = BuiltinFamilies();
  // One built-in family per file under rules/, each named after its file.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(MOEPACK_SOURCE_DIR) + "/rules")) {
    files += e.path().extension() == ".json";
    EXPECT_NE(std::find(families.begin(), families.end(), e.path().stem().string()), families.end()) << e.path();
  }
  EXPECT_EQ(families.size(), files);
  for (const auto& f : families) {
    auto rs = BuiltinRules(f);
    ASSERT_TRUE(rs.ok()) << f << ": " << rs.status().message();
    EXPECT_EQ(rs->family(), f);
  }
  auto unknown = BuiltinRules("llama");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("qwen3_moe"), std::string::npos) << unknown.status().message();
}

// config.json selects a family by model_type (also a Hub alias such as
// Kimi-K2's), by architectures, or by a nested config's model_type.
TEST(RuleFile, ConfigsSelectTheirFamily) {
  struct Case {
    const char* config;
    const char* family;
  };
  const Case cases[] = {
      {R"({"model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]})", "deepseek_v3"},
      {R"({"model_type": "kimi_k2"})", "deepseek_v3"},
      {R"({"model_type": "nemotron_h_custom", "architectures": ["NemotronHForCausalLM"]})", "nemotron_h"},
      {R"({"model_type": "vlm", "text_config": {"model_type": "glm4v_moe_text"}})", "glm4v_moe"},
      {R"({"model_type": "qwen3_omni_moe_thinker", "text_config": {"model_type": "qwen3_omni_moe_text"}})",
       "qwen3_omni_moe_thinker"},
      {R"({"architectures": ["DeepseekV4ForCausalLM"]})", "deepseek_v4"},
  };
  for (const Case& c : cases) {
    auto config = ModelConfig::Parse(c.config, "config.json");
    ASSERT_TRUE(config.ok()) << c.config;
    auto rs = RulesForConfig(*config);
    ASSERT_TRUE(rs.ok()) << c.config << ": " << rs.status().message();
    EXPECT_EQ(rs->family(), c.family) << c.config;
  }
  // Every family's own model_type selects it, and so do the others it has
  // (granitemoeshared, granitemoehybrid).
  for (const auto& n : testing::AllFamilyNames()) {
    std::vector<std::string> types = n.model_types;
    types.push_back(n.family);
    for (const std::string& t : types) {
      auto config = ModelConfig::Parse("{\"model_type\": \"" + t + "\"}", "config.json");
      ASSERT_TRUE(config.ok());
      auto rs = RulesForConfig(*config);
      ASSERT_TRUE(rs.ok()) << t;
      EXPECT_EQ(rs->family(), n.family) << t;
    }
  }
}

// ---- name templates -------------------------------------------------------

RuleSet Qwen3() {
  auto rs = BuiltinRules("qwen3_moe");
  EXPECT_TRUE(rs.ok());
  return std::move(rs).value();
}

std::string FusionName(const RuleSet& rs, int f) { return rs.fusions()[f].name; }

TEST(NameTemplate, ScaleSiblingIsNeverTheWeight) {
  RuleSet rs = Qwen3();
  auto w = rs.MatchTarget("model.layers.3.mlp.experts.gate_up_proj");
  auto s = rs.MatchTarget("model.layers.3.mlp.experts.gate_up_proj_scale_inv");
  ASSERT_TRUE(w && s);
  EXPECT_EQ(FusionName(rs, w->fusion), "gate_up_proj");
  EXPECT_EQ(FusionName(rs, s->fusion), "gate_up_proj_scale_inv");
  EXPECT_EQ(w->prefix, "model.layers.3.");
  // Sources likewise: the scale of a weight is its own source.
  auto ws = rs.MatchSource("model.layers.3.mlp.experts.5.gate_proj.weight");
  auto ss = rs.MatchSource("model.layers.3.mlp.experts.5.gate_proj.weight_scale_inv");
  ASSERT_TRUE(ws && ss);
  EXPECT_EQ(FusionName(rs, ws->fusion), "gate_up_proj");
  EXPECT_EQ(FusionName(rs, ss->fusion), "gate_up_proj_scale_inv");
  // Anchored at both ends: neither a suffix nor a prefix of a name matches.
  EXPECT_FALSE(rs.MatchTarget("model.layers.3.mlp.experts.gate_up_proj.weight"));
  EXPECT_FALSE(rs.MatchTarget("model.layers.3.mlp.experts.gate_up_proj_bias"));
  EXPECT_FALSE(rs.MatchSource("model.layers.3.mlp.experts.5.gate_proj.weight.extra"));
  EXPECT_FALSE(rs.MatchSource("model.layers.3.mlp.experts.5.gate_proj"));
  // Those two are not sources but lie inside expert 5's part of them:
  // leftovers that fusing the rest would strand.
  for (const char* n : {"model.layers.3.mlp.experts.5.gate_proj.weight.extra", "model.layers.3.mlp.experts.5.gate_proj",
                        "model.layers.3.mlp.experts.5.gate_proj.bias", "model.layers.3.mlp.experts.5.w_in.qweight"}) {
    auto l = rs.MatchExpertLeftover(n);
    ASSERT_TRUE(l) << n;
    EXPECT_EQ(l->prefix, "model.layers.3.") << n;
    EXPECT_EQ(l->expert, 5) << n;
  }
  for (const char* n : {"model.layers.3.mlp.experts.5.gate_proj.weight", "model.layers.3.mlp.experts.gate_up_proj",
                        "model.layers.3.mlp.shared_experts.5.gate_proj.bias", "model.layers.3.mlp.experts.05.up_proj.bias",
                        "model.layers.3.mlp.experts.5", "model.layers.3.mlp.gate.weight"}) {
    EXPECT_FALSE(rs.MatchExpertLeftover(n)) << n;
  }
}

TEST(NameTemplate, PrefixStopsAtADot) {
  json j = json::parse(R"({"family": "p", "num_experts": ["n"], "fusions": [
      {"name": "fc", "target": "{prefix}experts.fc", "sources": ["{prefix}experts.{expert}.fc.weight"]}]})");
  auto rs = RuleSet::Parse(j.dump(), "p.json");
  ASSERT_TRUE(rs.ok()) << rs.status().message();
  auto m = rs->MatchTarget("model.layers.0.experts.fc");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->prefix, "model.layers.0.");
  EXPECT_TRUE(rs->MatchTarget("experts.fc"));  // empty prefix
  // "my" + "experts.fc": the prefix would end inside a name component.
  EXPECT_FALSE(rs->MatchTarget("model.layers.0.myexperts.fc"));
  EXPECT_FALSE(rs->MatchSource("model.layers.0.shared_experts.3.fc.weight"));
  auto s = rs->MatchSource("model.layers.0.experts.3.fc.weight");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->prefix, "model.layers.0.");
  EXPECT_EQ(s->expert, 3);
}

TEST(NameTemplate, ExpertIdsAreCanonicalNumbers) {
  RuleSet rs = Qwen3();
  auto m10 = rs.MatchSource("model.layers.0.mlp.experts.10.up_proj.weight");
  ASSERT_TRUE(m10);
  EXPECT_EQ(m10->expert, 10);
  EXPECT_EQ(m10->source, 1);
  auto m0 = rs.MatchSource("model.layers.0.mlp.experts.0.up_proj.weight");
  ASSERT_TRUE(m0);
  EXPECT_EQ(m0->expert, 0);
  EXPECT_FALSE(rs.MatchSource("model.layers.0.mlp.experts.07.up_proj.weight"));
  EXPECT_FALSE(rs.MatchSource("model.layers.0.mlp.experts.00.up_proj.weight"));
  EXPECT_FALSE(rs.MatchSource("model.layers.0.mlp.experts.-1.up_proj.weight"));
  EXPECT_FALSE(rs.MatchSource("model.layers.0.mlp.experts.x.up_proj.weight"));
  EXPECT_FALSE(rs.MatchSource("model.layers.0.mlp.experts..up_proj.weight"));
  EXPECT_EQ(rs.SourceName(m10->fusion, 1, "model.layers.0.", 10), "model.layers.0.mlp.experts.10.up_proj.weight");
  EXPECT_EQ(rs.TargetName(m10->fusion, "x."), "x.mlp.experts.gate_up_proj");
}

TEST(NameTemplate, RenamesOfEveryBuiltinFamilyInvert) {
  // Names of checkpoints with layers under model. (every family but
  // nemotron_h's backbone. and deepseek_v4's bare upstream names).
  const std::vector<std::string> names = {
      "model.layers.0.block_sparse_moe.gate.weight",
      "model.layers.12.block_sparse_moe.experts.7.w1.weight",
      "model.layers.1.block_sparse_moe.experts.0.w2.weight_scale_inv",
      "model.layers.0.self_attn.q_proj.weight",
      "model.embed_tokens.weight",
  };
  for (const auto& f : BuiltinFamilies()) {
    if (f == "nemotron_h" || f == "deepseek_v4") continue;
    auto rs = BuiltinRules(f);
    ASSERT_TRUE(rs.ok());
    for (const auto& n : names) {
      const std::string v5 = rs->Rename(n, Direction::kToFused);
      EXPECT_EQ(rs->Rename(v5, Direction::kToPerExpert), n) << f << ": " << n << " -> " << v5;
      // Families whose v5 modeling renames the block to mlp leave no
      // block_sparse_moe behind (granitemoe keeps its block's name).
      bool to_mlp = false;
      for (const auto& r : rs->renames()) {
        to_mlp = to_mlp || (r.pattern.find("block_sparse_moe") != std::string::npos && r.replacement == ".mlp.");
      }
      if (to_mlp) {
        EXPECT_EQ(v5.find("block_sparse_moe"), std::string::npos) << f << ": " << v5;
      }
    }
  }
  auto phi = BuiltinRules("phimoe");
  ASSERT_TRUE(phi.ok());
  EXPECT_EQ(phi->Rename("model.layers.3.block_sparse_moe.gate.weight", Direction::kToFused),
            "model.layers.3.mlp.router.weight");
  EXPECT_EQ(phi->Rename("model.layers.3.mlp.router.weight", Direction::kToPerExpert),
            "model.layers.3.block_sparse_moe.gate.weight");
  auto mix = BuiltinRules("mixtral");
  ASSERT_TRUE(mix.ok());
  EXPECT_EQ(mix->Rename("model.layers.3.block_sparse_moe.gate.weight", Direction::kToFused),
            "model.layers.3.mlp.gate.weight");
}

// Every name a family's checkpoints have (synth writes them in the Hub and
// the v5 layouts): the renames invert on each Hub name, and leave each v5
// name as it is, since converting back reads a checkpoint's names forward
// first.
TEST(NameTemplate, RenamesInvertOnEveryRealName) {
  for (const auto& f : BuiltinFamilies()) {
    auto rs = BuiltinRules(f);
    ASSERT_TRUE(rs.ok());
    const testing::FamilyNames& names = testing::NamesOf(f);
    for (const char* dtype : {"bf16", "fp8"}) {
      if (!names.has_dtype(dtype)) continue;  // gpt_oss, llama4, granitemoe, ernie4_5_vl_moe have no FP8 form
      TempDir d;
      testing::SynthOrDie(d / "hub", testing::TinyOptions(f, "per-expert", dtype));
      testing::SynthOrDie(d / "v5", testing::TinyOptions(f, "fused", dtype));
      size_t renamed = 0;
      for (const auto& [n, _] : testing::ReadTensors(d / "hub")) {
        const std::string v5 = rs->Rename(n, Direction::kToFused);
        EXPECT_EQ(rs->Rename(v5, Direction::kToPerExpert), n) << f << ": " << n << " -> " << v5;
        renamed += v5 != n;
      }
      for (const auto& [n, _] : testing::ReadTensors(d / "v5")) {
        EXPECT_EQ(rs->Rename(n, Direction::kToFused), n) << f << ": v5 name " << n;
      }
      // A family with renames uses them on its own names.
      EXPECT_EQ(renamed > 0, !rs->renames().empty()) << f << " " << dtype;
    }
    // The Hub's own layout too, where it is not per-expert (granitemoe's
    // fused input_linear / output_linear).
    TempDir d;
    testing::SynthOrDie(d / "hub", testing::TinyOptions(f));
    for (const auto& [n, _] : testing::ReadTensors(d / "hub")) {
      EXPECT_EQ(rs->Rename(rs->Rename(n, Direction::kToFused), Direction::kToPerExpert), n) << f << ": " << n;
    }
  }
}

// ---- every op round-trips exactly ------------------------------------------

// A family of our own: renames, plain concat, concat along dim 2, a
// transposing fusion and a whole-tensor transpose, over several dtypes.
const char* kOpsRules = R"({
  "family": "ops",
  "num_experts": ["num_experts"],
  "dims": {"H": ["hidden_size"], "I": ["moe_intermediate_size"]},
  "renames": [
    {"name": "ffn", "pattern": "\\.ffn\\.", "replacement": ".mlp.",
     "reverse_pattern": "\\.mlp\\.", "reverse_replacement": ".ffn."}
  ],
  "fusions": [
    {"name": "gate_up_proj", "target": "{prefix}mlp.experts.gate_up_proj",
     "sources": ["{prefix}mlp.experts.{expert}.gate.weight", "{prefix}mlp.experts.{expert}.up.weight"]},
    {"name": "down_proj", "target": "{prefix}mlp.experts.down_proj",
     "sources": ["{prefix}mlp.experts.{expert}.down.weight"]},
    {"name": "cols", "target": "{prefix}mlp.experts.cols",
     "sources": ["{prefix}mlp.experts.{expert}.a.weight", "{prefix}mlp.experts.{expert}.b.weight"], "concat_dim": 2},
    {"name": "tr", "target": "{prefix}mlp.experts.tr",
     "sources": ["{prefix}mlp.experts.{expert}.p.weight", "{prefix}mlp.experts.{expert}.q.weight"], "transpose": true}
  ],
  "transposes": [
    {"name": "stacked", "pattern": "{prefix}mlp.stacked", "hub_shape": ["E", "H", "2*I"], "v5_shape": ["E", "2*I", "H"]}
  ]
})";

constexpr uint64_t kE = 12, kH = 8, kI = 6;

struct OpsModel {
  std::vector<RawTensor> tensors;
  json config;
};

// Source tensors for layers {0, 1}; expert ids go past 9 so that numeric
// order matters.
OpsModel MakeOpsModel(DType dt) {
  OpsModel m;
  m.config = {{"model_type", "ops"}, {"num_experts", kE}, {"hidden_size", kH}, {"moe_intermediate_size", kI}};
  const uint64_t es = testing::ElementBytes(dt);
  uint64_t seed = 1;
  auto add = [&](const std::string& name, std::vector<uint64_t> shape) {
    m.tensors.push_back(RawTensor{name, dt, shape, testing::PatternBytes(testing::NumElementsOf(shape) * es, seed++)});
  };
  for (int L = 0; L < 2; ++L) {
    const std::string p = "model.layers." + std::to_string(L) + ".ffn.";
    for (uint64_t j = 0; j < kE; ++j) {
      const std::string e = p + "experts." + std::to_string(j) + ".";
      add(e + "gate.weight", {kI, kH});
      add(e + "up.weight", {kI, kH});
      add(e + "down.weight", {kH, kI});
      add(e + "a.weight", {3, 4});
      add(e + "b.weight", {3, 4});
      add(e + "p.weight", {kI, kH});
      add(e + "q.weight", {kI, kH});
    }
    add(p + "stacked", {kE, kH, 2 * kI});
    add(p + "gate.weight", {kE, kH});  // the router: renamed, not fused
  }
  add("model.embed_tokens.weight", {16, kH});
  return m;
}

// Reference fused tensors, element by element.
std::string RefStackConcatRows(const std::vector<const RawTensor*>& per_expert_sources, size_t K, uint64_t es) {
  // sources ordered [expert][k]; each [r, c]; output [E, K*r, c]: rows of k after rows of k-1.
  std::string out;
  for (size_t i = 0; i < per_expert_sources.size(); i += K) {
    for (size_t k = 0; k < K; ++k) out += per_expert_sources[i + k]->data;
  }
  (void)es;
  return out;
}

std::string RefStackConcatCols(const std::vector<const RawTensor*>& src, size_t K, uint64_t es) {
  std::string out;
  for (size_t i = 0; i < src.size(); i += K) {
    const uint64_t rows = src[i]->shape[0];
    for (uint64_t r = 0; r < rows; ++r) {
      for (size_t k = 0; k < K; ++k) {
        const uint64_t cols = src[i + k]->shape[1];
        out += src[i + k]->data.substr(r * cols * es, cols * es);
      }
    }
  }
  return out;
}

std::string RefStackTransposeConcat(const std::vector<const RawTensor*>& src, size_t K, uint64_t es) {
  // each source [r, c] transposed to [c, r]; concatenated along dim 1 of
  // the fused tensor: [E, K*c, r].
  std::string out;
  for (size_t i = 0; i < src.size(); i += K) {
    for (size_t k = 0; k < K; ++k) {
      const uint64_t rows = src[i + k]->shape[0], cols = src[i + k]->shape[1];
      for (uint64_t c = 0; c < cols; ++c) {
        for (uint64_t r = 0; r < rows; ++r) out += testing::Element(src[i + k]->data, cols, r, c, es);
      }
    }
  }
  return out;
}

std::string RefTransposeEach(const RawTensor& t, uint64_t es) {
  std::string out;
  const uint64_t E = t.shape[0], a = t.shape[1], b = t.shape[2];
  for (uint64_t j = 0; j < E; ++j) {
    const std::string slice = t.data.substr(j * a * b * es, a * b * es);
    for (uint64_t c = 0; c < b; ++c) {
      for (uint64_t r = 0; r < a; ++r) out += testing::Element(slice, b, r, c, es);
    }
  }
  return out;
}

class OpsRoundTrip : public ::testing::TestWithParam<DType> {};

TEST_P(OpsRoundTrip, EveryOpMatchesTheReferenceAndInvertsExactly) {
  const DType dt = GetParam();
  const uint64_t es = testing::ElementBytes(dt);
  TempDir d;
  testing::WriteFileOrDie(d / "ops.json", kOpsRules);
  OpsModel m = MakeOpsModel(dt);
  testing::WriteCheckpoint(d / "src", m.tensors, m.config, 4, 99);
  ConvertOptions o;
  o.rules_file = d / "ops.json";
  o.max_shard_size = 20'000;
  o.threads = 2;
  testing::ConvertOrDie(d / "src", d / "fused", Direction::kToFused, o);
  const testing::TensorMap src = testing::ReadTensors(d / "src");
  const testing::TensorMap fused = testing::ReadTensors(d / "fused");

  for (int L = 0; L < 2; ++L) {
    const std::string hub = "model.layers." + std::to_string(L) + ".ffn.";
    const std::string v5 = "model.layers." + std::to_string(L) + ".mlp.";
    auto sources = [&](std::vector<std::string> leaves) {
      std::vector<const RawTensor*> v;
      for (uint64_t j = 0; j < kE; ++j) {  // numeric order: 0, 1, ..., 9, 10, 11
        for (const auto& leaf : leaves) v.push_back(&src.at(hub + "experts." + std::to_string(j) + "." + leaf));
      }
      return v;
    };
    auto check = [&](const std::string& name, std::vector<uint64_t> shape, const std::string& bytes) {
      auto it = fused.find(name);
      ASSERT_NE(it, fused.end()) << name;
      EXPECT_EQ(it->second.dtype, dt) << name;
      EXPECT_EQ(it->second.shape, shape) << name;
      EXPECT_TRUE(it->second.data == bytes) << name << ": bytes differ from the reference";
    };
    check(v5 + "experts.gate_up_proj", {kE, 2 * kI, kH}, RefStackConcatRows(sources({"gate.weight", "up.weight"}), 2, es));
    check(v5 + "experts.down_proj", {kE, kH, kI}, RefStackConcatRows(sources({"down.weight"}), 1, es));
    check(v5 + "experts.cols", {kE, 3, 8}, RefStackConcatCols(sources({"a.weight", "b.weight"}), 2, es));
    check(v5 + "experts.tr", {kE, 2 * kH, kI}, RefStackTransposeConcat(sources({"p.weight", "q.weight"}), 2, es));
    check(v5 + "stacked", {kE, 2 * kI, kH}, RefTransposeEach(src.at(hub + "stacked"), es));
    // The router is only renamed.
    check(v5 + "gate.weight", {kE, kH}, src.at(hub + "gate.weight").data);
  }
  EXPECT_EQ(fused.size(), 2u * 6 + 1);

  testing::ConvertOrDie(d / "fused", d / "back", Direction::kToPerExpert, o);
  EXPECT_EQ(testing::DiffTensors(src, testing::ReadTensors(d / "back")), "");
}

INSTANTIATE_TEST_SUITE_P(DTypes, OpsRoundTrip,
                         ::testing::Values(DType::BF16, DType::F16, DType::F32, DType::F8_E4M3, DType::U8),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(UserRules, CustomFamilyConvertsBothWaysThroughTheLibrary) {
  TempDir d;
  testing::WriteFileOrDie(d / "my.json", testing::kUserRules);
  std::vector<RawTensor> ts;
  const uint64_t E = 4, H = 8, I = 4;
  uint64_t seed = 3;
  for (int L = 0; L < 3; ++L) {
    for (uint64_t j = 0; j < E; ++j) {
      const std::string p = "model.layers." + std::to_string(L) + ".ffn.experts." + std::to_string(j) + ".";
      ts.push_back({p + "wi.weight", DType::BF16, {2 * I, H}, testing::PatternBytes(2 * I * H * 2, seed++)});
      ts.push_back({p + "wo.weight", DType::BF16, {H, I}, testing::PatternBytes(H * I * 2, seed++)});
    }
  }
  ts.push_back({"model.norm.weight", DType::F32, {H}, testing::PatternBytes(H * 4, seed++)});
  testing::WriteCheckpoint(d / "src", ts, {{"model_type", "my_moe"}, {"num_experts", E}}, 3);

  // Without the rule file the model type is unknown.
  ConvertOptions none;
  auto refused = Convert(d / "src", d / "nope", none);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("my_moe"), std::string::npos) << refused.status().message();

  ConvertOptions o;
  o.rules_file = d / "my.json";
  auto r = testing::ConvertOrDie(d / "src", d / "fused", Direction::kToFused, o);
  EXPECT_EQ(r.plan.family, "my_moe");
  const auto src = testing::ReadTensors(d / "src");
  const auto fused = testing::ReadTensors(d / "fused");
  ASSERT_EQ(fused.size(), 3u * 2 + 1);
  for (int L = 0; L < 3; ++L) {
    const auto& gu = fused.at("model.layers." + std::to_string(L) + ".mlp.experts.gate_up_proj");
    EXPECT_EQ(gu.shape, (std::vector<uint64_t>{E, 2 * I, H}));
    std::string want;
    for (uint64_t j = 0; j < E; ++j) {
      want += src.at("model.layers." + std::to_string(L) + ".ffn.experts." + std::to_string(j) + ".wi.weight").data;
    }
    EXPECT_TRUE(gu.data == want);
    EXPECT_EQ(fused.at("model.layers." + std::to_string(L) + ".mlp.experts.down_proj").shape,
              (std::vector<uint64_t>{E, H, I}));
  }
  testing::ConvertOrDie(d / "fused", d / "back", Direction::kToPerExpert, o);
  EXPECT_EQ(testing::DiffTensors(src, testing::ReadTensors(d / "back")), "");
}

TEST(UserRules, RenamesThatDoNotInvertAreRefusedNamingTheTensor) {
  TempDir d;
  // The reverse never matches what the forward produced, so a renamed
  // tensor would not come back under its own name.
  json j = json::parse(testing::kUserRules);
  j["renames"][0]["reverse_pattern"] = "\\.nothing\\.";
  testing::WriteFileOrDie(d / "bad.json", j.dump());
  std::vector<RawTensor> ts = {
      {"model.layers.0.ffn.experts.0.wi.weight", DType::U8, {2, 2}, "abcd"},
      {"model.layers.0.ffn.experts.0.wo.weight", DType::U8, {2, 1}, "ef"},
  };
  testing::WriteCheckpoint(d / "src", ts, {{"model_type", "my_moe"}, {"num_experts", 1}}, 1);
  ConvertOptions o;
  o.rules_file = d / "bad.json";
  auto r = Convert(d / "src", d / "out", o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.0.ffn.experts.0."), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("invertible"), std::string::npos) << r.status().message();
  EXPECT_FALSE(std::filesystem::exists(d / "out"));
}

}  // namespace
}  // namespace rules_test
}  // namespace moepack
