#include "moepack/convert.h"

namespace moepack {

Result<RuleSet> ChooseRules(const Checkpoint& src, const std::string& model_type, const std::string& rules_file) {
  return ChooseRules(src.config() ? &*src.config() : nullptr, src.dir(), model_type, rules_file);
}

Result<ConvertResult> Convert(const std::string& src, const std::string& dst, const ConvertOptions& options) {
  if (options.dtype != DTypeChange::kToFP8 && (options.block_rows || options.block_cols)) {
    return Status::InvalidArgument("--block-size applies to --dtype fp8 only");
  }
  // Cheap path checks first, so a bad DST fails before headers are read.
  if (!options.dry_run || !dst.empty()) MOEPACK_RETURN_IF_ERROR(CheckDestination(src, dst, options.force));
  MOEPACK_ASSIGN_OR_RETURN(Checkpoint ckpt, Checkpoint::Open(src));
  MOEPACK_ASSIGN_OR_RETURN(RuleSet rules, ChooseRules(ckpt, options.model_type, options.rules_file));
  PlanOptions po;
  po.direction = options.direction;
  po.max_shard_size = options.max_shard_size;
  po.source_layout = options.source_layout;
  po.dtype = options.dtype;
  po.block_rows = options.block_rows;
  po.block_cols = options.block_cols;
  po.align_pages = options.align_pages;
  MOEPACK_ASSIGN_OR_RETURN(Plan plan, MakePlan(ckpt, rules, po));
  ConvertResult result{std::move(plan), {}};
  if (options.dry_run) return result;
  ExecuteOptions eo;
  eo.threads = options.threads;
  eo.force = options.force;
  eo.sync = options.sync;
  eo.progress = options.progress;
  eo.cancel = options.cancel;
  MOEPACK_ASSIGN_OR_RETURN(result.report, Execute(result.plan, dst, eo));
  return result;
}

}  // namespace moepack
