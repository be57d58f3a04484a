// One call from a source directory to a converted destination: choose the
// rules (given, from a rule file, or detected from config.json), plan, and
// execute. The CLI and the Python module both call this.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "moepack/executor.h"
#include "moepack/plan.h"
#include "moepack/rules.h"
#include "moepack/status.h"

namespace moepack {

struct ConvertOptions {
  Direction direction = Direction::kToFused;
  std::string model_type;  // overrides config.json
  std::string rules_file;  // a user's rule file instead of a built-in family
  uint64_t max_shard_size = 5'000'000'000;
  SourceLayout source_layout = SourceLayout::kUnspecified;
  DTypeChange dtype = DTypeChange::kKeep;  // see PlanOptions
  uint64_t block_rows = 0, block_cols = 0;
  bool align_pages = false;  // see PlanOptions
  int threads = 0;
  bool force = false;
  bool sync = true;  // see ExecuteOptions::sync
  bool dry_run = false;
  std::function<void(uint64_t done, uint64_t total)> progress;
  const std::atomic<bool>* cancel = nullptr;  // see ExecuteOptions
};

struct ConvertResult {
  Plan plan;
  ExecuteReport report;  // empty for a dry run
};

// The rules that apply to `src`: a rule file, a model type, or detection
// from its config.json, in that order (see ChooseRules in rules.h).
Result<RuleSet> ChooseRules(const Checkpoint& src, const std::string& model_type, const std::string& rules_file);

Result<ConvertResult> Convert(const std::string& src, const std::string& dst, const ConvertOptions& options);

}  // namespace moepack
