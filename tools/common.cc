#include <unistd.h>

#include <cctype>
#include <iostream>

#include "command.h"

namespace moepack::cli {

int Fail(const Status& status) {
  std::string msg = status.message();
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  std::cerr << "moepack: error: " << msg << "\n";
  return kExitFailure;
}

Result<uint64_t> ParseSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0) return Status::InvalidArgument("invalid size '" + text + "' (expected e.g. 5GB, 500MB)");
  uint64_t n = 0;
  for (size_t k = 0; k < i; ++k) {
    if (__builtin_mul_overflow(n, 10u, &n) || __builtin_add_overflow(n, static_cast<uint64_t>(text[k] - '0'), &n)) {
      return Status::InvalidArgument("size '" + text + "' is too large");
    }
  }
  std::string unit;
  for (size_t k = i; k < text.size(); ++k) unit.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(text[k]))));
  static const std::pair<const char*, uint64_t> kUnits[] = {
      {"", 1}, {"B", 1}, {"KB", 1000}, {"MB", 1000000}, {"GB", 1000000000}, {"TB", 1000000000000},
      {"KIB", 1ull << 10}, {"MIB", 1ull << 20}, {"GIB", 1ull << 30}, {"TIB", 1ull << 40}};
  for (const auto& [name, mult] : kUnits) {
    if (unit == name) {
      uint64_t v;
      if (__builtin_mul_overflow(n, mult, &v)) return Status::InvalidArgument("size '" + text + "' is too large");
      if (v == 0) return Status::InvalidArgument("size must be positive");
      return v;
    }
  }
  return Status::InvalidArgument("invalid size unit in '" + text + "' (use B, KB, MB, GB, TB, KiB, MiB, GiB)");
}

bool StdoutIsTerminal() { return ::isatty(STDOUT_FILENO) == 1; }

void AddRuleFlags(CLI::App& sub, RuleFlags& flags) {
  sub.add_option("--model-type", flags.model_type, "Family rules to use instead of config.json's model_type");
  sub.add_option("--rules", flags.rules, "A rule file (JSON) instead of a built-in family");
  sub.add_option("--source-layout", flags.source_layout,
                 "Layout of fused tensors whose shape cannot tell: hf (the Hub's) or v5")
      ->check(CLI::IsMember({"hf", "v5"}));
}

SourceLayout ToSourceLayout(const std::string& flag) {
  if (flag == "hf") return SourceLayout::kHub;
  if (flag == "v5") return SourceLayout::kV5;
  return SourceLayout::kUnspecified;
}

}  // namespace moepack::cli
