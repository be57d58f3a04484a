// A model's config.json, reduced to what conversion needs. Nested configs
// (text_config, thinker_config.text_config, ...) are reachable by dotted path.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moepack/status.h"

namespace moepack {

class ModelConfig {
 public:
  ModelConfig() = default;
  // `what` names the file in errors.
  static Result<ModelConfig> Parse(const std::string& text, const std::string& what);

  // Integer field by dotted path ("text_config.num_experts"; elements of
  // short lists by index: "quantization_config.weight_block_size.0");
  // nullopt when absent or not an integer.
  std::optional<int64_t> Int(const std::string& path) const;
  std::optional<std::string> String(const std::string& path) const;
  bool Has(const std::string& path) const;

  // model_type at the top level, else from the first nested config that has one.
  const std::string& model_type() const { return model_type_; }
  const std::vector<std::string>& architectures() const { return architectures_; }
  // The first of num_experts / n_routed_experts / num_local_experts found at
  // the top level or in text_config / thinker_config.text_config.
  std::optional<int64_t> num_experts() const;
  std::optional<int64_t> moe_intermediate_size() const;
  std::optional<int64_t> hidden_size() const;
  std::optional<int64_t> first_k_dense_replace() const;
  const std::string& text() const { return text_; }

 private:
  std::optional<int64_t> FirstInt(const std::vector<std::string>& keys) const;
  std::map<std::string, int64_t> ints_;
  std::map<std::string, std::string> strings_;
  std::map<std::string, bool> present_;
  std::map<std::string, bool> nulls_;
  std::string model_type_;
  std::vector<std::string> architectures_;
  std::string text_;
};

}  // namespace moepack
