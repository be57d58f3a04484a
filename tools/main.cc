#include <csignal>
#include <iostream>
#include <vector>

#include "command.h"

namespace moepack::cli {
namespace {

const Command kCommands[] = {
    {"inspect", "Describe a checkpoint: tensors, dtypes, MoE layout", DefineInspect},
    {"synth", "Write a synthetic checkpoint of a model family", DefineSynth},
    {"convert", "Convert between per-expert and fused MoE layouts", DefineConvert},
    {"verify", "Prove that DST is SRC under the conversion", DefineVerify},
    {"families", "List the built-in model families, their Hub layout and v5's fused tensors", DefineFamilies},
};

}  // namespace
}  // namespace moepack::cli

int main(int argc, char** argv) {
  using namespace moepack::cli;
  // Past RLIMIT_FSIZE a write must fail with EFBIG (and be reported), not
  // kill the process before it can clean up.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"moepack: convert Mixture-of-Experts checkpoints between per-expert and fused layouts"};
  app.name("moepack");
  app.require_subcommand(1);
  app.set_version_flag("--version", "moepack 0.1.0");
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (const Command& c : kCommands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    actions.emplace_back(sub, c.define(*sub));
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "moepack: error: " << e.what() << "\n";
    return kExitUsage;
  }
  for (auto& [sub, action] : actions) {
    if (sub->parsed()) return action();
  }
  return kExitUsage;
}
