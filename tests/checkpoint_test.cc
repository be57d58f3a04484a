// Model directories: single file, shards + index, the cross-checks between
// the index and the shards, aux files.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "moepack/checkpoint.h"
#include "moepack/safetensors.h"
#include "testutil.h"

namespace moepack {
namespace checkpoint_test {
namespace {
namespace fs = std::filesystem;

using moepack::testing::TempDir;
using moepack::testing::WriteFileOrDie;

// A shard holding U8 [n] tensors (n = 1 + position), each filled with its index.
void WriteShard(const std::string& path, const std::vector<std::string>& names) {
  std::vector<TensorSpec> specs;
  std::vector<std::string> data;
  for (size_t i = 0; i < names.size(); ++i) {
    specs.push_back({names[i], DType::U8, {i + 1}});
    data.push_back(std::string(i + 1, static_cast<char>('a' + i)));
  }
  std::vector<std::string_view> views(data.begin(), data.end());
  Status s = WriteFile(path, {{"format", "pt"}}, specs, views);
  ASSERT_TRUE(s.ok()) << s.message();
}

std::string IndexJson(const std::vector<std::pair<std::string, std::string>>& weight_map) {
  std::string j = "{\"metadata\":{\"total_size\":0},\"weight_map\":{";
  for (size_t i = 0; i < weight_map.size(); ++i) {
    if (i) j += ",";
    j += "\"" + weight_map[i].first + "\":\"" + weight_map[i].second + "\"";
  }
  return j + "}}";
}

const char* kS1 = "model-00001-of-00002.safetensors";
const char* kS2 = "model-00002-of-00002.safetensors";

// Two shards {a, b} and {c}, an index, config and tokenizer files.
void MakeSharded(const TempDir& d) {
  WriteShard(d / kS1, {"a", "b"});
  WriteShard(d / kS2, {"c"});
  WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}, {"b", kS1}, {"c", kS2}}));
  WriteFileOrDie(d / "config.json", R"({"model_type":"qwen3_moe","num_experts":4})");
  WriteFileOrDie(d / "tokenizer.json", "{}");
}

std::vector<std::string> Shards(const Checkpoint& c) {
  std::vector<std::string> v;
  for (const auto& s : c.shards()) v.push_back(s.filename);
  return v;
}

using Strings = std::vector<std::string>;

TEST(CheckpointTest, SingleFileDirectory) {
  TempDir d;
  WriteShard(d / kSingleFile, {"x", "y"});
  WriteFileOrDie(d / "config.json", R"({"model_type":"mixtral","num_local_experts":8})");
  WriteFileOrDie(d / "tokenizer.json", "{}");
  WriteFileOrDie(d / "generation_config.json", "{}");
  fs::create_directories(d / "sub/deeper");
  WriteFileOrDie(d / "sub/notes.md", "hi");
  WriteFileOrDie(d / "sub/deeper/model.safetensors", "not a checkpoint file, just carried over");
  fs::create_directories(d / ".cache/huggingface/download");
  WriteFileOrDie(d / ".cache/huggingface/download/config.json.metadata", "download bookkeeping, not carried over");
  auto c = Checkpoint::Open(d.path());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->dir(), d.path());
  EXPECT_FALSE(c->has_index());
  EXPECT_EQ(Shards(*c), Strings{kSingleFile});
  EXPECT_EQ(c->shards()[0].path, d / kSingleFile);
  EXPECT_EQ(c->names(), (Strings{"x", "y"}));
  ASSERT_TRUE(c->config().has_value());
  EXPECT_EQ(c->config()->model_type(), "mixtral");
  EXPECT_EQ(c->config()->num_experts(), 8);
  EXPECT_EQ(c->aux_files(),
            (Strings{"config.json", "generation_config.json", "sub/deeper/model.safetensors", "sub/notes.md",
                     "tokenizer.json"}));
  const TensorLocation* y = c->Find("y");
  ASSERT_NE(y, nullptr);
  EXPECT_EQ(y->shard, 0u);
  EXPECT_EQ(y->info->name, "y");
  EXPECT_EQ(y->info->nbytes(), 2u);
  EXPECT_EQ(c->Find("z"), nullptr);
  EXPECT_EQ(c->total_bytes(), 3u);
}

TEST(CheckpointTest, ShardsAndIndex) {
  TempDir d;
  MakeSharded(d);
  auto c = Checkpoint::Open(d.path());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_TRUE(c->has_index());
  EXPECT_EQ(Shards(*c), (Strings{kS1, kS2}));
  EXPECT_EQ(c->names(), (Strings{"a", "b", "c"}));
  EXPECT_EQ(c->Find("a")->shard, 0u);
  EXPECT_EQ(c->Find("c")->shard, 1u);
  EXPECT_EQ(c->Find("c")->info, c->shards()[1].header.Find("c"));
  EXPECT_EQ(c->total_bytes(), 1u + 2u + 1u);
  EXPECT_EQ(c->aux_files(), (Strings{"config.json", "tokenizer.json"}));
  EXPECT_EQ(c->config()->model_type(), "qwen3_moe");
}

TEST(CheckpointTest, IndexFilePath) {
  TempDir d;
  MakeSharded(d);
  auto c = Checkpoint::Open(d / kIndexFile);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->dir(), d.path());
  EXPECT_TRUE(c->has_index());
  EXPECT_EQ(c->names(), (Strings{"a", "b", "c"}));
  EXPECT_EQ(c->aux_files(), (Strings{"config.json", "tokenizer.json"}));
}

TEST(CheckpointTest, IndexWithAnotherNameIsNotAnAuxFile) {
  TempDir d;
  WriteShard(d / kS1, {"a"});
  WriteFileOrDie(d / "custom.safetensors.index.json", IndexJson({{"a", kS1}}));
  WriteFileOrDie(d / "config.json", "{}");
  auto c = Checkpoint::Open(d / "custom.safetensors.index.json");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->aux_files(), Strings{"config.json"});
}

TEST(CheckpointTest, SingleSafetensorsPath) {
  TempDir d;
  MakeSharded(d);
  auto c = Checkpoint::Open(d / kS2);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->dir(), d.path());
  EXPECT_FALSE(c->has_index());
  EXPECT_EQ(Shards(*c), Strings{kS2});
  EXPECT_EQ(c->names(), Strings{"c"});
  EXPECT_FALSE(c->config().has_value());
  EXPECT_TRUE(c->aux_files().empty());
}

TEST(CheckpointTest, TrailingSlash) {
  TempDir d;
  MakeSharded(d);
  auto c = Checkpoint::Open(d.path() + "/");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->names().size(), 3u);
  EXPECT_EQ(c->aux_files(), (Strings{"config.json", "tokenizer.json"}));
}

TEST(CheckpointTest, TemporaryEntriesIgnored) {
  TempDir d;
  MakeSharded(d);
  // Leftovers of an interrupted conversion: neither shards nor aux files.
  WriteFileOrDie(d / "model-00003-of-00003.safetensors.moepack-tmp", "junk");
  WriteFileOrDie(d / "x.moepack-tmp.safetensors", "junk");
  fs::create_directories(d / ".moepack-tmp-1234/nested");
  WriteFileOrDie(d / ".moepack-tmp-1234/model.safetensors", "junk");
  WriteFileOrDie(d / ".moepack-tmp-1234/nested/config.json", "junk");
  auto c = Checkpoint::Open(d.path());
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(Shards(*c), (Strings{kS1, kS2}));
  EXPECT_EQ(c->aux_files(), (Strings{"config.json", "tokenizer.json"}));
  EXPECT_TRUE(IsTemporaryName("a.moepack-tmp"));
  EXPECT_TRUE(IsTemporaryName(".moepack-tmp-1/x"));
  EXPECT_FALSE(IsTemporaryName("model.safetensors"));
  EXPECT_FALSE(IsTemporaryName("moepack.json"));
}

// The HuggingFace cache: every file in a snapshot is a symlink to a blob.
TEST(CheckpointTest, SymlinkedFilesAsInTheHubCache) {
  TempDir d;
  const std::string blobs = d / "blobs";
  const std::string snap = d / "snapshots/abc123";
  fs::create_directories(blobs);
  fs::create_directories(snap);
  WriteShard(blobs + "/1111", {"a", "b"});
  WriteShard(blobs + "/2222", {"c"});
  WriteFileOrDie(blobs + "/3333", IndexJson({{"a", kS1}, {"b", kS1}, {"c", kS2}}));
  WriteFileOrDie(blobs + "/4444", R"({"model_type":"olmoe"})");
  fs::create_symlink("../../blobs/1111", snap + "/" + kS1);
  fs::create_symlink("../../blobs/2222", snap + "/" + kS2);
  fs::create_symlink("../../blobs/3333", snap + "/" + kIndexFile);
  fs::create_symlink("../../blobs/4444", snap + "/config.json");
  auto c = Checkpoint::Open(snap);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(Shards(*c), (Strings{kS1, kS2}));
  EXPECT_EQ(c->names(), (Strings{"a", "b", "c"}));
  EXPECT_EQ(c->config()->model_type(), "olmoe");
  EXPECT_EQ(c->aux_files(), Strings{"config.json"});
}

// Relative paths, including "." and a bare index file name.
TEST(CheckpointTest, RelativePaths) {
  TempDir d;
  MakeSharded(d);
  fs::create_directories(d / "sub");
  WriteFileOrDie(d / "sub/readme.md", "hi");
  const fs::path cwd = fs::current_path();
  fs::current_path(d.path());
  for (const char* p : {".", "./", kIndexFile}) {
    SCOPED_TRACE(p);
    auto c = Checkpoint::Open(p);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_EQ(c->names(), (Strings{"a", "b", "c"}));
    EXPECT_EQ(c->aux_files(), (Strings{"config.json", "sub/readme.md", "tokenizer.json"}));
    EXPECT_TRUE(ReadHeader(c->shards()[1].path).ok()) << c->shards()[1].path;
  }
  fs::current_path(cwd);
}

// ---------------------------------------------------------------- failures

struct BadDir {
  const char* label;
  std::function<void(const TempDir&)> setup;
  std::string open;  // relative to the directory; "" = the directory itself
  Status::Code code;
  std::vector<std::string> want;  // substrings; "$D" stands for the directory
};

std::vector<BadDir> BadDirs() {
  auto sharded_with_index = [](std::vector<std::pair<std::string, std::string>> wm) {
    return [wm](const TempDir& d) {
      WriteShard(d / kS1, {"a", "b"});
      WriteShard(d / kS2, {"c"});
      WriteFileOrDie(d / kIndexFile, IndexJson(wm));
    };
  };
  auto index_text = [](std::string text) {
    return [text](const TempDir& d) {
      WriteShard(d / kS1, {"a"});
      WriteFileOrDie(d / kIndexFile, text);
    };
  };
  const std::string idx = std::string("$D/") + kIndexFile;
  using C = Status::Code;
  return {
      {"nonexistent", [](const TempDir&) {}, "nope", C::kNotFound, {"$D/nope", "no such file"}},
      {"nonexistent_index", [](const TempDir&) {}, "x.index.json", C::kNotFound, {"x.index.json"}},
      {"not_a_checkpoint_file",
       [](const TempDir& d) { WriteFileOrDie(d / "config.json", "{}"); },
       "config.json",
       C::kInvalidArgument,
       {"config.json", "not a model directory"}},
      {"empty_dir", [](const TempDir&) {}, "", C::kNotFound, {"$D", "no model.safetensors"}},
      {"config_only",
       [](const TempDir& d) { WriteFileOrDie(d / "config.json", "{}"); },
       "",
       C::kNotFound,
       {"no model.safetensors"}},
      {"index_names_missing_shard",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a", "b"});
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}, {"b", kS1}, {"c", kS2}}));
       },
       "",
       C::kCorrupt,
       {idx, "names missing shard '" + std::string(kS2) + "'"}},
      {"shard_not_listed",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a", "b"});
         WriteShard(d / kS2, {"c"});
         WriteShard(d / "extra.safetensors", {"e"});
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}, {"b", kS1}, {"c", kS2}}));
       },
       "",
       C::kCorrupt,
       {"$D", "shard 'extra.safetensors' is not listed"}},
      {"listed_but_absent",
       sharded_with_index({{"a", kS1}, {"b", kS1}, {"c", kS2}, {"ghost", kS2}}),
       "",
       C::kCorrupt,
       {idx, "tensor 'ghost'", kS2, "absent"}},
      {"listed_under_wrong_shard",
       sharded_with_index({{"a", kS1}, {"b", kS2}, {"c", kS2}}),
       "",
       C::kCorrupt,
       {idx, "tensor 'b' is listed in " + std::string(kS2) + " but stored in " + kS1}},
      {"in_two_shards",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a", "b"});
         WriteShard(d / kS2, {"b", "c"});
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}, {"b", kS1}, {"c", kS2}}));
       },
       "",
       C::kCorrupt,
       {"$D: tensor 'b' is in two shards", kS1, kS2}},
      {"in_shard_not_in_index",
       sharded_with_index({{"a", kS1}, {"c", kS2}}),
       "",
       C::kCorrupt,
       {idx, "tensor 'b' in " + std::string(kS1) + " is not listed"}},
      {"several_files_no_index",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a"});
         WriteShard(d / kS2, {"c"});
       },
       "",
       C::kCorrupt,
       {"$D", "2 .safetensors files", kS1, "no model.safetensors.index.json"}},
      {"single_and_shard_no_index",
       [](const TempDir& d) {
         WriteShard(d / kSingleFile, {"a"});
         WriteShard(d / kS2, {"c"});
       },
       "",
       C::kCorrupt,
       {"$D", "2 .safetensors files"}},
      {"one_odd_file_no_index",
       [](const TempDir& d) { WriteShard(d / "weights.safetensors", {"a"}); },
       "",
       C::kCorrupt,
       {"$D", "'weights.safetensors' is not named model.safetensors"}},
      {"single_file_and_index_unlisted",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a"});
         WriteShard(d / kSingleFile, {"z"});
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}}));
       },
       "",
       C::kCorrupt,
       {"shard 'model.safetensors' is not listed"}},
      {"index_invalid_json", index_text("{\"weight_map\":{\"a\":"), "", C::kCorrupt, {idx, "invalid JSON"}},
      {"index_not_utf8", index_text("{\"weight_map\":{\"a\xff\":\"x\"}}"), "", C::kCorrupt, {idx, "UTF-8"}},
      {"index_not_object", index_text("[]"), "", C::kCorrupt, {idx, "not a JSON object"}},
      {"index_no_weight_map", index_text("{\"metadata\":{}}"), "", C::kCorrupt, {idx, "no weight_map"}},
      {"weight_map_array", index_text("{\"weight_map\":[]}"), "", C::kCorrupt, {idx, "weight_map is not an object"}},
      {"weight_map_value_number",
       index_text("{\"weight_map\":{\"a\":1}}"),
       "",
       C::kCorrupt,
       {idx, "weight_map entry 'a' is not a string"}},
      {"weight_map_value_slash",
       index_text("{\"weight_map\":{\"a\":\"sub/model-00001-of-00002.safetensors\"}}"),
       "",
       C::kCorrupt,
       {idx, "weight_map entry 'a' names an invalid file 'sub/model-00001-of-00002.safetensors'"}},
      {"weight_map_value_dotdot",
       index_text("{\"weight_map\":{\"a\":\"..\"}}"),
       "",
       C::kCorrupt,
       {idx, "invalid file '..'"}},
      {"weight_map_value_empty",
       index_text("{\"weight_map\":{\"a\":\"\"}}"),
       "",
       C::kCorrupt,
       {idx, "invalid file ''"}},
      {"weight_map_duplicate",
       index_text(std::string("{\"weight_map\":{\"a\":\"") + kS1 + "\",\"a\":\"" + kS1 + "\"}}"),
       "",
       C::kCorrupt,
       {idx, "duplicate key 'a'"}},
      {"index_metadata_not_object",
       index_text(std::string("{\"metadata\":3,\"weight_map\":{\"a\":\"") + kS1 + "\"}}"),
       "",
       C::kCorrupt,
       {idx, "metadata is not an object"}},
      {"corrupt_shard",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a"});
         WriteFileOrDie(d / kS2, std::string("\x02\0\0\0\0\0\0\0{}", 10) + "xx");
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}}));
       },
       "",
       C::kCorrupt,
       {"shard '" + std::string(kS2) + "' is not listed"}},
      {"corrupt_listed_shard",
       [](const TempDir& d) {
         WriteShard(d / kS1, {"a"});
         WriteFileOrDie(d / kS2, std::string("\x02\0\0\0\0\0\0\0{}", 10) + "xx");
         WriteFileOrDie(d / kIndexFile, IndexJson({{"a", kS1}, {"c", kS2}}));
       },
       "",
       C::kCorrupt,
       {"$D/" + std::string(kS2), "2 trailing bytes"}},
      {"corrupt_single_file",
       [](const TempDir& d) { WriteFileOrDie(d / kSingleFile, "short"); },
       "",
       C::kCorrupt,
       {"$D/model.safetensors", "too short"}},
      {"corrupt_single_file_path",
       [](const TempDir& d) { WriteFileOrDie(d / "lone.safetensors", std::string("\x02\0\0\0\0\0\0\0[]", 10)); },
       "lone.safetensors",
       C::kCorrupt,
       {"$D/lone.safetensors", "does not start with '{'"}},
      {"malformed_config",
       [](const TempDir& d) {
         WriteShard(d / kSingleFile, {"a"});
         WriteFileOrDie(d / "config.json", "{\"model_type\":");
       },
       "",
       C::kCorrupt,
       {"$D/config.json", "invalid JSON"}},
      {"config_duplicate_key",
       [](const TempDir& d) {
         WriteShard(d / kSingleFile, {"a"});
         WriteFileOrDie(d / "config.json", "{\"num_experts\":8,\"num_experts\":16}");
       },
       "",
       C::kCorrupt,
       {"$D/config.json", "duplicate key 'num_experts'"}},
  };
}

std::string Expand(const std::string& s, const std::string& dir) {
  std::string out = s;
  if (auto p = out.find("$D"); p != std::string::npos) out.replace(p, 2, dir);
  return out;
}

TEST(CheckpointTest, Refusals) {
  for (const BadDir& c : BadDirs()) {
    SCOPED_TRACE(c.label);
    TempDir d;
    c.setup(d);
    auto r = Checkpoint::Open(c.open.empty() ? d.path() : d / c.open);
    ASSERT_FALSE(r.ok()) << "opened";
    const std::string msg = r.status().message();
    EXPECT_EQ(r.status().code(), c.code) << msg;
    for (const auto& w : c.want) {
      const std::string e = Expand(w, d.path());
      EXPECT_NE(msg.find(e), std::string::npos) << "want '" << e << "' in: " << msg;
    }
  }
}

TEST(CheckpointTest, OpeningReadsHeadersOnly) {
  TempDir d;
  // A 32 GiB sparse shard: opening the directory must not touch its data.
  const uint64_t big = uint64_t{32} << 30;
  auto layout = LayoutFile({}, {{"w", DType::U8, {big}}});
  ASSERT_TRUE(layout.ok());
  WriteFileOrDie(d / kSingleFile, layout->prefix);
  std::error_code ec;
  fs::resize_file(d / kSingleFile, layout->file_size(), ec);
  if (ec) GTEST_SKIP() << "no sparse files here: " << ec.message();
  auto start = std::chrono::steady_clock::now();
  auto c = Checkpoint::Open(d.path());
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->total_bytes(), big);
  EXPECT_LT(ms, 1000);
}

}  // namespace
}  // namespace checkpoint_test
}  // namespace moepack
