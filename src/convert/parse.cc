#include "moepack/parse.h"

#include <cctype>
#include <optional>
#include <string>

namespace moepack {

Result<uint64_t> ParseSize(std::string_view text) {
  const std::string t(text);
  size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i == 0) return Status::InvalidArgument("invalid size '" + t + "' (expected e.g. 5GB, 500MB)");
  uint64_t n = 0;
  for (size_t k = 0; k < i; ++k) {
    if (__builtin_mul_overflow(n, 10u, &n) || __builtin_add_overflow(n, static_cast<uint64_t>(t[k] - '0'), &n)) {
      return Status::InvalidArgument("size '" + t + "' is too large");
    }
  }
  std::string unit;
  for (size_t k = i; k < t.size(); ++k) unit.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(t[k]))));
  static const std::pair<const char*, uint64_t> kUnits[] = {
      {"", 1}, {"B", 1}, {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000}, {"TB", 1000000000000},
      {"KIB", 1ull << 10}, {"MIB", 1ull << 20}, {"GIB", 1ull << 30}, {"TIB", 1ull << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (unit == name) {
      uint64_t v;
      if (__builtin_mul_overflow(n, mult, &v)) return Status::InvalidArgument("size '" + t + "' is too large");
      if (v == 0) return Status::InvalidArgument("size must be positive");
      return v;
    }
  }
  return Status::InvalidArgument("invalid size unit in '" + t + "' (use B, KB, MB, GB, TB, KiB, MiB, GiB)");
}

Result<Direction> ParseDirection(std::string_view text) {
  for (Direction d : {Direction::kToFused, Direction::kToPerExpert}) {
    if (text == DirectionName(d)) return d;
  }
  return Status::InvalidArgument("'" + std::string(text) + "' is not a layout (fused or per-expert)");
}

std::string_view DirectionName(Direction d) { return d == Direction::kToFused ? "fused" : "per-expert"; }

Result<SourceLayout> ParseSourceLayout(std::string_view text) {
  if (text.empty()) return SourceLayout::kUnspecified;
  if (text == "hf") return SourceLayout::kHub;
  if (text == "v5") return SourceLayout::kV5;
  return Status::InvalidArgument("'" + std::string(text) + "' is not a source layout (hf or v5)");
}

}  // namespace moepack

namespace moepack {

Result<std::pair<uint64_t, uint64_t>> ParseBlockSize(std::string_view text) {
  auto number = [](std::string_view t) -> std::optional<uint64_t> {
    if (t.empty() || t.size() > 5 || t.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    const uint64_t v = std::stoull(std::string(t));
    if (v == 0 || v > 65536) return std::nullopt;
    return v;
  };
  const size_t x = text.find('x');
  auto r = number(text.substr(0, x));
  auto c = x == std::string_view::npos ? r : number(text.substr(x + 1));
  if (!r || !c) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a block size (e.g. 128 or 128x128, at most 65536)");
  }
  return std::make_pair(*r, *c);
}

namespace {
constexpr std::pair<std::string_view, DTypeChange> kDTypeChanges[] = {{"", DTypeChange::kKeep},
                                                                     {"bf16", DTypeChange::kToBF16},
                                                                     {"f16", DTypeChange::kToF16},
                                                                     {"f32", DTypeChange::kToF32},
                                                                     {"fp8", DTypeChange::kToFP8}};
}  // namespace

std::string_view DTypeChangeName(DTypeChange d) {
  for (const auto& [name, c] : kDTypeChanges) {
    if (c == d) return name;
  }
  return "";
}

Result<DTypeChange> ParseDTypeChange(std::string_view text) {
  for (const auto& [name, d] : kDTypeChanges) {
    if (text == name) return d;
  }
  return Status::InvalidArgument("'" + std::string(text) + "' is not a dtype (bf16, f16, f32 or fp8)");
}

}  // namespace moepack
