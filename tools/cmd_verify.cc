#include "command.h"

namespace moepack::cli {

Action DefineVerify(CLI::App& sub) {
  (void)sub;
  return [] { return Fail(Status::InvalidArgument("verify: not implemented yet")); };
}

}  // namespace moepack::cli
