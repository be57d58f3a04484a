#include "command.h"

namespace moepack::cli {

Action DefineConvert(CLI::App& sub) {
  (void)sub;
  return [] { return Fail(Status::InvalidArgument("convert: not implemented yet")); };
}

}  // namespace moepack::cli
