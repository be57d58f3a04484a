// The CLI is a table of commands. Each command file declares its flags on a
// CLI11 subcommand and returns the action to run once parsing succeeded; the
// action calls one library function and maps its Status to an exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "moepack/plan.h"
#include "moepack/status.h"

namespace moepack::cli {

using Action = std::function<int()>;

struct Command {
  const char* name;
  const char* description;
  Action (*define)(CLI::App& sub);
};

// Exit codes: 0 success, 1 bad input or failed verification, 2 usage error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

// Prints "moepack: error: <message>" on stderr and returns kExitFailure.
int Fail(const Status& status);

// Parses sizes such as 5GB, 500MB, 2GiB, 1000 (decimal units, as the Hub).
Result<uint64_t> ParseSize(const std::string& text);

bool StdoutIsTerminal();

// Flags that pick the conversion rules, shared by convert and verify.
struct RuleFlags {
  std::string model_type;
  std::string rules;
  std::string source_layout;  // "", "hf" or "v5"
};
void AddRuleFlags(CLI::App& sub, RuleFlags& flags);
SourceLayout ToSourceLayout(const std::string& flag);

Action DefineInspect(CLI::App& sub);
Action DefineSynth(CLI::App& sub);
Action DefineConvert(CLI::App& sub);
Action DefineVerify(CLI::App& sub);

}  // namespace moepack::cli
