#include <iostream>

#include "command.h"
#include "moepack/families.h"

namespace moepack::cli {

Action DefineFamilies(CLI::App& sub) {
  auto json = std::make_shared<bool>(false);
  sub.add_flag("--json", *json, "Print one JSON array");
  return [json] {
    auto r = DescribeFamilies();
    if (!r.ok()) return Fail(r.status());
    std::cout << (*json ? FamiliesToJson(*r) + "\n" : FamiliesToText(*r));
    return kExitOk;
  };
}

}  // namespace moepack::cli
