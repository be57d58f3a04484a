// A model directory as found on disk: config.json, one model.safetensors or
// shards with model.safetensors.index.json, and other (non-weight) files.
// Opening reads headers only and cross-checks the index with the shards.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "moepack/config.h"
#include "moepack/safetensors.h"
#include "moepack/status.h"

namespace moepack {

inline constexpr const char* kIndexFile = "model.safetensors.index.json";
inline constexpr const char* kSingleFile = "model.safetensors";

struct Shard {
  std::string filename;  // relative to the checkpoint directory
  std::string path;
  Header header;
};

struct TensorLocation {
  uint32_t shard = 0;
  const TensorInfo* info = nullptr;  // owned by the shard's header
};

class Checkpoint {
 public:
  // `path` is a model directory, an index file, or one .safetensors file.
  static Result<Checkpoint> Open(const std::string& path);

  Checkpoint(Checkpoint&&) = default;
  Checkpoint& operator=(Checkpoint&&) = default;

  const std::string& dir() const { return dir_; }
  bool has_index() const { return has_index_; }
  const std::optional<ModelConfig>& config() const { return config_; }
  const std::vector<Shard>& shards() const { return shards_; }
  // Tensor names in a stable order: shard order, then offset order.
  const std::vector<std::string>& names() const { return names_; }
  const TensorLocation* Find(std::string_view name) const;
  // Files other than the shards and the index, relative to dir(), to be
  // copied as they are (config.json, tokenizer files, ...).
  const std::vector<std::string>& aux_files() const { return aux_files_; }
  uint64_t total_bytes() const;

 private:
  Checkpoint() = default;
  // The steps of Open, in order.
  Status ReadConfig();
  Result<std::set<std::string>> ShardFiles() const;
  Status OpenIndexedShards(const std::string& index_path, const std::map<std::string, std::string>& weight_map,
                           const std::set<std::string>& present);
  Status OpenSingleShard(const std::set<std::string>& present);
  Status Index();
  Status CheckIndex(const std::string& index_path, const std::map<std::string, std::string>& weight_map);
  Status CollectAuxFiles(const std::string& index_path, const std::set<std::string>& weight_files);
  std::string dir_;
  bool has_index_ = false;
  std::optional<ModelConfig> config_;
  std::vector<Shard> shards_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, TensorLocation> by_name_;
  std::vector<std::string> aux_files_;
};

// True for names of files that moepack writes itself while converting.
bool IsTemporaryName(std::string_view filename);

}  // namespace moepack
