// The CLI is a table of commands. Each command file declares its flags on a
// CLI11 subcommand and returns the action to run once parsing succeeded; the
// action calls one library function and maps its Status to an exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "moepack/parse.h"
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

// A flag check that accepts exactly what the library's parser (parse.h)
// accepts, so that the CLI and the Python package take the same spellings.
template <typename T>
CLI::Validator Accepts(Result<T> (*parse)(std::string_view)) {
  return CLI::Validator([parse](std::string& text) {
    auto r = parse(text);
    return r.ok() ? std::string() : r.status().message();
  }, "");
}

bool StdoutIsTerminal();

// Flags that pick the conversion rules, shared by convert and verify.
// REQUIRES (ToSourceLayout): the flag passed its Accepts check.
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
Action DefineFamilies(CLI::App& sub);

}  // namespace moepack::cli
