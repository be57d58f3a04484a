#include "command.h"

namespace moepack::cli {

Action DefineSynth(CLI::App& sub) {
  (void)sub;
  return [] { return Fail(Status::InvalidArgument("synth: not implemented yet")); };
}

}  // namespace moepack::cli
