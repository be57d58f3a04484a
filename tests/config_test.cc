// config.json: model_type, expert counts (top level and nested), strictness.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "moepack/config.h"

namespace moepack {
namespace config_test {
namespace {

struct GoodConfig {
  const char* label;
  std::string json;
  std::string model_type;
  std::optional<int64_t> num_experts;
};

TEST(ConfigTest, ModelTypeAndExpertCount) {
  const GoodConfig cases[] = {
      {"empty", "{}", "", std::nullopt},
      {"dense", R"({"model_type":"llama","hidden_size":4096})", "llama", std::nullopt},
      {"num_experts", R"({"model_type":"qwen3_moe","num_experts":128})", "qwen3_moe", 128},
      {"n_routed_experts", R"({"model_type":"deepseek_v3","n_routed_experts":256,"num_experts_per_tok":8})",
       "deepseek_v3", 256},
      {"num_local_experts", R"({"model_type":"mixtral","num_local_experts":8,"num_experts_per_tok":2})", "mixtral",
       8},
      {"text_config",
       R"({"model_type":"qwen3_vl_moe","text_config":{"model_type":"qwen3_vl_moe_text","num_experts":128},
           "vision_config":{"model_type":"qwen3_vl_moe_vision","num_experts":3}})",
       "qwen3_vl_moe", 128},
      {"nested_model_type_only", R"({"text_config":{"model_type":"qwen3_5_moe_text","num_experts":256}})",
       "qwen3_5_moe_text", 256},
      {"thinker_text_config",
       R"({"model_type":"qwen3_omni_moe","thinker_config":{"model_type":"qwen3_omni_moe_thinker",
           "text_config":{"model_type":"qwen3_omni_moe_text","num_experts":128}},
           "talker_config":{"text_config":{"num_experts":64}}})",
       "qwen3_omni_moe", 128},
      {"thinker_only_model_type", R"({"thinker_config":{"text_config":{"model_type":"inner","n_routed_experts":16}}})",
       "inner", 16},
      {"top_level_wins", R"({"num_local_experts":8,"text_config":{"num_experts":16}})", "", 8},
      {"vision_only_ignored", R"({"vision_config":{"num_experts":4}})", "", std::nullopt},
      {"big", R"({"num_experts":9223372036854775807})", "", INT64_MAX},
      // Dense variants write these; only a conversion that fuses needs E.
      {"null_is_absent", R"({"model_type":"qwen2_moe","num_experts":null})", "qwen2_moe", std::nullopt},
      {"zero", R"({"model_type":"qwen2_moe","num_experts":0})", "qwen2_moe", 0},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    auto cfg = ModelConfig::Parse(c.json, "config.json");
    ASSERT_TRUE(cfg.ok()) << cfg.status().message();
    EXPECT_EQ(cfg->model_type(), c.model_type);
    EXPECT_EQ(cfg->num_experts(), c.num_experts);
    EXPECT_EQ(cfg->text(), c.json);
  }
}

TEST(ConfigTest, OtherFieldsAndPaths) {
  auto cfg = ModelConfig::Parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "moe_intermediate_size": 2048,
    "first_k_dense_replace": 3,
    "n_routed_experts": 256,
    "rope_scaling": {"type": "yarn", "factor": 40.0, "nested": {"deep": 1}},
    "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    "tie_word_embeddings": false,
    "torch_dtype": null
  })",
                                "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->architectures(), std::vector<std::string>{"DeepseekV3ForCausalLM"});
  EXPECT_EQ(cfg->hidden_size(), 7168);
  EXPECT_EQ(cfg->moe_intermediate_size(), 2048);
  EXPECT_EQ(cfg->first_k_dense_replace(), 3);
  EXPECT_EQ(cfg->Int("rope_scaling.nested.deep"), 1);
  EXPECT_EQ(cfg->String("rope_scaling.type"), "yarn");
  EXPECT_EQ(cfg->String("quantization_config.quant_method"), "fp8");
  EXPECT_EQ(cfg->Int("rope_scaling.factor"), std::nullopt);  // 40.0 is not an integer
  EXPECT_TRUE(cfg->Has("rope_scaling.factor"));
  EXPECT_TRUE(cfg->Has("torch_dtype"));
  EXPECT_TRUE(cfg->Has("quantization_config.weight_block_size"));
  // Elements of short integer lists by index.
  EXPECT_EQ(cfg->Int("quantization_config.weight_block_size.0"), 128);
  EXPECT_EQ(cfg->Int("quantization_config.weight_block_size.1"), 128);
  EXPECT_EQ(cfg->Int("quantization_config.weight_block_size.2"), std::nullopt);
  EXPECT_EQ(cfg->Int("architectures.0"), std::nullopt);  // a string
  EXPECT_FALSE(cfg->Has("nope"));
  EXPECT_EQ(cfg->Int("hidden_size"), 7168);
  EXPECT_EQ(cfg->String("hidden_size"), std::nullopt);
  EXPECT_EQ(cfg->Int("model_type"), std::nullopt);

  // Long lists (per-layer tables) are not spread into fields.
  cfg = ModelConfig::Parse(R"({"a": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17], "b": [7, 8.5, -2]})", "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->Int("a.0"), std::nullopt);
  EXPECT_EQ(cfg->Int("b.0"), 7);
  EXPECT_EQ(cfg->Int("b.1"), std::nullopt);
  EXPECT_EQ(cfg->Int("b.2"), -2);

  // Nested sizes (qwen3_vl_moe keeps them in text_config).
  cfg = ModelConfig::Parse(R"({"text_config":{"hidden_size":2048,"moe_intermediate_size":768},
                              "vision_config":{"hidden_size":1152}})",
                           "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->hidden_size(), 2048);
  EXPECT_EQ(cfg->moe_intermediate_size(), 768);
  EXPECT_EQ(cfg->first_k_dense_replace(), std::nullopt);
}

struct BadConfig {
  const char* label;
  std::string json;
  std::vector<std::string> want;
};

TEST(ConfigTest, Refusals) {
  const BadConfig cases[] = {
      {"malformed", R"({"model_type":)", {"invalid JSON"}},
      {"trailing_garbage", R"({} {})", {"invalid JSON"}},
      {"comment", "{/* c */}", {"invalid JSON"}},
      {"empty_text", "", {"invalid JSON"}},
      {"not_utf8", "{\"model_type\":\"a\xff\"}", {"not valid UTF-8"}},
      {"array", "[]", {"not a JSON object"}},
      {"string", R"("x")", {"not a JSON object"}},
      {"duplicate_top", R"({"num_experts":8,"num_experts":8})", {"duplicate key 'num_experts'"}},
      {"duplicate_nested", R"({"text_config":{"model_type":"a","model_type":"b"}})", {"duplicate key 'model_type'"}},
      {"duplicate_deep", R"({"a":[{"b":{"c":1,"c":2}}]})", {"duplicate key 'c'"}},
      {"model_type_number", R"({"model_type":3})", {"model_type is a number, not a string"}},
      {"model_type_null", R"({"model_type":null})", {"model_type is null, not a string"}},
      {"architectures_string", R"({"architectures":"X"})", {"architectures is not an array"}},
      {"architectures_number", R"({"architectures":[1]})", {"architectures holds a non-string"}},
      {"num_experts_float", R"({"num_experts":8.0})", {"num_experts is not an integer"}},
      {"num_experts_fractional", R"({"num_experts":8.5})", {"num_experts is not an integer"}},
      {"num_experts_string", R"({"num_experts":"8"})", {"num_experts is not an integer"}},
      {"num_experts_bool", R"({"num_experts":true})", {"num_experts is not an integer"}},
      {"num_experts_array", R"({"num_experts":[8]})", {"num_experts is not an integer"}},
      {"num_experts_per_layer", R"({"num_experts":[8, 8, 16, 16]})",
       {"num_experts is not an integer", "per-layer expert counts is not supported"}},
      {"num_experts_object", R"({"num_experts":{}})", {"num_experts is not an integer"}},
      {"num_experts_huge", R"({"num_experts":9223372036854775808})", {"num_experts is not an integer"}},
      {"num_experts_huger", R"({"num_experts":18446744073709551616})", {"num_experts is not an integer"}},
      {"num_experts_negative", R"({"num_experts":-8})", {"num_experts must not be negative"}},
      {"n_routed_float", R"({"n_routed_experts":256.0})", {"n_routed_experts is not an integer"}},
      {"num_local_string", R"({"num_local_experts":"8"})", {"num_local_experts is not an integer"}},
      {"nested_float", R"({"text_config":{"num_experts":1.5}})", {"text_config.num_experts is not an integer"}},
      {"thinker_nested_string",
       R"({"thinker_config":{"text_config":{"num_experts":"128"}}})",
       {"thinker_config.text_config.num_experts is not an integer"}},
      {"nested_negative", R"({"text_config":{"n_routed_experts":-1}})", {"text_config.n_routed_experts must not be negative"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    auto cfg = ModelConfig::Parse(c.json, "/models/x/config.json");
    ASSERT_FALSE(cfg.ok()) << "accepted";
    const std::string msg = cfg.status().message();
    EXPECT_EQ(cfg.status().code(), Status::Code::kCorrupt) << msg;
    EXPECT_EQ(msg.rfind("/models/x/config.json", 0), 0u) << msg;
    for (const auto& w : c.want) EXPECT_NE(msg.find(w), std::string::npos) << "want '" << w << "' in: " << msg;
  }
}

TEST(ConfigTest, DeepNestingDoesNotCrash) {
  const size_t depth = 20000;
  std::string deep;
  for (size_t i = 0; i < depth; ++i) deep += "{\"a\":";
  deep += "1";
  deep += std::string(depth, '}');
  auto cfg = ModelConfig::Parse("{\"model_type\":\"x\",\"deep\":" + deep + "}", "config.json");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  EXPECT_EQ(cfg->model_type(), "x");
  std::string arrays = std::string(depth, '[') + std::string(depth, ']');
  cfg = ModelConfig::Parse("{\"deep\":" + arrays + "}", "config.json");
  EXPECT_TRUE(cfg.ok()) << cfg.status().message();
}

}  // namespace
}  // namespace config_test
}  // namespace moepack
