#include <iostream>

#include "command.h"
#include "moepack/inspect.h"

namespace moepack::cli {

Action DefineInspect(CLI::App& sub) {
  struct Flags {
    std::string path;
    bool json = false;
  };
  auto f = std::make_shared<Flags>();
  sub.add_option("PATH", f->path, "Model directory, index file or .safetensors file")->required();
  sub.add_flag("--json", f->json, "Print one JSON object");
  return [f] {
    auto r = Inspect(f->path);
    if (!r.ok()) return Fail(r.status());
    std::cout << (f->json ? InspectToJson(*r) + "\n" : InspectToText(*r));
    return kExitOk;
  };
}

}  // namespace moepack::cli
