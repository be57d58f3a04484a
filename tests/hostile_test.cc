// Hostile inputs, run through the real binary. Each case builds a malformed
// checkpoint (or rule file) from the table below; `moepack convert SRC DST`
// must exit 1 with one stderr line "moepack: error: ..." naming the fault,
// never crash, leave no DST and no temporary sibling, and leave SRC as it
// was. `moepack inspect SRC` must not crash either, and fails the same way
// when the fault is in the files themselves (not in the conversion).
// HostileExtras: inputs that are odd but convertible must convert (and
// verify) instead.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "hostile/builders.h"
#include "hostile/proc.h"
#include "testutil.h"

namespace moepack::testing {
namespace hostile_test {
namespace {

namespace fs = std::filesystem;
using namespace hostile;

// What the case's builder writes into: the source checkpoint directory.
struct Src {
  std::string dir;
  void File(const std::string& rel, const std::string& bytes) const { Write(dir + "/" + rel, bytes); }
  void Model(const std::vector<T>& tensors) const { File("model.safetensors", Safetensors(tensors)); }
  // model.safetensors with `header` verbatim and `data` bytes after it.
  void Raw(const std::string& header, uint64_t data) const { File("model.safetensors", Safetensors(header, data)); }
  void Config(const std::string& text) const { File("config.json", text); }
  void Qwen() const { Config(QwenConfig()); }
  // Shards of a Qwen model, tensor i in shard `shard_of[i]`, and an index.
  void Sharded(const std::vector<T>& tensors, const std::vector<int>& shard_of, int shards) const {
    nlohmann::json wm = nlohmann::json::object();
    for (int s = 0; s < shards; ++s) {
      std::vector<T> part;
      const std::string f = "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (shard_of[i] == s) {
          part.push_back(tensors[i]);
          wm[tensors[i].name] = f;
        }
      }
      File(f, Safetensors(part));
    }
    File("model.safetensors.index.json", nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", wm}}.dump(2));
  }
};

// Tiny Qwen model, with one tensor's entry replaced by `entry` (raw JSON).
// The cases below replace model.norm.weight: BF16 [8], data_offsets
// [256, 272], right after model.embed_tokens.weight [16, 8] at [0, 256].
std::string WithEntry(const std::string& name, const std::string& entry, uint64_t* data) {
  auto t = TinyQwen();
  std::string h = Header(t, data);
  const std::string key = "\"" + name + "\":{";
  size_t b = h.find(key);
  size_t e = h.find('}', b);
  return h.substr(0, b) + "\"" + name + "\":" + entry + h.substr(e + 1);
}

void Entry(const Src& s, const std::string& name, const std::string& entry, int64_t data_delta = 0) {
  uint64_t n = 0;
  std::string h = WithEntry(name, entry, &n);
  s.Qwen();
  s.Raw(h, n + data_delta);
}

std::vector<T> Without(std::vector<T> t, const std::string& name) {
  std::erase_if(t, [&](const T& x) { return x.name == name; });
  return t;
}

// Fused Qwen whose down_proj is stored [E, I, H], the transpose of v5's.
void FusedWithDownTransposed(const Src& s) {
  s.Qwen();
  auto t = TinyQwenFused();
  t[4].shape = {4, 4, 8};
  s.Model(t);
}

enum class Inspect { kFails, kMayPass };

struct Case {
  const char* name;
  std::function<void(const Src&)> build;
  const char* expect;  // substring of the error line
  Inspect inspect = Inspect::kFails;
  std::vector<std::string> args = {};  // extra convert flags; "@" is the test directory
  const char* src_rel = "src";         // SRC relative to the test directory
};

const char* E0 = "model.layers.0.mlp.experts.0.";

const Case kCases[] = {
    // --- the safetensors file itself ---
    {"empty_file", [](const Src& s) { s.Qwen(); s.File("model.safetensors", ""); }, "too short for a header length"},
    {"truncated_length", [](const Src& s) { s.Qwen(); s.File("model.safetensors", "\x10\0\0"); }, "too short"},
    {"header_length_past_eof", [](const Src& s) { s.Qwen(); s.File("model.safetensors", U64Le(4096) + "{}"); },
     "runs past the end"},
    {"header_too_large", [](const Src& s) { s.Qwen(); s.File("model.safetensors", U64Le(200'000'000) + "{}"); },
     "exceeds the 100000000-byte limit"},
    {"header_length_max", [](const Src& s) { s.Qwen(); s.File("model.safetensors", U64Le(~0ull) + "{}"); },
     "exceeds the 100000000-byte limit"},
    {"truncated_data",
     [](const Src& s) {
       s.Qwen();
       std::string b = Safetensors(TinyQwen());
       s.File("model.safetensors", b.substr(0, b.size() - 10));
     },
     "data section is"},
    {"header_empty", [](const Src& s) { s.Qwen(); s.Raw("", 0); }, "does not start with '{'"},
    {"header_not_object", [](const Src& s) { s.Qwen(); s.Raw("[1,2,3]", 0); }, "does not start with '{'"},
    {"header_json_array_value", [](const Src& s) { s.Qwen(); s.Raw("{\"a\":[]}", 0); }, "tensor 'a': entry is an array"},
    {"header_nul_padded",
     [](const Src& s) {
       uint64_t n;
       std::string h = Header(TinyQwen(), &n);
       s.Qwen();
       s.Raw(h + std::string(6, '\0'), n);
     },
     "NUL bytes"},
    {"header_invalid_json", [](const Src& s) { s.Qwen(); s.Raw("{\"a\":{\"dtype\":", 0); }, "invalid JSON"},
    {"header_not_utf8",
     [](const Src& s) {
       s.Qwen();
       s.Raw("{\"caf\xe9\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
     },
     "not valid UTF-8"},
    {"header_overlong_utf8",
     [](const Src& s) {
       s.Qwen();
       s.Raw("{\"\xc0\xae\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
     },
     "not valid UTF-8"},
    {"header_deeply_nested",
     [](const Src& s) {
       s.Qwen();
       s.Raw("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", 0);
     },
     "entry is an array"},
    {"duplicate_tensor_name",
     [](const Src& s) {
       s.Qwen();
       s.Raw(R"({"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2);
     },
     "duplicate key 'x'"},
    {"newline_in_name",
     [](const Src& s) {
       s.Qwen();
       s.Raw(R"({"a\nb":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a\nb":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2);
     },
     "duplicate key 'a b'"},
    {"dtype_unknown", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"F128","shape":[8],"data_offsets":[256,272]})"); },
     "unknown dtype 'F128'"},
    {"dtype_wrong_type", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":16,"shape":[8],"data_offsets":[256,272]})"); },
     "dtype is a number"},
    {"shape_not_array", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":"8","data_offsets":[256,272]})"); },
     "shape is a string"},
    {"shape_negative", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[-8],"data_offsets":[256,272]})"); },
     "negative integer"},
    {"shape_fractional", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[7.5],"data_offsets":[256,272]})"); },
     "fractional number"},
    {"shape_huge", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[1e30],"data_offsets":[256,272]})"); },
     "out-of-range integer"},
    {"shape_element_overflow",
     [](const Src& s) {
       Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[4294967296,4294967296,2],"data_offsets":[256,272]})");
     },
     "shape overflows the element count"},
    {"size_overflow",
     [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"F64","shape":[4611686018427387904],"data_offsets":[256,272]})"); },
     "size overflows"},
    {"sub_byte_dtype", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"F4","shape":[3],"data_offsets":[256,272]})"); },
     "do not fill whole bytes"},
    {"offsets_wrong_arity", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8],"data_offsets":[256]})"); },
     "data_offsets must be an array of two integers"},
    {"offsets_negative", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8],"data_offsets":[-16,272]})"); },
     "data_offsets has a negative integer"},
    {"offsets_reversed", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8],"data_offsets":[272,256]})"); },
     "end before they begin"},
    {"offsets_overlap", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8],"data_offsets":[250,266]})"); },
     "overlap"},
    {"offsets_gap", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8],"data_offsets":[264,280]})", 8); },
     "gap before data_offsets"},
    {"offsets_span_mismatch",
     [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[9],"data_offsets":[256,272]})"); },
     "need 18"},
    {"offsets_out_of_bounds",
     [](const Src& s) {
       s.Qwen();
       s.Raw(R"({"x":{"dtype":"U8","shape":[1000000],"data_offsets":[0,1000000]}})", 100);
     },
     "data section is 100 bytes but the header needs 1000000"},
    {"trailing_bytes",
     [](const Src& s) {
       uint64_t n;
       std::string h = Header(TinyQwen(), &n);
       s.Qwen();
       s.Raw(h, n + 3);
     },
     "3 trailing bytes"},
    {"entry_missing_field", [](const Src& s) { Entry(s, "model.norm.weight", R"({"dtype":"BF16","shape":[8]})"); },
     "missing field 'data_offsets'"},
    {"metadata_not_object",
     [](const Src& s) { s.Qwen(); s.Raw(R"({"__metadata__":[1]})", 0); }, "__metadata__ is not an object"},
    {"metadata_value_not_string",
     [](const Src& s) { s.Qwen(); s.Raw(R"({"__metadata__":{"format":1}})", 0); }, "value 'format' is not a string"},
    {"lone_file_bad",
     [](const Src& s) { s.File("weights.safetensors", U64Le(3) + "{}}"); }, "invalid JSON", Inspect::kFails, {},
     "src/weights.safetensors"},

    // --- the directory and its index ---
    {"no_weights", [](const Src& s) { s.Qwen(); }, "no model.safetensors and no model.safetensors.index.json"},
    {"two_files_no_index",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       s.File("extra.safetensors", Safetensors({{"x", "U8", {1}}}));
     },
     "but no model.safetensors.index.json"},
    {"single_file_misnamed", [](const Src& s) { s.Qwen(); s.File("weights.safetensors", Safetensors(TinyQwen())); },
     "is not named model.safetensors"},
    {"weights_are_a_directory", [](const Src& s) { s.Qwen(); fs::create_directories(s.dir + "/model.safetensors"); },
     "no model.safetensors"},
    {"index_invalid_json",
     [](const Src& s) { s.Qwen(); s.Model(TinyQwen()); s.File("model.safetensors.index.json", "{\"weight_map\":"); },
     "invalid JSON"},
    {"index_without_weight_map",
     [](const Src& s) { s.Qwen(); s.Model(TinyQwen()); s.File("model.safetensors.index.json", R"({"metadata":{}})"); },
     "no weight_map"},
    {"index_entry_not_string",
     [](const Src& s) { s.Qwen(); s.Model(TinyQwen()); s.File("model.safetensors.index.json", R"({"weight_map":{"x":7}})"); },
     "weight_map entry 'x' is not a string"},
    {"index_path_traversal",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       s.File("model.safetensors.index.json", R"({"weight_map":{"x":"../model.safetensors"}})");
     },
     "names an invalid file '../model.safetensors'"},
    {"index_names_missing_file",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       s.Sharded(t, std::vector<int>(t.size(), 0), 1);
       s.File("model.safetensors.index.json",
              R"({"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}})");
     },
     "names missing shard 'model-00002-of-00002.safetensors'"},
    {"index_names_missing_tensor",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       std::vector<int> where(t.size(), 0);
       where[1] = 1;
       s.Sharded(t, where, 2);
       nlohmann::json j = nlohmann::json::parse(SlurpFile(s.dir + "/model.safetensors.index.json"));
       j["weight_map"]["model.layers.0.mlp.experts.9.up_proj.weight"] = "model-00001-of-00002.safetensors";
       s.File("model.safetensors.index.json", j.dump());
     },
     "tensor 'model.layers.0.mlp.experts.9.up_proj.weight' is listed in model-00001-of-00002.safetensors but absent"},
    {"index_omits_tensor",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       std::vector<int> where(t.size(), 0);
       where[1] = 1;
       s.Sharded(t, where, 2);
       nlohmann::json j = nlohmann::json::parse(SlurpFile(s.dir + "/model.safetensors.index.json"));
       j["weight_map"].erase("model.embed_tokens.weight");
       s.File("model.safetensors.index.json", j.dump());
     },
     "tensor 'model.embed_tokens.weight' in model-00001-of-00002.safetensors is not listed"},
    {"index_wrong_shard",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       std::vector<int> where(t.size(), 0);
       where[1] = where[2] = 1;
       s.Sharded(t, where, 2);
       nlohmann::json j = nlohmann::json::parse(SlurpFile(s.dir + "/model.safetensors.index.json"));
       j["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
       s.File("model.safetensors.index.json", j.dump());
     },
     "'model.norm.weight' is listed in model-00001-of-00002.safetensors but stored in model-00002-of-00002.safetensors"},
    {"shard_not_in_index",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       s.Sharded(t, std::vector<int>(t.size(), 0), 1);
       s.File("model-00009-of-00009.safetensors", Safetensors({{"y", "U8", {1}}}));
     },
     "shard 'model-00009-of-00009.safetensors' is not listed"},
    {"tensor_in_two_shards",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       std::vector<int> where(t.size(), 0);
       s.Sharded(t, where, 2);  // shard 2 is empty
       s.File("model-00002-of-00002.safetensors", Safetensors({{"model.norm.weight", "BF16", {8}}}));
       nlohmann::json j = nlohmann::json::parse(SlurpFile(s.dir + "/model.safetensors.index.json"));
       j["weight_map"]["zz"] = "model-00002-of-00002.safetensors";
       s.File("model.safetensors.index.json", j.dump());
     },
     "tensor 'model.norm.weight' is in two shards"},
    {"index_is_fifo",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       ::mkfifo((s.dir + "/model.safetensors.index.json").c_str(), 0644);
     },
     "not a regular file"},

    {"index_is_symlink_loop",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       fs::create_symlink("model.safetensors.index.json", s.dir + "/model.safetensors.index.json");
     },
     "model.safetensors.index.json: cannot stat (Too many levels of symbolic links)"},

    // --- config.json ---
    {"config_is_symlink_loop",
     [](const Src& s) {
       s.Model(TinyQwen());
       fs::create_symlink("config.json", s.dir + "/config.json");
     },
     "config.json: cannot stat (Too many levels of symbolic links)"},
    {"config_invalid_json", [](const Src& s) { s.Config("{\"num_experts\": 4,"); s.Model(TinyQwen()); }, "invalid JSON"},
    {"config_not_object", [](const Src& s) { s.Config("[4]"); s.Model(TinyQwen()); }, "config.json: not a JSON object"},
    {"config_is_fifo",
     [](const Src& s) {
       s.Model(TinyQwen());
       ::mkfifo((s.dir + "/config.json").c_str(), 0644);
     },
     "not a regular file"},
    {"config_model_type_not_string",
     [](const Src& s) { s.Config(R"({"model_type":3,"num_experts":4})"); s.Model(TinyQwen()); },
     "model_type is a number, not a string"},
    {"config_experts_string", [](const Src& s) { s.Config(QwenConfig("\"4\"")); s.Model(TinyQwen()); },
     "num_experts is not an integer"},
    {"config_experts_negative", [](const Src& s) { s.Config(QwenConfig("-4")); s.Model(TinyQwen()); },
     "num_experts must"},
    {"config_experts_fractional", [](const Src& s) { s.Config(QwenConfig("4.5")); s.Model(TinyQwen()); },
     "num_experts is not an integer"},
    {"config_without_expert_count",
     [](const Src& s) { s.Config(R"({"model_type":"qwen3_moe","hidden_size":8})"); s.Model(TinyQwen()); },
     "no expert count", Inspect::kMayPass},
    {"config_experts_huge", [](const Src& s) { s.Config(QwenConfig("1000000000000000000")); s.Model(TinyQwen()); },
     "missing for experts 4-999999999999999999", Inspect::kMayPass},
    {"config_unknown_family",
     [](const Src& s) { s.Config(R"({"model_type":"llama4_moe_x","num_experts":4})"); s.Model(TinyQwen()); },
     "llama4_moe_x", Inspect::kMayPass},
    {"no_config", [](const Src& s) { s.Model(TinyQwen()); }, "no config.json", Inspect::kMayPass},

    // --- experts and fusion groups (found by the planner) ---
    {"expert_missing",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       std::erase_if(t, [](const T& x) { return x.name.find(".experts.2.") != std::string::npos; });
       s.Model(t);
     },
     "missing for experts 2", Inspect::kMayPass},
    {"expert_out_of_range",
     [](const Src& s) { s.Qwen(); s.Model(TinyQwen(5)); }, "expert 4 is out of range", Inspect::kMayPass},
    {"expert_id_huge",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       t.push_back({"model.layers.0.mlp.experts.999999999.up_proj.weight", "BF16", {4, 8}});
       s.Model(t);
     },
     "expert 999999999", Inspect::kMayPass},
    {"expert_duplicated_by_rename",
     [](const Src& s) {
       s.Config(R"({"model_type":"mixtral","num_local_experts":4})");
       std::vector<T> t;
       for (int j = 0; j < 4; ++j) {
         const std::string e = "model.layers.0.block_sparse_moe.experts." + std::to_string(j) + ".";
         for (const char* w : {"w1", "w2", "w3"}) t.push_back({e + w + ".weight", "BF16", {4, 4}});
       }
       t.push_back({"model.layers.0.mlp.experts.1.w3.weight", "BF16", {4, 4}});
       s.Model(t);
     },
     "expert 1 w3.weight appears twice", Inspect::kMayPass},
    {"gate_without_up",
     [](const Src& s) {
       s.Qwen();
       s.Model(Without(TinyQwen(), std::string(E0) + "up_proj.weight"));
     },
     "expert 0 has gate_proj.weight but no up_proj.weight", Inspect::kMayPass},
    {"expert_shape_differs",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       for (auto& x : t) {
         if (x.name == "model.layers.0.mlp.experts.3.down_proj.weight") x.shape = {8, 5};
       }
       s.Model(t);
     },
     "expert 3 down_proj.weight has shape [8, 5]", Inspect::kMayPass},
    {"expert_dtype_differs",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       for (auto& x : t) {
         if (x.name == "model.layers.0.mlp.experts.2.up_proj.weight") x.dtype = "F16";
       }
       s.Model(t);
     },
     "expert 2 up_proj.weight is F16", Inspect::kMayPass},
    {"scale_without_weight",
     [](const Src& s) {
       s.Config(kDeepseekConfig);
       auto t = TinyDeepseekFp8();
       std::erase_if(t, [](const T& x) { return x.name.find("down_proj.weight") != std::string::npos &&
                                                x.name.find("scale") == std::string::npos; });
       s.Model(t);
     },
     "down_proj_scale_inv scales have no down_proj weights", Inspect::kMayPass},
    {"fp8_weight_without_scale",
     [](const Src& s) {
       s.Config(kDeepseekConfig);
       auto t = TinyDeepseekFp8();
       std::erase_if(t, [](const T& x) { return x.name.find("gate_proj.weight_scale_inv") != std::string::npos ||
                                                x.name.find("up_proj.weight_scale_inv") != std::string::npos; });
       s.Model(t);
     },
     "F8_E4M3 gate_up_proj weights have no weight_scale_inv scales", Inspect::kMayPass},
    {"fused_and_per_expert_collide",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       t.push_back({"model.layers.0.mlp.experts.down_proj", "BF16", {4, 8, 4}});
       s.Model(t);
     },
     "would be made twice", Inspect::kMayPass},
    {"fused_wrong_expert_count",
     [](const Src& s) { s.Qwen(); s.Model(TinyQwenFused(3)); }, "does not start with the 4 experts", Inspect::kMayPass,
     {"--to", "per-expert"}},
    {"fused_cannot_split",
     [](const Src& s) {
       s.Config(QwenConfigWithoutI());
       auto t = TinyQwenFused();
       t[3].shape = {4, 7, 8};
       s.Model(t);
     },
     "cannot split into 2 sources", Inspect::kMayPass, {"--to", "per-expert"}},
    {"fused_zero_size_many_experts",
     [](const Src& s) {
       s.Config(QwenConfigWithoutI("100000000"));
       s.Model({{"model.layers.0.mlp.experts.down_proj", "BF16", {100000000, 0, 4}}});
     },
     "would make too many tensors", Inspect::kMayPass, {"--to", "per-expert"}},
    {"experts_transposed_against_config",
     [](const Src& s) {
       s.Qwen();
       auto t = TinyQwen();
       for (auto& x : t) {
         if (x.name.find(".experts.") != std::string::npos) std::swap(x.shape[0], x.shape[1]);
       }
       s.Model(t);
     },
     "gives [I, H] = [4, 8] per expert", Inspect::kMayPass},
    {"fused_transposed_against_config_to_per_expert",
     FusedWithDownTransposed,
     "gives the fused layout [E, H, I] = [4, 8, 4]", Inspect::kMayPass, {"--to", "per-expert"}},
    {"fused_transposed_against_config_kept_fused",
     FusedWithDownTransposed,
     "a transposed or foreign layout is not converted", Inspect::kMayPass},
    {"transposed_shape_neither",
     [](const Src& s) {
       s.Config(kVlConfig);
       s.Model({{"model.language_model.layers.0.mlp.experts.gate_up_proj", "BF16", {4, 12, 9}}});
     },
     "is neither the Hub layout [4, 12, 8] nor the v5 layout [4, 8, 12]", Inspect::kMayPass},
    {"transposed_ambiguous",
     [](const Src& s) {
       s.Config(R"({"model_type":"qwen3_vl_moe","text_config":{"num_experts":4,"hidden_size":8,"moe_intermediate_size":4}})");
       s.Model({{"model.language_model.layers.0.mlp.experts.gate_up_proj", "BF16", {4, 8, 8}}});
     },
     "fits both the Hub and the v5 layout", Inspect::kMayPass},

    // --- rule files ---
    {"rules_invalid_regex",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       Write(s.dir + "/../rules.json",
             R"({"family":"x","renames":[{"pattern":"(","replacement":"","reverse_pattern":"a","reverse_replacement":""}]})");
     },
     "renames[0]: member \"pattern\": invalid regular expression", Inspect::kMayPass, {"--rules", "@/rules.json"}},
    {"rules_unknown_member",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       Write(s.dir + "/../rules.json", R"({"family":"x","fusionz":[]})");
     },
     "member \"fusionz\": unknown member", Inspect::kMayPass, {"--rules", "@/rules.json"}},
    {"rules_scale_of_itself",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       Write(s.dir + "/../rules.json", R"({"family":"x","num_experts":["num_experts"],"fusions":[
         {"name":"a","target":"{prefix}a","sources":["{prefix}x.{expert}.a"],"scale_of":"a"}]})");
     },
     "fusions[0] (\"a\"): member \"scale_of\": names no other fusion", Inspect::kMayPass, {"--rules", "@/rules.json"}},
    {"rules_concat_dim_huge",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       Write(s.dir + "/../rules.json", R"({"family":"x","num_experts":["num_experts"],"fusions":[
         {"name":"a","target":"{prefix}mlp.experts.down_proj","sources":["{prefix}mlp.experts.{expert}.down_proj.weight"],
          "concat_dim":4294967297}]})");
     },
     "member \"concat_dim\": must be at most 64", Inspect::kMayPass, {"--rules", "@/rules.json"}},
    {"rules_renames_double_names",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       nlohmann::json r = {{"family", "x"}, {"renames", nlohmann::json::array()}};
       for (int i = 0; i < 40; ++i) {  // 2^40 times the name, were nothing to stop it
         r["renames"].push_back({{"pattern", "(.+)"}, {"replacement", "\\1\\1"}, {"reverse_pattern", "zzz"},
                                 {"reverse_replacement", "z"}});
       }
       Write(s.dir + "/../rules.json", r.dump());
     },
     "grow the name 'model.embed_tokens.weight' by more than 65536 bytes", Inspect::kMayPass,
     {"--rules", "@/rules.json"}},
    {"rules_is_directory",
     [](const Src& s) {
       s.Qwen();
       s.Model(TinyQwen());
       fs::create_directories(s.dir + "/../rules.json");
     },
     "not a regular file", Inspect::kMayPass, {"--rules", "@/rules.json"}},
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class HostileTest : public ::testing::TestWithParam<Case> {};

std::vector<std::string> Leftovers(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".moepack-tmp") != std::string::npos) out.push_back(n);
  }
  return out;
}

void ExpectCleanFailure(const Exit& r, const std::string& expect, const std::string& what) {
  EXPECT_TRUE(r.exited) << what << ": " << r.Describe() << "\n" << r.err;
  EXPECT_EQ(r.code, 1) << what << ": " << r.Describe() << "\n" << r.err;
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << what << " stderr:\n" << r.err;
  EXPECT_EQ(lines[0].rfind("moepack: error: ", 0), 0u) << what << ": " << lines[0];
  EXPECT_NE(lines[0].find(expect), std::string::npos) << what << ": expected '" << expect << "' in\n" << lines[0];
}

TEST_P(HostileTest, FailsCleanly) {
  const Case& c = GetParam();
  TempDir t;
  const Src src{t / "src"};
  fs::create_directories(src.dir);
  c.build(src);
  const std::string before = Snapshot(t.path());
  const std::string src_arg = t / c.src_rel;
  const std::string dst = t / "dst";

  std::vector<std::string> argv = {MOEPACK_BINARY, "convert", src_arg, dst};
  for (std::string a : c.args) {
    if (auto p = a.find('@'); p != std::string::npos) a.replace(p, 1, t.path());
    argv.push_back(a);
  }
  TempDir io;
  Exit r = RunProcess(argv, io.path(), "", std::chrono::seconds(30));
  ExpectCleanFailure(r, c.expect, "convert");
  EXPECT_FALSE(fs::exists(dst)) << "convert left DST behind";
  EXPECT_TRUE(Leftovers(t.path()).empty()) << "convert left a temporary: " << Leftovers(t.path())[0];
  EXPECT_TRUE(Snapshot(t.path()) == before) << "convert changed SRC";

  Exit i = RunProcess({MOEPACK_BINARY, "inspect", src_arg}, io.path(), "", std::chrono::seconds(30));
  if (c.inspect == Inspect::kFails) {
    ExpectCleanFailure(i, c.expect, "inspect");
  } else {
    EXPECT_TRUE(i.exited && (i.code == 0 || i.code == 1)) << "inspect: " << i.Describe() << "\n" << i.err;
    if (i.code == 1) {
      EXPECT_EQ(Lines(i.err).size(), 1u) << i.err;
    }
  }
  EXPECT_TRUE(Snapshot(t.path()) == before) << "inspect changed SRC";
}

INSTANTIATE_TEST_SUITE_P(Corpus, HostileTest, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// Not every oddity is an error: links that loop or dangle among the other
// files are not carried over, and the conversion goes on.
TEST(HostileExtras, BrokenLinksAmongOtherFilesAreSkipped) {
  TempDir t, io;
  const Src src{t / "src"};
  fs::create_directories(src.dir + "/sub");
  src.Qwen();
  src.Model(TinyQwen());
  fs::create_symlink("loop", src.dir + "/loop");
  fs::create_symlink("loop.safetensors", src.dir + "/loop.safetensors");
  fs::create_symlink("nowhere", src.dir + "/sub/dangling");
  Exit r = RunProcess({MOEPACK_BINARY, "convert", src.dir, t / "dst"}, io.path());
  ASSERT_TRUE(r.exited && r.code == 0) << r.Describe() << "\n" << r.err;
  EXPECT_TRUE(fs::exists(t / "dst/config.json"));
  EXPECT_FALSE(fs::exists(fs::symlink_status(t / "dst/loop")));
  Exit v = RunProcess({MOEPACK_BINARY, "verify", src.dir, t / "dst"}, io.path());
  EXPECT_TRUE(v.exited && v.code == 0) << v.err;
}

// verify --forward runs a reference MoE layer over the experts it finds: odd
// but convertible checkpoints must get a verdict, not a crash.
TEST(HostileExtras, VerifyForwardOnOddCheckpoints) {
  struct Odd {
    const char* name;
    std::function<void(const Src&)> build;
    std::vector<std::string> flags;
  };
  const Odd odds[] = {
      {"one_dimensional_experts",
       [](const Src& s) {
         s.Config(QwenConfigWithoutI());
         std::vector<T> t;
         for (int j = 0; j < 4; ++j) {
           for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
             t.push_back({"model.layers.0.mlp.experts." + std::to_string(j) + "." + p + ".weight", "BF16", {4}});
           }
         }
         s.Model(t);
       },
       {}},
      {"hash_in_a_tensor_name",
       [](const Src& s) {
         s.Config(kVlConfig);
         s.Model({{"model.language_model.layers.0.mlp.experts.gate_up_proj", "BF16", {4, 12, 8}},
                  {"model.language_model.layers.0.mlp.experts.down_proj", "BF16", {4, 4, 12}},
                  {"model.language_model.layers.0.mlp.experts.gate_up_proj#x", "U8", {1}},
                  {"model.language_model.layers.0.mlp.experts.gate_up_proj#99999999999", "U8", {1}}});
       },
       {}},
      {"transposed_down_without_gate_up",
       [](const Src& s) {
         s.Config(kVlConfig);
         s.Model({{"model.language_model.layers.0.mlp.experts.down_proj", "BF16", {4, 4, 12}}});
       },
       {}},
  };
  for (const Odd& o : odds) {
    SCOPED_TRACE(o.name);
    TempDir t, io;
    const Src src{t / "src"};
    fs::create_directories(src.dir);
    o.build(src);
    Exit c = RunProcess({MOEPACK_BINARY, "convert", src.dir, t / "dst"}, io.path());
    ASSERT_TRUE(c.exited && c.code == 0) << c.Describe() << "\n" << c.err;
    Exit v = RunProcess({MOEPACK_BINARY, "verify", "--forward", src.dir, t / "dst"}, io.path());
    EXPECT_TRUE(v.exited && v.code == 0) << v.Describe() << "\n" << v.err;
  }
}

TEST(HostileCorpus, IsLargeAndNamesAreUnique) {
  std::set<std::string> names;
  for (const Case& c : kCases) EXPECT_TRUE(names.insert(c.name).second) << c.name;
  EXPECT_GE(names.size(), 40u);
}

}  // namespace
}  // namespace hostile_test
}  // namespace moepack::testing
