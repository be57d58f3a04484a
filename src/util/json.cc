#include "util/json.h"

#include <cmath>
#include <set>
#include <vector>

namespace moepack::internal {

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) { ++i; continue; }
    int len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > n) return false;
    for (int k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return false;
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

std::string JsonTypeName(const nlohmann::json& j) {
  if (j.is_number_float()) {
    // nlohmann stores integers beyond int64/uint64 as doubles.
    const double v = j.get<double>();
    if (v >= 18446744073709551616.0 || v < -9223372036854775808.0) return "out-of-range integer";
    return v == std::floor(v) ? "non-integer number" : "fractional number";
  }
  if (j.is_number_integer() && !j.is_number_unsigned()) return "negative integer";
  return j.type_name();
}

std::string JsonTypeWithArticle(const nlohmann::json& j) {
  if (j.is_null()) return "null";
  std::string name = JsonTypeName(j);
  const bool vowel = name[0] == 'a' || name[0] == 'e' || name[0] == 'i' || name[0] == 'o' || name[0] == 'u';
  return (vowel ? "an " : "a ") + name;
}

Result<nlohmann::json> ParseJsonStrict(std::string_view text, const std::string& what) {
  if (!IsValidUtf8(text)) return Status::Corrupt(what + ": not valid UTF-8");
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto cb = [&](int /*depth*/, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) keys.emplace_back();
    else if (ev == E::object_end) { if (!keys.empty()) keys.pop_back(); }
    else if (ev == E::key && !keys.empty()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    std::string m = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag.
    if (auto p = m.find("] "); p != std::string::npos) m = m.substr(p + 2);
    return Status::Corrupt(what + ": invalid JSON (" + m + ")");
  }
  if (!duplicate.empty()) return Status::Corrupt(what + ": duplicate key '" + duplicate + "'");
  return j;
}

}  // namespace moepack::internal
