#include <atomic>
#include <csignal>
#include <iostream>
#include <tuple>

#include "command.h"
#include "moepack/convert.h"
#include "progress.h"

namespace moepack::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void OnInterrupt(int) { g_interrupted.store(true); }

}  // namespace

Action DefineConvert(CLI::App& sub) {
  struct Flags {
    std::string src, dst, to = "fused", max_shard = "5GB", dtype, block_size;
    RuleFlags rules;
    int threads = 0;
    bool dry_run = false, json = false, force = false, no_sync = false, align_pages = false;
  };
  auto f = std::make_shared<Flags>();
  sub.add_option("SRC", f->src, "Source model directory")->required();
  sub.add_option("DST", f->dst, "Destination directory (created; must not exist unless --force)");
  sub.add_option("--to", f->to, "Target layout: fused or per-expert")->check(Accepts(ParseDirection));
  AddRuleFlags(sub, f->rules);
  sub.add_option("--max-shard-size", f->max_shard, "Largest output shard, e.g. 5GB, 500MB (decimal units)");
  sub.add_option("--dtype", f->dtype,
                 "bf16, f16 or f32: dequantize FP8 block-scaled and MXFP4 weights while converting; fp8: quantize")
      ->check(Accepts(ParseDTypeChange));
  sub.add_option("--block-size", f->block_size, "With --dtype fp8: the scale block, 128 (default) or ROWSxCOLS")
      ->check(Accepts(ParseBlockSize));
  sub.add_flag("--align-pages", f->align_pages,
               "Pad each output header so that copied bytes keep their offset within a page (faster copies; "
               "valid safetensors, but the headers differ from the reference writer's)");
  sub.add_option("--threads", f->threads, "Worker threads (default: one per core)")->check(CLI::Range(0, 64));
  sub.add_flag("--dry-run", f->dry_run, "Plan and validate only; write nothing");
  sub.add_flag("--json", f->json, "Print the plan summary as JSON");
  sub.add_flag("--force", f->force, "Replace an existing DST (atomically)");
  sub.add_flag("--no-sync", f->no_sync,
               "Do not flush the output to disk before publishing it (faster; after a power loss DST may hold "
               "unwritten data; for scratch output)");
  return [f] {
    if (f->dst.empty() && !f->dry_run) {
      std::cerr << "moepack: error: convert: DST is required (unless --dry-run)\n";
      return kExitUsage;
    }
    auto size = ParseSize(f->max_shard);
    if (!size.ok()) {
      std::cerr << "moepack: error: --max-shard-size: " << size.status().message() << "\n";
      return kExitUsage;
    }
    ConvertOptions o;
    o.direction = ParseDirection(f->to).value();
    o.model_type = f->rules.model_type;
    o.rules_file = f->rules.rules;
    o.max_shard_size = *size;
    o.source_layout = ToSourceLayout(f->rules.source_layout);
    o.dtype = ParseDTypeChange(f->dtype).value();
    if (!f->block_size.empty()) std::tie(o.block_rows, o.block_cols) = ParseBlockSize(f->block_size).value();
    o.align_pages = f->align_pages;
    o.threads = f->threads;
    o.force = f->force;
    o.sync = !f->no_sync;
    o.dry_run = f->dry_run;
    ProgressBar bar(StdoutIsTerminal() && !f->json);
    o.progress = bar.Callback();
    // Ctrl-C or a polite kill stops the workers so that the temporary output
    // is removed instead of left for the next run to clean.
    o.cancel = &g_interrupted;
    std::signal(SIGINT, OnInterrupt);
    std::signal(SIGTERM, OnInterrupt);
    auto r = Convert(f->src, f->dst, o);
    bar.Finish();
    if (!r.ok()) return Fail(r.status());
    for (const auto& s : r->report.removed_stale) std::cerr << "moepack: removed leftover of a killed run: " << s << "\n";
    if (f->json) {
      std::cout << PlanToJson(r->plan, f->dry_run) << "\n";
    } else {
      std::cout << PlanToText(r->plan);
      if (!f->dry_run) std::cout << "wrote " << f->dst << "\n";
      else std::cout << "dry run: nothing written\n";
    }
    return kExitOk;
  };
}

}  // namespace moepack::cli
