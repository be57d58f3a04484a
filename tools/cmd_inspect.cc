#include "command.h"

namespace moepack::cli {

Action DefineInspect(CLI::App& sub) {
  (void)sub;
  return [] { return Fail(Status::InvalidArgument("inspect: not implemented yet")); };
}

}  // namespace moepack::cli
