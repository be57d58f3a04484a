#include "moepack/config.h"

#include "util/json.h"

namespace moepack {
namespace {

using nlohmann::json;

// Unsigned values past INT64_MAX do not fit: they count as non-integers.
bool FitsInt64(const json& v) {
  return v.is_number_unsigned() ? v.get<uint64_t>() <= uint64_t{INT64_MAX} : v.is_number_integer();
}

void Flatten(const json& j, const std::string& prefix, std::map<std::string, int64_t>& ints,
             std::map<std::string, std::string>& strings, std::map<std::string, bool>& present,
             std::map<std::string, bool>& nulls, int depth) {
  if (depth > 8) return;  // configs nest two or three levels; deeper data is irrelevant
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    present[key] = true;
    if (it->is_null()) nulls[key] = true;
    if (FitsInt64(*it)) ints[key] = it->get<int64_t>();
    else if (it->is_string()) strings[key] = it->get<std::string>();
    else if (it->is_object()) Flatten(*it, key, ints, strings, present, nulls, depth + 1);
    else if (it->is_array() && it->size() <= 16) {
      // Short integer lists (quantization_config.weight_block_size) by index.
      for (size_t i = 0; i < it->size(); ++i) {
        if (FitsInt64((*it)[i])) ints[key + "." + std::to_string(i)] = (*it)[i].get<int64_t>();
      }
    }
  }
}

const std::vector<std::string> kNestedPrefixes = {"", "text_config.", "thinker_config.text_config.",
                                                  "thinker_config.", "language_config."};

}  // namespace

Result<ModelConfig> ModelConfig::Parse(const std::string& text, const std::string& what) {
  MOEPACK_ASSIGN_OR_RETURN(json j, internal::ParseJsonStrict(text, what));
  if (!j.is_object()) return Status::Corrupt(what + ": not a JSON object");
  ModelConfig c;
  c.text_ = text;
  Flatten(j, "", c.ints_, c.strings_, c.present_, c.nulls_, 0);
  if (j.contains("model_type") && !j["model_type"].is_string()) {
    return Status::Corrupt(what + ": model_type is " + internal::JsonTypeWithArticle(j["model_type"]) + ", not a string");
  }
  for (const auto& p : kNestedPrefixes) {
    if (auto s = c.String(p + "model_type")) {
      c.model_type_ = *s;
      break;
    }
  }
  if (j.contains("architectures")) {
    if (!j["architectures"].is_array()) return Status::Corrupt(what + ": architectures is not an array");
    for (const auto& a : j["architectures"]) {
      if (!a.is_string()) return Status::Corrupt(what + ": architectures holds a non-string");
      c.architectures_.push_back(a.get<std::string>());
    }
  }
  for (const char* k : {"num_experts", "n_routed_experts", "num_local_experts"}) {
    for (const auto& p : kNestedPrefixes) {
      std::string key = p + k;
      // null and 0 occur in real configs of dense variants: they mean "no
      // routed experts", and conversion refuses them only where it fuses.
      if (c.present_.count(key) && !c.ints_.count(key) && !c.nulls_.count(key)) {
        // Hunyuan configs may give one count per layer: which layer a tensor
        // is in is not something the rules know, so say so.
        const bool list = c.ints_.count(key + ".0") > 0;
        return Status::Corrupt(what + ": " + key + " is not an integer" +
                               (list ? " (a list of per-layer expert counts is not supported)" : ""));
      }
      if (auto v = c.Int(key); v && *v < 0) return Status::Corrupt(what + ": " + key + " must not be negative");
    }
  }
  return c;
}

std::optional<int64_t> ModelConfig::Int(const std::string& path) const {
  auto it = ints_.find(path);
  if (it == ints_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> ModelConfig::String(const std::string& path) const {
  auto it = strings_.find(path);
  if (it == strings_.end()) return std::nullopt;
  return it->second;
}

bool ModelConfig::Has(const std::string& path) const { return present_.count(path) > 0; }

std::optional<int64_t> ModelConfig::FirstInt(const std::vector<std::string>& keys) const {
  for (const auto& p : kNestedPrefixes) {
    for (const auto& k : keys) {
      if (auto v = Int(p + k)) return v;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ModelConfig::num_experts() const {
  return FirstInt({"num_experts", "n_routed_experts", "num_local_experts"});
}
std::optional<int64_t> ModelConfig::moe_intermediate_size() const { return FirstInt({"moe_intermediate_size"}); }
std::optional<int64_t> ModelConfig::hidden_size() const { return FirstInt({"hidden_size"}); }
std::optional<int64_t> ModelConfig::first_k_dense_replace() const { return FirstInt({"first_k_dense_replace"}); }

}  // namespace moepack
