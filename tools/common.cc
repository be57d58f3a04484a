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

bool StdoutIsTerminal() { return ::isatty(STDOUT_FILENO) == 1; }

void AddRuleFlags(CLI::App& sub, RuleFlags& flags) {
  sub.add_option("--model-type", flags.model_type, "Family rules to use instead of config.json's model_type");
  sub.add_option("--rules", flags.rules, "A rule file (JSON) instead of a built-in family");
  sub.add_option("--source-layout", flags.source_layout,
                 "Layout of fused tensors whose shape cannot tell: hf (the Hub's) or v5")
      ->check(Accepts(ParseSourceLayout));
}

SourceLayout ToSourceLayout(const std::string& flag) { return ParseSourceLayout(flag).value(); }

}  // namespace moepack::cli
