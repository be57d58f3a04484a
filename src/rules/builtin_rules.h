// The rule files under rules/ are compiled into the binary; the build
// generates EmbeddedRuleFiles() from them.
#pragma once

#include <string>
#include <vector>

namespace moepack::internal {

struct EmbeddedRuleFile {
  std::string name;  // file name without .json
  std::string text;
};

const std::vector<EmbeddedRuleFile>& EmbeddedRuleFiles();

}  // namespace moepack::internal
