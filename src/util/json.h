// Strict JSON parsing shared by every reader: valid UTF-8, no duplicate keys
// at any depth (nlohmann would silently keep the last one).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "moepack/status.h"

namespace moepack::internal {

bool IsValidUtf8(std::string_view s);

// `what` names the document in errors, e.g. "config.json".
Result<nlohmann::json> ParseJsonStrict(std::string_view text, const std::string& what);

// Type name for messages: "string", "number", "negative integer",
// "fractional number", "out-of-range integer", ...
std::string JsonTypeName(const nlohmann::json& j);
// The same with its article: "a string", "an array", "null".
std::string JsonTypeWithArticle(const nlohmann::json& j);

}  // namespace moepack::internal
